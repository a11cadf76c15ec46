//! ElevenLabs Conversational AI (agents platform) WebSocket messages, both directions, sans-IO.
//!
//! [`ClientMessage`] is what a client (the bridge) sends; [`ServerMessage`] is what the ElevenLabs
//! server sends. Both parse and serialize, because the emulator plays the server.
//!
//! Wire facts: `user_audio_chunk` has no `type` field; every other message is tagged by `type`
//! with its body under a type-specific key (`audio_event`, `ping_event`, …). Unknown types are
//! tolerated as `Unknown` values (ElevenLabs adds events without notice). Audio stays base64 text
//! borrowed from the frame, so μ-law pass-through never decodes it.
use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::json::{push_str_lit, CowStr};
use crate::{is_valid_base64, CodecError};

/// Largest server → client frame accepted (an audio chunk of a second of 44.1 kHz PCM is ~120 KB
/// of base64; this leaves ample room).
pub const MAX_SERVER_BYTES: usize = 2 * 1024 * 1024;
/// Largest client → server frame accepted.
pub const MAX_CLIENT_BYTES: usize = 1024 * 1024;

/// `conversation_config_override`: only fields the agent allows to be overridden take effect.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentOverride>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tts: Option<TtsOverride>,
}

/// `conversation_config_override.agent`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<PromptOverride>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
}

/// `conversation_config_override.agent.prompt`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PromptOverride {
    pub prompt: String,
}

/// `conversation_config_override.tts`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TtsOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice_id: Option<String>,
}

/// `conversation_initiation_client_data`
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InitiationClientData {
    pub conversation_config_override: Option<ConfigOverride>,
    /// Values substituted into `{{name}}` placeholders of the agent's prompt and first message.
    pub dynamic_variables: BTreeMap<String, Value>,
}

/// A message from the client (bridge) to ElevenLabs.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage<'a> {
    ConversationInitiationClientData(InitiationClientData),
    /// `{"user_audio_chunk":"<base64>"}` in the agent's user input format.
    UserAudioChunk {
        audio_b64: Cow<'a, str>,
    },
    Pong {
        event_id: u64,
    },
    ClientToolResult {
        tool_call_id: String,
        result: String,
        is_error: bool,
    },
    ContextualUpdate {
        text: String,
    },
    UserMessage {
        text: String,
    },
    UserActivity,
    Unknown {
        kind: String,
    },
}

/// `conversation_initiation_metadata_event`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitiationMetadata {
    pub conversation_id: String,
    pub agent_output_audio_format: String,
    pub user_input_audio_format: String,
}

/// `client_tool_call`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub tool_name: String,
    pub tool_call_id: String,
    #[serde(default)]
    pub parameters: Value,
    /// Required on the wire from the server (AsyncAPI); read leniently.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<u64>,
}

/// A message from ElevenLabs to the client.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage<'a> {
    ConversationInitiationMetadata(InitiationMetadata),
    /// Agent speech in the agent output format.
    Audio {
        audio_b64: Cow<'a, str>,
        event_id: u64,
    },
    /// The caller spoke over the agent: stop playback now.
    Interruption {
        event_id: u64,
    },
    /// `event_id` is required on the wire from the server (AsyncAPI); read leniently.
    AgentResponse {
        text: String,
        event_id: Option<u64>,
    },
    AgentResponseCorrection {
        original: String,
        corrected: String,
        event_id: Option<u64>,
    },
    UserTranscript {
        text: String,
        event_id: Option<u64>,
    },
    Ping {
        event_id: u64,
        ping_ms: Option<u64>,
    },
    ClientToolCall(ToolCall),
    VadScore {
        score: f64,
    },
    InternalTentativeAgentResponse {
        text: String,
    },
    /// The server reports why it is refusing or ending the conversation (for example
    /// `override_error` before a close 1008). Every field is optional on the wire.
    Error(AgentErrorEvent),
    Unknown {
        kind: String,
    },
}

