//! The per-call I/O shell around [`crate::machine::CallMachine`]: one task per Media Stream that
//! reads `start`, authenticates it (handoff token, single use), loads the restaurant, admits the
//! call under the caps, connects to ElevenLabs (with one retry), pumps frames both ways, runs tools
//! with a timeout, performs transfers / fallbacks through Twilio's REST API, and finally hands the
//! call record to the sink.
//!
//! Failure rules: a bad stream is closed before ElevenLabs is touched; an agent failure gets one
//! more attempt within about a second and then the restaurant fallback (never dead air); a Twilio
//! socket drop closes the agent and finalises the call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message as TwMessage, WebSocket};
use chrono::{SecondsFormat, Utc};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use pulsara_core::call_record::{CallRecord, EndReason, Fallback};
use pulsara_core::config::{KnowledgeBase, RestaurantConfig};
use pulsara_core::handoff::{HandoffClaims, HandoffFallback};
use pulsara_core::twiml::{self, SayVoice};
use pulsara_media::convai;
use pulsara_media::twilio::{self as tw, Inbound, Start};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as AgMessage;
use tracing::{debug, info, warn, Instrument};

use crate::agent::{AgentError, AgentSocket, ConnectResult};
use crate::config::ms;
use crate::machine::{CallInfo, CallMachine, MachineLimits, Out};
use crate::ports::{ToolContext, ToolError, ToolOutcome};
use crate::overload::PendingStart;
use crate::app::App;

type TwTx = SplitSink<WebSocket, TwMessage>;
type TwRx = SplitStream<WebSocket>;
type AgTx = SplitSink<AgentSocket, AgMessage>;
type AgRx = SplitStream<AgentSocket>;

/// A stream whose task first runs this long after its upgrade is logged: the process is
/// overloaded.
const START_TASK_LATE: Duration = Duration::from_secs(1);
/// Malformed frames tolerated before `start`.
const MAX_GARBAGE_BEFORE_START: usize = 16;
/// Longest wait for the agent's last words to play before hanging up.
const HANGUP_PLAYBACK_MAX: Duration = Duration::from_secs(15);
/// Pause before the second agent attempt.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

struct ToolDone {
    tool_call_id: String,
    tool: String,
    input: serde_json::Value,
    result: Result<ToolOutcome, ToolError>,
    duration_us: u64,
}

