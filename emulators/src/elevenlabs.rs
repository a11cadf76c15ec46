//! ElevenLabs Conversational AI emulator: the signed-URL endpoint and the conversation
//! WebSocket, driven by [`Scenario`] agent scripts, recording everything it receives.
//!
//! Routes:
//! - `GET /v1/convai/conversation/get-signed-url?agent_id=…` with `xi-api-key` → 200
//!   `{"signed_url":"ws://HOST:PORT/v1/convai/conversation?agent_id=…&conversation_signature=…"}`;
//!   401 without/with a wrong key, 404 for an unknown agent, 503 while a `refuse_signed_url`
//!   fault lasts.
//! - `GET /v1/convai/conversation?agent_id=…[&conversation_signature=…]` → WebSocket. A bad or
//!   foreign signature is refused (403); the public form without signature is accepted unless
//!   `require_signed_url` is set.
//! - `GET /emulator/conversations` → JSON of every [`ConversationRecord`].
//! - the agents and tools API (`/v1/convai/agents…`, `/v1/convai/tools…`): see
//!   [`crate::workspace`]; its state is [`Recorder::workspace`].
//!
//! Conversation behaviour (see [`Engine`], which is sans-IO): after the client's optional
//! `conversation_initiation_client_data` (waited for up to 2 s) the emulator picks the script
//! of the agent whose `[call] from` equals the `caller_number` dynamic variable (else the
//! agent's first script), sends `conversation_initiation_metadata` and the greeting
//! (`agent_response` + `audio`). Caller utterances are found by [`Vad`] on the decoded
//! `user_audio_chunk`s; each consumes the next turn: `user_transcript`, the turn's
//! `client_tool_call`s one at a time (waiting for each `client_tool_result`), then
//! `agent_response` and the reply audio in 250 ms chunks.
//!
//! Clock: the emulator's "now" is the amount of user audio received (ms). Twilio streams audio
//! continuously, so this is the call's time, at any simulation speed. Agent audio is "playing"
//! from the moment it is sent until its duration has elapsed on that clock (queued after any
//! audio still playing); caller speech starting while it plays causes `interruption` and an
//! `agent_response_correction` whose corrected text is cut at the word reached.
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use pulsara_media::convai::{self, ClientMessage, InitiationMetadata, ServerMessage, ToolCall};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

use crate::scenario::{AgentScript, Scenario};
use crate::stored_agent::{self, ConversationAgent};
use crate::synth::{self, Voice};
use crate::vad::{Vad, VadEvent};
use crate::workspace::{self, Workspace};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// Raw user audio kept per conversation for assertions (pass-through byte checks).
const MAX_RECORDED_AUDIO: usize = 4 * 1024 * 1024;
const MAX_RECORDED_EVENTS: usize = 2000;
const AUDIO_CHUNK_MS: usize = 250;

/// Emulator settings.
#[derive(Debug, Clone)]
pub struct ElevenLabsConfig {
    /// The `xi-api-key` the signed-URL endpoint accepts.
    pub api_key: String,
    pub scenarios: Vec<Scenario>,
    /// Base of the signed URLs (`ws://host:port`); default: the listener's address.
    pub ws_base: Option<String>,
    pub require_signed_url: bool,
    /// Keep the raw user audio of each conversation (up to 4 MiB); off for load tests.
    pub record_audio: bool,
    pub max_conversations: usize,
    /// How long the service takes, as seen from a bridge (none by default: tests run at
    /// loopback speed; the latency bench turns them on).
    pub delays: ServiceDelays,
}

/// Time the real service spends before it answers, as a client in another datacentre sees it.
/// ElevenLabs documents none of these; [`ServiceDelays::realistic`] says what the latency bench
/// assumes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceDelays {
    /// `GET /v1/convai/conversation/get-signed-url`: request to answer.
    pub signed_url: Duration,
    /// The conversation WebSocket's upgrade (TCP, TLS and the HTTP upgrade).
    pub handshake: Duration,
    /// From `conversation_initiation_metadata` to the greeting's first audio (speech synthesis).
    pub greeting: Duration,
}

impl ServiceDelays {
    /// What the latency bench assumes: an API round trip of 150 ms for the signed URL, 200 ms
    /// for the socket's handshake, 350 ms of synthesis before the greeting's first audio.
    pub fn realistic() -> Self {
        ServiceDelays {
            signed_url: Duration::from_millis(150),
            handshake: Duration::from_millis(200),
            greeting: Duration::from_millis(350),
        }
    }
}

impl ElevenLabsConfig {
    pub fn new(api_key: impl Into<String>, scenarios: Vec<Scenario>) -> Self {
        ElevenLabsConfig {
            api_key: api_key.into(),
            scenarios,
            ws_base: None,
            require_signed_url: false,
            record_audio: true,
            max_conversations: 10_000,
            delays: ServiceDelays::default(),
        }
    }
}

/// Why the emulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Scenario(#[from] crate::scenario::ScenarioError),
}

/// A signed-URL request as received.
#[derive(Debug, Clone, Serialize)]
pub struct SignedUrlRequest {
    pub agent_id: String,
    pub status: u16,
}

/// A tool result the client sent.
#[derive(Debug, Clone, Serialize)]
pub struct ToolResultRecord {
    pub tool_name: String,
    pub tool_call_id: String,
    pub parameters: Value,
    pub result: String,
    pub is_error: bool,
    pub latency_ms: u64,
}

/// An interruption the emulator signalled.
#[derive(Debug, Clone, Serialize)]
pub struct InterruptionRecord {
    pub at_ms: u64,
    pub original: String,
    pub corrected: String,
}

/// A timeline entry (audio and pings are counted, not listed).
#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    pub at_ms: u64,
    /// `in` = from the client, `out` = sent by the emulator.
    pub dir: &'static str,
    pub kind: String,
    pub detail: String,
}

/// Everything one conversation saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConversationRecord {
    pub conversation_id: String,
    pub agent_id: String,
    pub scenario: Option<String>,
    pub via_signed_url: bool,
    pub initiation: Option<Value>,
    pub dynamic_variables: BTreeMap<String, Value>,
    pub events: Vec<EventRecord>,
    pub user_audio_chunks: u64,
    pub user_audio_bytes: u64,
    /// Raw user audio as received (input format), capped.
    #[serde(skip)]
    pub user_audio: Vec<u8>,
    pub agent_audio_chunks: u64,
    pub agent_audio_bytes: u64,
    pub agent_responses: Vec<String>,
    pub user_transcripts: Vec<String>,
    pub tool_results: Vec<ToolResultRecord>,
    pub contextual_updates: Vec<String>,
    pub user_messages: Vec<String>,
    pub user_activity: u64,
    pub pings_sent: u64,
    pub pongs_ok: u64,
    pub pongs_wrong: Vec<u64>,
    pub pongs_missing: Vec<u64>,
    pub interruptions: Vec<InterruptionRecord>,
    pub turns_completed: usize,
    pub unscripted_utterances: usize,
    /// Tool calls the script asked for that the server would never make (undeclared tool,
    /// arguments breaking its schema).
    pub refused_tool_calls: Vec<String>,
    /// The override field the agent does not allow, when the conversation was refused for it.
    pub refused_override: Option<String>,
    /// Scenario expectations that failed (tool results, timeouts, unknown tool call ids).
    pub failures: Vec<String>,
    pub malformed: Vec<String>,
    pub unknown_types: Vec<String>,
    pub ended: Option<String>,
    pub dropped_by_fault: bool,
}