/// `{"type":"error","error_event":{"error_type":"…","code":N,"message":"…"}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentErrorEvent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn check_len(text: &str, max: usize) -> Result<(), CodecError> {
    if text.len() > max {
        return Err(CodecError::TooLarge {
            len: text.len(),
            max,
        });
    }
    Ok(())
}

fn missing(event: &'static str, field: &'static str) -> CodecError {
    CodecError::MissingField { event, field }
}

// ---------------------------------------------------------------- client → server

#[derive(Deserialize)]
struct RawClient<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<CowStr<'a>>,
    #[serde(borrow)]
    user_audio_chunk: Option<CowStr<'a>>,
    conversation_config_override: Option<ConfigOverride>,
    dynamic_variables: Option<BTreeMap<String, Value>>,
    event_id: Option<u64>,
    tool_call_id: Option<String>,
    result: Option<Value>,
    is_error: Option<bool>,
    text: Option<String>,
}

/// Parse a client → server frame (used by the emulator).
///
/// # Errors
/// Size, JSON, missing-field and base64 errors; a frame with neither `type` nor
/// `user_audio_chunk` is [`CodecError::MissingField`]. Unknown `type`s are `Ok(Unknown)`.
pub fn parse_client(text: &str) -> Result<ClientMessage<'_>, CodecError> {
    check_len(text, MAX_CLIENT_BYTES)?;
    let raw: RawClient<'_> = serde_json::from_str(text).map_err(CodecError::malformed)?;
    let Some(kind) = raw.kind else {
        let audio = raw
            .user_audio_chunk
            .ok_or(missing("client message", "type"))?
            .0;
        if !is_valid_base64(&audio) {
            return Err(CodecError::InvalidBase64);
        }
        return Ok(ClientMessage::UserAudioChunk { audio_b64: audio });
    };
    Ok(match kind.0.as_ref() {
        "conversation_initiation_client_data" => {
            ClientMessage::ConversationInitiationClientData(InitiationClientData {
                conversation_config_override: raw.conversation_config_override,
                dynamic_variables: raw.dynamic_variables.unwrap_or_default(),
            })
        }
        "pong" => ClientMessage::Pong {
            event_id: raw.event_id.ok_or(missing("pong", "event_id"))?,
        },
        "client_tool_result" => ClientMessage::ClientToolResult {
            tool_call_id: raw
                .tool_call_id
                .ok_or(missing("client_tool_result", "tool_call_id"))?,
            result: match raw.result {
                Some(Value::String(s)) => s,
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            },
            is_error: raw.is_error.unwrap_or(false),
        },
        "contextual_update" => ClientMessage::ContextualUpdate {
            text: raw.text.ok_or(missing("contextual_update", "text"))?,
        },
        "user_message" => ClientMessage::UserMessage {
            text: raw.text.ok_or(missing("user_message", "text"))?,
        },
        "user_activity" => ClientMessage::UserActivity,
        "user_audio_chunk" => {
            // Tolerated variant with an explicit type.
            let audio = raw
                .user_audio_chunk
                .ok_or(missing("user_audio_chunk", "user_audio_chunk"))?
                .0;
            if !is_valid_base64(&audio) {
                return Err(CodecError::InvalidBase64);
            }
            ClientMessage::UserAudioChunk { audio_b64: audio }
        }
        other => ClientMessage::Unknown {
            kind: other.to_owned(),
        },
    })
}

/// `{"user_audio_chunk":"<base64>"}` built by concatenation (hot path).
///
/// # Errors
/// [`CodecError::InvalidBase64`] when `audio_b64` is not standard padded base64.
pub fn user_audio_chunk_json(audio_b64: &str) -> Result<String, CodecError> {
    if !is_valid_base64(audio_b64) {
        return Err(CodecError::InvalidBase64);
    }
    let mut out = String::with_capacity(24 + audio_b64.len());
    out.push_str("{\"user_audio_chunk\":\"");
    out.push_str(audio_b64);
    out.push_str("\"}");
    Ok(out)
}

/// `{"type":"pong","event_id":N}`
pub fn pong_json(event_id: u64) -> String {
    format!("{{\"type\":\"pong\",\"event_id\":{event_id}}}")
}

