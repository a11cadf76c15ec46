//! Twilio caller simulator: plays the Twilio side of a `<Connect><Stream>` against a stream
//! server (the bridge), exactly as Twilio's Media Streams do.
//!
//! It sends `connected`, `start` (accountSid, streamSid, callSid, tracks, customParameters,
//! mediaFormat), then one `media` frame every 20 ms for the whole call (160 bytes μ-law, with
//! `sequenceNumber`/`chunk`/`timestamp` as strings), `dtmf` per digit, and `stop` on hang-up.
//! What the caller says is synthesized μ-law ([`crate::synth`], caller voice).
//!
//! Received audio goes into a playback buffer drained at 8000 samples/s; a `mark` is echoed
//! when the audio queued before it has played; `clear` discards the buffer and echoes every
//! pending mark at once (as Twilio does). Everything is timed on a virtual clock of 20 ms ticks;
//! `speed` > 1 runs the ticks faster than real time (load tests). The result carries the
//! received messages with times, mark echoes, clears, step timings and both audio tracks
//! aligned tick by tick (caller left, agent right in the WAV).
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use pulsara_media::audio::{mulaw, wav};
use pulsara_media::twilio::{
    self, Connected, Dtmf, Inbound, Media, MediaFormat, Outbound, Start, Stop,
};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::scenario::{Action, CallerScript, Trigger};
use crate::synth::{self, Voice};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const FRAME: usize = 160;
const TICK_MS: u64 = 20;
/// Bound on queued, not yet played agent audio (10 minutes); more is counted as overflow.
const MAX_PLAYBACK_SAMPLES: usize = 8000 * 600;

/// Identity of the simulated call, as it appears in `start`.
#[derive(Debug, Clone)]
pub struct CallParams {
    pub account_sid: String,
    pub call_sid: String,
    pub stream_sid: String,
    pub from: String,
    pub to: String,
    /// The TwiML `<Parameter>`s (handoff token, restaurant id, …).
    pub custom_parameters: BTreeMap<String, String>,
}

impl CallParams {
    /// Twilio-shaped ids derived from `n`.
    pub fn numbered(n: u64, from: &str, to: &str) -> Self {
        CallParams {
            account_sid: "AC00000000000000000000000000000001".into(),
            call_sid: format!("CA{n:032x}"),
            stream_sid: format!("MZ{n:032x}"),
            from: from.into(),
            to: to.into(),
            custom_parameters: BTreeMap::new(),
        }
    }
}

/// How to run the call.
pub struct CallerOptions {
    /// Virtual-time speed-up (1.0 = real time).
    pub speed: f64,
    /// Extra headers on the WebSocket upgrade (e.g. `X-Twilio-Signature`).
    pub headers: Vec<(String, String)>,
    /// Keep both audio tracks and the raw bytes (off for load tests).
    pub record_audio: bool,
    /// Resolves when Twilio would end the stream from outside (e.g. the call's TwiML was
    /// replaced through the REST API): the simulator then sends `stop` and closes.
    pub stop: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    pub connect_timeout: Duration,
}

impl Default for CallerOptions {
    fn default() -> Self {
        CallerOptions {
            speed: 1.0,
            headers: Vec::new(),
            record_audio: true,
            stop: None,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a call could not be run at all.
#[derive(Debug, thiserror::Error)]
pub enum CallerError {
    #[error("connecting to the stream server: {0}")]
    Connect(String),
    #[error("invalid caller script: {0}")]
    Script(String),
}

/// How the call ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum CallEnd {
    /// The script hung up (`stop` sent).
    Hangup,
    /// The server closed the socket (or it failed).
    ServerClosed(String),
    /// The external stop signal fired (`stop` sent).
    StopSignal,
    MaxDuration,
}

/// One message from the server.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Received {
    pub at_ms: u64,
    pub kind: ReceivedKind,
}

/// What it was.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum ReceivedKind {
    Media {
        bytes: usize,
    },
    Mark {
        name: String,
    },
    Clear,
    /// Not a valid server → Twilio message (Twilio would raise error 31924).
    Invalid {
        error: String,
    },
}

