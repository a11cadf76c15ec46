//! The emulators scripted by frame count, for the bridge's own tests and its load harness: an
//! agent server (signed URL + ConvAI WebSocket) and a Twilio caller that connects to `/media`
//! exactly as Twilio does and plays agent audio with mark/clear semantics. (Twilio REST has one
//! emulator, [`crate::twilio_rest`], for both kinds of test.)
//!
//! Where [`crate::elevenlabs`] and [`crate::caller`] follow a scenario's conversation (speech,
//! turns, voice activity), these act on the number of caller frames the agent has received, so a
//! test states precisely when the agent interrupts, calls a tool or drops, and the bench can run
//! thousands of them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use pulsara_media::convai;
use pulsara_media::twilio as tw;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message as CMsg;

// ---------------------------------------------------------------------------------------------
// Agent
// ---------------------------------------------------------------------------------------------

/// Something the fake agent does.
#[derive(Debug, Clone)]
pub enum AgentAction {
    /// `agent_response` with `text`, then `chunks` audio events of 20 ms each (byte `fill`).
    Say {
        text: String,
        chunks: usize,
        event_id: u64,
        fill: u8,
    },
    /// `interruption` for `event_id`, followed by `user_transcript`.
    Interrupt {
        event_id: u64,
        transcript: String,
    },
    /// Audio of an interrupted response arriving late (must never reach the caller).
    LateAudio {
        chunks: usize,
        event_id: u64,
        fill: u8,
    },
    UserTranscript(String),
    ToolCall {
        tool: String,
        id: String,
        params: Value,
    },
    Ping(u64),
    /// Raw text frame (malformed / unknown messages).
    Raw(String),
    /// Drop the socket without a close frame.
    Drop,
    /// An `error` event of `error_type`, then a close frame with `close_code`, as ElevenLabs
    /// ends a conversation it cannot continue.
    Fail {
        error_type: String,
        close_code: u16,
    },
    /// End the conversation with a normal close frame (the agent's end-call).
    Close,
}

/// The fake agent's behaviour.
#[derive(Debug, Clone)]
pub struct AgentScript {
    pub input_format: String,
    pub output_format: String,
    /// Done right after `conversation_initiation_metadata`.
    pub on_start: Vec<AgentAction>,
    /// `(n, action)`: done when the n-th caller audio chunk arrives.
    pub on_chunk: Vec<(u64, AgentAction)>,
    /// Echo each caller chunk back as agent audio (bench: agent → caller traffic at caller cadence).
    pub echo: bool,
    /// Keep received payloads in the log (off for load tests).
    pub record_payloads: bool,
    /// Refuse the conversation at initiation as ElevenLabs does (an `error` event of this type,
    /// then close 1008) instead of sending `conversation_initiation_metadata`.
    pub refuse: Option<String>,
    /// The `conversation_config_override` fields the agent allows, as dotted paths. Any other
    /// field in the initiation refuses the conversation as the server does (`override_error`,
    /// close 1008). Default: the prompt, first message, language and voice, what an agent
    /// synced by Pulsara allows.
    pub allowed_overrides: Vec<String>,
}

impl Default for AgentScript {
    fn default() -> Self {
        AgentScript {
            input_format: "ulaw_8000".into(),
            output_format: "ulaw_8000".into(),
            on_start: Vec::new(),
            on_chunk: Vec::new(),
            echo: false,
            record_payloads: true,
            refuse: None,
            allowed_overrides: ["agent.prompt.prompt", "agent.first_message", "agent.language", "tts.voice_id"]
                .map(str::to_owned)
                .to_vec(),
        }
    }
}

/// What one conversation received.
#[derive(Debug, Clone, Default)]
pub struct AgentLog {
    pub agent_id: String,
    pub initiation: Option<Value>,
    pub audio_chunks: u64,
    /// Base64 payloads received (first 2,000).
    pub audio_payloads: Vec<String>,
    /// Every non-audio message, as JSON.
    pub messages: Vec<Value>,
    pub closed: bool,
}

impl AgentLog {
    pub fn of_type(&self, t: &str) -> Vec<&Value> {
        self.messages.iter().filter(|m| m["type"] == t).collect()
    }
}