impl ClientMessage<'_> {
    /// Serialize to the wire form (always valid JSON).
    pub fn to_json(&self) -> String {
        match self {
            ClientMessage::ConversationInitiationClientData(d) => {
                let mut v = json!({"type": "conversation_initiation_client_data"});
                if let Some(o) = &d.conversation_config_override {
                    v["conversation_config_override"] =
                        serde_json::to_value(o).unwrap_or(Value::Null);
                }
                v["dynamic_variables"] =
                    serde_json::to_value(&d.dynamic_variables).unwrap_or(Value::Null);
                v.to_string()
            }
            ClientMessage::UserAudioChunk { audio_b64 } => user_audio_chunk_json(audio_b64)
                .unwrap_or_else(|_| json!({ "user_audio_chunk": audio_b64 }).to_string()),
            ClientMessage::Pong { event_id } => pong_json(*event_id),
            ClientMessage::ClientToolResult {
                tool_call_id,
                result,
                is_error,
            } => json!({
                "type": "client_tool_result",
                "tool_call_id": tool_call_id,
                "result": result,
                "is_error": is_error,
            })
            .to_string(),
            ClientMessage::ContextualUpdate { text } => {
                json!({"type":"contextual_update","text":text}).to_string()
            }
            ClientMessage::UserMessage { text } => {
                json!({"type":"user_message","text":text}).to_string()
            }
            ClientMessage::UserActivity => r#"{"type":"user_activity"}"#.to_owned(),
            ClientMessage::Unknown { kind } => json!({ "type": kind }).to_string(),
        }
    }

    /// Detach from the frame text.
    pub fn into_owned(self) -> ClientMessage<'static> {
        match self {
            ClientMessage::UserAudioChunk { audio_b64 } => ClientMessage::UserAudioChunk {
                audio_b64: Cow::Owned(audio_b64.into_owned()),
            },
            ClientMessage::ConversationInitiationClientData(d) => {
                ClientMessage::ConversationInitiationClientData(d)
            }
            ClientMessage::Pong { event_id } => ClientMessage::Pong { event_id },
            ClientMessage::ClientToolResult {
                tool_call_id,
                result,
                is_error,
            } => ClientMessage::ClientToolResult {
                tool_call_id,
                result,
                is_error,
            },
            ClientMessage::ContextualUpdate { text } => ClientMessage::ContextualUpdate { text },
            ClientMessage::UserMessage { text } => ClientMessage::UserMessage { text },
            ClientMessage::UserActivity => ClientMessage::UserActivity,
            ClientMessage::Unknown { kind } => ClientMessage::Unknown { kind },
        }
    }
}

// ---------------------------------------------------------------- server → client

fn with_event_id(event: &mut Value, event_id: Option<u64>) {
    if let Some(id) = event_id {
        event["event_id"] = json!(id);
    }
}

#[derive(Deserialize)]
struct RawServer<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    conversation_initiation_metadata_event: Option<InitiationMetadata>,
    #[serde(borrow)]
    audio_event: Option<RawAudio<'a>>,
    interruption_event: Option<RawEventId>,
    agent_response_event: Option<RawAgentResponse>,
    agent_response_correction_event: Option<RawCorrection>,
    user_transcription_event: Option<RawTranscript>,
    ping_event: Option<RawPing>,
    client_tool_call: Option<ToolCall>,
    vad_score_event: Option<RawVad>,
    tentative_agent_response_internal_event: Option<RawTentative>,
    error_event: Option<AgentErrorEvent>,
}

#[derive(Deserialize)]
struct RawAudio<'a> {
    #[serde(borrow)]
    audio_base_64: Option<CowStr<'a>>,
    #[serde(default)]
    event_id: u64,
}

#[derive(Deserialize)]
struct RawEventId {
    #[serde(default)]
    event_id: u64,
}

#[derive(Deserialize)]
struct RawAgentResponse {
    agent_response: String,
    event_id: Option<u64>,
}

#[derive(Deserialize)]
struct RawCorrection {
    #[serde(default)]
    original_agent_response: String,
    corrected_agent_response: String,
    event_id: Option<u64>,
}