/// A mark echoed back to the server.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MarkEcho {
    pub name: String,
    pub received_ms: u64,
    pub echoed_ms: u64,
    /// Echoed because of a `clear`, not because its audio played.
    pub cleared: bool,
}

/// When a script step ran.
#[derive(Debug, Clone, Serialize)]
pub struct StepLog {
    pub index: usize,
    pub action: String,
    pub fired_ms: u64,
    pub done_ms: Option<u64>,
    /// The step's agent trigger never came; it fired at `step_timeout_ms`.
    pub timed_out: bool,
}

/// Everything the caller saw.
#[derive(Debug, Clone, Serialize)]
pub struct CallResult {
    pub call_sid: String,
    pub stream_sid: String,
    pub duration_ms: u64,
    pub end: CallEnd,
    pub received: Vec<Received>,
    pub marks: Vec<MarkEcho>,
    pub clears_ms: Vec<u64>,
    pub steps: Vec<StepLog>,
    pub frames_sent: u64,
    /// When agent audio first played.
    pub first_agent_audio_ms: Option<u64>,
    /// Agent audio samples discarded by `clear`.
    pub cleared_samples: u64,
    pub playback_overflow_samples: u64,
    /// Caller track (what was sent, decoded), 8 kHz, one sample per sample of call time.
    #[serde(skip)]
    pub caller_audio: Vec<i16>,
    /// Agent track as played, 8 kHz, aligned with `caller_audio`.
    #[serde(skip)]
    pub agent_audio: Vec<i16>,
    /// Raw μ-law bytes sent / received, for byte-exact pass-through checks.
    #[serde(skip)]
    pub caller_ulaw: Vec<u8>,
    #[serde(skip)]
    pub agent_ulaw: Vec<u8>,
}

impl CallResult {
    /// Stereo WAV: caller left, agent right, 8 kHz.
    ///
    /// # Errors
    /// Never in practice (in-memory).
    pub fn wav_bytes(&self) -> Result<Vec<u8>, wav::WavError> {
        wav::stereo_bytes(8000, &self.caller_audio, &self.agent_audio)
    }

    /// Write the stereo WAV to `path`.
    ///
    /// # Errors
    /// File errors.
    pub fn write_wav(&self, path: &Path) -> Result<(), wav::WavError> {
        wav::write_stereo_file(path, 8000, &self.caller_audio, &self.agent_audio)
    }

    /// Bytes of agent media received in `[from_ms, to_ms)`.
    pub fn media_bytes_between(&self, from_ms: u64, to_ms: u64) -> usize {
        self.received
            .iter()
            .filter(|r| r.at_ms >= from_ms && r.at_ms < to_ms)
            .map(|r| {
                if let ReceivedKind::Media { bytes } = r.kind {
                    bytes
                } else {
                    0
                }
            })
            .sum()
    }

    /// Milliseconds of audible agent audio played in `[from_ms, to_ms)` (20 ms frames with RMS > 300).
    pub fn agent_audible_ms_between(&self, from_ms: u64, to_ms: u64) -> u64 {
        let a = (from_ms * 8) as usize;
        let b = ((to_ms * 8) as usize).min(self.agent_audio.len());
        if a >= b {
            return 0;
        }
        self.agent_audio[a..b]
            .chunks(FRAME)
            .filter(|f| {
                let e: f64 = f.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / f.len() as f64;
                e.sqrt() > 300.0
            })
            .count() as u64
            * TICK_MS
    }

    /// Invalid messages the server sent.
    pub fn invalid_messages(&self) -> Vec<&Received> {
        self.received
            .iter()
            .filter(|r| matches!(r.kind, ReceivedKind::Invalid { .. }))
            .collect()
    }
}

