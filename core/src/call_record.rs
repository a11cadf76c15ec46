//! The call record: everything Pulsara knows about one finished call, assembled by the bridge at
//! call end and stored by the dashboard (`POST /v1/calls`, idempotency key = `call_sid`).
//!
//! One type shared by the bridge (producer), the outbox (durable delivery) and the dashboard
//! (storage, summary, sentiment, notifications), so the wire shape cannot drift between them.
//!
//! Evolution rule: fields are only ever added, with `#[serde(default)]`, so an older reader accepts a
//! newer record. Times are RFC 3339 UTC strings at the top level and milliseconds since the start of
//! the Media Stream (`at_ms`) inside the call.

use serde::{Deserialize, Serialize};

/// One finished call.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CallRecord {
    /// Twilio CallSid; the idempotency key of the record.
    pub call_sid: String,
    #[serde(default)]
    pub stream_sid: String,
    pub restaurant_id: String,
    /// The configuration version the call ran with (from the handoff token).
    #[serde(default)]
    pub config_version: u64,
    /// The caller's number (`From`), E.164 when Twilio knows it.
    #[serde(default)]
    pub caller: String,
    /// The number dialled (`To`).
    #[serde(default)]
    pub called: String,
    /// RFC 3339 UTC, when the Media Stream started.
    pub started_at: String,
    /// RFC 3339 UTC, when the bridge finalised the call.
    pub ended_at: String,
    #[serde(default)]
    pub duration_ms: u64,
    pub end_reason: EndReason,
    /// What was said, in order. Agent lines are cut to what the caller actually heard.
    #[serde(default)]
    pub transcript: Vec<TranscriptLine>,
    #[serde(default)]
    pub tool_runs: Vec<ToolRun>,
    /// `record_order` action payloads, as returned by the ordering policy.
    #[serde(default)]
    pub orders: Vec<serde_json::Value>,
    /// `record_booking` action payloads, as returned by the booking policy.
    #[serde(default)]
    pub bookings: Vec<serde_json::Value>,
    #[serde(default)]
    pub transfer: Option<Transfer>,
    #[serde(default)]
    pub dtmf: Vec<DtmfEvent>,
    #[serde(default)]
    pub voicemail: Option<Voicemail>,
    /// Filled by the dashboard (sentiment model); the bridge leaves it empty.
    #[serde(default)]
    pub sentiment: Option<serde_json::Value>,
    /// Filled by the dashboard (structured summary, ElevenLabs' summary beside it).
    #[serde(default)]
    pub summary: Option<serde_json::Value>,
    #[serde(default)]
    pub elevenlabs_conversation_id: Option<String>,
    /// Notifications requested during the call (policy actions) or sent for it.
    #[serde(default)]
    pub notifications: Vec<Notification>,
    /// When the agent was unreachable and the restaurant fallback was played instead.
    #[serde(default)]
    pub fallback: Option<Fallback>,
    /// Audio format the agent used (`ulaw_8000` = pass-through, anything else = transcoded).
    #[serde(default)]
    pub agent_audio_format: Option<String>,
    /// Why the agent side ended, as ElevenLabs said it: its `error` event and the WebSocket
    /// close code and reason. Empty when the conversation ended normally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason_detail: Option<EndReasonDetail>,
    /// What the caller waited for: first audio, each turn, each barge-in. Empty for calls that
    /// never reached an agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<CallLatency>,
}

/// Most turn and barge-in figures kept on one record (the histograms count every one).
pub const MAX_LATENCY_SAMPLES: usize = 64;