#[derive(Deserialize)]
struct RawTranscript {
    user_transcript: String,
    event_id: Option<u64>,
}

#[derive(Deserialize)]
struct RawPing {
    event_id: u64,
    ping_ms: Option<u64>,
}

#[derive(Deserialize)]
struct RawVad {
    vad_score: f64,
}

#[derive(Deserialize)]
struct RawTentative {
    #[serde(default)]
    tentative_agent_response: String,
}

/// Parse a server → client frame (used by the bridge).
///
/// # Errors
/// Size, JSON and missing-field errors; audio that is not base64 is
/// [`CodecError::InvalidBase64`]. Unknown `type`s are `Ok(Unknown)`.
pub fn parse_server(text: &str) -> Result<ServerMessage<'_>, CodecError> {
    check_len(text, MAX_SERVER_BYTES)?;
    let raw: RawServer<'_> = serde_json::from_str(text).map_err(CodecError::malformed)?;
    Ok(match raw.kind.as_ref() {
        "conversation_initiation_metadata" => ServerMessage::ConversationInitiationMetadata(
            raw.conversation_initiation_metadata_event.ok_or(missing(
                "conversation_initiation_metadata",
                "conversation_initiation_metadata_event",
            ))?,
        ),
        "audio" => {
            let a = raw.audio_event.ok_or(missing("audio", "audio_event"))?;
            let audio = a.audio_base_64.ok_or(missing("audio", "audio_base_64"))?.0;
            if !is_valid_base64(&audio) {
                return Err(CodecError::InvalidBase64);
            }
            ServerMessage::Audio {
                audio_b64: audio,
                event_id: a.event_id,
            }
        }
        "interruption" => ServerMessage::Interruption {
            event_id: raw.interruption_event.map(|e| e.event_id).unwrap_or(0),
        },
        "agent_response" => {
            let r = raw
                .agent_response_event
                .ok_or(missing("agent_response", "agent_response_event"))?;
            ServerMessage::AgentResponse {
                text: r.agent_response,
                event_id: r.event_id,
            }
        }
        "agent_response_correction" => {
            let c = raw.agent_response_correction_event.ok_or(missing(
                "agent_response_correction",
                "agent_response_correction_event",
            ))?;
            ServerMessage::AgentResponseCorrection {
                original: c.original_agent_response,
                corrected: c.corrected_agent_response,
                event_id: c.event_id,
            }
        }
        "user_transcript" => {
            let t = raw
                .user_transcription_event
                .ok_or(missing("user_transcript", "user_transcription_event"))?;
            ServerMessage::UserTranscript {
                text: t.user_transcript,
                event_id: t.event_id,
            }
        }
        "ping" => {
            let p = raw.ping_event.ok_or(missing("ping", "ping_event"))?;
            ServerMessage::Ping {
                event_id: p.event_id,
                ping_ms: p.ping_ms,
            }
        }
        "client_tool_call" => ServerMessage::ClientToolCall(
            raw.client_tool_call
                .ok_or(missing("client_tool_call", "client_tool_call"))?,
        ),
        "vad_score" => ServerMessage::VadScore {
            score: raw
                .vad_score_event
                .ok_or(missing("vad_score", "vad_score_event"))?
                .vad_score,
        },
        "internal_tentative_agent_response" => ServerMessage::InternalTentativeAgentResponse {
            text: raw
                .tentative_agent_response_internal_event
                .map(|t| t.tentative_agent_response)
                .unwrap_or_default(),
        },
        "error" => ServerMessage::Error(raw.error_event.unwrap_or_default()),
        other => ServerMessage::Unknown {
            kind: other.to_owned(),
        },
    })
}

/// `{"type":"audio","audio_event":{"audio_base_64":…,"event_id":N}}` by concatenation.
///
/// # Errors
/// [`CodecError::InvalidBase64`] when `audio_b64` is not standard padded base64.
pub fn audio_json(audio_b64: &str, event_id: u64) -> Result<String, CodecError> {
    if !is_valid_base64(audio_b64) {
        return Err(CodecError::InvalidBase64);
    }
    let mut out = String::with_capacity(80 + audio_b64.len());
    out.push_str("{\"type\":\"audio\",\"audio_event\":{\"audio_base_64\":\"");
    out.push_str(audio_b64);
    out.push_str("\",\"event_id\":");
    out.push_str(&event_id.to_string());
    out.push_str("}}");
    Ok(out)
}

