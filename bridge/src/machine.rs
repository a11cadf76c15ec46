//! The per-call state machine, sans-IO: it consumes decoded Twilio and ElevenLabs messages, tool
//! results and "now" (milliseconds since the stream started), and produces [`Out`] commands (frames
//! to send, tools to run, calls to update) plus, at the end, the [`CallRecord`].
//!
//! The I/O shell ([`crate::session`]) owns the sockets and timers; everything that decides *what*
//! happens — pass-through vs transcoding, barge-in, which marks prove the caller heard what,
//! transcript cutting, DTMF routing, tool bookkeeping and actions — lives here and is unit-tested
//! without a socket.
//!
//! Barge-in and "heard": every agent audio chunk sent to Twilio is followed by a `mark` named with a
//! sequence number. Twilio echoes a mark once the audio before it has played, so the echoed marks
//! measure how much of each agent turn the caller heard. On `interruption` the bridge sends
//! `clear`, forgets the pending marks (Twilio echoes them at once after a clear, which proves
//! nothing), drops any further audio of the interrupted response (`event_id` ≤ the interruption's)
//! and cuts the turn's transcript line to the heard fraction.

use std::collections::VecDeque;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use pulsara_core::call_record::{
    CallRecord, DtmfEvent, EndReason, EndReasonDetail, Fallback, Notification, Role, ToolRun,
    TranscriptLine, Transfer,
};
use pulsara_core::config::{DtmfAction, RestaurantConfig};
use pulsara_media::audio::{Converter, Format};
use pulsara_media::convai::{self, InitiationMetadata, ServerMessage, ToolCall};
use pulsara_media::twilio::{self as tw, Inbound};
use pulsara_policy_abi::{Action, EarlierResult};

use crate::latency::Latency;
use crate::ports::{ToolError, ToolOutcome};

/// Most marks remembered while unanswered (≈ minutes of audio); older ones are forgotten.
const MAX_PENDING_MARKS: usize = 4096;
/// Most earlier tool results handed to the next tool.
const MAX_EARLIER: usize = 16;

/// A command for the I/O shell.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    /// A text frame for Twilio (`mark`, …); audio goes as [`Out::MediaToTwilio`].
    ToTwilio(String),
    /// A `media` message for Twilio: one frame of the agent's audio (`pulsara_frames_total`
    /// counts it as `out_twilio`).
    MediaToTwilio(String),
    /// Barge-in: drop anything queued for Twilio, then send this `clear` frame.
    ClearTwilio(String),
    /// A text frame for ElevenLabs (context, tool results, pongs); audio goes as
    /// [`Out::AudioToAgent`].
    ToAgent(String),
    /// A `user_audio_chunk` for ElevenLabs: one frame of the caller's audio (counted as
    /// `out_agent`).
    AudioToAgent(String),
    /// Run a tool; answer with [`CallMachine::on_tool_done`].
    RunTool {
        tool_call_id: String,
        tool: String,
        params: serde_json::Value,
    },
    /// Dial a human through Twilio's REST API; answer with [`CallMachine::on_transfer_done`].
    Transfer { to: String, reason: String },
    /// Transfer wanted but no staff number is configured: tell the agent instead.
    /// (Already handled internally by a contextual update; kept for logs.)
    TransferUnavailable { reason: String },
    /// End the call (hang up through Twilio's REST API), then close both sockets.
    EndCall { reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AgentState {
    Connecting,
    Ready,
    Gone,
}

#[derive(Debug, Default)]
struct Turn {
    line: Option<usize>,
    sent_ms: u64,
    heard_ms: u64,
    interrupted: bool,
}

/// Facts about the call known at start.
#[derive(Debug, Clone)]
pub struct CallInfo {
    pub call_sid: String,
    pub stream_sid: String,
    pub restaurant: Arc<RestaurantConfig>,
    pub config_version: u64,
    pub caller: String,
    pub called: String,
    /// RFC 3339 UTC of the stream start.
    pub started_at: String,
}

/// Per-call limits the machine enforces.
#[derive(Debug, Clone, Copy)]
pub struct MachineLimits {
    pub early_audio_frames: usize,
    pub max_transcript_lines: usize,
    pub max_tool_runs: usize,
    /// Caller audio may run ahead of real time by at most this much (network jitter and
    /// Twilio's own bursts); anything faster is dropped, never forwarded to the agent.
    pub caller_audio_burst_ms: u64,
}

impl Default for MachineLimits {
    fn default() -> Self {
        MachineLimits {
            early_audio_frames: 100,
            max_transcript_lines: 2000,
            max_tool_runs: 200,
            caller_audio_burst_ms: 2_000,
        }
    }
}

/// Counters the shell turns into metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FrameStats {
    pub caller_frames: u64,
    pub agent_frames: u64,
    pub dropped_frames: u64,
    pub malformed_twilio: u64,
    pub malformed_agent: u64,
    /// Caller frames dropped because the caller sent audio faster than real time.
    pub policed_frames: u64,
}

/// Caller audio policing: a token bucket in 8 kHz samples that fills at real time.
///
/// The allowance is the time since the first caller frame plus the burst; a frame that would
/// take the caller past it is dropped. Time is the shell's monotonic clock, never the frame's own
/// `timestamp` (the sender controls that).
#[derive(Debug, Default)]
struct AudioPolice {
    first_ms: Option<u64>,
    samples: u64,
}

impl AudioPolice {
    /// True when `samples` more caller samples at `now_ms` stay within real time plus `burst_ms`.
    fn admit(&mut self, samples: u64, now_ms: u64, burst_ms: u64) -> bool {
        let first = *self.first_ms.get_or_insert(now_ms);
        let allowed = now_ms.saturating_sub(first).saturating_add(burst_ms).saturating_mul(8);
        if self.samples.saturating_add(samples) > allowed {
            return false;
        }
        self.samples += samples;
        true
    }
}