/// Shared record of everything the emulator received; hand an `Arc` of it to tests.
#[derive(Debug, Default)]
pub struct Recorder {
    conversations: Mutex<Vec<Arc<Mutex<ConversationRecord>>>>,
    signed_urls: Mutex<Vec<SignedUrlRequest>>,
    changed: Notify,
    /// The agents and tools API's state (served next to the conversation routes).
    workspace: Arc<Workspace>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Recorder {
    pub fn new() -> Arc<Self> {
        Arc::new(Recorder::default())
    }

    /// Snapshot of every conversation so far.
    pub fn conversations(&self) -> Vec<ConversationRecord> {
        lock(&self.conversations)
            .iter()
            .map(|c| lock(c).clone())
            .collect()
    }

    /// Snapshot of the conversation with this id.
    pub fn conversation(&self, conversation_id: &str) -> Option<ConversationRecord> {
        lock(&self.conversations)
            .iter()
            .map(|c| lock(c).clone())
            .find(|c| c.conversation_id == conversation_id)
    }

    /// Snapshot of the conversations that played the scenario `name`.
    pub fn by_scenario(&self, name: &str) -> Vec<ConversationRecord> {
        self.conversations()
            .into_iter()
            .filter(|c| c.scenario.as_deref() == Some(name))
            .collect()
    }

    /// The workspace behind the agents and tools API: its agents, tools, injected faults and
    /// request log.
    pub fn workspace(&self) -> Arc<Workspace> {
        self.workspace.clone()
    }

    /// Every signed-URL request with the status answered.
    pub fn signed_url_requests(&self) -> Vec<SignedUrlRequest> {
        lock(&self.signed_urls).clone()
    }

    /// Wait until at least `n` conversations have ended (or `timeout`), then snapshot.
    pub async fn wait_ended(&self, n: usize, timeout: Duration) -> Vec<ConversationRecord> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            let all = self.conversations();
            if all.iter().filter(|c| c.ended.is_some()).count() >= n {
                return all;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.conversations();
            }
        }
    }

    fn add(&self, rec: ConversationRecord) -> Arc<Mutex<ConversationRecord>> {
        let rec = Arc::new(Mutex::new(rec));
        lock(&self.conversations).push(rec.clone());
        self.changed.notify_waiters();
        rec
    }
}

struct ElState {
    api_key: String,
    /// The scripts by restaurant id: a conversation plays one of the scripts of the
    /// restaurant its agent is tagged with (`restaurant:<id>`).
    scripts: HashMap<String, Vec<Scenario>>,
    ws_base: String,
    require_signed_url: bool,
    record_audio: bool,
    max_conversations: usize,
    recorder: Arc<Recorder>,
    signatures: Mutex<HashMap<String, String>>,
    /// Signed-URL refusals still to come, by restaurant id.
    refusals: Mutex<HashMap<String, u32>>,
    counter: AtomicU64,
    live: AtomicU64,
    shutdown: watch::Receiver<bool>,
    delays: ServiceDelays,
}

/// Serve the emulator on `listener` until `shutdown` resolves; live conversations are closed
/// with a normal close frame at shutdown.
///
/// # Errors
/// Accept-loop I/O errors.
pub async fn run(
    listener: TcpListener,
    config: ElevenLabsConfig,
    recorder: Arc<Recorder>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let (tx, rx) = watch::channel(false);
    let mut scripts: HashMap<String, Vec<Scenario>> = HashMap::new();
    let mut refusals = HashMap::new();
    for s in config.scenarios {
        if s.agent.faults.refuse_signed_url > 0 {
            *refusals.entry(s.restaurant.clone()).or_insert(0) += s.agent.faults.refuse_signed_url;
        }
        scripts.entry(s.restaurant.clone()).or_default().push(s);
    }
    let workspace_api = workspace::router(recorder.workspace(), config.api_key.clone());
    let state = Arc::new(ElState {
        api_key: config.api_key,
        scripts,
        ws_base: config.ws_base.unwrap_or_else(|| {
            // A wildcard bind still hands out a connectable loopback URL.
            let mut a = addr;
            if a.ip().is_unspecified() {
                a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            format!("ws://{a}")
        }),
        require_signed_url: config.require_signed_url,
        record_audio: config.record_audio,
        max_conversations: config.max_conversations,
        recorder,
        signatures: Mutex::new(HashMap::new()),
        refusals: Mutex::new(refusals),
        counter: AtomicU64::new(0),
        live: AtomicU64::new(0),
        shutdown: rx,
        delays: config.delays,
    });
    let app = Router::new()
        .route("/v1/convai/conversation/get-signed-url", get(signed_url))
        .route("/v1/convai/conversation", get(conversation_ws))
        .route("/emulator/conversations", get(list_conversations))
        .route("/emulator/healthz", get(|| async { "ok" }))
        .with_state(state)
        .merge(workspace_api);
    tracing::info!(%addr, "ElevenLabs emulator listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = tx.send(true);
        })
        .await
}

/// A running emulator started by [`spawn`].
pub struct Running {
    pub addr: SocketAddr,
    pub recorder: Arc<Recorder>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// `http://127.0.0.1:PORT`, the value for the bridge's `ELEVENLABS_BASE_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop accepting and close live conversations.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = self.task.await;
    }
}

/// Start the emulator on `127.0.0.1:0` in the background.
///
/// # Errors
/// Binding the listener.
pub async fn spawn(config: ElevenLabsConfig) -> std::io::Result<Running> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let recorder = Recorder::new();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(listener, config, recorder.clone(), async move {
        let _ = rx.await;
    }));
    Ok(Running {
        addr,
        recorder,
        stop: Some(stop),
        task,
    })
}

/// One-line entry for `pulsara emulate elevenlabs --listen ADDR`: load every scenario in
/// `scenarios_dir` and serve until `shutdown`.
///
/// # Errors
/// Scenario loading and bind/accept errors.
pub async fn serve(
    listen: SocketAddr,
    scenarios_dir: &Path,
    api_key: String,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), EmulatorError> {
    let scenarios = Scenario::load_dir(scenarios_dir)?;
    let listener = TcpListener::bind(listen).await?;
    run(
        listener,
        ElevenLabsConfig::new(api_key, scenarios),
        Recorder::new(),
        shutdown,
    )
    .await?;
    Ok(())
}