enum Incoming {
    Text(String),
    Closed(String),
}

enum Queued {
    Audio(Vec<i16>, usize),
    Mark(String, u64),
}

/// Playback buffer with Twilio's mark semantics.
struct Playback {
    queue: VecDeque<Queued>,
    samples: usize,
}

impl Playback {
    fn push_audio(&mut self, s: Vec<i16>) -> bool {
        if self.samples + s.len() > MAX_PLAYBACK_SAMPLES {
            return false;
        }
        self.samples += s.len();
        self.queue.push_back(Queued::Audio(s, 0));
        true
    }

    /// Play up to one frame; returns the samples played and marks reached.
    fn play(&mut self, out: &mut Vec<i16>, marks: &mut Vec<(String, u64)>) {
        while out.len() < FRAME {
            match self.queue.front_mut() {
                None => break,
                Some(Queued::Mark(..)) => {
                    if let Some(Queued::Mark(n, at)) = self.queue.pop_front() {
                        marks.push((n, at));
                    }
                }
                Some(Queued::Audio(buf, pos)) => {
                    let take = (FRAME - out.len()).min(buf.len() - *pos);
                    out.extend_from_slice(&buf[*pos..*pos + take]);
                    *pos += take;
                    self.samples -= take;
                    if *pos == buf.len() {
                        self.queue.pop_front();
                    }
                }
            }
        }
        // Marks right behind the audio just played are due now too.
        while let Some(Queued::Mark(..)) = self.queue.front() {
            if let Some(Queued::Mark(n, at)) = self.queue.pop_front() {
                marks.push((n, at));
            }
        }
    }

    fn clear(&mut self) -> (usize, Vec<(String, u64)>) {
        let discarded = self.samples;
        let marks = self
            .queue
            .drain(..)
            .filter_map(|q| {
                if let Queued::Mark(n, at) = q {
                    Some((n, at))
                } else {
                    None
                }
            })
            .collect();
        self.samples = 0;
        (discarded, marks)
    }
}

/// Extract what Twilio takes from `<Connect><Stream url="…"><Parameter name="…" value="…"/>`:
/// the stream URL and the custom parameters (XML entities decoded).
///
/// # Errors
/// [`CallerError::Script`] when the TwiML has no `<Stream url=…>`.
pub fn stream_from_twiml(twiml: &str) -> Result<(String, BTreeMap<String, String>), CallerError> {
    crate::twiml::parse(twiml)
        .map_err(|e| CallerError::Script(e.to_string()))?
        .stream()
        .ok_or_else(|| CallerError::Script("TwiML has no <Stream url=…>".into()))
}