/// One call.
pub struct CallMachine {
    info: CallInfo,
    limits: MachineLimits,
    agent: AgentState,
    /// Caller audio (base64 μ-law) waiting for the agent to be ready.
    early: VecDeque<String>,
    /// `None` = pass-through (both sides μ-law 8 kHz).
    to_agent: Option<Converter>,
    to_caller: Option<Converter>,
    agent_out_format: Format,
    transcript: Vec<TranscriptLine>,
    turns: Vec<Turn>,
    current_turn: Option<usize>,
    unassigned_line: Option<usize>,
    pending_marks: VecDeque<(u64, usize, u64)>,
    next_mark: u64,
    /// Agent audio with an `event_id` at or below this belongs to an interrupted response.
    interrupted_up_to: Option<u64>,
    tool_runs: Vec<ToolRun>,
    earlier: Vec<EarlierResult>,
    orders: Vec<serde_json::Value>,
    bookings: Vec<serde_json::Value>,
    transfer: Option<Transfer>,
    fallback: Option<Fallback>,
    /// What ElevenLabs said when it refused or ended the conversation.
    end_detail: Option<EndReasonDetail>,
    dtmf: Vec<DtmfEvent>,
    notifications: Vec<Notification>,
    conversation_id: Option<String>,
    agent_format_name: Option<String>,
    end: Option<EndReason>,
    /// Set once a transfer or end was requested, so a second one is not.
    leaving: bool,
    pub stats: FrameStats,
    police: AudioPolice,
    scratch_pcm: Vec<u8>,
    /// What the caller waits for; the shell adds the bridge's share.
    pub latency: Latency,
}

impl CallMachine {
    pub fn new(info: CallInfo, limits: MachineLimits) -> Self {
        CallMachine {
            info,
            limits,
            agent: AgentState::Connecting,
            early: VecDeque::new(),
            to_agent: None,
            to_caller: None,
            agent_out_format: Format::Ulaw8000,
            transcript: Vec::new(),
            turns: Vec::new(),
            current_turn: None,
            unassigned_line: None,
            pending_marks: VecDeque::new(),
            next_mark: 1,
            interrupted_up_to: None,
            tool_runs: Vec::new(),
            earlier: Vec::new(),
            orders: Vec::new(),
            bookings: Vec::new(),
            transfer: None,
            fallback: None,
            end_detail: None,
            dtmf: Vec::new(),
            notifications: Vec::new(),
            conversation_id: None,
            agent_format_name: None,
            end: None,
            leaving: false,
            stats: FrameStats::default(),
            police: AudioPolice::default(),
            scratch_pcm: Vec::new(),
            latency: Latency::default(),
        }
    }

    pub fn info(&self) -> &CallInfo {
        &self.info
    }

    /// True when both directions pass base64 through untouched.
    pub fn is_pass_through(&self) -> bool {
        self.agent == AgentState::Ready && self.to_agent.is_none() && self.to_caller.is_none()
    }

    /// Agent audio sent to Twilio whose mark has not come back yet (still playing).
    pub fn audio_pending(&self) -> bool {
        !self.pending_marks.is_empty()
    }

    pub fn agent_ready(&self) -> bool {
        self.agent == AgentState::Ready
    }

    pub fn end_reason(&self) -> Option<EndReason> {
        self.end
    }

    /// Earlier successful tool results (for the next tool's context).
    pub fn earlier_results(&self) -> Vec<EarlierResult> {
        self.earlier.clone()
    }

    /// The agent socket is open and `conversation_initiation_metadata` arrived.
    ///
    /// # Errors
    /// A clear message when the agent uses an audio format the bridge cannot convert.
    pub fn on_agent_connected(
        &mut self,
        meta: &InitiationMetadata,
        out: &mut Vec<Out>,
    ) -> Result<(), String> {
        let input: Format = meta
            .user_input_audio_format
            .parse()
            .map_err(|e| format!("agent user_input_audio_format: {e}"))?;
        let output: Format = meta
            .agent_output_audio_format
            .parse()
            .map_err(|e| format!("agent agent_output_audio_format: {e}"))?;
        self.to_agent =
            (input != Format::Ulaw8000).then(|| Converter::new(Format::Ulaw8000, input));
        self.to_caller =
            (output != Format::Ulaw8000).then(|| Converter::new(output, Format::Ulaw8000));
        self.agent_out_format = output;
        self.agent_format_name = Some(if input == output {
            output.to_string()
        } else {
            format!("in:{input},out:{output}")
        });
        if !meta.conversation_id.is_empty() {
            self.conversation_id = Some(meta.conversation_id.clone());
        }
        self.agent = AgentState::Ready;
        while let Some(payload) = self.early.pop_front() {
            self.forward_caller_audio(&payload, out);
        }
        self.latency.on_early_flushed();
        Ok(())
    }

    /// The agent socket is gone (closed, failed, or given up on).
    pub fn on_agent_gone(&mut self) {
        self.agent = AgentState::Gone;
        self.early.clear();
    }

    /// A reconnect is being attempted: buffer caller audio again.
    pub fn on_agent_reconnecting(&mut self) {
        self.agent = AgentState::Connecting;
    }