fn detail(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"detail": {"status": status.as_str(), "message": message}})),
    )
        .into_response()
}

async fn signed_url(
    State(st): State<Arc<ElState>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    tokio::time::sleep(st.delays.signed_url).await;
    let agent_id = q.get("agent_id").cloned().unwrap_or_default();
    let record = |status: StatusCode| {
        lock(&st.recorder.signed_urls).push(SignedUrlRequest {
            agent_id: agent_id.clone(),
            status: status.as_u16(),
        });
    };
    let key_ok = headers
        .get("xi-api-key")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|k| {
            bool::from(subtle::ConstantTimeEq::ct_eq(
                k.as_bytes(),
                st.api_key.as_bytes(),
            ))
        });
    if !key_ok {
        record(StatusCode::UNAUTHORIZED);
        return detail(StatusCode::UNAUTHORIZED, "invalid_api_key");
    }
    let Some(Ok(agent)) = st.recorder.workspace.conversation_agent(&agent_id) else {
        record(StatusCode::NOT_FOUND);
        return detail(StatusCode::NOT_FOUND, "agent not found");
    };
    if let Some(restaurant) = &agent.restaurant {
        let mut refusals = lock(&st.refusals);
        if let Some(n) = refusals.get_mut(restaurant).filter(|n| **n > 0) {
            *n -= 1;
            drop(refusals);
            record(StatusCode::SERVICE_UNAVAILABLE);
            return detail(
                StatusCode::SERVICE_UNAVAILABLE,
                "service temporarily unavailable (injected fault)",
            );
        }
    }
    let n = st.counter.fetch_add(1, Ordering::Relaxed);
    let signature = format!(
        "sig{:016x}{:08x}",
        hash64(&format!("{agent_id}/{n}/{}", st.api_key.len())),
        n
    );
    lock(&st.signatures).insert(signature.clone(), agent_id.clone());
    record(StatusCode::OK);
    let url = format!(
        "{}/v1/convai/conversation?agent_id={}&conversation_signature={}",
        st.ws_base, agent_id, signature
    );
    Json(json!({ "signed_url": url })).into_response()
}

fn hash64(s: &str) -> u64 {
    // FNV-1a: only needs to make signatures look opaque, not be secret.
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

async fn list_conversations(State(st): State<Arc<ElState>>) -> Json<Vec<ConversationRecord>> {
    Json(st.recorder.conversations())
}

async fn conversation_ws(
    State(st): State<Arc<ElState>>,
    Query(q): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    let agent_id = q.get("agent_id").cloned().unwrap_or_default();
    let agent = match st.recorder.workspace.conversation_agent(&agent_id) {
        Some(Ok(agent)) => agent,
        Some(Err(e)) => return detail(StatusCode::INTERNAL_SERVER_ERROR, &e),
        None => return detail(StatusCode::NOT_FOUND, "agent not found"),
    };
    let signature = q.get("conversation_signature").or_else(|| q.get("token"));
    let via_signed_url = match signature {
        Some(sig) => {
            if lock(&st.signatures).get(sig) != Some(&agent_id) {
                return detail(StatusCode::FORBIDDEN, "invalid conversation signature");
            }
            true
        }
        None if st.require_signed_url => {
            return detail(StatusCode::FORBIDDEN, "this agent requires a signed URL")
        }
        None => false,
    };
    if st.live.load(Ordering::Relaxed) as usize >= st.max_conversations {
        return detail(
            StatusCode::TOO_MANY_REQUESTS,
            "too many concurrent conversations",
        );
    }
    tokio::time::sleep(st.delays.handshake).await;
    ws.max_message_size(convai::MAX_CLIENT_BYTES)
        .max_frame_size(convai::MAX_CLIENT_BYTES)
        .on_upgrade(move |socket| async move {
            st.live.fetch_add(1, Ordering::Relaxed);
            conversation(st.clone(), socket, agent, via_signed_url).await;
            st.live.fetch_sub(1, Ordering::Relaxed);
        })
}

fn pick_script<'a>(
    scripts: &'a [Scenario],
    vars: &BTreeMap<String, Value>,
) -> Option<&'a Scenario> {
    let digits = |s: &str| s.chars().filter(|c| c.is_ascii_digit()).collect::<String>();
    let caller = vars
        .get("caller_number")
        .and_then(Value::as_str)
        .map(digits)
        .unwrap_or_default();
    scripts
        .iter()
        .find(|s| !caller.is_empty() && digits(&s.call.from) == caller)
        .or_else(|| scripts.iter().find(|s| s.call.from.is_empty()))
        .or(scripts.first())
}

/// What the shell must do after feeding the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send this text frame.
    Send(String),
    /// Drop the socket without a close frame after this delay (fault injection).
    DropAfter(Duration),
}

struct PendingTool {
    turn: usize,
    index: usize,
    call: ToolCall,
    sent_at: Instant,
    deadline: Instant,
}

/// The conversation state machine, sans-IO: feed it client messages and timer events with
/// `now`, get frames to send.
pub struct Engine {
    agent: ConversationAgent,
    script: AgentScript,
    vars: BTreeMap<String, Value>,
    record: Arc<Mutex<ConversationRecord>>,
    record_audio: bool,
    vad: Vad,
    next_event_id: u64,
    /// Audio-clock ms at which the agent audio already sent finishes playing.
    playing_until_ms: u64,
    /// The reply currently playing: text, start, duration (audio-clock ms), last audio event id.
    playing: Option<(String, u64, u64, u64)>,
    next_turn: usize,
    pending: Option<PendingTool>,
    last_result: String,
    outstanding_pings: BTreeMap<u64, Instant>,
    last_rtt_ms: Option<u64>,
    decoded: Vec<i16>,
    /// Replies held back by `response_delay_ms`: (release at audio-clock ms, output).
    delayed: std::collections::VecDeque<(u64, Output)>,
}