/// The waits a caller felt on one call, and the bridge's own share of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallLatency {
    /// From the Media Stream's `start` to the first agent audio frame sent to Twilio, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_audio_ms: Option<u64>,
    /// From the edge answering the voice webhook (the stream's `answered_at_ms` parameter, on
    /// the edge's clock) to the first agent audio frame sent, ms; absent when the clocks
    /// disagree (negative or over a minute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_audio_from_webhook_ms: Option<u64>,
    /// The bridge's own part of the first audio, µs: from reading `start` to asking ElevenLabs
    /// for the session (handoff, configuration, admission), plus processing the first agent
    /// frame (read to written to Twilio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_audio_bridge_us: Option<u64>,
    /// Each agent response that followed the caller speaking: from the end of the caller's
    /// speech (the last voiced caller frame) to the response's first audio frame sent, ms.
    #[serde(default)]
    pub turn_ms: Vec<u64>,
    /// The bridge's own part of each of those (the first frame read to written), µs.
    #[serde(default)]
    pub turn_bridge_us: Vec<u64>,
    /// Each barge-in: ElevenLabs' `interruption` read to Twilio's `clear` written, µs.
    #[serde(default)]
    pub barge_in_us: Vec<u64>,
    /// Caller frames held while the agent connected (all delivered in order once it was ready,
    /// unless over the bound), and how long the first of them waited, ms.
    #[serde(default)]
    pub early_frames: u64,
    #[serde(default)]
    pub early_wait_ms: u64,
    /// The ElevenLabs session was prepared while Twilio connected (`POST /prepare` from the
    /// edge) and adopted by this call's stream.
    #[serde(default)]
    pub prepared: bool,
}

/// What ElevenLabs said when it refused or ended a conversation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndReasonDetail {
    /// `error_event.error_type` (e.g. `override_error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    /// `error_event.code`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<u32>,
    /// `error_event.message`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// The WebSocket close code (e.g. 1008).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_code: Option<u16>,
    /// The WebSocket close reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_reason: Option<String>,
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Twilio sent `stop` or closed the socket.
    #[default]
    CallerHungUp,
    /// Transferred to staff (DTMF or tool action).
    Transfer,
    /// The agent (a tool's `end_call` action, a DTMF `EndCall`) ended it.
    AgentEnded,
    /// ElevenLabs could not be reached or dropped; the restaurant fallback was played.
    AgentFailed,
    /// The bridge shut down and ended the call politely after the grace period.
    BridgeShutdown,
    /// The restaurant's (or the bridge's) concurrency cap was reached; the busy message was played.
    Busy,
    /// The stream was refused (bad handoff token, bad signature, unknown restaurant).
    Rejected,
    /// The handoff was genuine but the restaurant's configuration could not be loaded (dashboard
    /// unreachable, nothing cached): the caller was forwarded to the fallback number carried in
    /// the handoff token, or heard an apology. [`CallRecord::fallback`] says which.
    ConfigUnavailable,
    /// Anything else that stopped the call.
    Error,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::CallerHungUp => "caller_hung_up",
            EndReason::Transfer => "transfer",
            EndReason::AgentEnded => "agent_ended",
            EndReason::AgentFailed => "agent_failed",
            EndReason::BridgeShutdown => "bridge_shutdown",
            EndReason::Busy => "busy",
            EndReason::Rejected => "rejected",
            EndReason::ConfigUnavailable => "config_unavailable",
            EndReason::Error => "error",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Agent,
    Caller,
}

/// One utterance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptLine {
    pub role: Role,
    /// For agent lines: the part the caller heard (the whole line unless `cut`).
    pub text: String,
    /// Milliseconds since the stream started.
    pub at_ms: u64,
    /// Agent lines: whether any of it reached the caller. Caller lines: always true.
    #[serde(default = "yes")]
    pub heard: bool,
    /// Agent lines: the caller interrupted and `text` was cut to the heard part.
    #[serde(default)]
    pub cut: bool,
    /// Agent lines that were cut: what the agent meant to say in full.
    #[serde(default)]
    pub full_text: Option<String>,
}

fn yes() -> bool {
    true
}