/// Run one call against the stream server at `url` (`ws://…/media`).
///
/// # Errors
/// [`CallerError::Connect`] when the WebSocket cannot be opened (including an HTTP refusal of
/// the upgrade); [`CallerError::Script`] for an invalid step. Everything after the connection
/// is reported in the [`CallResult`].
pub async fn run_call(
    url: &str,
    params: CallParams,
    script: &CallerScript,
    mut opts: CallerOptions,
) -> Result<CallResult, CallerError> {
    let steps: Vec<(Trigger, Action)> = script
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.parts()
                .map_err(|m| CallerError::Script(format!("step {i}: {m}")))
        })
        .collect::<Result<_, _>>()?;
    let mut request = url
        .into_client_request()
        .map_err(|e| CallerError::Connect(e.to_string()))?;
    for (k, v) in &opts.headers {
        let name = axum::http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|e| CallerError::Connect(e.to_string()))?;
        let value = axum::http::HeaderValue::from_str(v)
            .map_err(|e| CallerError::Connect(e.to_string()))?;
        request.headers_mut().insert(name, value);
    }
    let cfg = WebSocketConfig::default()
        .max_message_size(Some(twilio::MAX_OUTBOUND_BYTES))
        .max_frame_size(Some(twilio::MAX_OUTBOUND_BYTES));
    let (ws, _) = tokio::time::timeout(
        opts.connect_timeout,
        tokio_tungstenite::connect_async_with_config(request, Some(cfg), true),
    )
    .await
    .map_err(|_| CallerError::Connect("timed out".into()))?
    .map_err(|e| CallerError::Connect(e.to_string()))?;
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Incoming>(4096);
    let reader = tokio::spawn(async move {
        loop {
            let ev = match stream.next().await {
                Some(Ok(Message::Text(t))) => Incoming::Text(t.as_str().to_owned()),
                Some(Ok(Message::Binary(_))) => Incoming::Text("<binary frame>".into()),
                Some(Ok(Message::Close(f))) => Incoming::Closed(
                    f.map(|f| format!("close {} {}", u16::from(f.code), f.reason))
                        .unwrap_or_else(|| "close".into()),
                ),
                Some(Ok(_)) => continue,
                Some(Err(e)) => Incoming::Closed(format!("error: {e}")),
                None => Incoming::Closed("eof".into()),
            };
            let last = matches!(ev, Incoming::Closed(_));
            if tx.send(ev).await.is_err() || last {
                break;
            }
        }
    });

    let speed = if opts.speed.is_finite() && opts.speed > 0.0 {
        opts.speed
    } else {
        1.0
    };
    let mut seq: u64 = 1;
    let mut result = CallResult {
        call_sid: params.call_sid.clone(),
        stream_sid: params.stream_sid.clone(),
        duration_ms: 0,
        end: CallEnd::MaxDuration,
        received: Vec::new(),
        marks: Vec::new(),
        clears_ms: Vec::new(),
        steps: Vec::new(),
        frames_sent: 0,
        first_agent_audio_ms: None,
        cleared_samples: 0,
        playback_overflow_samples: 0,
        caller_audio: Vec::new(),
        agent_audio: Vec::new(),
        caller_ulaw: Vec::new(),
        agent_ulaw: Vec::new(),
    };
    let send = |text: String| Message::Text(text.into());
    let connected = Inbound::Connected(Connected {
        protocol: "Call".into(),
        version: "1.0.0".into(),
    });
    let start = Inbound::Start(Start {
        sequence_number: seq,
        stream_sid: params.stream_sid.clone(),
        account_sid: params.account_sid.clone(),
        call_sid: params.call_sid.clone(),
        tracks: vec!["inbound".into()],
        custom_parameters: params.custom_parameters.clone(),
        media_format: MediaFormat::default(),
    });
    seq += 1;
    if sink.send(send(connected.to_json())).await.is_err()
        || sink.send(send(start.to_json())).await.is_err()
    {
        reader.abort();
        return Err(CallerError::Connect("stream closed before start".into()));
    }

    let mut playback = Playback {
        queue: VecDeque::new(),
        samples: 0,
    };
    let mut step_idx = 0usize;
    let mut step_started_ms = 0u64;
    let mut agent_since_step = false;
    let mut last_agent_ms: Option<u64> = None;
    let mut agent_run_start: Option<u64> = None;
    let mut speaking: Option<(Arc<[u8]>, usize)> = None;
    let mut pending_dtmf: VecDeque<char> = VecDeque::new();
    let mut stop_signal = opts.stop.take();
    let t0 = tokio::time::Instant::now();
    let tick = Duration::from_secs_f64(TICK_MS as f64 / 1000.0 / speed);
    let mut tick_no: u64 = 0;
    let mut played = Vec::with_capacity(FRAME);
    let mut due_marks = Vec::new();
    let silence_frame = [mulaw::SILENCE; FRAME];

    'call: loop {
        let now_ms = tick_no * TICK_MS;
        tokio::time::sleep_until(t0 + tick * tick_no as u32).await;

        // 1. Messages from the server.
        while let Ok(inc) = rx.try_recv() {
            match inc {
                Incoming::Closed(reason) => {
                    result.end = CallEnd::ServerClosed(reason);
                    break 'call;
                }
                Incoming::Text(text) => match twilio::parse_outbound(&text) {
                    Ok(Outbound::Media {
                        payload_b64,
                        stream_sid,
                    }) => {
                        if stream_sid != params.stream_sid {
                            result.received.push(Received {
                                at_ms: now_ms,
                                kind: ReceivedKind::Invalid {
                                    error: format!("media for unknown stream {stream_sid}"),
                                },
                            });
                            continue;
                        }
                        let bytes = B64.decode(payload_b64.as_bytes()).unwrap_or_default();
                        result.received.push(Received {
                            at_ms: now_ms,
                            kind: ReceivedKind::Media { bytes: bytes.len() },
                        });
                        let samples: Vec<i16> = bytes.iter().map(|&b| mulaw::decode(b)).collect();
                        if opts.record_audio {
                            result.agent_ulaw.extend_from_slice(&bytes);
                        }
                        let n = samples.len();
                        if !playback.push_audio(samples) {
                            result.playback_overflow_samples += n as u64;
                        }
                    }
                    Ok(Outbound::Mark { name, .. }) => {
                        result.received.push(Received {
                            at_ms: now_ms,
                            kind: ReceivedKind::Mark {
                                name: name.to_string(),
                            },
                        });
                        playback
                            .queue
                            .push_back(Queued::Mark(name.into_owned(), now_ms));
                    }
                    Ok(Outbound::Clear { .. }) => {
                        result.received.push(Received {
                            at_ms: now_ms,
                            kind: ReceivedKind::Clear,
                        });
                        result.clears_ms.push(now_ms);
                        let (discarded, marks) = playback.clear();
                        result.cleared_samples += discarded as u64;
                        for (name, at) in marks {
                            let frame = twilio::Inbound::Mark(twilio::Mark {
                                sequence_number: seq,
                                stream_sid: params.stream_sid.clone(),
                                name: name.clone(),
                            })
                            .to_json();
                            seq += 1;
                            if sink.send(send(frame)).await.is_err() {
                                result.end = CallEnd::ServerClosed("send failed".into());
                                break 'call;
                            }
                            result.marks.push(MarkEcho {
                                name,
                                received_ms: at,
                                echoed_ms: now_ms,
                                cleared: true,
                            });
                        }
                    }
                    Err(e) => result.received.push(Received {
                        at_ms: now_ms,
                        kind: ReceivedKind::Invalid {
                            error: e.to_string(),
                        },
                    }),
                },
            }
        }

        // 2. Play one frame of agent audio; echo marks whose audio has played.
        played.clear();
        playback.play(&mut played, &mut due_marks);
        let agent_active = !played.is_empty();
        if agent_active {
            result.first_agent_audio_ms.get_or_insert(now_ms);
            agent_since_step = true;
            last_agent_ms = Some(now_ms + TICK_MS);
            agent_run_start.get_or_insert(now_ms);
        } else {
            agent_run_start = None;
        }
        for (name, at) in due_marks.drain(..) {
            let frame = twilio::Inbound::Mark(twilio::Mark {
                sequence_number: seq,
                stream_sid: params.stream_sid.clone(),
                name: name.clone(),
            })
            .to_json();
            seq += 1;
            if sink.send(send(frame)).await.is_err() {
                result.end = CallEnd::ServerClosed("send failed".into());
                break 'call;
            }
            result.marks.push(MarkEcho {
                name,
                received_ms: at,
                echoed_ms: now_ms + TICK_MS,
                cleared: false,
            });
        }

        // 3. Script.
        let mut hangup = false;
        if speaking.is_none() && pending_dtmf.is_empty() {
            if let Some((trigger, action)) = steps.get(step_idx) {
                let agent_wait = matches!(
                    trigger,
                    Trigger::AfterAgent(_) | Trigger::AfterAgentStarts(_)
                );
                let timed_out = agent_wait && now_ms >= step_started_ms + script.step_timeout_ms;
                let fire = match *trigger {
                    Trigger::At(t) => now_ms >= t,
                    Trigger::After(d) => now_ms >= step_started_ms + d,
                    Trigger::AfterAgent(d) => {
                        agent_since_step
                            && playback.samples == 0
                            && !agent_active
                            && last_agent_ms.is_some_and(|l| now_ms >= l + d)
                    }
                    Trigger::AfterAgentStarts(d) => {
                        agent_active && agent_run_start.is_some_and(|s| now_ms >= s + d)
                    }
                } || timed_out;
                if fire {
                    let label = match action {
                        Action::Say(t) => format!("say: {t}"),
                        Action::Dtmf(d) => format!("dtmf: {d}"),
                        Action::Hangup => "hangup".to_owned(),
                    };
                    result.steps.push(StepLog {
                        index: step_idx,
                        action: label,
                        fired_ms: now_ms,
                        done_ms: None,
                        timed_out: timed_out
                            && !matches!(*trigger, Trigger::At(_) | Trigger::After(_)),
                    });
                    match action {
                        Action::Say(text) => {
                            let pcm = synth::synthesize(text, Voice::CALLER, 8000);
                            let bytes: Arc<[u8]> = pcm
                                .iter()
                                .map(|&s| mulaw::encode(s))
                                .collect::<Vec<u8>>()
                                .into();
                            speaking = Some((bytes, 0));
                        }
                        Action::Dtmf(d) => pending_dtmf.extend(d.chars()),
                        Action::Hangup => hangup = true,
                    }
                    step_idx += 1;
                }
            }
        }
        if hangup {
            if let Some(s) = result.steps.last_mut() {
                s.done_ms = Some(now_ms);
            }
            let stop = Inbound::Stop(Stop {
                sequence_number: seq,
                stream_sid: params.stream_sid.clone(),
                account_sid: params.account_sid.clone(),
                call_sid: params.call_sid.clone(),
            });
            let _ = sink.send(send(stop.to_json())).await;
            let _ = sink.send(Message::Close(None)).await;
            result.end = CallEnd::Hangup;
            break 'call;
        }
        if let Some(digit) = pending_dtmf.pop_front() {
            let d = Inbound::Dtmf(Dtmf {
                sequence_number: seq,
                stream_sid: params.stream_sid.clone(),
                track: "inbound_track".into(),
                digit: digit.to_string(),
            });
            seq += 1;
            if sink.send(send(d.to_json())).await.is_err() {
                result.end = CallEnd::ServerClosed("send failed".into());
                break 'call;
            }
            if pending_dtmf.is_empty() {
                step_started_ms = now_ms + TICK_MS;
                agent_since_step = false;
                if let Some(s) = result.steps.last_mut() {
                    s.done_ms = Some(now_ms);
                }
            }
        }

        // 4. One 20 ms caller frame.
        let mut frame_bytes = [0u8; FRAME];
        match &mut speaking {
            Some((bytes, pos)) => {
                let take = FRAME.min(bytes.len() - *pos);
                frame_bytes[..take].copy_from_slice(&bytes[*pos..*pos + take]);
                frame_bytes[take..].fill(mulaw::SILENCE);
                *pos += take;
                if *pos >= bytes.len() {
                    speaking = None;
                    step_started_ms = now_ms + TICK_MS;
                    agent_since_step = false;
                    if let Some(s) = result.steps.last_mut() {
                        s.done_ms = Some(now_ms + TICK_MS);
                    }
                }
            }
            None => frame_bytes.copy_from_slice(&silence_frame),
        }
        let media = Inbound::Media(Media {
            sequence_number: seq,
            stream_sid: params.stream_sid.as_str().into(),
            track: "inbound".into(),
            chunk: result.frames_sent + 1,
            timestamp: now_ms,
            payload: B64.encode(frame_bytes).into(),
        });
        seq += 1;
        if sink.send(send(media.to_json())).await.is_err() {
            result.end = CallEnd::ServerClosed("send failed".into());
            break 'call;
        }
        result.frames_sent += 1;
        if opts.record_audio {
            result.caller_ulaw.extend_from_slice(&frame_bytes);
            result
                .caller_audio
                .extend(frame_bytes.iter().map(|&b| mulaw::decode(b)));
            result.agent_audio.extend_from_slice(&played);
            result.agent_audio.resize(result.caller_audio.len(), 0);
        }
        tick_no += 1;

        // 5. External stop and the duration cap.
        if let Some(sig) = stop_signal.as_mut() {
            if futures_util::FutureExt::now_or_never(sig.as_mut()).is_some() {
                let stop = Inbound::Stop(Stop {
                    sequence_number: seq,
                    stream_sid: params.stream_sid.clone(),
                    account_sid: params.account_sid.clone(),
                    call_sid: params.call_sid.clone(),
                });
                let _ = sink.send(send(stop.to_json())).await;
                let _ = sink.send(Message::Close(None)).await;
                result.end = CallEnd::StopSignal;
                break 'call;
            }
        }
        if tick_no * TICK_MS >= script.max_duration_ms {
            let _ = sink.send(Message::Close(None)).await;
            result.end = CallEnd::MaxDuration;
            break 'call;
        }
    }
    result.duration_ms = tick_no * TICK_MS;
    reader.abort();
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twiml_stream_and_parameters() {
        let twiml = r#"<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="wss://eu.bridge.example/media"><Parameter name="handoff" value="v1.k1.a&amp;b"/><Parameter name="restaurant_id" value="trattoria-roma" /><Parameter name="caller" value="+393331110001"/></Stream></Connect></Response>"#;
        let (url, p) = stream_from_twiml(twiml).unwrap();
        assert_eq!(url, "wss://eu.bridge.example/media");
        assert_eq!(p["handoff"], "v1.k1.a&b");
        assert_eq!(p["restaurant_id"], "trattoria-roma");
        assert_eq!(p["caller"], "+393331110001");
        assert!(stream_from_twiml("<Response><Say>Closed</Say><Hangup/></Response>").is_err());
    }

    #[test]
    fn playback_marks_follow_audio_and_clear_returns_them() {
        let mut p = Playback {
            queue: VecDeque::new(),
            samples: 0,
        };
        let mut marks = Vec::new();
        let mut out = Vec::new();
        p.push_audio(vec![1; 200]);
        p.queue.push_back(Queued::Mark("a".into(), 0));
        p.push_audio(vec![2; 300]);
        p.queue.push_back(Queued::Mark("b".into(), 0));
        p.play(&mut out, &mut marks);
        assert_eq!(out, vec![1; 160]);
        assert!(marks.is_empty());
        out.clear();
        p.play(&mut out, &mut marks);
        assert_eq!(out.len(), 160);
        assert_eq!(&out[..40], &[1; 40]);
        assert_eq!(
            marks.iter().map(|m| m.0.as_str()).collect::<Vec<_>>(),
            vec!["a"]
        );
        marks.clear();
        let (discarded, pending) = p.clear();
        assert_eq!(discarded, 180);
        // "b" comes back at once although its audio never played.
        assert_eq!(
            pending.iter().map(|m| m.0.as_str()).collect::<Vec<_>>(),
            vec!["b"]
        );
        out.clear();
        p.play(&mut out, &mut marks);
        assert!(out.is_empty() && marks.is_empty());
        // A mark with nothing queued before it is due immediately.
        p.queue.push_back(Queued::Mark("c".into(), 0));
        p.play(&mut out, &mut marks);
        assert_eq!(marks.len(), 1);
        assert_eq!(p.samples, 0);
    }
}