impl Engine {
    /// A conversation of the stored `agent` playing `script`, with the client's dynamic
    /// variables.
    pub fn new(
        agent: ConversationAgent,
        script: AgentScript,
        vars: BTreeMap<String, Value>,
        record: Arc<Mutex<ConversationRecord>>,
        record_audio: bool,
    ) -> Self {
        let vad = Vad::new(agent.input_format.sample_rate());
        Engine {
            agent,
            script,
            vars,
            record,
            record_audio,
            vad,
            next_event_id: 1,
            playing_until_ms: 0,
            playing: None,
            next_turn: 0,
            pending: None,
            last_result: String::new(),
            outstanding_pings: BTreeMap::new(),
            last_rtt_ms: None,
            decoded: Vec::new(),
            delayed: std::collections::VecDeque::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.vad.now_ms()
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_event_id;
        self.next_event_id += 1;
        id
    }

    /// Queue `msg` if the agent's `client_events` include its type (the server sends nothing
    /// else).
    fn emit(&self, msg: ServerMessage<'_>, out: &mut Vec<Output>) {
        if self.agent.sends(msg.kind()) {
            out.push(Output::Send(msg.to_json()));
        }
    }

    /// Whether the server pings this client at all.
    pub fn pings(&self) -> bool {
        self.sends("ping")
    }

    /// Whether the agent's `client_events` include `event`.
    pub fn sends(&self, event: &str) -> bool {
        self.agent.sends(event)
    }

    fn event(&self, dir: &'static str, kind: &str, detail: impl Into<String>) {
        let mut r = lock(&self.record);
        if r.events.len() < MAX_RECORDED_EVENTS {
            r.events.push(EventRecord {
                at_ms: self.now_ms(),
                dir,
                kind: kind.to_owned(),
                detail: detail.into(),
            });
        }
    }

    fn fail(&self, message: String) {
        tracing::warn!(%message, "emulated conversation expectation failed");
        lock(&self.record).failures.push(message);
    }

    fn substitute(&self, text: &str) -> String {
        let mut out = text.replace("{result}", &self.last_result);
        for (k, v) in &self.vars {
            let val = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out = out.replace(&format!("{{{{{k}}}}}"), &val);
        }
        out
    }

    /// The opening frames: metadata and the greeting.
    pub fn start(
        &mut self,
        conversation_id: &str,
        first_message_override: Option<String>,
    ) -> Vec<Output> {
        let meta = ServerMessage::ConversationInitiationMetadata(InitiationMetadata {
            conversation_id: conversation_id.to_owned(),
            agent_output_audio_format: self.agent.output_format.to_string(),
            user_input_audio_format: self.agent.input_format.to_string(),
        });
        let mut out = Vec::new();
        self.emit(meta, &mut out);
        // The override was checked against the agent's permissions before the engine started.
        let greeting = first_message_override.unwrap_or_else(|| self.agent.first_message.clone());
        if !greeting.is_empty() {
            let greeting = self.substitute(&greeting);
            let now = self.now_ms();
            self.speak_at(&greeting, now, &mut out);
        }
        out
    }

    /// A reply: immediate, or held back by `response_delay_ms` on the audio clock.
    fn speak(&mut self, text: &str, out: &mut Vec<Output>) {
        let delay = self.script.response_delay_ms;
        let now = self.now_ms();
        if delay == 0 {
            self.speak_at(text, now, out);
            return;
        }
        let due = now + delay;
        let mut held = Vec::new();
        self.speak_at(text, due, &mut held);
        self.delayed.extend(held.into_iter().map(|o| (due, o)));
    }

    /// Emit `text` and its audio; the audio starts playing at `at_ms` (or after what is playing).
    fn speak_at(&mut self, text: &str, at_ms: u64, out: &mut Vec<Output>) {
        let id = self.next_id();
        self.emit(
            ServerMessage::AgentResponse {
                text: text.to_owned(),
                event_id: Some(id),
            },
            out,
        );
        self.event("out", "agent_response", text);
        lock(&self.record).agent_responses.push(text.to_owned());
        if self.script.faults.mute {
            return;
        }
        let fmt = self.agent.output_format;
        let samples = synth::synthesize(text, Voice::AGENT, fmt.sample_rate());
        let mut bytes = Vec::with_capacity(samples.len() * 2);
        fmt.encode(&samples, &mut bytes);
        let dur = fmt.duration_ms(bytes.len());
        let chunk = fmt.bytes_per_second() * AUDIO_CHUNK_MS / 1000;
        let mut last_id = 0;
        let sends_audio = self.agent.sends("audio");
        for c in bytes.chunks(chunk.max(2)) {
            last_id = self.next_id();
            if !sends_audio {
                continue;
            }
            // Encoding our own base64 cannot fail validation.
            if let Ok(frame) = convai::audio_json(&B64.encode(c), last_id) {
                out.push(Output::Send(frame));
            }
        }
        {
            let mut r = lock(&self.record);
            r.agent_audio_chunks += bytes.chunks(chunk.max(2)).count() as u64;
            r.agent_audio_bytes += bytes.len() as u64;
        }
        let start = self.playing_until_ms.max(at_ms);
        self.playing_until_ms = start + dur;
        self.playing = Some((text.to_owned(), start, dur, last_id));
    }

    /// A ping to send now.
    pub fn ping(&mut self, now: Instant) -> Vec<Output> {
        if !self.pings() {
            return Vec::new();
        }
        let id = self.next_id();
        self.outstanding_pings.insert(id, now);
        lock(&self.record).pings_sent += 1;
        // `ping_ms` is null until a pong has measured the round trip.
        vec![Output::Send(
            ServerMessage::Ping {
                event_id: id,
                ping_ms: self.last_rtt_ms,
            }
            .to_json(),
        )]
    }

    /// When the pending tool call times out, if any.
    pub fn tool_deadline(&self) -> Option<Instant> {
        self.pending.as_ref().map(|p| p.deadline)
    }

    /// The pending tool call's deadline passed.
    pub fn on_tool_timeout(&mut self, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        if let Some(p) = self.pending.take_if(|p| now >= p.deadline) {
            self.fail(format!(
                "turn {}: no client_tool_result for {} ({}) within its response_timeout_secs",
                p.turn + 1,
                p.call.tool_name,
                p.call.tool_call_id,
            ));
            self.last_result = String::new();
            self.speak("Sorry, I could not complete that right now.", &mut out);
            self.finish_turn(p.turn, &mut out);
        }
        out
    }

    /// Feed one text frame from the client.
    pub fn on_text(&mut self, text: &str, now: Instant) -> Vec<Output> {
        match convai::parse_client(text) {
            Ok(msg) => self.on_message(msg, now),
            Err(e) => {
                let mut r = lock(&self.record);
                if r.malformed.len() < 100 {
                    r.malformed.push(format!(
                        "{e}: {}",
                        text.chars().take(120).collect::<String>()
                    ));
                }
                Vec::new()
            }
        }
    }

    fn on_message(&mut self, msg: ClientMessage<'_>, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        match msg {
            ClientMessage::UserAudioChunk { audio_b64 } => {
                let Ok(bytes) = B64.decode(audio_b64.as_bytes()) else {
                    lock(&self.record)
                        .malformed
                        .push("user_audio_chunk: undecodable base64".into());
                    return out;
                };
                {
                    let mut r = lock(&self.record);
                    r.user_audio_chunks += 1;
                    r.user_audio_bytes += bytes.len() as u64;
                    if self.record_audio && r.user_audio.len() + bytes.len() <= MAX_RECORDED_AUDIO {
                        r.user_audio.extend_from_slice(&bytes);
                    }
                }
                self.decoded.clear();
                self.agent.input_format.decode(&bytes, &mut self.decoded);
                let samples = std::mem::take(&mut self.decoded);
                for ev in self.vad.push(&samples) {
                    match ev {
                        VadEvent::SpeechStart { at_ms } => self.on_speech_start(at_ms, &mut out),
                        VadEvent::SpeechEnd { .. } => self.on_speech_end(now, &mut out),
                    }
                }
                self.decoded = samples;
                let now_ms = self.now_ms();
                while self.delayed.front().is_some_and(|(due, _)| *due <= now_ms) {
                    if let Some((_, o)) = self.delayed.pop_front() {
                        out.push(o);
                    }
                }
            }
            ClientMessage::Pong { event_id } => {
                let mut r = lock(&self.record);
                match self.outstanding_pings.remove(&event_id) {
                    Some(sent) => {
                        r.pongs_ok += 1;
                        self.last_rtt_ms =
                            Some(now.saturating_duration_since(sent).as_millis() as u64);
                    }
                    None => r.pongs_wrong.push(event_id),
                }
            }
            ClientMessage::ClientToolResult {
                tool_call_id,
                result,
                is_error,
            } => {
                self.event(
                    "in",
                    "client_tool_result",
                    format!("{tool_call_id}: {result}"),
                );
                match self
                    .pending
                    .take_if(|p| p.call.tool_call_id == tool_call_id)
                {
                    Some(p) => self.on_tool_result(p, result, is_error, now, &mut out),
                    None => self.fail(format!(
                        "client_tool_result for unknown or late tool_call_id {tool_call_id}"
                    )),
                }
            }
            ClientMessage::ContextualUpdate { text } => {
                self.event("in", "contextual_update", text.clone());
                lock(&self.record).contextual_updates.push(text);
            }
            ClientMessage::UserMessage { text } => {
                self.event("in", "user_message", text.clone());
                lock(&self.record).user_messages.push(text);
            }
            ClientMessage::UserActivity => lock(&self.record).user_activity += 1,
            ClientMessage::ConversationInitiationClientData(_) => {
                self.fail("conversation_initiation_client_data sent twice".into());
            }
            ClientMessage::Unknown { kind } => lock(&self.record).unknown_types.push(kind),
        }
        out
    }