/// Opens the agent session of a call to `cfg`'s agent (signed URL, socket, initiation) in the
/// background, with up to `attempts` tries: for a stream, and for a session prepared ahead of
/// one ([`crate::prepare`]).
pub(crate) fn connect_task(
    app: Arc<App>,
    cfg: Arc<RestaurantConfig>,
    kb: Arc<KnowledgeBase>,
    caller: String,
    attempts: u32,
    first_message: Option<String>,
) -> tokio::task::JoinHandle<ConnectResult> {
    tokio::spawn(async move {
        let (init, skipped) =
            crate::vars::initiation(&cfg, &kb, &caller, app.clock.now(), first_message.as_deref());
        if !skipped.is_empty() {
            let fields: Vec<&str> = skipped.iter().map(|o| o.path()).collect();
            warn!(
                restaurant = %cfg.id,
                skipped = ?fields,
                "overrides not sent: the restaurant's agent does not allow them (pulsara agents sync repairs it)"
            );
        }
        let timeout = ms(app.cfg.limits.agent_connect_timeout_ms);
        let mut last = None;
        for attempt in 0..attempts {
            if attempt > 0 {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            match app
                .agent
                .connect(&cfg.agent.elevenlabs_agent_id, &init, timeout)
                .await
            {
                Ok(ok) => return Ok(ok),
                Err(e) => {
                    app.metrics.error("agent_connect");
                    warn!(attempt, error = %e, "agent connect failed");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(AgentError::ClosedEarly))
    })
}

/// Runs one Media Stream to completion; `pending` holds its place among the streams waiting for
/// `start` and carries when it was upgraded.
pub async fn run(socket: WebSocket, app: Arc<App>, pending: PendingStart) {
    let (mut tx, mut rx) = socket.split();
    let start = match read_start(&mut rx, &app, pending).await {
        Some(s) => s,
        None => {
            let _ = tx.close().await;
            return;
        }
    };
    let start_read = Instant::now();
    let start_peer_ms = app.clock.peer_unix_ms();
    let span = tracing::info_span!("call", call_sid = %start.call_sid, stream_sid = %start.stream_sid, restaurant_id = tracing::field::Empty);
    async move {
        // The stream started when its `start` was read: call times count from there.
        let started_at = app.clock.now();
        let Some((cfg, kb, claims)) = authenticate(&start, &app, &mut tx).await else {
            return;
        };
        tracing::Span::current().record("restaurant_id", cfg.id.as_str());
        let caller = start
            .custom_parameters
            .get("caller")
            .cloned()
            .unwrap_or_default();
        let called = start
            .custom_parameters
            .get("called")
            .cloned()
            .unwrap_or_default();
        let info = CallInfo {
            call_sid: start.call_sid.clone(),
            stream_sid: start.stream_sid.clone(),
            restaurant: cfg.clone(),
            config_version: claims.config_version,
            caller: caller.clone(),
            called,
            started_at: started_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        };
        // The agent session prepared for this call while Twilio connected, if any (only with
        // the very token this stream carries).
        let token = start.custom_parameters.get("handoff").map(String::as_str).unwrap_or("");
        let prepared = app.prepared.claim_for_stream(&app, &claims, &start.call_sid, token);
        let Some(admission) = app.admit(&cfg.id, cfg.max_concurrent_calls) else {
            if let Some(p) = prepared {
                p.abort();
            }
            busy(&app, info, &mut tx).await;
            return;
        };
        app.metrics.call_started();
        info!(caller = %caller, "call started");
        let mut call = Call::new(app.clone(), info, kb, tx, rx);
        call.started = start_read;
        if prepared.is_some() {
            call.m.latency.note_prepared();
            info!("adopting the agent session prepared for this call");
        }
        call.prepared = prepared;
        // The bridge's own part of the first audio begins with handling `start`.
        call.m.latency.note_start_share(start_read.elapsed().as_micros() as u64);
        let mut record = call.run().await;
        app.metrics.call_ended(record.end_reason.as_str());
        if let Some(lat) = record.latency.as_mut() {
            // When the edge answered, against when the first audio went out, both on the
            // peers' clock.
            let answered = start.custom_parameters.get("answered_at_ms").and_then(|v| v.parse::<i64>().ok());
            if let (Some(answered), Some(first)) = (answered, lat.first_audio_ms) {
                let first_unix_ms = start_peer_ms.saturating_add(i64::try_from(first).unwrap_or(i64::MAX));
                lat.first_audio_from_webhook_ms = crate::latency::from_webhook(answered, first_unix_ms);
            }
            app.metrics.call_latency(&record.restaurant_id, lat);
        }
        drop(admission);
        info!(
            end_reason = record.end_reason.as_str(),
            duration_ms = record.duration_ms,
            "call ended"
        );
        deliver(&app, record).await;
    }
    .instrument(span)
    .await
}

/// Reads frames until `start`, by a deadline counted from the upgrade (`pending`), not from when
/// this task first ran: under load a task can run seconds late while the caller hears nothing.
/// A start already buffered is still read after the deadline; a stream that sent none is closed.
/// Dropping `pending` on return releases the stream's place among those waiting.
async fn read_start(rx: &mut TwRx, app: &App, pending: PendingStart) -> Option<Start> {
    let upgraded_at = pending.upgraded_at();
    let deadline = upgraded_at + ms(app.cfg.limits.start_timeout_ms);
    let late = upgraded_at.elapsed();
    if late >= START_TASK_LATE {
        app.metrics.error("stream_task_late");
        warn!(
            waited_ms = late.as_millis() as u64,
            "stream task started late: the bridge is overloaded"
        );
    }
    let mut garbage = 0;
    loop {
        let msg = match tokio::time::timeout_at(deadline, rx.next()).await {
            Err(_) => {
                app.metrics.error("start_timeout");
                warn!(
                    waited_ms = upgraded_at.elapsed().as_millis() as u64,
                    "no start message before the deadline; closing the stream"
                );
                return None;
            }
            Ok(None) | Ok(Some(Err(_))) => return None,
            Ok(Some(Ok(m))) => m,
        };
        let TwMessage::Text(text) = msg else {
            if matches!(msg, TwMessage::Close(_)) {
                return None;
            }
            continue;
        };
        match tw::parse_inbound(&text) {
            Ok(Inbound::Start(s)) => {
                let waited = upgraded_at.elapsed();
                app.metrics.start_wait.observe(waited.as_secs_f64());
                drop(pending);
                return Some(s);
            }
            Ok(_) => {}
            Err(e) => {
                garbage += 1;
                debug!(error = %e, "malformed frame before start");
                if garbage > MAX_GARBAGE_BEFORE_START {
                    app.metrics.error("malformed_before_start");
                    return None;
                }
            }
        }
    }
}

/// Verifies the handoff token and loads the restaurant; on failure closes the stream.
async fn authenticate(
    start: &Start,
    app: &App,
    tx: &mut TwTx,
) -> Option<(Arc<RestaurantConfig>, Arc<KnowledgeBase>, HandoffClaims)> {
    let token = start
        .custom_parameters
        .get("handoff")
        .map(String::as_str)
        .unwrap_or("");
    let region = (!app.cfg.region.is_empty()).then_some(app.cfg.region.as_str());
    // The edge issued the token by its own clock (see `crate::clock`).
    let now = app.clock.peer_unix();
    let (claims, fallback) = match app.keys.verify_with_fallback(token, &start.call_sid, region, now) {
        Ok(c) => c,
        Err(e) => {
            reject(app, tx, "handoff_rejected", &e.to_string()).await;
            return None;
        }
    };
    if !app.replay.first_use(&claims.replay_key(), claims.exp, now) {
        reject(app, tx, "handoff_replayed", "handoff token already used").await;
        return None;
    }
    let loaded = tokio::try_join!(
        app.configs.restaurant(&claims.restaurant_id),
        app.configs.knowledge_base(&claims.restaurant_id)
    );
    match loaded {
        Ok((cfg, kb)) => {
            // The edge routed on a newer version than the cache holds (an edit or an agent sync
            // whose notice has not arrived yet): read it again rather than call with stale
            // settings such as an agent id written back a moment ago.
            let cfg = if cfg.version < claims.config_version {
                app.configs
                    .restaurant_fresh(&claims.restaurant_id)
                    .await
                    .unwrap_or(cfg)
            } else {
                cfg
            };
            if cfg.version != claims.config_version {
                debug!(
                    token_version = claims.config_version,
                    loaded = cfg.version,
                    "config version moved on since routing"
                );
            }
            Some((cfg, kb, claims))
        }
        Err(e) => {
            config_unavailable(app, start, &claims, &fallback, &e.to_string(), tx).await;
            None
        }
    }
}

/// Spoken when the configuration is unavailable and the token carries no apology of its own.
const CONFIG_UNAVAILABLE_TRANSFER: &str =
    "Sorry, we cannot take your call right now. Please hold while we put you through to the restaurant.";
const CONFIG_UNAVAILABLE_APOLOGY: &str =
    "Sorry, we cannot take your call right now. Please try again later.";

/// The handoff is genuine but the restaurant's configuration cannot be loaded (dashboard
/// unreachable, nothing cached): forward the caller to the fallback number the edge signed into
/// the token, in the restaurant's `<Say>` locale and voice (or apologise when there is none), and
/// record the call through the sink like every other, ending `config_unavailable`.
async fn config_unavailable(
    app: &App,
    start: &Start,
    claims: &HandoffClaims,
    fallback: &HandoffFallback,
    why: &str,
    tx: &mut TwTx,
) {
    let began = Instant::now();
    let started_at = app.clock.now();
    app.metrics.error("config_unavailable");
    // Signed by the edge, yet checked like any input: a number that is not E.164 or a voice
    // Twilio does not know is not used.
    let number = fallback
        .fallback_number
        .as_deref()
        .and_then(|n| pulsara_core::phone::normalize_e164(n).ok().filter(|e| e == n));
    let say = fallback
        .say_language
        .as_deref()
        .and_then(|lang| {
            SayVoice::new(lang, fallback.say_voice.as_deref())
                .or_else(|_| SayVoice::new(lang, None))
                .ok()
        })
        .unwrap_or_default();
    let message = fallback.apology.clone().unwrap_or_else(|| {
        if number.is_some() { CONFIG_UNAVAILABLE_TRANSFER } else { CONFIG_UNAVAILABLE_APOLOGY }.to_owned()
    });
    let (kind, twiml) = match &number {
        Some(n) => ("dial", say.say_dial(Some(&message), n, None, 30)),
        None => ("apology", say.fallback(None, &message)),
    };
    let ok = match app
        .rest
        .update_call(&start.call_sid, &twiml, ms(app.cfg.limits.rest_timeout_ms))
        .await
    {
        Ok(()) => true,
        Err(e) => {
            app.metrics.error("twilio_rest");
            warn!(error = %e, "config-unavailable call update failed");
            false
        }
    };
    warn!(
        restaurant_id = %claims.restaurant_id,
        error = %why,
        kind,
        ok,
        "restaurant configuration unavailable; caller forwarded with the handoff's fallback"
    );
    let _ = tx.close().await;
    let at_ms = began.elapsed().as_millis() as u64;
    let param = |k: &str| start.custom_parameters.get(k).cloned().unwrap_or_default();
    let record = CallRecord {
        call_sid: start.call_sid.clone(),
        stream_sid: start.stream_sid.clone(),
        restaurant_id: claims.restaurant_id.clone(),
        config_version: claims.config_version,
        caller: param("caller"),
        called: param("called"),
        started_at: started_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        ended_at: app.clock.now().to_rfc3339_opts(SecondsFormat::Millis, true),
        duration_ms: at_ms,
        end_reason: EndReason::ConfigUnavailable,
        fallback: Some(Fallback {
            kind: kind.to_owned(),
            to: number,
            reason: format!("configuration unavailable: {why}"),
            at_ms,
            ok,
        }),
        ..CallRecord::default()
    };
    deliver(app, record).await;
}

async fn reject(app: &App, tx: &mut TwTx, kind: &'static str, why: &str) {
    app.metrics.calls_rejected.inc();
    app.metrics.error(kind);
    warn!(why, "media stream rejected");
    let _ = tx
        .send(TwMessage::Close(Some(CloseFrame {
            code: 1008,
            reason: "policy violation".into(),
        })))
        .await;
    let _ = tx.close().await;
}

async fn busy(app: &App, info: CallInfo, tx: &mut TwTx) {
    app.metrics.error("busy");
    let cfg = info.restaurant.clone();
    let msg = cfg.agent.busy_message.clone().unwrap_or_else(|| {
        "All our lines are busy right now. Please call again in a few minutes.".into()
    });
    let twiml = cfg.say_voice().busy(&msg, cfg.fallback_target());
    let ok = app
        .rest
        .update_call(&info.call_sid, &twiml, ms(app.cfg.limits.rest_timeout_ms))
        .await;
    if let Err(e) = &ok {
        warn!(error = %e, "busy call update failed");
    }
    info!("call refused: over capacity");
    let _ = tx.close().await;
    let mut m = CallMachine::new(info, MachineLimits::default());
    m.force_end(EndReason::Busy);
    let now = app.clock.now().to_rfc3339_opts(SecondsFormat::Millis, true);
    deliver(app, m.finish(now, 0)).await;
}

async fn deliver(app: &App, record: CallRecord) {
    if let Err(e) = app.sink.deliver(record).await {
        app.metrics.error("sink");
        tracing::error!(error = %e, "call record could not be stored");
    }
}

/// A live call: the machine plus its sockets.
struct Call {
    app: Arc<App>,
    m: CallMachine,
    kb: Arc<KnowledgeBase>,
    tw_tx: TwTx,
    tw_rx: Option<TwRx>,
    ag_tx: Option<AgTx>,
    ag_rx: Option<AgRx>,
    started: Instant,
    out: Vec<Out>,
    tools_tx: mpsc::Sender<ToolDone>,
    tools_rx: mpsc::Receiver<ToolDone>,
    tools_in_flight: usize,
    reconnects_left: u32,
    /// The agent ended the conversation: hang up once its audio has played (or at this deadline).
    hangup_after_playback: Option<tokio::time::Instant>,
    done: bool,
    /// The agent session prepared ahead of the stream, adopted instead of connecting.
    prepared: Option<tokio::task::JoinHandle<ConnectResult>>,
}

impl Call {
    fn new(
        app: Arc<App>,
        info: CallInfo,
        kb: Arc<KnowledgeBase>,
        tw_tx: TwTx,
        tw_rx: TwRx,
    ) -> Self {
        let l = &app.cfg.limits;
        let limits = MachineLimits {
            early_audio_frames: l.early_audio_frames,
            max_transcript_lines: l.max_transcript_lines,
            max_tool_runs: l.max_tool_runs,
            caller_audio_burst_ms: l.caller_audio_burst_ms,
        };
        let (tools_tx, tools_rx) = mpsc::channel(l.max_tools_in_flight.max(1));
        Call {
            m: CallMachine::new(info, limits),
            app,
            kb,
            tw_tx,
            tw_rx: Some(tw_rx),
            ag_tx: None,
            ag_rx: None,
            started: Instant::now(),
            out: Vec::with_capacity(8),
            tools_tx,
            tools_rx,
            tools_in_flight: 0,
            reconnects_left: 1,
            hangup_after_playback: None,
            done: false,
            prepared: None,
        }
    }

    /// A connect to start only when called (after a prepared session turned out to be unusable).
    fn connect_later(&self, attempts: u32) -> impl FnOnce() -> tokio::task::JoinHandle<ConnectResult> + Send + 'static {
        let (app, info, kb) = (self.app.clone(), self.m.info(), self.kb.clone());
        let (cfg, caller) = (info.restaurant.clone(), info.caller.clone());
        move || connect_task(app, cfg, kb, caller, attempts, None)
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn connect(
        &self,
        attempts: u32,
        first_message: Option<String>,
    ) -> tokio::task::JoinHandle<ConnectResult> {
        let info = self.m.info();
        connect_task(self.app.clone(), info.restaurant.clone(), self.kb.clone(), info.caller.clone(), attempts, first_message)
    }

    async fn run(mut self) -> CallRecord {
        let mut connecting = Some(match self.prepared.take() {
            // The session prepared while Twilio connected; if it failed, the usual connect.
            Some(prepared) => {
                let fresh = self.connect_later(2);
                tokio::spawn(async move {
                    match prepared.await {
                        Ok(Ok(session)) => Ok(session),
                        Ok(Err(e)) => {
                            warn!(error = %e, "prepared agent session failed; connecting now");
                            fresh().await.unwrap_or(Err(AgentError::ClosedEarly))
                        }
                        Err(_) => fresh().await.unwrap_or(Err(AgentError::ClosedEarly)),
                    }
                })
            }
            None => self.connect(2, None),
        });
        let hard_stop = self.app.hard_stop.clone();
        while !self.done {
            // The goodbye's last mark came back (or nothing was left to play): hang up now.
            if self.hangup_after_playback.is_some() && !self.m.audio_pending() {
                self.hang_up_after_goodbye().await;
                continue;
            }
            let hangup_deadline = self.hangup_after_playback;
            let tw_open = self.tw_rx.is_some();
            let ag_open = self.ag_rx.is_some();
            let tw_rx = self.tw_rx.as_mut();
            let ag_rx = self.ag_rx.as_mut();
            tokio::select! {
                biased;
                _ = hard_stop.cancelled() => {
                    self.end_politely().await;
                }
                res = async { connecting.as_mut().expect("guarded").await }, if connecting.is_some() => {
                    connecting = None;
                    self.on_connected(res.unwrap_or(Err(AgentError::ClosedEarly))).await;
                }
                msg = async { tw_rx.expect("guarded").next().await }, if tw_open => {
                    self.on_twilio_frame(msg).await;
                }
                msg = async { ag_rx.expect("guarded").next().await }, if ag_open => {
                    if let Some(again) = self.on_agent_frame(msg).await {
                        connecting = Some(again);
                    }
                }
                // The backstop: one timer for the whole wait, however many frames arrive.
                _ = async { tokio::time::sleep_until(hangup_deadline.expect("guarded")).await }, if hangup_deadline.is_some() => {
                    warn!("the agent's goodbye did not finish playing in time; hanging up");
                    self.hang_up_after_goodbye().await;
                }
                Some(done) = self.tools_rx.recv() => {
                    self.tools_in_flight = self.tools_in_flight.saturating_sub(1);
                    self.app.metrics.tool_latency.observe(crate::metrics::secs(done.duration_us));
                    let now = self.now_ms();
                    let mut out = std::mem::take(&mut self.out);
                    self.m.on_tool_done(done.tool_call_id, done.tool, done.input, done.result, done.duration_us, now, &mut out);
                    self.flush(out).await;
                }
            }
        }
        if let Some(h) = connecting {
            h.abort();
        }
        self.close_agent().await;
        let _ = self.tw_tx.close().await;
        let stats = self.m.stats;
        self.app
            .metrics
            .dropped_frames
            .inc_by(stats.dropped_frames);
        let duration = self.now_ms();
        self.m.finish(
            self.app.clock.now().to_rfc3339_opts(SecondsFormat::Millis, true),
            duration,
        )
    }

    async fn on_connected(&mut self, res: ConnectResult) {
        match res {
            Ok((socket, meta)) => {
                let (tx, rx) = socket.split();
                self.ag_tx = Some(tx);
                self.ag_rx = Some(rx);
                let mut out = std::mem::take(&mut self.out);
                match self.m.on_agent_connected(&meta, &mut out) {
                    Ok(()) => {
                        info!(format = %meta.agent_output_audio_format, pass_through = self.m.is_pass_through(), "agent connected");
                        self.flush(out).await;
                    }
                    Err(why) => {
                        warn!(why, "agent audio format unusable");
                        self.out = out;
                        self.close_agent().await;
                        self.fallback(&why).await;
                    }
                }
            }
            Err(e) => {
                if let AgentError::Refused(detail) = &e {
                    self.agent_said(detail.clone());
                }
                self.m.on_agent_gone();
                self.fallback(&e.to_string()).await;
            }
        }
    }

    /// ElevenLabs said why it refused or is ending the conversation: log it with the call's
    /// span, count it by type, and keep it for the call record.
    fn agent_said(&mut self, detail: pulsara_core::call_record::EndReasonDetail) {
        warn!(
            error_type = detail.error_type.as_deref().unwrap_or(""),
            error_code = detail.error_code,
            error_message = detail.error_message.as_deref().unwrap_or(""),
            close_code = detail.close_code,
            close_reason = detail.close_reason.as_deref().unwrap_or(""),
            "ElevenLabs ended the conversation: {}",
            detail.describe()
        );
        let kind = match (&detail.error_type, detail.close_code) {
            (Some(t), _) => t.clone(),
            (None, Some(c)) => format!("close_{c}"),
            (None, None) => "unknown".into(),
        };
        self.app.metrics.agent_error(&kind);
        self.m.note_agent_end(detail);
    }

    async fn on_twilio_frame(&mut self, msg: Option<Result<TwMessage, axum::Error>>) {
        let t0 = Instant::now();
        let text = match msg {
            Some(Ok(TwMessage::Text(t))) => t,
            Some(Ok(TwMessage::Close(_))) | None | Some(Err(_)) => {
                self.m.set_end(EndReason::CallerHungUp);
                self.tw_rx = None;
                self.done = true;
                return;
            }
            Some(Ok(_)) => return,
        };
        let parsed = match tw::parse_inbound(&text) {
            Ok(p) => p,
            Err(e) => {
                self.m.stats.malformed_twilio += 1;
                self.app.metrics.error("malformed_twilio");
                debug!(error = %e, "malformed Twilio frame ignored");
                return;
            }
        };
        let is_media = matches!(parsed, Inbound::Media(_));
        let is_stop = matches!(parsed, Inbound::Stop(_));
        if is_media {
            self.app.metrics.frames_in_twilio.inc();
        }
        let now = self.now_ms();
        let mut out = std::mem::take(&mut self.out);
        let policed_before = self.m.stats.policed_frames;
        self.m.on_twilio(parsed, now, &mut out);
        if policed_before == 0 && self.m.stats.policed_frames > 0 {
            self.app.metrics.error("caller_audio_policed");
            warn!("caller audio arrives faster than real time; dropping the excess");
        }
        let sent = self.flush(out).await;
        if is_media && sent {
            self.app
                .metrics
                .latency_to_agent
                .observe(crate::metrics::secs(t0.elapsed().as_micros() as u64));
        }
        if is_stop {
            self.done = true;
        }
    }

    /// Returns a reconnect handle when the agent dropped and one more attempt is allowed.
    async fn on_agent_frame(
        &mut self,
        msg: Option<Result<AgMessage, tokio_tungstenite::tungstenite::Error>>,
    ) -> Option<tokio::task::JoinHandle<ConnectResult>> {
        let t0 = Instant::now();
        let text = match msg {
            Some(Ok(AgMessage::Text(t))) => t,
            Some(Ok(AgMessage::Close(Some(f))))
                if f.code == tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal =>
            {
                debug!(reason = %f.reason, "agent closed the socket normally");
                // The agent ended the conversation (its end-call tool): let the goodbye play,
                // then hang up.
                self.ag_rx = None;
                self.ag_tx = None;
                self.m.on_agent_gone();
                if !self.done && self.m.end_reason().is_none() {
                    info!("agent ended the conversation");
                    self.hangup_after_playback =
                        Some(tokio::time::Instant::now() + HANGUP_PLAYBACK_MAX);
                }
                return None;
            }
            Some(Ok(AgMessage::Close(_))) | None | Some(Err(_)) => {
                if let Some(Ok(AgMessage::Close(Some(f)))) = &msg {
                    let mut detail = Default::default();
                    crate::agent::note_close(&mut detail, f.code.into(), &f.reason);
                    self.agent_said(detail);
                }
                self.ag_rx = None;
                self.ag_tx = None;
                self.m.on_agent_gone();
                if self.done || self.m.end_reason().is_some() {
                    return None;
                }
                self.app.metrics.error("agent_dropped");
                if self.reconnects_left > 0 {
                    self.reconnects_left -= 1;
                    warn!("agent connection dropped; reconnecting once");
                    self.m.on_agent_reconnecting();
                    return Some(self.connect(
                        1,
                        Some("Sorry, the line dropped for a moment. Where were we?".to_owned()),
                    ));
                }
                self.fallback("agent connection dropped").await;
                return None;
            }
            Some(Ok(_)) => return None,
        };
        let parsed = match convai::parse_server(&text) {
            Ok(p) => p,
            Err(e) => {
                self.m.stats.malformed_agent += 1;
                self.app.metrics.error("malformed_agent");
                debug!(error = %e, "malformed agent frame ignored");
                return None;
            }
        };
        if let convai::ServerMessage::Error(e) = &parsed {
            let mut detail = Default::default();
            crate::agent::note_error(&mut detail, e);
            self.agent_said(detail);
        }
        let is_audio = matches!(parsed, convai::ServerMessage::Audio { .. });
        let is_interruption = matches!(parsed, convai::ServerMessage::Interruption { .. });
        if is_audio {
            self.app.metrics.frames_in_agent.inc();
        }
        let now = self.now_ms();
        let mut out = std::mem::take(&mut self.out);
        self.m.on_agent(parsed, now, &mut out);
        let sent = self.flush(out).await;
        if self.m.latency.wants_share() {
            self.m.latency.note_frame_share(t0.elapsed().as_micros() as u64);
        }
        if is_interruption && sent {
            self.m.latency.note_barge_in(t0.elapsed().as_micros() as u64);
        }
        if is_audio && sent {
            self.app
                .metrics
                .latency_to_caller
                .observe(crate::metrics::secs(t0.elapsed().as_micros() as u64));
        }
        None
    }

    /// Performs the machine's commands; returns whether any frame was written.
    async fn flush(&mut self, mut out: Vec<Out>) -> bool {
        let mut wrote = false;
        for cmd in out.drain(..) {
            match cmd {
                Out::MediaToTwilio(frame) => {
                    self.app.metrics.frames_out_twilio.inc();
                    wrote |= self.send_twilio(frame).await;
                }
                Out::ToTwilio(frame) | Out::ClearTwilio(frame) => {
                    wrote |= self.send_twilio(frame).await;
                }
                Out::AudioToAgent(frame) => {
                    if self.ag_tx.is_some() {
                        self.app.metrics.frames_out_agent.inc();
                    }
                    wrote |= self.send_agent(frame).await;
                }
                Out::ToAgent(frame) => {
                    wrote |= self.send_agent(frame).await;
                }
                Out::RunTool {
                    tool_call_id,
                    tool,
                    params,
                } => self.spawn_tool(tool_call_id, tool, params),
                Out::Transfer { to, reason } => self.transfer(to, reason).await,
                Out::TransferUnavailable { reason } => {
                    warn!(
                        reason,
                        "transfer requested but no staff number is configured"
                    );
                }
                Out::EndCall { reason } => {
                    info!(reason, "agent ended the call");
                    self.end_call().await;
                    self.m.on_end_done();
                    self.done = true;
                }
            }
        }
        self.out = out;
        wrote
    }

    /// Writes a frame to Twilio; a failed write means the caller hung up. Returns whether it was
    /// written.
    async fn send_twilio(&mut self, frame: String) -> bool {
        if self.tw_tx.send(TwMessage::Text(frame.into())).await.is_err() {
            self.m.set_end(EndReason::CallerHungUp);
            self.done = true;
            false
        } else {
            true
        }
    }

    /// Writes a frame to the agent, or drops it (counted) while there is no agent socket.
    /// Returns whether it was written.
    async fn send_agent(&mut self, frame: String) -> bool {
        match self.ag_tx.as_mut() {
            Some(tx) => tx.send(AgMessage::text(frame)).await.is_ok(),
            None => {
                self.app.metrics.dropped_frames.inc();
                false
            }
        }
    }

    fn spawn_tool(&mut self, tool_call_id: String, tool: String, params: serde_json::Value) {
        let tx = self.tools_tx.clone();
        if self.tools_in_flight >= self.app.cfg.limits.max_tools_in_flight {
            self.app.metrics.error("tool_overload");
            let done = ToolDone {
                tool_call_id,
                tool: tool.clone(),
                input: params,
                result: Err(ToolError::Failed {
                    tool,
                    reason: "too many tool calls at once".into(),
                }),
                duration_us: 0,
            };
            // Capacity equals max_tools_in_flight, and in-flight tools hold the rest; try_send
            // cannot starve, but never block the call loop on it.
            let _ = tx.try_send(done);
            return;
        }
        self.tools_in_flight += 1;
        let info = self.m.info();
        let ctx = ToolContext {
            restaurant: info.restaurant.clone(),
            kb: self.kb.clone(),
            call_sid: info.call_sid.clone(),
            caller: info.caller.clone(),
            local_time: local_time(&info.restaurant.time_zone, self.app.clock.now()),
            earlier: self.m.earlier_results(),
        };
        let runner = self.app.tools.clone();
        let timeout = ms(self.app.cfg.limits.tool_timeout_ms);
        let metrics = self.app.metrics.clone();
        tokio::spawn(async move {
            let t0 = Instant::now();
            let result = match tokio::time::timeout(
                timeout,
                runner.run(&ctx, &tool, params.clone()),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(ToolError::Timeout {
                    tool: tool.clone(),
                    ms: timeout.as_millis() as u64,
                }),
            };
            if let Err(e) = &result {
                metrics.error(match e {
                    ToolError::UnknownTool(_) => "tool_unknown",
                    ToolError::Timeout { .. } => "tool_timeout",
                    ToolError::Failed { .. } => "tool_failed",
                });
                warn!(tool, error = %e, "tool call failed");
            }
            let duration_us = t0.elapsed().as_micros() as u64;
            let _ = tx
                .send(ToolDone {
                    tool_call_id,
                    tool,
                    input: params,
                    result,
                    duration_us,
                })
                .await;
        });
    }

    async fn hang_up_after_goodbye(&mut self) {
        self.hangup_after_playback = None;
        let out = vec![Out::EndCall {
            reason: "agent ended the conversation".into(),
        }];
        self.flush(out).await;
    }

    /// Ends the call at Twilio (`Status=completed`); a call Twilio already ended is fine.
    async fn end_call(&self) {
        let sid = &self.m.info().call_sid;
        let timeout = ms(self.app.cfg.limits.rest_timeout_ms);
        match self.app.rest.end_call(sid, timeout).await {
            Ok(pulsara_dashboard::twilio_rest::CallEnded::Now) => {}
            Ok(pulsara_dashboard::twilio_rest::CallEnded::Already) => {
                debug!("call had already ended at Twilio");
            }
            Err(e) => {
                self.app.metrics.error("twilio_rest");
                warn!(error = %e, "hang-up call update failed");
            }
        }
    }

    async fn update_call(&self, twiml: &str) -> Result<(), pulsara_dashboard::twilio_rest::RestError> {
        let r = self
            .app
            .rest
            .update_call(
                &self.m.info().call_sid,
                twiml,
                ms(self.app.cfg.limits.rest_timeout_ms),
            )
            .await;
        if r.is_err() {
            self.app.metrics.error("twilio_rest");
        }
        r
    }

    async fn transfer(&mut self, to: String, reason: String) {
        let twiml = twiml::dial(&to, None, 30);
        let ok = match self.update_call(&twiml).await {
            Ok(()) => true,
            Err(e) => {
                warn!(error = %e, "transfer call update failed");
                false
            }
        };
        let now = self.now_ms();
        info!(to = %to, reason = %reason, ok, "transfer");
        self.m.on_transfer_done(to, reason, ok, now);
        if ok {
            self.close_agent().await;
            self.done = true;
        } else {
            let mut out = std::mem::take(&mut self.out);
            out.push(Out::ToAgent(
                convai::ClientMessage::ContextualUpdate {
                    text: "The transfer to staff failed; apologise and offer to take a message."
                        .into(),
                }
                .to_json(),
            ));
            Box::pin(self.flush(out)).await;
        }
    }

    /// The agent is unavailable: dial the restaurant's fallback (or staff), else apologise and
    /// record a voicemail. Never leaves the caller in silence.
    async fn fallback(&mut self, reason: &str) {
        let cfg = self.m.info().restaurant.clone();
        let apology = cfg
            .agent
            .apology_message
            .clone()
            .unwrap_or_else(|| "Sorry, our assistant is unavailable right now.".into());
        let (kind, to, twiml) = match cfg.fallback_target() {
            Some(n) => (
                "dial",
                Some(n.to_owned()),
                cfg.say_voice().say_dial(Some(&apology), n, None, 30),
            ),
            None => {
                let info = self.m.info();
                match crate::voicemail::callback_url(&self.app.cfg, &cfg.id, &info.caller) {
                    Some(callback) => (
                        "voicemail",
                        None,
                        cfg.say_voice().say_record(
                            &format!("{apology} Please leave a message after the tone."),
                            120,
                            &callback,
                        ),
                    ),
                    // Without a public URL nothing could receive a recording: apologise instead
                    // of recording into nowhere.
                    None => {
                        warn!("no PUBLIC_BASE_URL for the voicemail callback; apologising instead");
                        ("apology", None, cfg.say_voice().fallback(None, &apology))
                    }
                }
            }
        };
        let ok = self.update_call(&twiml).await.is_ok();
        let now = self.now_ms();
        warn!(
            reason,
            kind, ok, "agent unavailable: restaurant fallback played"
        );
        self.m.on_fallback(kind, to, reason.to_owned(), ok, now);
        self.close_agent().await;
        self.done = true;
    }

    /// Shutdown after the grace period: hand the caller to staff (or apologise), then finish.
    async fn end_politely(&mut self) {
        let cfg = self.m.info().restaurant.clone();
        let number = cfg.fallback_target();
        let message = if number.is_some() {
            "Sorry, our phone assistant has to end this call now. Please hold while we put you through to the restaurant."
        } else {
            "Sorry, we have to end this call now. Please call us again. Goodbye."
        };
        let twiml = cfg.say_voice().fallback(number, message);
        let _ = self.update_call(&twiml).await;
        self.m.force_end(EndReason::BridgeShutdown);
        self.close_agent().await;
        self.done = true;
    }

    async fn close_agent(&mut self) {
        self.ag_rx = None;
        if let Some(mut tx) = self.ag_tx.take() {
            let _ = tokio::time::timeout(Duration::from_millis(500), tx.close()).await;
        }
    }
}

/// The restaurant's local time now, RFC 3339 with offset.
fn local_time(tz: &str, now: chrono::DateTime<Utc>) -> String {
    match tz.parse::<chrono_tz::Tz>() {
        Ok(tz) => now
            .with_timezone(&tz)
            .to_rfc3339_opts(SecondsFormat::Secs, false),
        Err(_) => now.to_rfc3339_opts(SecondsFormat::Secs, true),
    }
}