    /// One decoded Twilio message.
    pub fn on_twilio(&mut self, msg: Inbound<'_>, now_ms: u64, out: &mut Vec<Out>) {
        match msg {
            Inbound::Media(m) => {
                if m.track != "inbound" && !m.track.is_empty() {
                    return;
                }
                self.stats.caller_frames += 1;
                // μ-law: one byte per 8 kHz sample.
                let samples = b64_len(&m.payload) as u64;
                if !self.police.admit(samples, now_ms, self.limits.caller_audio_burst_ms) {
                    self.stats.policed_frames += 1;
                    return;
                }
                self.latency.on_caller_frame(&m.payload, now_ms);
                match self.agent {
                    AgentState::Ready => self.forward_caller_audio(&m.payload, out),
                    AgentState::Connecting => {
                        self.latency.on_early_frame(now_ms);
                        if self.early.len() >= self.limits.early_audio_frames {
                            self.early.pop_front();
                            self.stats.dropped_frames += 1;
                        }
                        self.early.push_back(m.payload.into_owned());
                    }
                    AgentState::Gone => self.stats.dropped_frames += 1,
                }
            }
            Inbound::Mark(m) => self.on_mark(&m.name),
            Inbound::Dtmf(d) => self.on_dtmf(&d.digit, now_ms, out),
            Inbound::Stop(_) => {
                self.end.get_or_insert(EndReason::CallerHungUp);
            }
            Inbound::Connected(_) | Inbound::Start(_) | Inbound::Unknown { .. } => {}
        }
    }

    fn forward_caller_audio(&mut self, payload_b64: &str, out: &mut Vec<Out>) {
        match &mut self.to_agent {
            None => match convai::user_audio_chunk_json(payload_b64) {
                Ok(f) => out.push(Out::AudioToAgent(f)),
                Err(_) => self.stats.dropped_frames += 1,
            },
            Some(conv) => {
                let Ok(ulaw) = B64.decode(payload_b64) else {
                    self.stats.dropped_frames += 1;
                    return;
                };
                self.scratch_pcm.clear();
                conv.process(&ulaw, &mut self.scratch_pcm);
                if self.scratch_pcm.is_empty() {
                    return;
                }
                let b64 = B64.encode(&self.scratch_pcm);
                match convai::user_audio_chunk_json(&b64) {
                    Ok(f) => out.push(Out::AudioToAgent(f)),
                    Err(_) => self.stats.dropped_frames += 1,
                }
            }
        }
    }

    fn on_mark(&mut self, name: &str) {
        let Ok(seq) = name.parse::<u64>() else { return };
        while let Some(&(s, turn, ms)) = self.pending_marks.front() {
            if s > seq {
                break;
            }
            self.pending_marks.pop_front();
            if let Some(t) = self.turns.get_mut(turn) {
                t.heard_ms += ms;
            }
        }
    }

    fn on_dtmf(&mut self, digit: &str, now_ms: u64, out: &mut Vec<Out>) {
        let digit: String = digit.chars().take(2).collect();
        let action = self.info.restaurant.dtmf.get(&digit).cloned();
        let name = match action {
            Some(DtmfAction::TransferToStaff) => {
                self.request_transfer(format!("caller pressed {digit}"), out);
                "transfer_to_staff"
            }
            Some(DtmfAction::Say { text }) => {
                self.send_agent_text(convai::ClientMessage::ContextualUpdate { text }, out);
                "say"
            }
            Some(DtmfAction::EndCall) => {
                self.request_end(format!("caller pressed {digit}"), out);
                "end_call"
            }
            None => {
                let text = format!("The caller pressed the key {digit} on their phone keypad.");
                self.send_agent_text(convai::ClientMessage::ContextualUpdate { text }, out);
                "contextual_update"
            }
        };
        if self.dtmf.len() < 1000 {
            self.dtmf.push(DtmfEvent {
                digit,
                at_ms: now_ms,
                action: name.to_owned(),
            });
        }
    }

    fn send_agent_text(&mut self, msg: convai::ClientMessage<'_>, out: &mut Vec<Out>) {
        if self.agent == AgentState::Ready {
            out.push(Out::ToAgent(msg.to_json()));
        }
    }

    fn request_transfer(&mut self, reason: String, out: &mut Vec<Out>) {
        if self.leaving {
            return;
        }
        match self
            .info
            .restaurant
            .staff_number
            .clone()
            .or_else(|| self.info.restaurant.fallback_number.clone())
        {
            Some(to) => {
                self.leaving = true;
                out.push(Out::Transfer { to, reason });
            }
            None => {
                let text = "No staff line is available for a transfer right now; offer to take a \
                            message instead."
                    .to_owned();
                self.send_agent_text(convai::ClientMessage::ContextualUpdate { text }, out);
                out.push(Out::TransferUnavailable { reason });
            }
        }
    }

    fn request_end(&mut self, reason: String, out: &mut Vec<Out>) {
        if self.leaving {
            return;
        }
        self.leaving = true;
        out.push(Out::EndCall { reason });
    }

    /// Result of the REST call update for a transfer.
    pub fn on_transfer_done(&mut self, to: String, reason: String, ok: bool, now_ms: u64) {
        self.transfer = Some(Transfer {
            to,
            reason,
            at_ms: now_ms,
            ok,
        });
        if ok {
            self.end = Some(EndReason::Transfer);
        } else {
            self.leaving = false;
        }
    }

    /// The call was ended on the agent's (or a DTMF key's) request.
    pub fn on_end_done(&mut self) {
        self.end.get_or_insert(EndReason::AgentEnded);
    }

    /// The agent could not be reached; the restaurant fallback was played.
    pub fn on_fallback(
        &mut self,
        kind: &str,
        to: Option<String>,
        reason: String,
        ok: bool,
        now_ms: u64,
    ) {
        self.fallback = Some(Fallback {
            kind: kind.to_owned(),
            to,
            reason,
            at_ms: now_ms,
            ok,
        });
        self.end = Some(EndReason::AgentFailed);
    }