    fn on_speech_start(&mut self, at_ms: u64, out: &mut Vec<Output>) {
        self.event("in", "speech_start", "");
        if at_ms >= self.playing_until_ms {
            return;
        }
        let Some((text, start, dur, last_id)) = self.playing.take() else {
            return;
        };
        if self
            .delayed
            .iter()
            .any(|(_, o)| matches!(o, Output::Send(_)))
        {
            // The reply was still "thinking": drop it unsent (nothing was heard, nothing to correct).
            self.delayed.retain(|(_, o)| !matches!(o, Output::Send(_)));
            self.playing_until_ms = at_ms;
            self.event("out", "reply_cancelled", text.clone());
            lock(&self.record).interruptions.push(InterruptionRecord {
                at_ms,
                original: text,
                corrected: String::new(),
            });
            return;
        }
        let heard = at_ms.saturating_sub(start) as f64 / dur.max(1) as f64;
        let corrected = cut_text(&text, heard);
        self.playing_until_ms = at_ms;
        self.emit(ServerMessage::Interruption { event_id: last_id }, out);
        let id = self.next_id();
        self.emit(
            ServerMessage::AgentResponseCorrection {
                original: text.clone(),
                corrected: corrected.clone(),
                event_id: Some(id),
            },
            out,
        );
        self.event("out", "interruption", corrected.clone());
        lock(&self.record).interruptions.push(InterruptionRecord {
            at_ms,
            original: text,
            corrected,
        });
    }

    fn on_speech_end(&mut self, now: Instant, out: &mut Vec<Output>) {
        if self.pending.is_some() {
            self.event("in", "utterance_during_tool_call", "");
            return;
        }
        let Some(turn) = self.script.turns.get(self.next_turn).cloned() else {
            lock(&self.record).unscripted_utterances += 1;
            let id = self.next_id();
            self.emit(
                ServerMessage::UserTranscript {
                    text: "...".into(),
                    event_id: Some(id),
                },
                out,
            );
            self.speak("Sorry, could you say that again?", out);
            return;
        };
        let idx = self.next_turn;
        self.next_turn += 1;
        let id = self.next_id();
        self.emit(
            ServerMessage::UserTranscript {
                text: turn.user.clone(),
                event_id: Some(id),
            },
            out,
        );
        self.event("out", "user_transcript", turn.user.clone());
        lock(&self.record).user_transcripts.push(turn.user.clone());
        self.next_tool_or_reply(idx, 0, now, out);
    }

    fn next_tool_or_reply(
        &mut self,
        turn: usize,
        index: usize,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        let t = &self.script.turns[turn];
        if let Some(call) = t.tool_calls.get(index).cloned() {
            // The LLM only calls tools the agent declares, with arguments their schema admits;
            // anything else never reaches the client.
            let refusal = match self.agent.tools.get(&call.tool) {
                None => Some(format!(
                    "turn {}: {} is not a client tool of agent {}; the LLM cannot call it",
                    turn + 1,
                    call.tool,
                    self.agent.agent_id
                )),
                Some(declared) => {
                    let errors = stored_agent::check_arguments(&declared.parameters, &call.params);
                    (!errors.is_empty()).then(|| {
                        format!(
                            "turn {}: {} parameters break the tool's schema: {}",
                            turn + 1,
                            call.tool,
                            errors.join("; ")
                        )
                    })
                }
            };
            if let Some(why) = refusal {
                self.event("out", "tool_call_refused", why.clone());
                lock(&self.record).refused_tool_calls.push(why.clone());
                self.fail(why);
                self.last_result = String::new();
                return self.next_tool_or_reply(turn, index + 1, now, out);
            }
            let timeout_secs = self.agent.tools[&call.tool].response_timeout_secs;
            let event_id = self.next_id();
            let tc = ToolCall {
                tool_name: call.tool.clone(),
                tool_call_id: format!("toolu_{:02}_{:02}_{event_id}", turn + 1, index + 1),
                parameters: call.params.clone(),
                event_id: Some(event_id),
            };
            // Not sent when `client_tool_call` is not enabled: the server still waits for a
            // result it can never get, and the call times out.
            self.emit(ServerMessage::ClientToolCall(tc.clone()), out);
            self.event(
                "out",
                "client_tool_call",
                format!("{} {}", tc.tool_name, tc.parameters),
            );
            self.pending = Some(PendingTool {
                turn,
                index,
                call: tc,
                sent_at: now,
                deadline: now + Duration::from_secs(timeout_secs),
            });
            return;
        }
        let reply = self.substitute(&t.agent);
        self.speak(&reply, out);
        self.finish_turn(turn, out);
    }