/// Shared state of a fake agent server.
pub struct FakeAgent {
    pub api_key: String,
    /// Per agent id; falls back to `"*"`.
    pub scripts: Mutex<BTreeMap<String, AgentScript>>,
    /// Signed-URL requests answered 503 before succeeding again.
    pub refuse_signed_url: AtomicU32,
    /// WebSocket connections refused after the first `n` (u32::MAX = never).
    pub accept_ws: AtomicU32,
    pub logs: Mutex<Vec<Arc<Mutex<AgentLog>>>>,
    pub signed_url_requests: AtomicU64,
    addr: Mutex<Option<SocketAddr>>,
}

impl FakeAgent {
    pub fn new(api_key: &str, default_script: AgentScript) -> Arc<Self> {
        let mut scripts = BTreeMap::new();
        scripts.insert("*".to_owned(), default_script);
        Arc::new(FakeAgent {
            api_key: api_key.to_owned(),
            scripts: Mutex::new(scripts),
            refuse_signed_url: AtomicU32::new(0),
            accept_ws: AtomicU32::new(u32::MAX),
            logs: Mutex::new(Vec::new()),
            signed_url_requests: AtomicU64::new(0),
            addr: Mutex::new(None),
        })
    }

    /// Serves on `127.0.0.1:0`; returns the base URL.
    pub async fn spawn(self: &Arc<Self>) -> std::io::Result<String> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        *self.addr.lock().unwrap() = Some(addr);
        let app = Router::new()
            .route(
                "/v1/convai/conversation/get-signed-url",
                get(agent_signed_url),
            )
            .route("/ws", get(agent_ws))
            .with_state(self.clone());
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(format!("http://{addr}"))
    }

    pub fn logs(&self) -> Vec<AgentLog> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .map(|l| l.lock().unwrap().clone())
            .collect()
    }

    /// The conversation whose `caller_number` dynamic variable is `caller`.
    pub fn log_for_caller(&self, caller: &str) -> Option<AgentLog> {
        self.logs().into_iter().find(|l| {
            l.initiation
                .as_ref()
                .is_some_and(|i| i["dynamic_variables"]["caller_number"] == caller)
        })
    }
}

#[derive(serde::Deserialize)]
struct AgentQuery {
    agent_id: String,
}

async fn agent_signed_url(
    State(st): State<Arc<FakeAgent>>,
    headers: HeaderMap,
    Query(q): Query<AgentQuery>,
) -> Response {
    st.signed_url_requests.fetch_add(1, Ordering::SeqCst);
    if headers.get("xi-api-key").and_then(|v| v.to_str().ok()) != Some(st.api_key.as_str()) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if st
        .refuse_signed_url
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let addr = st.addr.lock().unwrap().expect("spawned");
    Json(json!({"signed_url": format!("ws://{addr}/ws?agent_id={}&token=t", q.agent_id)}))
        .into_response()
}