    /// Sets the end reason unless one is already known.
    pub fn set_end(&mut self, reason: EndReason) {
        self.end.get_or_insert(reason);
    }

    /// Keeps what ElevenLabs said about the end of the conversation (the latest word wins
    /// field by field: an `error` event, then the close frame).
    pub fn note_agent_end(&mut self, detail: EndReasonDetail) {
        let d = self.end_detail.get_or_insert_with(Default::default);
        if detail.error_type.is_some() || detail.error_code.is_some() || detail.error_message.is_some() {
            d.error_type = detail.error_type;
            d.error_code = detail.error_code;
            d.error_message = detail.error_message;
        }
        if detail.close_code.is_some() {
            d.close_code = detail.close_code;
            d.close_reason = detail.close_reason;
        }
    }

    /// Overrides the end reason (e.g. shutdown).
    pub fn force_end(&mut self, reason: EndReason) {
        self.end = Some(reason);
    }

    /// One decoded ElevenLabs message.
    pub fn on_agent(&mut self, msg: ServerMessage<'_>, now_ms: u64, out: &mut Vec<Out>) {
        match msg {
            ServerMessage::ConversationInitiationMetadata(_) => {}
            ServerMessage::Audio {
                audio_b64,
                event_id,
            } => {
                self.stats.agent_frames += 1;
                if self.interrupted_up_to.is_some_and(|up| event_id <= up) || self.leaving {
                    self.stats.dropped_frames += 1;
                    return;
                }
                self.on_agent_audio(&audio_b64, now_ms, out);
            }
            ServerMessage::Interruption { event_id } => {
                self.interrupted_up_to =
                    Some(self.interrupted_up_to.map_or(event_id, |u| u.max(event_id)));
                out.push(Out::ClearTwilio(tw::clear_json(&self.info.stream_sid)));
                self.pending_marks.clear();
                if let Some(t) = self.current_turn.take() {
                    self.turns[t].interrupted = true;
                }
            }
            ServerMessage::AgentResponse { text, .. } => {
                if let Some(idx) = self.push_line(Role::Agent, text, now_ms) {
                    match self.current_turn {
                        Some(t) if self.turns[t].line.is_none() => self.turns[t].line = Some(idx),
                        _ => {
                            self.current_turn = None;
                            self.unassigned_line = Some(idx);
                        }
                    }
                }
            }
            ServerMessage::AgentResponseCorrection {
                original,
                corrected,
                ..
            } => {
                if let Some(line) = self
                    .transcript
                    .iter_mut()
                    .rev()
                    .find(|l| l.role == Role::Agent && l.text == original)
                {
                    line.full_text = Some(original);
                    line.text = corrected;
                    line.cut = true;
                }
            }
            ServerMessage::UserTranscript { text, .. } => {
                self.current_turn = None;
                self.push_line(Role::Caller, text, now_ms);
            }
            ServerMessage::Ping { event_id, .. } => {
                out.push(Out::ToAgent(convai::pong_json(event_id)));
            }
            ServerMessage::ClientToolCall(ToolCall {
                tool_name,
                tool_call_id,
                parameters,
                ..
            }) => {
                out.push(Out::RunTool {
                    tool_call_id,
                    tool: tool_name,
                    params: parameters,
                });
            }
            // The shell logs and counts it and folds it in with `note_agent_end`.
            ServerMessage::Error(_)
            | ServerMessage::VadScore { .. }
            | ServerMessage::InternalTentativeAgentResponse { .. }
            | ServerMessage::Unknown { .. } => {}
        }
    }

    fn push_line(&mut self, role: Role, text: String, now_ms: u64) -> Option<usize> {
        if self.transcript.len() >= self.limits.max_transcript_lines {
            return None;
        }
        let text: String = text.chars().take(4000).collect();
        self.transcript.push(TranscriptLine {
            role,
            text,
            at_ms: now_ms,
            heard: true,
            cut: false,
            full_text: None,
        });
        Some(self.transcript.len() - 1)
    }

    fn on_agent_audio(&mut self, audio_b64: &str, now_ms: u64, out: &mut Vec<Out>) {
        let (payload, ms) = match &mut self.to_caller {
            None => {
                let bytes = b64_len(audio_b64);
                (
                    std::borrow::Cow::Borrowed(audio_b64),
                    Format::Ulaw8000.duration_ms(bytes),
                )
            }
            Some(conv) => {
                let Ok(raw) = B64.decode(audio_b64) else {
                    self.stats.dropped_frames += 1;
                    return;
                };
                let ms = self.agent_out_format.duration_ms(raw.len());
                self.scratch_pcm.clear();
                conv.process(&raw, &mut self.scratch_pcm);
                if self.scratch_pcm.is_empty() {
                    return;
                }
                (std::borrow::Cow::Owned(B64.encode(&self.scratch_pcm)), ms)
            }
        };
        let Ok(frame) = tw::media_json(&self.info.stream_sid, &payload) else {
            self.stats.dropped_frames += 1;
            return;
        };
        let turn = match self.current_turn {
            Some(t) => t,
            None => {
                // The first audio of a response: what the caller waited for ends here.
                self.latency.on_response_audio(now_ms);
                self.turns.push(Turn {
                    line: self.unassigned_line.take(),
                    ..Default::default()
                });
                let t = self.turns.len() - 1;
                self.current_turn = Some(t);
                t
            }
        };
        self.turns[turn].sent_ms += ms;
        let seq = self.next_mark;
        self.next_mark += 1;
        if self.pending_marks.len() >= MAX_PENDING_MARKS {
            self.pending_marks.pop_front();
        }
        self.pending_marks.push_back((seq, turn, ms));
        out.push(Out::MediaToTwilio(frame));
        out.push(Out::ToTwilio(tw::mark_json(
            &self.info.stream_sid,
            &seq.to_string(),
        )));
    }