    fn finish_turn(&mut self, turn: usize, out: &mut Vec<Output>) {
        let done = {
            let mut r = lock(&self.record);
            r.turns_completed += 1;
            r.turns_completed
        };
        if self.script.faults.drop_after_turn == Some(turn + 1)
            || self.script.faults.drop_after_turn == Some(done)
        {
            let drop = Output::DropAfter(Duration::from_millis(self.script.faults.drop_delay_ms));
            match self.delayed.back().map(|(due, _)| *due) {
                Some(due) => self.delayed.push_back((due, drop)),
                None => out.push(drop),
            }
        }
    }

    fn on_tool_result(
        &mut self,
        p: PendingTool,
        result: String,
        is_error: bool,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        let spec = &self.script.turns[p.turn].tool_calls[p.index];
        for want in &spec.expect_result_contains {
            if !result.to_lowercase().contains(&want.to_lowercase()) {
                self.fail(format!(
                    "turn {}: {} result lacks {want:?}: {result}",
                    p.turn + 1,
                    spec.tool
                ));
            }
        }
        if let Some(e) = spec.expect_error {
            if e != is_error {
                self.fail(format!(
                    "turn {}: {} is_error {is_error}, expected {e}",
                    p.turn + 1,
                    spec.tool
                ));
            }
        }
        lock(&self.record).tool_results.push(ToolResultRecord {
            tool_name: p.call.tool_name.clone(),
            tool_call_id: p.call.tool_call_id.clone(),
            parameters: p.call.parameters.clone(),
            result: result.clone(),
            is_error,
            latency_ms: now.saturating_duration_since(p.sent_at).as_millis() as u64,
        });
        self.last_result = result.chars().take(400).collect();
        self.next_tool_or_reply(p.turn, p.index + 1, now, out);
    }

    /// The conversation ended at `now`: record why, and which pings went unanswered for more
    /// than a second (a ping sent just before the end is not held against the client).
    pub fn finish(&mut self, reason: &str, now: Instant) {
        let mut r = lock(&self.record);
        r.pongs_missing = self
            .outstanding_pings
            .iter()
            .filter(|(_, sent)| now.saturating_duration_since(**sent) > Duration::from_secs(1))
            .map(|(id, _)| *id)
            .collect();
        if r.ended.is_none() {
            r.ended = Some(reason.to_owned());
        }
    }
}