async fn agent_ws(
    State(st): State<Arc<FakeAgent>>,
    Query(q): Query<AgentQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    if st
        .accept_ws
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_err()
    {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let script = {
        let s = st.scripts.lock().unwrap();
        s.get(&q.agent_id)
            .or_else(|| s.get("*"))
            .cloned()
            .unwrap_or_default()
    };
    let log = Arc::new(Mutex::new(AgentLog {
        agent_id: q.agent_id,
        ..Default::default()
    }));
    st.logs.lock().unwrap().push(log.clone());
    ws.on_upgrade(move |socket| agent_conversation(socket, script, log))
}

async fn fail(socket: &mut WebSocket, error_type: &str, close_code: u16) {
    let event = json!({"type":"error","error_event":{"error_type":error_type,"code":close_code,"message":format!("{error_type} (test agent)")}});
    let _ = socket.send(Message::Text(event.to_string().into())).await;
    let _ = socket
        .send(Message::Close(Some(axum::extract::ws::CloseFrame {
            code: close_code,
            reason: error_type.to_owned().into(),
        })))
        .await;
}

fn chunk_b64(format: &str, fill: u8) -> String {
    // 20 ms of audio in the agent's output format.
    let bytes = match format {
        "ulaw_8000" => 160,
        f => f
            .strip_prefix("pcm_")
            .and_then(|r| r.parse::<usize>().ok())
            .map_or(640, |r| r / 50 * 2),
    };
    if format == "ulaw_8000" {
        B64.encode(vec![fill; bytes])
    } else {
        // A quiet tone rather than constant bytes, so transcoding has real signal.
        let rate = bytes / 2 * 50;
        let samples: Vec<u8> = (0..bytes / 2)
            .flat_map(|i| {
                let v = ((i as f32 * 440.0 * std::f32::consts::TAU / rate as f32).sin()
                    * (fill as f32 * 40.0)) as i16;
                v.to_le_bytes()
            })
            .collect();
        B64.encode(samples)
    }
}

async fn agent_conversation(mut socket: WebSocket, script: AgentScript, log: Arc<Mutex<AgentLog>>) {
    // Initiation first.
    let Some(Ok(Message::Text(init))) = socket.next().await else {
        return;
    };
    let init: Value = serde_json::from_str(&init).unwrap_or(Value::Null);
    let caller = init["dynamic_variables"]["caller_number"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    // The server's check, against permission flags built from the allowed paths.
    let mut flags = json!({});
    for path in &script.allowed_overrides {
        let mut at = &mut flags;
        for part in path.split('.') {
            at = &mut at[part];
        }
        *at = json!(true);
    }
    let refused = crate::stored_agent::refused_override(&flags, &init["conversation_config_override"]).is_some();
    log.lock().unwrap().initiation = Some(init);
    if let Some(error_type) = script.refuse.as_deref().or(refused.then_some("override_error")) {
        fail(&mut socket, error_type, 1008).await;
        return;
    }
    let meta = json!({"type":"conversation_initiation_metadata","conversation_initiation_metadata_event":{
        "conversation_id": format!("conv_{}", rand_id()),
        "agent_output_audio_format": script.output_format,
        "user_input_audio_format": script.input_format}});
    if socket
        .send(Message::Text(meta.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    for a in &script.on_start {
        if !agent_do(&mut socket, &script, a, &caller).await {
            return;
        }
    }
    let mut n = 0u64;
    while let Some(Ok(msg)) = socket.next().await {
        let Message::Text(text) = msg else {
            if matches!(msg, Message::Close(_)) {
                break;
            }
            continue;
        };
        // Fast path for audio (the load harness sends thousands per second).
        let fast = text
            .strip_prefix("{\"user_audio_chunk\":\"")
            .and_then(|r| r.strip_suffix("\"}"))
            .filter(|a| !a.contains('"'))
            .map(str::to_owned);
        let v: Value = if fast.is_some() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::Null)
        };
        if let Some(audio) = fast.as_deref().or_else(|| v["user_audio_chunk"].as_str()) {
            n += 1;
            if script.record_payloads {
                let mut l = log.lock().unwrap();
                l.audio_chunks += 1;
                if l.audio_payloads.len() < 2000 {
                    l.audio_payloads.push(audio.to_owned());
                }
            }
            if script.echo {
                let frame = convai::audio_json(audio, 1).unwrap_or_default();
                if socket.send(Message::Text(frame.into())).await.is_err() {
                    break;
                }
            }
            for (at, a) in &script.on_chunk {
                if *at == n && !agent_do(&mut socket, &script, a, &caller).await {
                    log.lock().unwrap().closed = true;
                    return;
                }
            }
        } else {
            log.lock().unwrap().messages.push(v);
        }
    }
    log.lock().unwrap().closed = true;
}

/// Performs one action; `false` when the socket should be abandoned.
async fn agent_do(
    socket: &mut WebSocket,
    script: &AgentScript,
    a: &AgentAction,
    caller: &str,
) -> bool {
    let sub = |t: &str| t.replace("{caller_number}", caller);
    let mut frames = Vec::new();
    match a {
        AgentAction::Say { text, chunks, event_id, fill } => {
            frames.push(json!({"type":"agent_response","agent_response_event":{"agent_response":sub(text)}}).to_string());
            for _ in 0..*chunks {
                frames.push(convai::audio_json(&chunk_b64(&script.output_format, *fill), *event_id).unwrap_or_default());
            }
        }
        AgentAction::LateAudio { chunks, event_id, fill } => {
            for _ in 0..*chunks {
                frames.push(convai::audio_json(&chunk_b64(&script.output_format, *fill), *event_id).unwrap_or_default());
            }
        }
        AgentAction::Interrupt { event_id, transcript } => {
            frames.push(json!({"type":"interruption","interruption_event":{"event_id":event_id}}).to_string());
            frames.push(json!({"type":"user_transcript","user_transcription_event":{"user_transcript":transcript}}).to_string());
        }
        AgentAction::UserTranscript(t) => frames.push(
            json!({"type":"user_transcript","user_transcription_event":{"user_transcript":sub(t)}}).to_string(),
        ),
        AgentAction::ToolCall { tool, id, params } => frames.push(
            json!({"type":"client_tool_call","client_tool_call":{"tool_name":tool,"tool_call_id":id,"parameters":params}}).to_string(),
        ),
        AgentAction::Ping(id) => {
            frames.push(json!({"type":"ping","ping_event":{"event_id":id,"ping_ms":5}}).to_string())
        }
        AgentAction::Raw(s) => frames.push(s.clone()),
        AgentAction::Drop => return false,
        AgentAction::Fail { error_type, close_code } => {
            fail(socket, error_type, *close_code).await;
            return false;
        }
        AgentAction::Close => {
            let _ = socket
                .send(Message::Close(Some(axum::extract::ws::CloseFrame { code: 1000, reason: "end_call".into() })))
                .await;
            return false;
        }
    }
    for f in frames {
        if socket.send(Message::Text(f.into())).await.is_err() {
            return false;
        }
    }
    true
}

fn rand_id() -> u64 {
    static N: AtomicU64 = AtomicU64::new(1);
    N.fetch_add(1, Ordering::Relaxed)
}

// ---------------------------------------------------------------------------------------------
// Caller
// ---------------------------------------------------------------------------------------------

/// Something the fake caller does at a given frame number.
#[derive(Debug, Clone)]
pub enum CallerAction {
    Dtmf(String),
    /// A raw text frame (malformed or unknown events).
    Raw(String),
    /// `stop`, then close.
    Stop,
}

/// A simulated Twilio call.
#[derive(Debug, Clone)]
pub struct CallerScript {
    pub ws_url: String,
    pub call_sid: String,
    pub stream_sid: String,
    pub params: BTreeMap<String, String>,
    /// Caller frames (20 ms each) to send before `stop`.
    pub frames: u64,
    /// Interval between frames (20 ms = real time).
    pub frame_interval: Duration,
    /// Byte value of caller audio (μ-law).
    pub fill: u8,
    pub actions: Vec<(u64, CallerAction)>,
    /// After the last frame, wait this long (for the agent's last words) before `stop`.
    pub linger: Duration,
}

/// What the caller saw.
#[derive(Debug, Clone, Default)]
pub struct CallerLog {
    /// Agent audio payloads as received, in order, with the index of the clear before them.
    pub media: Vec<(String, usize)>,
    pub clears: usize,
    pub marks_echoed: u64,
    /// When the latest mark was echoed.
    pub last_mark_at: Option<Instant>,
    pub other: Vec<String>,
    /// The bridge closed the socket (or it failed) before the caller stopped.
    pub closed_by_bridge: bool,
    pub close_code: Option<u16>,
    /// Per received agent media frame: microseconds since the caller sent its latest frame.
    pub sent_frames: u64,
}

/// Runs one caller to completion.
///
/// # Errors
/// The WebSocket connection could not be opened (the message says why).
pub async fn run_caller(s: CallerScript) -> Result<CallerLog, String> {
    // TCP_NODELAY, as Twilio's frames arrive: one 20 ms frame at a time, never batched.
    let (ws, _) = tokio_tungstenite::connect_async_with_config(s.ws_url.as_str(), None, true)
        .await
        .map_err(|e| e.to_string())?;
    let (mut tx, mut rx) = ws.split();
    let send = |t: String| CMsg::text(t);
    let _ = tx
        .send(send(
            r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#.into(),
        ))
        .await;
    let start = json!({"event":"start","sequenceNumber":"1","streamSid":s.stream_sid,"start":{
        "accountSid":"AC0","streamSid":s.stream_sid,"callSid":s.call_sid,"tracks":["inbound"],
        "customParameters":s.params,
        "mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}});
    tx.send(send(start.to_string()))
        .await
        .map_err(|e| e.to_string())?;
    let mut log = CallerLog::default();
    let payload = B64.encode(vec![s.fill; 160]);
    let mut seq = 2u64;
    let mut frame = 0u64;
    let mut ticker = tokio::time::interval(s.frame_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Playback model: audio plays back-to-back from `cursor`; a mark is echoed when reached.
    let mut cursor = Instant::now();
    let mut marks: std::collections::VecDeque<(String, Instant)> = Default::default();
    let mut linger_until: Option<tokio::time::Instant> = None;
    let started = Instant::now();
    loop {
        let now = Instant::now();
        while marks.front().is_some_and(|(_, at)| *at <= now) {
            let (name, _) = marks.pop_front().expect("checked");
            log.marks_echoed += 1;
            log.last_mark_at = Some(now);
            let m = json!({"event":"mark","streamSid":s.stream_sid,"sequenceNumber":seq.to_string(),"mark":{"name":name}});
            seq += 1;
            if tx.send(send(m.to_string())).await.is_err() {
                log.closed_by_bridge = true;
                return Ok(log);
            }
        }
        tokio::select! {
            _ = ticker.tick(), if linger_until.is_none() => {
                frame += 1;
                for (at, a) in &s.actions {
                    if *at != frame { continue; }
                    let text = match a {
                        CallerAction::Dtmf(d) => json!({"event":"dtmf","streamSid":s.stream_sid,"sequenceNumber":seq.to_string(),"dtmf":{"track":"inbound_track","digit":d}}).to_string(),
                        CallerAction::Raw(r) => r.clone(),
                        CallerAction::Stop => {
                            let _ = stop(&mut tx, &s, seq).await;
                            return Ok(log);
                        }
                    };
                    seq += 1;
                    if tx.send(send(text)).await.is_err() { log.closed_by_bridge = true; return Ok(log); }
                }
                if frame > s.frames {
                    linger_until = Some(tokio::time::Instant::now() + s.linger);
                    continue;
                }
                let m = format!(
                    r#"{{"event":"media","sequenceNumber":"{seq}","streamSid":"{}","media":{{"track":"inbound","chunk":"{frame}","timestamp":"{}","payload":"{payload}"}}}}"#,
                    s.stream_sid, started.elapsed().as_millis()
                );
                seq += 1;
                log.sent_frames += 1;
                if tx.send(send(m)).await.is_err() { log.closed_by_bridge = true; return Ok(log); }
            }
            _ = async { tokio::time::sleep_until(linger_until.expect("guarded")).await }, if linger_until.is_some() => {
                let _ = stop(&mut tx, &s, seq).await;
                return Ok(log);
            }
            _ = tokio::time::sleep(Duration::from_millis(5)), if !marks.is_empty() => {}
            msg = rx.next() => {
                let text = match msg {
                    Some(Ok(CMsg::Text(t))) => t,
                    Some(Ok(CMsg::Close(f))) => {
                        log.close_code = f.map(|f| u16::from(f.code));
                        log.closed_by_bridge = true;
                        return Ok(log);
                    }
                    None | Some(Err(_)) => { log.closed_by_bridge = true; return Ok(log); }
                    Some(Ok(_)) => continue,
                };
                match tw::parse_outbound(&text) {
                    Ok(tw::Outbound::Media { payload_b64, .. }) => {
                        let bytes = B64.decode(payload_b64.as_ref()).map(|b| b.len()).unwrap_or(0);
                        let now = Instant::now();
                        cursor = cursor.max(now) + Duration::from_micros(bytes as u64 * 125);
                        log.media.push((payload_b64.into_owned(), log.clears));
                    }
                    Ok(tw::Outbound::Mark { name, .. }) => marks.push_back((name.into_owned(), cursor.max(Instant::now()))),
                    Ok(tw::Outbound::Clear { .. }) => {
                        log.clears += 1;
                        cursor = Instant::now();
                        for m in marks.iter_mut() { m.1 = cursor; }
                    }
                    Err(_) => log.other.push(text.to_string()),
                }
            }
        }
    }
}

async fn stop<S>(tx: &mut S, s: &CallerScript, seq: u64) -> Result<(), ()>
where
    S: futures_util::Sink<CMsg> + Unpin,
{
    let m = json!({"event":"stop","streamSid":s.stream_sid,"sequenceNumber":seq.to_string(),"stop":{"accountSid":"AC0","callSid":s.call_sid}});
    tx.send(CMsg::text(m.to_string())).await.map_err(|_| ())?;
    let _ = tx.close().await;
    Ok(())
}

/// Waits until `f` holds, checking every 10 ms; panics naming `what` after `within`. For a
/// test to wait on a condition it can observe, never for a fixed time.
pub async fn eventually(what: &str, within: std::time::Duration, mut f: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + within;
    while !f() {
        assert!(tokio::time::Instant::now() < end, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