    /// A tool finished (or failed, or timed out). Sends the `client_tool_result`, records the run
    /// and performs its actions.
    #[allow(clippy::too_many_arguments)]
    pub fn on_tool_done(
        &mut self,
        tool_call_id: String,
        tool: String,
        input: serde_json::Value,
        result: Result<ToolOutcome, ToolError>,
        duration_us: u64,
        now_ms: u64,
        out: &mut Vec<Out>,
    ) {
        let (text, is_error, fuel, sha, actions, output) = match result {
            Ok(o) => (
                o.result,
                o.is_error,
                o.fuel_used,
                o.module_sha256,
                o.actions,
                o.output,
            ),
            Err(e) => (e.speakable(), true, None, None, Vec::new(), None),
        };
        self.send_agent_text(
            convai::ClientMessage::ClientToolResult {
                tool_call_id: tool_call_id.clone(),
                result: text.clone(),
                is_error,
            },
            out,
        );
        if !is_error {
            if let Some(o) = output {
                if self.earlier.len() >= MAX_EARLIER {
                    self.earlier.remove(0);
                }
                self.earlier.push(EarlierResult {
                    tool: tool.clone(),
                    output: o,
                });
            }
        }
        if self.tool_runs.len() < self.limits.max_tool_runs {
            self.tool_runs.push(ToolRun {
                tool,
                tool_call_id,
                input,
                output: text,
                is_error,
                duration_us,
                fuel_used: fuel,
                module_sha256: sha,
                at_ms: now_ms,
            });
        }
        for action in actions {
            self.perform(action, out);
        }
    }

    fn perform(&mut self, action: Action, out: &mut Vec<Out>) {
        match action {
            Action::RecordOrder(o) => {
                if self.orders.len() < 50 {
                    self.orders
                        .push(serde_json::to_value(o).unwrap_or_default());
                }
            }
            Action::RecordBooking(b) => {
                if self.bookings.len() < 50 {
                    self.bookings
                        .push(serde_json::to_value(b).unwrap_or_default());
                }
            }
            Action::TransferToStaff { reason } => self.request_transfer(reason, out),
            Action::EndCall { reason } => self.request_end(reason, out),
            Action::SendSms { to, body } => self.notify("sms", to, None, body),
            Action::SendEmail { to, subject, body } => {
                self.notify("email", to, Some(subject), body)
            }
        }
    }

    fn notify(&mut self, channel: &str, to: String, subject: Option<String>, body: String) {
        if self.notifications.len() < 20 {
            self.notifications.push(Notification {
                channel: channel.to_owned(),
                to,
                subject,
                body,
                status: "requested".to_owned(),
                error: None,
            });
        }
    }

    /// Completes the record. Agent lines whose audio was not all heard are cut to the heard part.
    pub fn finish(mut self, ended_at: String, duration_ms: u64) -> CallRecord {
        let mut has_turn = vec![false; self.transcript.len()];
        for t in &self.turns {
            let Some(line) = t.line.and_then(|i| self.transcript.get_mut(i)) else {
                continue;
            };
            has_turn[t.line.unwrap_or(0)] = true;
            // Marks arrive per chunk; allow one 20 ms frame of slack for rounding.
            if t.heard_ms + 20 >= t.sent_ms {
                continue;
            }
            let full = line.full_text.clone().unwrap_or_else(|| line.text.clone());
            line.text = cut_words(&full, t.heard_ms, t.sent_ms);
            line.full_text = Some(full);
            line.cut = true;
            line.heard = t.heard_ms > 0;
            let _ = t.interrupted;
        }
        for (i, line) in self.transcript.iter_mut().enumerate() {
            if line.role == Role::Agent && !has_turn[i] {
                // Text the agent produced without any audio reaching the caller.
                line.heard = false;
            }
        }
        let info = self.info;
        CallRecord {
            call_sid: info.call_sid,
            stream_sid: info.stream_sid,
            restaurant_id: info.restaurant.id.clone(),
            config_version: info.config_version,
            caller: info.caller,
            called: info.called,
            started_at: info.started_at,
            ended_at,
            duration_ms,
            end_reason: self.end.unwrap_or(EndReason::CallerHungUp),
            transcript: self.transcript,
            tool_runs: self.tool_runs,
            orders: self.orders,
            bookings: self.bookings,
            transfer: self.transfer,
            dtmf: self.dtmf,
            voicemail: None,
            sentiment: None,
            summary: None,
            elevenlabs_conversation_id: self.conversation_id,
            notifications: self.notifications,
            fallback: self.fallback,
            agent_audio_format: self.agent_format_name,
            end_reason_detail: self.end_detail,
            latency: self.latency.finish(),
        }
    }
}

/// Decoded length of standard padded base64 without decoding.
fn b64_len(s: &str) -> usize {
    let pad = s.bytes().rev().take_while(|&b| b == b'=').count();
    ((s.len() / 4) * 3).saturating_sub(pad.min(2))
}