/// The prefix of `text` a listener heard after `fraction` of its audio, cut at a word boundary.
pub fn cut_text(text: &str, fraction: f64) -> String {
    let fraction = fraction.clamp(0.0, 1.0);
    let target = (text.chars().count() as f64 * fraction).round() as usize;
    let mut out = String::new();
    for w in text.split_whitespace() {
        if out.chars().count() + w.chars().count() > target {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
    }
    out
}

async fn conversation(
    st: Arc<ElState>,
    mut socket: WebSocket,
    agent: ConversationAgent,
    via_signed_url: bool,
) {
    let n = st.counter.fetch_add(1, Ordering::Relaxed);
    let conversation_id = format!("conv_emu_{n:06}");
    let agent_id = agent.agent_id.clone();
    let mut shutdown = st.shutdown.clone();
    // Optional initiation data first.
    let mut first_audio: Option<String> = None;
    let mut initiation = None;
    match tokio::time::timeout(Duration::from_secs(2), next_text(&mut socket)).await {
        Ok(Some(text)) => match convai::parse_client(&text) {
            Ok(ClientMessage::ConversationInitiationClientData(d)) => initiation = Some(d),
            _ => first_audio = Some(text),
        },
        Ok(None) => return,
        Err(_) => {}
    }
    let no_scripts = Vec::new();
    let scripts = agent
        .restaurant
        .as_ref()
        .and_then(|r| st.scripts.get(r))
        .unwrap_or(&no_scripts);
    let vars = initiation
        .as_ref()
        .map(|d| d.dynamic_variables.clone())
        .unwrap_or_default();
    let script = pick_script(scripts, &vars);
    let config_override = initiation
        .as_ref()
        .and_then(|d| d.conversation_config_override.as_ref())
        .and_then(|o| serde_json::to_value(o).ok())
        .unwrap_or(Value::Null);
    let override_first = initiation
        .as_ref()
        .and_then(|d| d.conversation_config_override.as_ref())
        .and_then(|o| o.agent.as_ref())
        .and_then(|a| a.first_message.clone());
    let record = st.recorder.add(ConversationRecord {
        conversation_id: conversation_id.clone(),
        agent_id: agent_id.clone(),
        scenario: script.map(|s| s.name.clone()),
        via_signed_url,
        initiation: initiation.as_ref().map(|d| {
            serde_json::from_str(
                &ClientMessage::ConversationInitiationClientData(d.clone()).to_json(),
            )
            .unwrap_or(Value::Null)
        }),
        dynamic_variables: vars.clone(),
        ..Default::default()
    });
    if let Some((field, path)) = agent.refused_override(&config_override) {
        // What the server does: an error event, then close 1008 (policy violation).
        let message = format!("Override for field '{field}' is not allowed by config.");
        let event = ServerMessage::Error(convai::AgentErrorEvent {
            error_type: Some("override_error".into()),
            code: Some(1008),
            message: Some(message.clone()),
        });
        let _ = socket.send(Message::Text(event.to_json().into())).await;
        let _ = socket
            .send(Message::Close(Some(axum::extract::ws::CloseFrame {
                code: 1008,
                reason: message.into(),
            })))
            .await;
        {
            let mut r = lock(&record);
            r.refused_override = Some(path.clone());
            r.ended = Some("override_error".into());
        }
        st.recorder.changed.notify_waiters();
        tracing::info!(%conversation_id, %agent_id, field = %path, "emulated conversation refused: override not allowed");
        return;
    }
    let script = script
        .cloned()
        .unwrap_or_else(|| Scenario::unscripted(&agent_id));
    tracing::info!(%conversation_id, %agent_id, scenario = %script.name, "emulated conversation started");
    let mut engine = Engine::new(
        agent,
        script.agent.clone(),
        vars,
        record.clone(),
        st.record_audio,
    );
    let ping_every = script.agent.ping_interval_ms;
    let mut outputs = engine.start(&conversation_id, override_first);
    if !st.delays.greeting.is_zero() {
        // The metadata at once (the first output, when the agent sends it); the greeting once
        // its speech is synthesized.
        let greeting_at = usize::from(engine.sends("conversation_initiation_metadata")).min(outputs.len());
        let greeting = outputs.split_off(greeting_at);
        for o in outputs.drain(..) {
            if let Output::Send(text) = o {
                if socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
        }
        tokio::time::sleep(st.delays.greeting).await;
        outputs = greeting;
    }
    if let Some(text) = first_audio {
        outputs.extend(engine.on_text(&text, Instant::now()));
    }
    let mut ping = tokio::time::interval(Duration::from_millis(ping_every.max(10)));
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let mut drop_at: Option<tokio::time::Instant> = None;
    let reason = loop {
        for o in outputs.drain(..) {
            match o {
                Output::Send(text) => {
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                Output::DropAfter(d) => drop_at = Some(tokio::time::Instant::now() + d),
            }
        }
        let tool_deadline = engine.tool_deadline();
        tokio::select! {
            msg = socket.recv() => match msg {
                Some(Ok(Message::Text(t))) => outputs = engine.on_text(t.as_str(), Instant::now()),
                Some(Ok(Message::Binary(_))) => lock(&record).malformed.push("binary frame".into()),
                Some(Ok(Message::Close(_))) | None => break "client closed",
                Some(Ok(_)) => {}
                Some(Err(_)) => break "client connection error",
            },
            _ = ping.tick(), if ping_every > 0 && engine.pings() => outputs = engine.ping(Instant::now()),
            _ = sleep_until_opt(tool_deadline) => outputs = engine.on_tool_timeout(Instant::now()),
            _ = sleep_until_opt(drop_at.map(|d| d.into_std())) => {
                lock(&record).dropped_by_fault = true;
                let refuse = script.agent.faults.refuse_signed_url_after_drop;
                if refuse > 0 {
                    *lock(&st.refusals).entry(script.restaurant.clone()).or_insert(0) += refuse;
                }
                engine.finish("dropped by fault injection", Instant::now());
                st.recorder.changed.notify_waiters();
                // Dropping the socket closes TCP without a close frame.
                return;
            }
            _ = shutdown.changed() => {
                let _ = socket.send(Message::Close(None)).await;
                break "emulator shutdown";
            }
        }
    };
    engine.finish(reason, Instant::now());
    st.recorder.changed.notify_waiters();
    tracing::info!(%conversation_id, reason, "emulated conversation ended");
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

async fn next_text(socket: &mut WebSocket) -> Option<String> {
    loop {
        match socket.recv().await? {
            Ok(Message::Text(t)) => return Some(t.as_str().to_owned()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::strategy::Strategy as _;

    /// A stored agent speaking `format`, sending `events`, declaring tool `t` (`{x: integer}`).
    fn stored(format: &str, events: &[&str]) -> ConversationAgent {
        let agent = json!({
            "agent_id": "a",
            "conversation_config": {
                "asr": {"user_input_audio_format": format},
                "tts": {"agent_output_audio_format": format},
                "conversation": {"client_events": events},
                "agent": {"first_message": "Hello, how can I help you?", "prompt": {"tool_ids": ["tool_t"]}},
            },
        });
        let tools = [
            json!({"id": "tool_t", "tool_config": {"type": "client", "name": "t",
            "parameters": {"type": "object", "properties": {"x": {"type": "integer", "description": "x"}}},
            "response_timeout_secs": 2}}),
        ];
        ConversationAgent::from_stored(&agent, &tools).unwrap()
    }

    /// Every event the bridge consumes, as a synced agent has them.
    const ALL_EVENTS: &[&str] = pulsara_core::agent::CLIENT_EVENTS;
    fn engine() -> (Engine, Arc<Mutex<ConversationRecord>>) {
        engine_with(stored("pcm_16000", ALL_EVENTS), "{ x = 1 }", "t")
    }

    fn engine_with(
        agent: ConversationAgent,
        params: &str,
        tool: &str,
    ) -> (Engine, Arc<Mutex<ConversationRecord>>) {
        let sc = Scenario::from_toml(
            &format!(
                r#"
name = "p"
restaurant = "r"
[[agent.turns]]
user = "u1"
agent = "Reply one with {{result}}"
[[agent.turns.tool_calls]]
tool = "{tool}"
params = {params}
[[agent.turns]]
user = "u2"
agent = "Reply two"
"#
            ),
            "inline",
        )
        .unwrap();
        let rec = Arc::new(Mutex::new(ConversationRecord::default()));
        (
            Engine::new(agent, sc.agent, BTreeMap::new(), rec.clone(), true),
            rec,
        )
    }

    /// Caller speech at 16 kHz PCM after 3 s of silence; the server frames it caused.
    fn speak(e: &mut Engine, now: Instant) -> Vec<ServerMessage<'static>> {
        let speech = crate::synth::synthesize("hello there friend", Voice::CALLER, 16000);
        let mut pcm = vec![0i16; 48000];
        pcm.extend_from_slice(&speech);
        pcm.extend(vec![0i16; 16000]);
        let mut got = Vec::new();
        for c in pcm.chunks(320) {
            let bytes = pulsara_media::audio::pcm::samples_to_bytes(c);
            let frame = convai::user_audio_chunk_json(&B64.encode(bytes)).unwrap();
            for o in e.on_text(&frame, now) {
                if let Output::Send(t) = o {
                    got.push(convai::parse_server(&t).unwrap().into_owned());
                }
            }
        }
        got
    }

    #[test]
    fn only_the_agents_client_events_are_sent() {
        // Without client_tool_call the call is made but never reaches the client: it times out.
        let events = ["audio", "agent_response", "user_transcript"];
        let (mut e, rec) = engine_with(stored("pcm_16000", &events), "{ x = 1 }", "t");
        let now = Instant::now();
        let start = e.start("c", None);
        assert!(start.iter().all(
            |o| matches!(o, Output::Send(t) if !t.contains("conversation_initiation_metadata"))
        ));
        assert!(e.ping(now).is_empty() && !e.pings());
        let got = speak(&mut e, now);
        assert_eq!(
            got.iter().map(|m| m.kind()).collect::<Vec<_>>(),
            ["user_transcript"]
        );
        assert!(e
            .tool_deadline()
            .is_some_and(|d| d <= now + Duration::from_secs(2)));
        let out = e.on_tool_timeout(now + Duration::from_secs(2));
        assert!(!out.is_empty(), "the apology is spoken");
        assert!(lock(&rec).failures[0].contains("no client_tool_result for t"));
    }

    #[test]
    fn undeclared_tools_and_bad_arguments_are_never_called() {
        for (params, tool, why) in [
            (
                "{ x = 1 }",
                "not_declared",
                "is not a client tool of agent a",
            ),
            ("{ x = \"one\" }", "t", "/x: expected integer"),
            ("{ y = 1 }", "t", "/y: property not in the tool's schema"),
        ] {
            let (mut e, rec) = engine_with(stored("pcm_16000", ALL_EVENTS), params, tool);
            let now = Instant::now();
            let _ = e.start("c", None);
            let got = speak(&mut e, now);
            let kinds: Vec<_> = got.iter().map(|m| m.kind()).collect();
            assert!(!kinds.contains(&"client_tool_call"), "{kinds:?}");
            assert!(
                kinds.contains(&"agent_response"),
                "the turn goes on: {kinds:?}"
            );
            let r = lock(&rec);
            assert!(
                r.refused_tool_calls[0].contains(why),
                "{:?}",
                r.refused_tool_calls
            );
            assert_eq!(r.failures, r.refused_tool_calls);
        }
    }

    proptest::proptest! {
        #[test]
        fn engine_survives_arbitrary_client_frames(frames in proptest::collection::vec(
            proptest::prop_oneof![
                "\\PC{0,80}",
                proptest::collection::vec(proptest::num::u8::ANY, 0..700).prop_map(|b| format!(r#"{{"user_audio_chunk":"{}"}}"#, B64.encode(b))),
                (0u64..20).prop_map(|id| format!(r#"{{"type":"pong","event_id":{id}}}"#)),
                "[a-z_]{1,12}".prop_map(|id| format!(r#"{{"type":"client_tool_result","tool_call_id":"{id}","result":"r","is_error":false}}"#)),
                proptest::strategy::Just(r#"{"type":"user_activity"}"#.to_owned()),
            ], 0..40)) {
            let (mut e, rec) = engine();
            let now = Instant::now();
            let _ = e.start("c", None);
            for f in &frames {
                for o in e.on_text(f, now) {
                    if let Output::Send(t) = o {
                        proptest::prop_assert!(convai::parse_server(&t).is_ok(), "{}", t);
                    }
                }
                let _ = e.ping(now);
            }
            let _ = e.on_tool_timeout(now + Duration::from_secs(60));
            e.finish("done", now + Duration::from_secs(61));
            proptest::prop_assert!(lock(&rec).ended.is_some());
        }
    }

    #[test]
    fn engine_turn_with_tool_and_barge_in_sans_io() {
        let (mut e, rec) = engine();
        let now = Instant::now();
        let start = e.start("c", None);
        // metadata, agent_response, then the greeting audio in 250 ms chunks.
        let greeting_ms = crate::synth::duration_ms("Hello, how can I help you?");
        assert_eq!(start.len() as u64, 2 + greeting_ms.div_ceil(250));
        // The first ping has no round trip to report yet: `ping_ms` is null, not absent.
        let Output::Send(ping) = &e.ping(now)[0] else {
            panic!()
        };
        assert!(ping.contains(r#""ping_ms":null"#), "{ping}");
        let kinds = speak(&mut e, now);
        assert_eq!(kinds.len(), 2, "{kinds:?}");
        let ServerMessage::UserTranscript {
            text,
            event_id: Some(_),
        } = &kinds[0]
        else {
            panic!("{kinds:?}")
        };
        assert_eq!(text, "u1");
        let ServerMessage::ClientToolCall(call) = &kinds[1] else {
            panic!()
        };
        assert!(call.event_id.is_some());
        let result = ClientMessage::ClientToolResult {
            tool_call_id: call.tool_call_id.clone(),
            result: "R!".into(),
            is_error: false,
        };
        let out = e.on_text(&result.to_json(), now);
        let ServerMessage::AgentResponse {
            text,
            event_id: Some(_),
        } = convai::parse_server(match &out[0] {
            Output::Send(t) => t,
            _ => panic!(),
        })
        .unwrap()
        else {
            panic!()
        };
        assert_eq!(text, "Reply one with R!");
        assert!(out.len() > 2, "audio follows");
        assert_eq!(lock(&rec).tool_results.len(), 1);
        assert_eq!(lock(&rec).turns_completed, 1);
    }

    #[test]
    fn response_delay_holds_the_reply_on_the_audio_clock() {
        let sc = Scenario::from_toml(
            r#"
name = "d"
restaurant = "r"
[agent]
response_delay_ms = 600
[[agent.turns]]
user = "u1"
agent = "Reply one"
[[agent.turns]]
user = "u2"
agent = "Reply two"
"#,
            "inline",
        )
        .unwrap();
        let rec = Arc::new(Mutex::new(ConversationRecord::default()));
        let mut e = Engine::new(
            stored("ulaw_8000", ALL_EVENTS),
            sc.agent,
            BTreeMap::new(),
            rec.clone(),
            false,
        );
        let now = Instant::now();
        let _ = e.start("c", None);
        let speech: Vec<u8> = crate::synth::synthesize("hello there", Voice::CALLER, 8000)
            .iter()
            .map(|&s| pulsara_media::audio::mulaw::encode(s))
            .collect();
        let feed = |e: &mut Engine, bytes: &[u8]| -> Vec<(u64, String)> {
            let mut got = Vec::new();
            for c in bytes.chunks(160) {
                let f = convai::user_audio_chunk_json(&B64.encode(c)).unwrap();
                for o in e.on_text(&f, now) {
                    if let Output::Send(t) = o {
                        got.push((
                            e.now_ms(),
                            convai::parse_server(&t).unwrap().kind().to_owned(),
                        ));
                    }
                }
            }
            got
        };
        let mut audio = vec![0xFFu8; 8 * 3000];
        audio.extend_from_slice(&speech);
        audio.extend(vec![0xFFu8; 8 * 2000]);
        let got = feed(&mut e, &audio);
        let transcript_at = got.iter().find(|(_, k)| k == "user_transcript").unwrap().0;
        let reply_at = got.iter().find(|(_, k)| k == "agent_response").unwrap().0;
        assert!(
            reply_at >= transcript_at + 600 && reply_at <= transcript_at + 640,
            "{transcript_at} → {reply_at}"
        );
        // Speaking again while the next reply is still held back cancels it silently.
        let mut audio = vec![0xFFu8; 8 * 3000];
        audio.extend_from_slice(&speech);
        audio.extend(vec![0xFFu8; 8 * 400]); // the turn ends, the reply is held …
        audio.extend_from_slice(&speech); // … and the caller talks over the silence.
        audio.extend(vec![0xFFu8; 8 * 3000]);
        let got = feed(&mut e, &audio);
        assert!(!got.iter().any(|(_, k)| k == "interruption"), "{got:?}");
        let r = lock(&rec);
        assert_eq!(r.interruptions.len(), 1);
        assert_eq!(r.interruptions[0].corrected, "");
        assert_eq!(r.interruptions[0].original, "Reply two");
    }

    #[test]
    fn cut_text_at_word_boundaries() {
        let t = "We open at nine tomorrow morning";
        assert_eq!(cut_text(t, 0.0), "");
        assert_eq!(cut_text(t, 0.35), "We open at");
        assert_eq!(cut_text(t, 1.0), t);
        assert_eq!(cut_text(t, 7.0), t);
    }
}