/// One tool (policy) execution, replayable from its module hash and input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolRun {
    pub tool: String,
    #[serde(default)]
    pub tool_call_id: String,
    pub input: serde_json::Value,
    /// The result text handed back to the agent (or the error message).
    pub output: String,
    #[serde(default)]
    pub is_error: bool,
    pub duration_us: u64,
    #[serde(default)]
    pub fuel_used: Option<u64>,
    #[serde(default)]
    pub module_sha256: Option<String>,
    /// Milliseconds since the stream started.
    #[serde(default)]
    pub at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transfer {
    /// The number dialled.
    pub to: String,
    pub reason: String,
    pub at_ms: u64,
    /// Whether Twilio accepted the call update.
    #[serde(default = "yes")]
    pub ok: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DtmfEvent {
    pub digit: String,
    pub at_ms: u64,
    /// What the bridge did: `transfer_to_staff`, `say`, `end_call`, `contextual_update`.
    pub action: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Voicemail {
    #[serde(default)]
    pub recording_url: Option<String>,
    #[serde(default)]
    pub duration_secs: Option<u32>,
    #[serde(default)]
    pub transcript: Option<String>,
    /// Twilio's `RecordingSid` (`RE…`): the voicemail's identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_sid: Option<String>,
    /// Who left it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
}

/// A notification requested for this call (an SMS to the caller, an email to the restaurant).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// `sms` or `email`.
    pub channel: String,
    pub to: String,
    #[serde(default)]
    pub subject: Option<String>,
    pub body: String,
    /// `requested`, `sent`, `failed`.
    #[serde(default = "requested")]
    pub status: String,
    #[serde(default)]
    pub error: Option<String>,
}

fn requested() -> String {
    "requested".to_owned()
}

impl EndReasonDetail {
    /// One line for logs and the fallback reason: `override_error (code 1008): …; close 1008 …`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(t) = &self.error_type {
            let mut p = t.clone();
            if let Some(c) = self.error_code {
                p.push_str(&format!(" (code {c})"));
            }
            if let Some(m) = &self.error_message {
                p.push_str(": ");
                p.push_str(m);
            }
            parts.push(p);
        }
        if let Some(c) = self.close_code {
            let mut p = format!("close {c}");
            if let Some(r) = self.close_reason.as_deref().filter(|r| !r.is_empty()) {
                p.push(' ');
                p.push_str(r);
            }
            parts.push(p);
        }
        if parts.is_empty() {
            "no reason given".into()
        } else {
            parts.join("; ")
        }
    }
}

/// The restaurant fallback played when the agent was unavailable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fallback {
    /// `dial` (staff/fallback number) or `voicemail` (apology + record) or `apology`. With
    /// [`EndReason::ConfigUnavailable`], `dial` or `apology`.
    pub kind: String,
    #[serde(default)]
    pub to: Option<String>,
    pub reason: String,
    pub at_ms: u64,
    #[serde(default = "yes")]
    pub ok: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_record_parses_with_defaults_and_round_trips() {
        let json = r#"{"call_sid":"CA1","restaurant_id":"r1","started_at":"2026-01-01T12:00:00Z",
            "ended_at":"2026-01-01T12:01:00Z","end_reason":"transfer",
            "transcript":[{"role":"agent","text":"Hello","at_ms":5}]}"#;
        let rec: CallRecord = serde_json::from_str(json).unwrap();
        assert_eq!(rec.end_reason, EndReason::Transfer);
        assert!(rec.transcript[0].heard && !rec.transcript[0].cut);
        assert!(rec.tool_runs.is_empty() && rec.transfer.is_none());
        let back: CallRecord = serde_json::from_str(&serde_json::to_string(&rec).unwrap()).unwrap();
        assert_eq!(back, rec);
    }

    #[test]
    fn end_reason_wire_names_match_as_str() {
        for r in [
            EndReason::CallerHungUp,
            EndReason::Transfer,
            EndReason::AgentEnded,
            EndReason::AgentFailed,
            EndReason::BridgeShutdown,
            EndReason::Busy,
            EndReason::Rejected,
            EndReason::ConfigUnavailable,
            EndReason::Error,
        ] {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        assert!(serde_json::from_str::<EndReason>("\"nope\"").is_err());
    }
}