/// The first `heard/sent` share of `text`'s words (at least one word when anything was heard).
fn cut_words(text: &str, heard_ms: u64, sent_ms: u64) -> String {
    if heard_ms == 0 || sent_ms == 0 {
        return String::new();
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    let n = ((words.len() as u64 * heard_ms).div_ceil(sent_ms) as usize).clamp(1, words.len());
    words[..n].join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulsara_media::convai::parse_server;
    use pulsara_media::twilio::parse_inbound;

    fn restaurant() -> Arc<RestaurantConfig> {
        let json = r#"{
            "id": "r1", "version": 3, "name": "R1", "phone_numbers": ["+15550001111"],
            "time_zone": "America/New_York", "staff_number": "+15550002222",
            "hours": {"weekly": []},
            "after_hours": {"mode": "message", "message": "Closed"},
            "agent": {"elevenlabs_agent_id": "a", "prompt_template": "p", "first_message": "hi"},
            "dtmf": {"0": {"action": "transfer_to_staff"}, "9": {"action": "say", "text": "menu please"}}
        }"#;
        Arc::new(serde_json::from_str(json).unwrap())
    }

    fn machine() -> CallMachine {
        CallMachine::new(
            CallInfo {
                call_sid: "CA1".into(),
                stream_sid: "MZ1".into(),
                restaurant: restaurant(),
                config_version: 3,
                caller: "+15551234567".into(),
                called: "+15550001111".into(),
                started_at: "2026-01-01T00:00:00Z".into(),
            },
            MachineLimits {
                early_audio_frames: 3,
                ..Default::default()
            },
        )
    }

    fn meta(fmt: &str) -> InitiationMetadata {
        InitiationMetadata {
            conversation_id: "conv1".into(),
            agent_output_audio_format: fmt.into(),
            user_input_audio_format: fmt.into(),
        }
    }

    fn media(payload: &str) -> String {
        format!(
            r#"{{"event":"media","sequenceNumber":"3","streamSid":"MZ1","media":{{"track":"inbound","chunk":"2","timestamp":"40","payload":"{payload}"}}}}"#
        )
    }

    fn agent_audio(b64: &str, id: u64) -> String {
        format!(r#"{{"type":"audio","audio_event":{{"audio_base_64":"{b64}","event_id":{id}}}}}"#)
    }

    fn mark(name: &str) -> String {
        format!(
            r#"{{"event":"mark","streamSid":"MZ1","sequenceNumber":"9","mark":{{"name":"{name}"}}}}"#
        )
    }

    fn to_twilio(out: &[Out]) -> Vec<String> {
        out.iter()
            .filter_map(|o| match o {
                Out::ToTwilio(s) | Out::MediaToTwilio(s) | Out::ClearTwilio(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn caller_audio_faster_than_real_time_is_dropped_not_forwarded() {
        let mut m = machine();
        let mut out = Vec::new();
        m.on_agent_connected(&meta("ulaw_8000"), &mut out).unwrap();
        let frame = B64.encode([0x7fu8; 160]);
        let frame = media(&frame);
        // 400x real time: 2,000 frames of 20 ms (40 s of audio) within 100 ms.
        for i in 0..2000u64 {
            m.on_twilio(parse_inbound(&frame).unwrap(), 1_000 + i / 20, &mut out);
        }
        let forwarded = out.len() as u64;
        // The burst (2,000 ms = 100 frames) plus the 99 ms that passed (4 frames).
        assert_eq!(forwarded, 104, "only real time plus the burst reaches the agent");
        assert_eq!(m.stats.policed_frames, 2000 - forwarded);
        assert_eq!(m.stats.caller_frames, 2000);
        // Back at real-time cadence once the allowance has caught up: every frame goes through.
        out.clear();
        let resume = 1_000 + 40_000;
        for i in 0..500u64 {
            m.on_twilio(parse_inbound(&frame).unwrap(), resume + i * 20, &mut out);
        }
        assert_eq!(out.len(), 500, "a caller at real time is never policed");
        assert_eq!(m.stats.policed_frames, 2000 - forwarded);
    }

    #[test]
    fn caller_audio_policing_counts_samples_not_frames() {
        let mut police = AudioPolice::default();
        // 1 s burst = 8,000 samples: one oversized frame of 8,000 fits, the next sample does not.
        assert!(police.admit(8_000, 0, 1_000));
        assert!(!police.admit(1, 0, 1_000));
        // 10 ms later, 80 more samples are allowed and no more.
        assert!(police.admit(80, 10, 1_000));
        assert!(!police.admit(1, 10, 1_000));
        // A malformed payload cannot make the count wrap.
        assert_eq!(b64_len("="), 0);
        assert_eq!(b64_len("=="), 0);
    }

    #[test]
    fn ulaw_pass_through_keeps_payload_bytes_and_buffers_early_audio() {
        let mut m = machine();
        let mut out = Vec::new();
        let frame = B64.encode([0x7fu8; 160]);
        for _ in 0..5 {
            m.on_twilio(parse_inbound(&media(&frame)).unwrap(), 10, &mut out);
        }
        assert!(
            out.is_empty(),
            "nothing goes to the agent before it is ready"
        );
        assert_eq!(
            m.stats.dropped_frames, 2,
            "early buffer is bounded to 3 frames"
        );
        m.on_agent_connected(&meta("ulaw_8000"), &mut out).unwrap();
        assert!(m.is_pass_through());
        assert_eq!(out.len(), 3);
        assert_eq!(
            out[0],
            Out::AudioToAgent(format!("{{\"user_audio_chunk\":\"{frame}\"}}"))
        );
        out.clear();
        let agent = B64.encode([0x11u8; 800]);
        m.on_agent(parse_server(&agent_audio(&agent, 1)).unwrap(), 20, &mut out);
        let frames = to_twilio(&out);
        let sent = tw::parse_outbound(&frames[0]).unwrap();
        assert!(
            matches!(sent, tw::Outbound::Media { ref payload_b64, .. } if payload_b64 == &agent)
        );
        assert!(frames[1].contains("\"mark\""));
    }

    #[test]
    fn pcm_agent_is_transcoded_both_ways() {
        let mut m = machine();
        let mut out = Vec::new();
        m.on_agent_connected(&meta("pcm_16000"), &mut out).unwrap();
        assert!(!m.is_pass_through());
        let frame = B64.encode([0xffu8; 160]);
        for _ in 0..10 {
            m.on_twilio(parse_inbound(&media(&frame)).unwrap(), 10, &mut out);
        }
        let total: usize = out
            .iter()
            .map(|o| match o {
                Out::AudioToAgent(s) => {
                    let v: serde_json::Value = serde_json::from_str(s).unwrap();
                    B64.decode(v["user_audio_chunk"].as_str().unwrap())
                        .unwrap()
                        .len()
                }
                _ => 0,
            })
            .sum();
        // 200 ms of 8 kHz μ-law → about 200 ms of 16 kHz PCM16 (6400 bytes), minus filter delay.
        assert!((5600..=6400).contains(&total), "{total}");
        out.clear();
        let pcm = B64.encode(vec![0u8; 3200]); // 100 ms at 16 kHz
        m.on_agent(parse_server(&agent_audio(&pcm, 1)).unwrap(), 20, &mut out);
        let frames = to_twilio(&out);
        let tw::Outbound::Media { payload_b64, .. } = tw::parse_outbound(&frames[0]).unwrap()
        else {
            panic!("expected media")
        };
        let n = B64.decode(payload_b64.as_ref()).unwrap().len();
        assert!(
            (700..=800).contains(&n),
            "100 ms of μ-law ≈ 800 bytes, got {n}"
        );
    }

    #[test]
    fn every_documented_agent_format_is_usable_both_ways() {
        for &name in pulsara_media::audio::FORMAT_NAMES {
            let mut m = machine();
            let mut out = Vec::new();
            m.on_agent_connected(&meta(name), &mut out)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let fmt: Format = name.parse().unwrap();
            // 100 ms of agent audio becomes about 100 ms (800 bytes) of μ-law for Twilio.
            let bytes = fmt.bytes_per_second() / 10;
            let audio = B64.encode(vec![0u8; bytes]);
            m.on_agent(parse_server(&agent_audio(&audio, 1)).unwrap(), 20, &mut out);
            let frames = to_twilio(&out);
            let tw::Outbound::Media { payload_b64, .. } = tw::parse_outbound(&frames[0]).unwrap()
            else {
                panic!("{name}: expected media")
            };
            let n = B64.decode(payload_b64.as_ref()).unwrap().len();
            assert!((700..=800).contains(&n), "{name}: 100 ms of μ-law ≈ 800 bytes, got {n}");
        }
    }

    #[test]
    fn an_unknown_agent_format_is_refused_by_name() {
        let mut m = machine();
        let mut out = Vec::new();
        let mut bad = meta("ulaw_8000");
        bad.agent_output_audio_format = "mp3_44100_128".into();
        let why = m.on_agent_connected(&bad, &mut out).unwrap_err();
        assert!(why.contains("agent_output_audio_format") && why.contains("mp3_44100_128"), "{why}");
        let why = m.on_agent_connected(&meta("pcm_32000"), &mut out).unwrap_err();
        assert!(why.contains("user_input_audio_format") && why.contains("pcm_32000"), "{why}");
    }

    #[test]
    fn barge_in_clears_drops_late_audio_and_cuts_the_line() {
        let mut m = machine();
        let mut out = Vec::new();
        m.on_agent_connected(&meta("ulaw_8000"), &mut out).unwrap();
        let text = "one two three four five six seven eight nine ten";
        m.on_agent(parse_server(&format!(r#"{{"type":"agent_response","agent_response_event":{{"agent_response":"{text}"}}}}"#)).unwrap(), 100, &mut out);
        let chunk = B64.encode([0x55u8; 800]); // 100 ms each
        for _ in 0..10 {
            m.on_agent(
                parse_server(&agent_audio(&chunk, 4)).unwrap(),
                110,
                &mut out,
            );
        }
        // The caller heard three chunks (marks 1..=3), then spoke.
        m.on_twilio(parse_inbound(&mark("3")).unwrap(), 400, &mut out);
        out.clear();
        m.on_agent(
            parse_server(r#"{"type":"interruption","interruption_event":{"event_id":4}}"#).unwrap(),
            420,
            &mut out,
        );
        assert!(matches!(&out[..], [Out::ClearTwilio(s)] if s.contains("clear")));
        out.clear();
        // Twilio echoes the pending marks after a clear: they prove nothing.
        for n in 4..=10 {
            m.on_twilio(parse_inbound(&mark(&n.to_string())).unwrap(), 430, &mut out);
        }
        // Late audio of the interrupted response is dropped.
        m.on_agent(
            parse_server(&agent_audio(&chunk, 4)).unwrap(),
            440,
            &mut out,
        );
        assert!(out.is_empty(), "{out:?}");
        // A new response plays again.
        m.on_agent(
            parse_server(&agent_audio(&chunk, 5)).unwrap(),
            500,
            &mut out,
        );
        assert_eq!(to_twilio(&out).len(), 2);
        let rec = m.finish("2026-01-01T00:00:01Z".into(), 1000);
        let line = &rec.transcript[0];
        assert!(line.cut && line.heard);
        assert_eq!(line.text, "one two three");
        assert_eq!(line.full_text.as_deref(), Some(text));
    }

    #[test]
    fn fully_heard_line_is_not_cut_and_ping_is_answered() {
        let mut m = machine();
        let mut out = Vec::new();
        m.on_agent_connected(&meta("ulaw_8000"), &mut out).unwrap();
        m.on_agent(parse_server(r#"{"type":"agent_response","agent_response_event":{"agent_response":"Hello there"}}"#).unwrap(), 5, &mut out);
        let chunk = B64.encode([0x55u8; 160]);
        m.on_agent(parse_server(&agent_audio(&chunk, 1)).unwrap(), 6, &mut out);
        m.on_agent(parse_server(&agent_audio(&chunk, 1)).unwrap(), 6, &mut out);
        m.on_twilio(parse_inbound(&mark("2")).unwrap(), 50, &mut out);
        out.clear();
        m.on_agent(
            parse_server(r#"{"type":"ping","ping_event":{"event_id":77,"ping_ms":5}}"#).unwrap(),
            60,
            &mut out,
        );
        assert_eq!(
            out,
            [Out::ToAgent(r#"{"type":"pong","event_id":77}"#.into())]
        );
        m.on_agent(
            parse_server(
                r#"{"type":"user_transcript","user_transcription_event":{"user_transcript":"Hi"}}"#,
            )
            .unwrap(),
            70,
            &mut out,
        );
        let rec = m.finish("t".into(), 100);
        assert_eq!(rec.transcript[0].text, "Hello there");
        assert!(!rec.transcript[0].cut && rec.transcript[0].heard);
        assert_eq!(rec.transcript[1].role, Role::Caller);
        assert_eq!(rec.elevenlabs_conversation_id.as_deref(), Some("conv1"));
    }

    #[test]
    fn dtmf_routes_by_restaurant_map() {
        let mut m = machine();
        let mut out = Vec::new();
        m.on_agent_connected(&meta("ulaw_8000"), &mut out).unwrap();
        let dtmf = |d: &str| {
            format!(
                r#"{{"event":"dtmf","streamSid":"MZ1","sequenceNumber":"5","dtmf":{{"track":"inbound_track","digit":"{d}"}}}}"#
            )
        };
        m.on_twilio(parse_inbound(&dtmf("5")).unwrap(), 10, &mut out);
        assert!(
            matches!(&out[0], Out::ToAgent(s) if s.contains("contextual_update") && s.contains("key 5"))
        );
        out.clear();
        m.on_twilio(parse_inbound(&dtmf("9")).unwrap(), 11, &mut out);
        assert!(matches!(&out[0], Out::ToAgent(s) if s.contains("menu please")));
        out.clear();
        m.on_twilio(parse_inbound(&dtmf("0")).unwrap(), 12, &mut out);
        assert_eq!(
            out,
            [Out::Transfer {
                to: "+15550002222".into(),
                reason: "caller pressed 0".into()
            }]
        );
        out.clear();
        m.on_twilio(parse_inbound(&dtmf("0")).unwrap(), 13, &mut out);
        assert!(out.is_empty(), "a second transfer is not requested");
        m.on_transfer_done("+15550002222".into(), "caller pressed 0".into(), true, 14);
        let rec = m.finish("t".into(), 20);
        assert_eq!(rec.end_reason, EndReason::Transfer);
        assert_eq!(
            rec.dtmf
                .iter()
                .map(|d| d.action.as_str())
                .collect::<Vec<_>>(),
            [
                "contextual_update",
                "say",
                "transfer_to_staff",
                "transfer_to_staff"
            ]
        );
        assert_eq!(rec.transfer.unwrap().to, "+15550002222");
    }

    #[test]
    fn tool_results_are_recorded_and_actions_performed() {
        let mut m = machine();
        let mut out = Vec::new();
        m.on_agent_connected(&meta("ulaw_8000"), &mut out).unwrap();
        m.on_agent(parse_server(r#"{"type":"client_tool_call","client_tool_call":{"tool_name":"take_order","tool_call_id":"t1","parameters":{"items":["pizza"]}}}"#).unwrap(), 10, &mut out);
        let Out::RunTool {
            tool_call_id,
            tool,
            params,
        } = out.remove(0)
        else {
            panic!()
        };
        assert_eq!((tool_call_id.as_str(), tool.as_str()), ("t1", "take_order"));
        let outcome = ToolOutcome {
            result: "One pizza, 10 euros".into(),
            actions: vec![
                Action::SendSms {
                    to: "+1555".into(),
                    body: "ok".into(),
                },
                Action::EndCall {
                    reason: "done".into(),
                },
            ],
            fuel_used: Some(1234),
            ..Default::default()
        };
        m.on_tool_done(
            tool_call_id,
            tool,
            params.clone(),
            Ok(outcome),
            900,
            20,
            &mut out,
        );
        assert!(
            matches!(&out[0], Out::ToAgent(s) if s.contains("client_tool_result") && s.contains("\"is_error\":false"))
        );
        assert_eq!(
            out[1],
            Out::EndCall {
                reason: "done".into()
            }
        );
        out.clear();
        m.on_tool_done(
            "t2".into(),
            "nope".into(),
            serde_json::Value::Null,
            Err(ToolError::UnknownTool("nope".into())),
            5,
            30,
            &mut out,
        );
        assert!(matches!(&out[0], Out::ToAgent(s) if s.contains("\"is_error\":true")));
        m.on_end_done();
        let rec = m.finish("t".into(), 40);
        assert_eq!(rec.tool_runs.len(), 2);
        assert_eq!(rec.tool_runs[0].fuel_used, Some(1234));
        assert_eq!(rec.tool_runs[0].input, params);
        assert!(rec.tool_runs[1].is_error);
        assert_eq!(rec.notifications[0].channel, "sms");
        assert_eq!(rec.end_reason, EndReason::AgentEnded);
    }

    #[test]
    fn b64_len_matches_decoding() {
        for n in 0..10 {
            let s = B64.encode(vec![1u8; n]);
            assert_eq!(b64_len(&s), n);
        }
        assert_eq!(cut_words("a b c d", 1, 4), "a");
        assert_eq!(cut_words("a b c d", 0, 4), "");
    }
}