impl ServerMessage<'_> {
    /// The `type` on the wire.
    pub fn kind(&self) -> &str {
        match self {
            ServerMessage::ConversationInitiationMetadata(_) => "conversation_initiation_metadata",
            ServerMessage::Audio { .. } => "audio",
            ServerMessage::Interruption { .. } => "interruption",
            ServerMessage::AgentResponse { .. } => "agent_response",
            ServerMessage::AgentResponseCorrection { .. } => "agent_response_correction",
            ServerMessage::UserTranscript { .. } => "user_transcript",
            ServerMessage::Ping { .. } => "ping",
            ServerMessage::ClientToolCall(_) => "client_tool_call",
            ServerMessage::VadScore { .. } => "vad_score",
            ServerMessage::InternalTentativeAgentResponse { .. } => {
                "internal_tentative_agent_response"
            }
            ServerMessage::Error(_) => "error",
            ServerMessage::Unknown { kind } => kind,
        }
    }

    /// Serialize to the wire form (always valid JSON).
    pub fn to_json(&self) -> String {
        match self {
            ServerMessage::ConversationInitiationMetadata(m) => json!({
                "type": "conversation_initiation_metadata",
                "conversation_initiation_metadata_event": m,
            })
            .to_string(),
            ServerMessage::Audio { audio_b64, event_id } => audio_json(audio_b64, *event_id).unwrap_or_else(|_| {
                json!({"type":"audio","audio_event":{"audio_base_64":audio_b64,"event_id":event_id}}).to_string()
            }),
            ServerMessage::Interruption { event_id } => {
                json!({"type":"interruption","interruption_event":{"event_id":event_id}}).to_string()
            }
            ServerMessage::AgentResponse { text, event_id } => {
                let mut e = json!({ "agent_response": text });
                with_event_id(&mut e, *event_id);
                json!({"type":"agent_response","agent_response_event":e}).to_string()
            }
            ServerMessage::AgentResponseCorrection {
                original,
                corrected,
                event_id,
            } => {
                let mut e = json!({
                    "original_agent_response": original,
                    "corrected_agent_response": corrected,
                });
                with_event_id(&mut e, *event_id);
                json!({"type":"agent_response_correction","agent_response_correction_event":e})
                    .to_string()
            }
            ServerMessage::UserTranscript { text, event_id } => {
                let mut e = json!({ "user_transcript": text });
                with_event_id(&mut e, *event_id);
                json!({"type":"user_transcript","user_transcription_event":e}).to_string()
            }
            ServerMessage::Ping { event_id, ping_ms } => {
                // `ping_ms` is always present, `null` on the first ping (the SDK reads the key).
                let mut out = String::from("{\"type\":\"ping\",\"ping_event\":{\"event_id\":");
                out.push_str(&event_id.to_string());
                out.push_str(",\"ping_ms\":");
                match ping_ms {
                    Some(ms) => out.push_str(&ms.to_string()),
                    None => out.push_str("null"),
                }
                out.push_str("}}");
                out
            }
            ServerMessage::ClientToolCall(c) => json!({"type":"client_tool_call","client_tool_call":c}).to_string(),
            ServerMessage::VadScore { score } => {
                json!({"type":"vad_score","vad_score_event":{"vad_score":score}}).to_string()
            }
            ServerMessage::InternalTentativeAgentResponse { text } => json!({
                "type": "internal_tentative_agent_response",
                "tentative_agent_response_internal_event": {"tentative_agent_response": text}
            })
            .to_string(),
            ServerMessage::Error(e) => json!({"type":"error","error_event":e}).to_string(),
            ServerMessage::Unknown { kind } => {
                let mut out = String::from("{\"type\":");
                push_str_lit(&mut out, kind);
                out.push('}');
                out
            }
        }
    }

    /// Detach from the frame text.
    pub fn into_owned(self) -> ServerMessage<'static> {
        match self {
            ServerMessage::Audio {
                audio_b64,
                event_id,
            } => ServerMessage::Audio {
                audio_b64: Cow::Owned(audio_b64.into_owned()),
                event_id,
            },
            ServerMessage::ConversationInitiationMetadata(m) => {
                ServerMessage::ConversationInitiationMetadata(m)
            }
            ServerMessage::Interruption { event_id } => ServerMessage::Interruption { event_id },
            ServerMessage::AgentResponse { text, event_id } => {
                ServerMessage::AgentResponse { text, event_id }
            }
            ServerMessage::AgentResponseCorrection {
                original,
                corrected,
                event_id,
            } => ServerMessage::AgentResponseCorrection {
                original,
                corrected,
                event_id,
            },
            ServerMessage::UserTranscript { text, event_id } => {
                ServerMessage::UserTranscript { text, event_id }
            }
            ServerMessage::Ping { event_id, ping_ms } => ServerMessage::Ping { event_id, ping_ms },
            ServerMessage::ClientToolCall(c) => ServerMessage::ClientToolCall(c),
            ServerMessage::Error(e) => ServerMessage::Error(e),
            ServerMessage::VadScore { score } => ServerMessage::VadScore { score },
            ServerMessage::InternalTentativeAgentResponse { text } => {
                ServerMessage::InternalTentativeAgentResponse { text }
            }
            ServerMessage::Unknown { kind } => ServerMessage::Unknown { kind },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: &[&str] = &[
        r#"{"type":"conversation_initiation_metadata","conversation_initiation_metadata_event":{"conversation_id":"conv_1","agent_output_audio_format":"ulaw_8000","user_input_audio_format":"ulaw_8000"}}"#,
        r#"{"type":"audio","audio_event":{"audio_base_64":"/////w==","event_id":3}}"#,
        r#"{"type":"interruption","interruption_event":{"event_id":4}}"#,
        r#"{"type":"agent_response","agent_response_event":{"agent_response":"Ciao! Trattoria Roma.","event_id":5}}"#,
        r#"{"type":"agent_response_correction","agent_response_correction_event":{"original_agent_response":"We open at nine and","corrected_agent_response":"We open at nine","event_id":6}}"#,
        r#"{"type":"user_transcript","user_transcription_event":{"user_transcript":"Two margheritas please","event_id":5}}"#,
        r#"{"type":"ping","ping_event":{"event_id":7,"ping_ms":42}}"#,
        r#"{"type":"client_tool_call","client_tool_call":{"tool_name":"take_order","tool_call_id":"call_1","parameters":{"items":[{"name":"Margherita","quantity":2}]},"event_id":8}}"#,
        r#"{"type":"vad_score","vad_score_event":{"vad_score":0.75}}"#,
        r#"{"type":"internal_tentative_agent_response","tentative_agent_response_internal_event":{"tentative_agent_response":"Sure"}}"#,
        r#"{"type":"error","error_event":{"error_type":"override_error","code":1008,"message":"Override for field 'first_message' is not allowed by config."}}"#,
    ];

    const CLIENT: &[&str] = &[
        r#"{"type":"conversation_initiation_client_data","conversation_config_override":{"agent":{"prompt":{"prompt":"You answer for Trattoria Roma."},"first_message":"Ciao!","language":"en"},"tts":{"voice_id":"v1"}},"dynamic_variables":{"restaurant_name":"Trattoria Roma","party_max":8}}"#,
        r#"{"user_audio_chunk":"/////w=="}"#,
        r#"{"type":"pong","event_id":7}"#,
        r#"{"type":"client_tool_result","tool_call_id":"call_1","result":"Order placed","is_error":false}"#,
        r#"{"type":"contextual_update","text":"Caller pressed 5"}"#,
        r#"{"type":"user_message","text":"hello"}"#,
        r#"{"type":"user_activity"}"#,
    ];

    fn same_json(a: &str, b: &str) {
        let a: Value = serde_json::from_str(a).unwrap();
        let b: Value = serde_json::from_str(b).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn server_messages_known_answers_and_round_trip() {
        let parsed: Vec<_> = SERVER.iter().map(|f| parse_server(f).unwrap()).collect();
        assert_eq!(
            parsed[0],
            ServerMessage::ConversationInitiationMetadata(InitiationMetadata {
                conversation_id: "conv_1".into(),
                agent_output_audio_format: "ulaw_8000".into(),
                user_input_audio_format: "ulaw_8000".into(),
            })
        );
        let ServerMessage::Audio {
            audio_b64,
            event_id,
        } = &parsed[1]
        else {
            panic!()
        };
        assert_eq!((audio_b64.as_ref(), *event_id), ("/////w==", 3));
        assert!(
            matches!(audio_b64, Cow::Borrowed(_)),
            "audio must borrow from the frame"
        );
        assert_eq!(parsed[2], ServerMessage::Interruption { event_id: 4 });
        assert_eq!(
            parsed[3],
            ServerMessage::AgentResponse {
                text: "Ciao! Trattoria Roma.".into(),
                event_id: Some(5),
            }
        );
        assert_eq!(
            parsed[4],
            ServerMessage::AgentResponseCorrection {
                original: "We open at nine and".into(),
                corrected: "We open at nine".into(),
                event_id: Some(6),
            }
        );
        assert_eq!(
            parsed[5],
            ServerMessage::UserTranscript {
                text: "Two margheritas please".into(),
                event_id: Some(5),
            }
        );
        assert_eq!(
            parsed[6],
            ServerMessage::Ping {
                event_id: 7,
                ping_ms: Some(42)
            }
        );
        let ServerMessage::ClientToolCall(c) = &parsed[7] else {
            panic!()
        };
        assert_eq!(
            (c.tool_name.as_str(), c.tool_call_id.as_str()),
            ("take_order", "call_1")
        );
        assert_eq!(c.parameters["items"][0]["quantity"], 2);
        assert_eq!(c.event_id, Some(8));
        assert_eq!(parsed[8], ServerMessage::VadScore { score: 0.75 });
        assert_eq!(
            parsed[9],
            ServerMessage::InternalTentativeAgentResponse {
                text: "Sure".into()
            }
        );
        let ServerMessage::Error(e) = &parsed[10] else {
            panic!("{:?}", parsed[10])
        };
        assert_eq!(
            (e.error_type.as_deref(), e.code),
            (Some("override_error"), Some(1008))
        );
        // An error event without details is still an error, not a malformed frame.
        assert_eq!(
            parse_server(r#"{"type":"error"}"#).unwrap(),
            ServerMessage::Error(AgentErrorEvent::default())
        );
        for (frame, msg) in SERVER.iter().zip(&parsed) {
            same_json(frame, &msg.to_json());
            assert_eq!(&parse_server(&msg.to_json()).unwrap(), msg);
            assert_eq!(
                serde_json::from_str::<Value>(frame).unwrap()["type"],
                msg.kind()
            );
        }
    }

    #[test]
    fn client_messages_known_answers_and_round_trip() {
        let parsed: Vec<_> = CLIENT.iter().map(|f| parse_client(f).unwrap()).collect();
        let ClientMessage::ConversationInitiationClientData(d) = &parsed[0] else {
            panic!()
        };
        let o = d
            .conversation_config_override
            .as_ref()
            .unwrap()
            .agent
            .as_ref()
            .unwrap();
        assert_eq!(
            o.prompt.as_ref().unwrap().prompt,
            "You answer for Trattoria Roma."
        );
        assert_eq!(o.first_message.as_deref(), Some("Ciao!"));
        assert_eq!(d.dynamic_variables["restaurant_name"], "Trattoria Roma");
        assert!(matches!(
            &parsed[1],
            ClientMessage::UserAudioChunk {
                audio_b64: Cow::Borrowed("/////w==")
            }
        ));
        assert_eq!(parsed[2], ClientMessage::Pong { event_id: 7 });
        assert_eq!(
            parsed[3],
            ClientMessage::ClientToolResult {
                tool_call_id: "call_1".into(),
                result: "Order placed".into(),
                is_error: false
            }
        );
        assert_eq!(
            parsed[4],
            ClientMessage::ContextualUpdate {
                text: "Caller pressed 5".into()
            }
        );
        assert_eq!(
            parsed[5],
            ClientMessage::UserMessage {
                text: "hello".into()
            }
        );
        assert_eq!(parsed[6], ClientMessage::UserActivity);
        for (frame, msg) in CLIENT.iter().zip(&parsed) {
            same_json(frame, &msg.to_json());
            assert_eq!(&parse_client(&msg.to_json()).unwrap(), msg);
        }
        assert_eq!(
            user_audio_chunk_json("AA==").unwrap(),
            r#"{"user_audio_chunk":"AA=="}"#
        );
        assert_eq!(pong_json(12), r#"{"type":"pong","event_id":12}"#);
    }

    #[test]
    fn tool_result_object_is_stringified() {
        let m = parse_client(r#"{"type":"client_tool_result","tool_call_id":"c","result":{"ok":true},"is_error":true}"#).unwrap();
        assert_eq!(
            m,
            ClientMessage::ClientToolResult {
                tool_call_id: "c".into(),
                result: r#"{"ok":true}"#.into(),
                is_error: true
            }
        );
    }

    #[test]
    fn unknown_types_tolerated_and_bad_input_rejected() {
        assert_eq!(
            parse_server(r#"{"type":"mcp_tool_call","x":1}"#).unwrap(),
            ServerMessage::Unknown {
                kind: "mcp_tool_call".into()
            }
        );
        assert_eq!(
            parse_client(r#"{"type":"future_thing"}"#).unwrap(),
            ClientMessage::Unknown {
                kind: "future_thing".into()
            }
        );
        assert!(matches!(parse_server("{"), Err(CodecError::Malformed(_))));
        assert!(matches!(
            parse_server(r#"{"no_type":1}"#),
            Err(CodecError::Malformed(_))
        ));
        assert!(matches!(
            parse_server(r#"{"type":"ping"}"#),
            Err(CodecError::MissingField { .. })
        ));
        assert!(matches!(
            parse_server(r#"{"type":"audio","audio_event":{"audio_base_64":"**"}}"#),
            Err(CodecError::InvalidBase64)
        ));
        assert!(matches!(
            parse_client(r#"{"hello":1}"#),
            Err(CodecError::MissingField { .. })
        ));
        assert!(matches!(
            parse_client(r#"{"user_audio_chunk":"a b"}"#),
            Err(CodecError::InvalidBase64)
        ));
        assert!(matches!(
            parse_client(r#"{"type":"pong"}"#),
            Err(CodecError::MissingField { .. })
        ));
        let big = format!(
            r#"{{"user_audio_chunk":"{}"}}"#,
            "A".repeat(MAX_CLIENT_BYTES)
        );
        assert!(matches!(
            parse_client(&big),
            Err(CodecError::TooLarge { .. })
        ));
        let big = format!(r#"{{"type":"x","p":"{}"}}"#, "A".repeat(MAX_SERVER_BYTES));
        assert!(matches!(
            parse_server(&big),
            Err(CodecError::TooLarge { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC{0,300}") {
            let _ = parse_server(&s);
            let _ = parse_client(&s);
        }

        #[test]
        fn text_fields_round_trip(t in "\\PC{0,100}", id in 0u64..u64::MAX) {
            for m in [ServerMessage::AgentResponse { text: t.clone(), event_id: Some(id) }, ServerMessage::UserTranscript { text: t.clone(), event_id: None },
                      ServerMessage::Ping { event_id: id, ping_ms: None }, ServerMessage::Unknown { kind: format!("x-{t}") }] {
                let text = m.to_json();
                proptest::prop_assert_eq!(parse_server(&text).unwrap(), m);
            }
            let c = ClientMessage::ContextualUpdate { text: t };
            let text = c.to_json();
            proptest::prop_assert_eq!(parse_client(&text).unwrap(), c);
        }
    }
}
