//! The ElevenLabs agents and tools API (the workspace's agents and client tools), so that
//! agent provisioning (`pulsara agents sync`, the dashboard's sync job) runs against loopback
//! with the real service's strictness.
//!
//! Routes (all need `xi-api-key`):
//! - `POST /v1/convai/agents/create` → `{"agent_id"}`; `GET /v1/convai/agents` (page);
//!   `GET`/`PATCH`/`DELETE /v1/convai/agents/{agent_id}`;
//! - `POST /v1/convai/tools`, `GET /v1/convai/tools` (page);
//!   `GET`/`PATCH`/`DELETE /v1/convai/tools/{tool_id}`.
//!
//! Sources: the official Python SDK `elevenlabs` 2.78.0 (request and response models, field
//! types, enums, the ranges in its docstrings) and the API reference's OpenAPI schema on
//! elevenlabs.io/docs (the servers' defaults, which the Fern-generated SDK does not carry).
//! What neither states is marked *assumed* where it is decided.
//!
//! [`Workspace::handle`] is the sans-IO core (method, path, query, key check, body bytes and the
//! time in → status, JSON body, `Retry-After` out); [`router`] is the axum shell. Errors have
//! the server's two shapes: `{"detail":{"status","message"}}` for 401/404/409/413/fault, and
//! FastAPI's `{"detail":[{"loc","msg","type","input"}]}` for 422.
//!
//! Checks run in this order: body size (413, as a front proxy would), injected faults
//! ([`Workspace::fail_next`]), API key (401), route (404/405), then the request's own checks.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use futures_util::StreamExt;
use serde_json::{json, Map, Value};

use crate::stored_agent::ConversationAgent;

/// Largest request body accepted; above it the answer is 413.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Agents a workspace holds at most.
pub const MAX_AGENTS: usize = 10_000;
/// Tools a workspace holds at most.
pub const MAX_TOOLS: usize = 10_000;
/// Request log entries kept (oldest dropped first).
const MAX_RECORDED_REQUESTS: usize = 100_000;
/// Bytes of an oversize body read and discarded so the client sees the 413 rather than a reset.
const MAX_DRAINED_BYTES: usize = 8 * 1024 * 1024;
/// List endpoints: "Can not exceed 100, defaults to 30." (SDK `agents.list`, `tools.list`).
const PAGE_SIZE_DEFAULT: usize = 30;
const PAGE_SIZE_MAX: usize = 100;

/// `AsrInputFormat` / `TtsOutputFormat`: the format names the media crate speaks, which are
/// the SDK's (`types/asr_input_format.py`, `tts_output_format.py`).
const AUDIO_FORMATS: &[&str] = pulsara_media::audio::FORMAT_NAMES;

/// `ClientEvent` (SDK `types/client_event.py`).
pub const CLIENT_EVENTS: &[&str] = &[
    "conversation_initiation_metadata",
    "asr_initiation_metadata",
    "ping",
    "audio",
    "interruption",
    "user_transcript",
    "tentative_user_transcript",
    "agent_response",
    "agent_response_correction",
    "client_tool_call",
    "mcp_tool_call",
    "mcp_connection_status",
    "agent_tool_request",
    "agent_tool_response",
    "agent_tool_response_full_payload",
    "agent_response_metadata",
    "vad_score",
    "agent_chat_response_part",
    "client_error",
    "guardrail_triggered",
    "dtmf_request",
    "agent_response_complete",
    "context_usage",
    "internal_turn_probability",
    "internal_tentative_agent_response",
];

/// The `client_events` an agent gets when its creator sets none. *Assumed*: neither the SDK
/// (every field defaults to `None`) nor the API reference (no `default` on
/// `ConversationConfig.client_events`) states it; this is the list the platform's new agents
/// carry, without `client_tool_call` and `agent_response_correction`, which must be asked for.
pub const DEFAULT_CLIENT_EVENTS: &[&str] = &[
    "audio",
    "interruption",
    "agent_response",
    "user_transcript",
    "tentative_user_transcript",
    "conversation_initiation_metadata",
    "ping",
];

/// A client tool's `name`. *Assumed*: the SDK types it as a bare `str`; this is the
/// function-name rule of the LLM providers the platform forwards tools to.
const TOOL_NAME_PATTERN: &str = "^[a-zA-Z0-9_-]{1,64}$";

/// The field types the emulator checks, pydantic-style (every field is optional and nullable,
/// as in the SDK's models; unknown fields are kept).
#[derive(Debug, Clone, Copy)]
enum Ty {
    Str,
    Bool,
    Int,
    Num,
    StrList,
    Enum(&'static [&'static str]),
    EnumList(&'static [&'static str]),
    /// A model: its name (for messages) and known fields.
    Obj(&'static str, &'static [(&'static str, Ty)]),
    /// An object whose content is not checked.
    AnyObj,
}

use Ty::*;

const ASR: &[(&str, Ty)] = &[
    ("quality", Enum(&["high"])),
    ("provider", Enum(&["elevenlabs", "scribe_realtime"])),
    ("user_input_audio_format", Enum(AUDIO_FORMATS)),
    ("keywords", StrList),
];
const TURN: &[(&str, Ty)] = &[
    ("turn_timeout", Num),
    ("initial_wait_time", Num),
    ("silence_end_call_timeout", Num),
    ("turn_eagerness", Enum(&["patient", "normal", "eager"])),
];
const TTS: &[(&str, Ty)] = &[
    (
        "model_id",
        Enum(&[
            "eleven_turbo_v2",
            "eleven_turbo_v2_5",
            "eleven_flash_v2",
            "eleven_flash_v2_5",
            "eleven_multilingual_v2",
            "eleven_v3_conversational",
        ]),
    ),
    ("voice_id", Str),
    ("agent_output_audio_format", Enum(AUDIO_FORMATS)),
    ("stability", Num),
    ("speed", Num),
    ("similarity_boost", Num),
];
const CONVERSATION: &[(&str, Ty)] = &[
    ("text_only", Bool),
    ("max_duration_seconds", Int),
    ("client_events", EnumList(CLIENT_EVENTS)),
    ("monitoring_enabled", Bool),
    ("monitoring_events", EnumList(CLIENT_EVENTS)),
];
const PROMPT: &[(&str, Ty)] = &[
    ("prompt", Str),
    ("llm", Str),
    ("temperature", Num),
    ("max_tokens", Int),
    ("tool_ids", StrList),
    ("mcp_server_ids", StrList),
    ("native_mcp_server_ids", StrList),
    ("timezone", Str),
];
const AGENT: &[(&str, Ty)] = &[
    ("first_message", Str),
    ("language", Str),
    ("hinglish_mode", Bool),
    ("disable_first_message_interruptions", Bool),
    ("max_conversation_duration_message", Str),
    ("prompt", Obj("PromptAgentApiModelInput", PROMPT)),
];
const CONVERSATIONAL_CONFIG: &[(&str, Ty)] = &[
    ("asr", Obj("AsrConversationalConfig", ASR)),
    ("turn", Obj("TurnConfig", TURN)),
    ("tts", Obj("TtsConversationalConfigInput", TTS)),
    ("conversation", Obj("ConversationConfigInput", CONVERSATION)),
    ("language_presets", AnyObj),
    ("vad", AnyObj),
    ("agent", Obj("AgentConfig", AGENT)),
];
const OVERRIDE_PROMPT: &[(&str, Ty)] = &[
    ("prompt", Bool),
    ("llm", Bool),
    ("reasoning_effort", Bool),
    ("tool_ids", Bool),
    ("tool_ids_strict", Bool),
    ("native_mcp_server_ids", Bool),
    ("knowledge_base", Bool),
];
const OVERRIDE_AGENT: &[(&str, Ty)] = &[
    ("first_message", Bool),
    ("language", Bool),
    ("max_conversation_duration_message", Bool),
    (
        "prompt",
        Obj("PromptAgentApiModelOverrideConfig", OVERRIDE_PROMPT),
    ),
];
const OVERRIDE_TTS: &[(&str, Ty)] = &[
    ("model_id", Bool),
    ("voice_id", Bool),
    ("supported_voices", Bool),
    ("stability", Bool),
    ("speed", Bool),
    ("similarity_boost", Bool),
    ("clone_strength", Bool),
    ("pronunciation_dictionary_locators", Bool),
];
const OVERRIDE_CONVERSATION: &[(&str, Ty)] = &[("text_only", Bool), ("max_duration_seconds", Bool)];
const OVERRIDE_CONFIG: &[(&str, Ty)] = &[
    (
        "asr",
        Obj(
            "AsrConversationalConfigOverrideConfig",
            &[("keywords", Bool)],
        ),
    ),
    ("turn", AnyObj),
    (
        "tts",
        Obj("TtsConversationalConfigOverrideConfig", OVERRIDE_TTS),
    ),
    (
        "conversation",
        Obj("ConversationConfigOverrideConfig", OVERRIDE_CONVERSATION),
    ),
    ("agent", Obj("AgentConfigOverrideConfig", OVERRIDE_AGENT)),
];
const OVERRIDES: &[(&str, Ty)] = &[
    (
        "conversation_config_override",
        Obj(
            "ConversationConfigClientOverrideConfigInput",
            OVERRIDE_CONFIG,
        ),
    ),
    ("custom_llm_extra_body", Bool),
    (
        "enable_conversation_initiation_client_data_from_webhook",
        Bool,
    ),
];
const PLATFORM_SETTINGS: &[(&str, Ty)] = &[
    (
        "overrides",
        Obj("ConversationInitiationClientDataConfigInput", OVERRIDES),
    ),
    ("archived", Bool),
    ("summary_language", Str),
];
/// The create and update request bodies' fields (SDK `agents/raw_client.py`).
const AGENT_BODY: &[(&str, Ty)] = &[
    (
        "conversation_config",
        Obj("ConversationalConfig", CONVERSATIONAL_CONFIG),
    ),
    (
        "platform_settings",
        Obj("AgentPlatformSettingsRequestModel", PLATFORM_SETTINGS),
    ),
    ("workflow", AnyObj),
    ("name", Str),
    ("tags", StrList),
];

/// What the server fills in for the fields a creator leaves out (API reference OpenAPI
/// `default`s unless marked): asr `user_input_audio_format` (`AsrInputFormat` default) and
/// `provider`; tts `agent_output_audio_format` (`TtsOutputFormat` default), `model_id`,
/// `voice_id`, `stability`, `speed`, `similarity_boost` (`TtsConversationalConfig`); turn
/// `turn_timeout`, `silence_end_call_timeout` (`TurnConfig`); conversation `text_only`,
/// `max_duration_seconds` (`ConversationConfig`) and `client_events` ([`DEFAULT_CLIENT_EVENTS`],
/// assumed); agent `first_message`, `language` (`AgentConfigAPIModel`), prompt `llm` (`Llm`
/// default), `prompt` and `tool_ids` (empty: assumed); every override permission `false`
/// (`*OverrideConfig`, "default: false").
fn agent_defaults() -> Value {
    json!({
        "name": "",
        "tags": [],
        "conversation_config": {
            "asr": {
                "quality": "high",
                "provider": "scribe_realtime",
                "user_input_audio_format": "pcm_16000",
                "keywords": [],
            },
            "turn": { "turn_timeout": 7.0, "silence_end_call_timeout": -1.0 },
            "tts": {
                "model_id": "eleven_flash_v2",
                "voice_id": "cjVigY5qzO86Huf0OWal",
                "agent_output_audio_format": "pcm_16000",
                "stability": 0.5,
                "speed": 1.0,
                "similarity_boost": 0.8,
            },
            "conversation": {
                "text_only": false,
                "max_duration_seconds": 600,
                "client_events": DEFAULT_CLIENT_EVENTS,
            },
            "agent": {
                "first_message": "",
                "language": "en",
                "prompt": { "prompt": "", "llm": "gemini-2.5-flash", "tool_ids": [] },
            },
        },
        "platform_settings": {
            "overrides": {
                "conversation_config_override": {
                    "asr": { "keywords": false },
                    "tts": {
                        "model_id": false,
                        "voice_id": false,
                        "stability": false,
                        "speed": false,
                        "similarity_boost": false,
                    },
                    "conversation": { "text_only": false, "max_duration_seconds": false },
                    "agent": {
                        "first_message": false,
                        "language": false,
                        "max_conversation_duration_message": false,
                        "prompt": {
                            "prompt": false,
                            "llm": false,
                            "tool_ids": false,
                            "knowledge_base": false,
                        },
                    },
                },
                "custom_llm_extra_body": false,
                "enable_conversation_initiation_client_data_from_webhook": false,
            },
            "archived": false,
        },
    })
}

/// A client tool's defaults (tools API reference: `response_timeout_secs` 20, `expects_response`,
/// `disable_interruptions`, `force_pre_tool_speech` false, `execution_mode` immediate).
fn tool_defaults() -> Value {
    json!({
        "response_timeout_secs": 20,
        "disable_interruptions": false,
        "force_pre_tool_speech": false,
        "expects_response": false,
        "execution_mode": "immediate",
    })
}

/// One request to the API, as the shell hands it to [`Workspace::handle`].
#[derive(Debug, Clone)]
pub struct ApiRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// Decoded query pairs, in order.
    pub query: &'a [(String, String)],
    /// Whether `xi-api-key` matched (the shell compares in constant time).
    pub key_ok: bool,
    /// The body, or `None` when it exceeded [`MAX_BODY_BYTES`].
    pub body: Option<&'a [u8]>,
    pub now_unix_secs: u64,
}

/// The answer to an [`ApiRequest`].
#[derive(Debug, Clone, PartialEq)]
pub struct ApiResponse {
    pub status: u16,
    pub body: Value,
    pub retry_after_secs: Option<u64>,
}

impl ApiResponse {
    fn ok(body: Value) -> Self {
        ApiResponse {
            status: 200,
            body,
            retry_after_secs: None,
        }
    }

    fn detail(status: u16, code: &str, message: &str) -> Self {
        ApiResponse {
            status,
            body: json!({"detail": {"status": code, "message": message}}),
            retry_after_secs: None,
        }
    }

    fn invalid(errors: Vec<Value>) -> Self {
        ApiResponse {
            status: 422,
            body: json!({ "detail": errors }),
            retry_after_secs: None,
        }
    }
}

#[derive(Debug)]
struct Fault {
    status: u16,
    left: u32,
    retry_after_secs: Option<u64>,
}

#[derive(Debug, Default)]
struct Store {
    /// Stored agents in creation order, each the whole document `GET` returns.
    agents: Vec<Value>,
    tools: Vec<Value>,
    next_id: u64,
    fault: Option<Fault>,
    requests: Vec<(String, String, u16)>,
}

/// The emulator's workspace: its agents and client tools, the injected faults, and the log of
/// every agents/tools API request. Shared with tests through
/// [`Recorder::workspace`](crate::elevenlabs::Recorder::workspace).
#[derive(Debug, Default)]
pub struct Workspace {
    store: Mutex<Store>,
}

fn lock(m: &Mutex<Store>) -> std::sync::MutexGuard<'_, Store> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Workspace {
    pub fn new() -> Arc<Self> {
        Arc::new(Workspace::default())
    }

    /// Every stored agent, whole (as `GET /v1/convai/agents/{id}` returns it), oldest first.
    pub fn agents(&self) -> Vec<Value> {
        lock(&self.store).agents.clone()
    }

    /// The stored agent with this id.
    pub fn agent(&self, agent_id: &str) -> Option<Value> {
        lock(&self.store)
            .agents
            .iter()
            .find(|a| a["agent_id"] == agent_id)
            .cloned()
    }

    /// The stored agent with this id as a conversation uses it; `None` when there is none.
    ///
    /// # Errors
    /// See [`ConversationAgent::from_stored`].
    pub fn conversation_agent(&self, agent_id: &str) -> Option<Result<ConversationAgent, String>> {
        let store = lock(&self.store);
        let agent = store.agents.iter().find(|a| a["agent_id"] == agent_id)?;
        Some(ConversationAgent::from_stored(agent, &store.tools))
    }

    /// Every stored tool (as `GET /v1/convai/tools/{id}` returns it), oldest first.
    pub fn tools(&self) -> Vec<Value> {
        lock(&self.store).tools.clone()
    }

    /// Make the next `n` agents/tools API requests answer `status` (with `Retry-After` when
    /// given) instead of being served; the signed-URL and conversation routes are not affected.
    pub fn fail_next(&self, status: u16, n: u32, retry_after_secs: Option<u64>) {
        lock(&self.store).fault = (n > 0).then_some(Fault {
            status,
            left: n,
            retry_after_secs,
        });
    }

    /// Every agents/tools API request so far: (method, path, status answered), in order.
    pub fn requests(&self) -> Vec<(String, String, u16)> {
        lock(&self.store).requests.clone()
    }

    /// Serve `method path` with a JSON `body` as a client holding the right API key would send
    /// it, with every check of [`Workspace::handle`]: for setting a workspace up without HTTP.
    pub fn request(&self, method: &str, path: &str, body: &Value) -> ApiResponse {
        let body = body.to_string();
        let now_unix_secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.handle(&ApiRequest {
            method,
            path,
            query: &[],
            key_ok: true,
            body: (body.len() <= MAX_BODY_BYTES).then_some(body.as_bytes()),
            now_unix_secs,
        })
    }

    /// Serve one request (sans-IO) and record it.
    pub fn handle(&self, req: &ApiRequest<'_>) -> ApiResponse {
        let mut store = lock(&self.store);
        let resp = store.serve(req);
        if store.requests.len() >= MAX_RECORDED_REQUESTS {
            store.requests.remove(0);
        }
        store
            .requests
            .push((req.method.to_owned(), req.path.to_owned(), resp.status));
        resp
    }
}

impl Store {
    fn serve(&mut self, req: &ApiRequest<'_>) -> ApiResponse {
        let Some(body) = req.body else {
            return ApiResponse::detail(
                413,
                "request_too_large",
                &format!("request bodies are limited to {MAX_BODY_BYTES} bytes"),
            );
        };
        if let Some(f) = self.fault.as_mut() {
            f.left -= 1;
            let mut resp = ApiResponse::detail(
                f.status,
                fault_code(f.status),
                "injected fault (emulator fail_next)",
            );
            resp.retry_after_secs = f.retry_after_secs;
            if f.left == 0 {
                self.fault = None;
            }
            return resp;
        }
        if !req.key_ok {
            return ApiResponse::detail(401, "invalid_api_key", "Invalid API key");
        }
        let segs: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
        let now = req.now_unix_secs;
        match (req.method, segs.as_slice()) {
            ("POST", ["v1", "convai", "agents", "create"]) => self.create_agent(body, now),
            ("GET", ["v1", "convai", "agents"]) => self.list_agents(req.query),
            ("GET", ["v1", "convai", "agents", id]) => match self.agent_index(id) {
                Some(i) => ApiResponse::ok(self.agents[i].clone()),
                None => agent_not_found(id),
            },
            ("PATCH", ["v1", "convai", "agents", id]) => self.patch_agent(id, body, now),
            ("DELETE", ["v1", "convai", "agents", id]) => match self.agent_index(id) {
                Some(i) => {
                    self.agents.remove(i);
                    ApiResponse::ok(json!({}))
                }
                None => agent_not_found(id),
            },
            ("POST", ["v1", "convai", "tools"]) => self.create_tool(body),
            ("GET", ["v1", "convai", "tools"]) => self.list_tools(req.query),
            ("GET", ["v1", "convai", "tools", id]) => match self.tool_index(id) {
                Some(i) => ApiResponse::ok(self.tools[i].clone()),
                None => tool_not_found(id),
            },
            ("PATCH", ["v1", "convai", "tools", id]) => self.patch_tool(id, body),
            ("DELETE", ["v1", "convai", "tools", id]) => self.delete_tool(id, req.query),
            (_, ["v1", "convai", "agents", ..] | ["v1", "convai", "tools", ..])
                if segs.len() <= 4 =>
            {
                ApiResponse {
                    status: 405,
                    body: json!({"detail": "Method Not Allowed"}),
                    retry_after_secs: None,
                }
            }
            _ => ApiResponse {
                status: 404,
                body: json!({"detail": "Not Found"}),
                retry_after_secs: None,
            },
        }
    }

    fn new_id(&mut self, prefix: &str, now: u64) -> String {
        let n = self.next_id;
        self.next_id += 1;
        // Unique by the counter; the hash only makes ids look opaque.
        format!(
            "{prefix}_{:016x}{n:06x}",
            fnv(&format!("{prefix}/{now}/{n}"))
        )
    }

    fn agent_index(&self, id: &str) -> Option<usize> {
        self.agents.iter().position(|a| a["agent_id"] == id)
    }

    fn tool_index(&self, id: &str) -> Option<usize> {
        self.tools.iter().position(|t| t["id"] == id)
    }

    fn create_agent(&mut self, body: &[u8], now: u64) -> ApiResponse {
        let doc = match parse_body(body) {
            Ok(d) => d,
            Err(e) => return e,
        };
        let mut errors = Vec::new();
        match doc.get("conversation_config") {
            None => errors.push(error(
                vec![json!("body"), json!("conversation_config")],
                "missing",
                "Field required",
                &doc,
            )),
            Some(Value::Null) => errors.push(error(
                vec![json!("body"), json!("conversation_config")],
                "model_type",
                "Input should be a valid dictionary or instance of ConversationalConfig",
                &Value::Null,
            )),
            Some(_) => {}
        }
        check_fields(&doc, AGENT_BODY, &mut vec![json!("body")], &mut errors);
        self.check_tool_ids(&doc, &mut errors);
        if !errors.is_empty() {
            return ApiResponse::invalid(errors);
        }
        if self.agents.len() >= MAX_AGENTS {
            return limit_reached("agents", MAX_AGENTS);
        }
        let agent_id = self.new_id("agent", now);
        let mut agent = json!({
            "agent_id": agent_id,
            "metadata": { "created_at_unix_secs": now, "updated_at_unix_secs": now },
            "access_info": access_info(),
            "phone_numbers": [],
        });
        for (key, _) in AGENT_BODY {
            if let Some(v) = doc.get(*key).filter(|v| !v.is_null()) {
                let mut v = v.clone();
                strip_nulls(&mut v);
                agent[*key] = v;
            }
        }
        fill_defaults(&mut agent, &agent_defaults());
        self.agents.push(agent);
        ApiResponse::ok(json!({ "agent_id": agent_id }))
    }

    fn patch_agent(&mut self, id: &str, body: &[u8], now: u64) -> ApiResponse {
        let Some(i) = self.agent_index(id) else {
            return agent_not_found(id);
        };
        let doc = match parse_body(body) {
            Ok(d) => d,
            Err(e) => return e,
        };
        let mut errors = Vec::new();
        check_fields(&doc, AGENT_BODY, &mut vec![json!("body")], &mut errors);
        self.check_tool_ids(&doc, &mut errors);
        if !errors.is_empty() {
            return ApiResponse::invalid(errors);
        }
        let agent = &mut self.agents[i];
        for (key, _) in AGENT_BODY {
            if let Some(v) = doc.get(*key) {
                merge(&mut agent[*key], v);
            }
        }
        // A field set to null goes back to the server's default.
        fill_defaults(agent, &agent_defaults());
        agent["metadata"]["updated_at_unix_secs"] = json!(now);
        ApiResponse::ok(agent.clone())
    }

    /// An agent may only name tools of its workspace. *Assumed*: the SDK and the reference do
    /// not say how an unknown tool id is answered; the emulator refuses it (422) rather than
    /// store an agent whose tools would never be offered to the LLM.
    fn check_tool_ids(&self, doc: &Value, errors: &mut Vec<Value>) {
        let Some(ids) = doc
            .pointer("/conversation_config/agent/prompt/tool_ids")
            .and_then(Value::as_array)
        else {
            return;
        };
        for (n, id) in ids.iter().enumerate() {
            if let Some(s) = id.as_str() {
                if self.tool_index(s).is_none() {
                    errors.push(error(
                        vec![
                            json!("body"),
                            json!("conversation_config"),
                            json!("agent"),
                            json!("prompt"),
                            json!("tool_ids"),
                            json!(n),
                        ],
                        "value_error",
                        &format!("Value error, tool {s:?} does not exist in this workspace"),
                        id,
                    ));
                }
            }
        }
    }

    fn list_agents(&self, query: &[(String, String)]) -> ApiResponse {
        let page = match Page::from_query(query) {
            Ok(p) => p,
            Err(e) => return e,
        };
        let search = query_value(query, "search").map(str::to_lowercase);
        let tags: Vec<&str> = query
            .iter()
            .filter(|(k, _)| k == "tags")
            .map(|(_, v)| v.as_str())
            .collect();
        let archived = query_value(query, "archived").map(|v| v == "true");
        // Newest first. *Assumed*: the default sort is not documented.
        let matching: Vec<&Value> = self
            .agents
            .iter()
            .rev()
            .filter(|a| {
                search.as_ref().is_none_or(|s| {
                    a["name"]
                        .as_str()
                        .is_some_and(|n| n.to_lowercase().contains(s))
                })
            })
            .filter(|a| {
                tags.is_empty()
                    || a["tags"]
                        .as_array()
                        .is_some_and(|t| t.iter().any(|t| tags.contains(&t.as_str().unwrap_or(""))))
            })
            .filter(|a| {
                archived.is_none_or(|want| {
                    a["platform_settings"]["archived"]
                        .as_bool()
                        .unwrap_or(false)
                        == want
                })
            })
            .collect();
        let (items, has_more, next_cursor) = page.slice(&matching);
        let agents: Vec<Value> = items.iter().map(|a| agent_summary(a)).collect();
        ApiResponse::ok(json!({
            "agents": agents,
            "has_more": has_more,
            "next_cursor": next_cursor,
        }))
    }

    fn create_tool(&mut self, body: &[u8]) -> ApiResponse {
        let config = match self.tool_request(body) {
            Ok(c) => c,
            Err(e) => return e,
        };
        if self.tools.len() >= MAX_TOOLS {
            return limit_reached("tools", MAX_TOOLS);
        }
        let id = self.new_id("tool", 0);
        let tool = json!({
            "id": id,
            "tool_config": config,
            "access_info": access_info(),
            "usage_stats": { "total_calls": 0, "avg_latency_secs": 0.0 },
        });
        self.tools.push(tool.clone());
        ApiResponse::ok(tool)
    }

    fn patch_tool(&mut self, id: &str, body: &[u8]) -> ApiResponse {
        let Some(i) = self.tool_index(id) else {
            return tool_not_found(id);
        };
        let config = match self.tool_request(body) {
            Ok(c) => c,
            Err(e) => return e,
        };
        self.tools[i]["tool_config"] = config;
        ApiResponse::ok(self.tools[i].clone())
    }

    /// The `ToolRequestModel` body (`{"tool_config": {...}}`), checked, with defaults filled.
    fn tool_request(&self, body: &[u8]) -> Result<Value, ApiResponse> {
        let doc = parse_body(body)?;
        let mut errors = Vec::new();
        let mut loc = vec![json!("body"), json!("tool_config")];
        match doc.get("tool_config") {
            None => errors.push(error(loc, "missing", "Field required", &doc)),
            Some(c) => check_tool_config(c, &mut loc, &mut errors),
        }
        if let Some(m) = doc.get("response_mocks") {
            if !m.is_null() && !m.is_array() {
                errors.push(type_error(
                    &[json!("body"), json!("response_mocks")],
                    "list",
                    m,
                ));
            }
        }
        if !errors.is_empty() {
            return Err(ApiResponse::invalid(errors));
        }
        let mut config = doc["tool_config"].clone();
        strip_nulls(&mut config);
        fill_defaults(&mut config, &tool_defaults());
        Ok(config)
    }

    /// Deleting a tool an agent still lists is refused unless `force=true` ("If set to true, the
    /// tool will be deleted regardless of whether it is used by any agents", SDK
    /// `tools.delete`); with force it is also taken out of those agents' `tool_ids`. The refusal's
    /// status is *assumed* (409: the request conflicts with the workspace's state).
    fn delete_tool(&mut self, id: &str, query: &[(String, String)]) -> ApiResponse {
        let Some(i) = self.tool_index(id) else {
            return tool_not_found(id);
        };
        let force = query_value(query, "force") == Some("true");
        let uses = |a: &Value| {
            a.pointer("/conversation_config/agent/prompt/tool_ids")
                .and_then(Value::as_array)
                .is_some_and(|ids| ids.iter().any(|t| t == id))
        };
        let users: Vec<String> = self
            .agents
            .iter()
            .filter(|a| uses(a))
            .filter_map(|a| a["agent_id"].as_str().map(str::to_owned))
            .collect();
        if !users.is_empty() && !force {
            return ApiResponse::detail(
                409,
                "tool_in_use",
                &format!(
                    "tool {id} is used by agents {}; remove it from them first or pass force=true",
                    users.join(", ")
                ),
            );
        }
        for a in self.agents.iter_mut().filter(|a| uses(a)) {
            if let Some(ids) = a
                .pointer_mut("/conversation_config/agent/prompt/tool_ids")
                .and_then(Value::as_array_mut)
            {
                ids.retain(|t| t != id);
            }
        }
        self.tools.remove(i);
        ApiResponse::ok(json!({}))
    }

    fn list_tools(&self, query: &[(String, String)]) -> ApiResponse {
        let page = match Page::from_query(query) {
            Ok(p) => p,
            Err(e) => return e,
        };
        // "only tools whose names start with this string" (SDK `tools.list`).
        let search = query_value(query, "search");
        let matching: Vec<&Value> = self
            .tools
            .iter()
            .rev()
            .filter(|t| {
                search.is_none_or(|s| {
                    t["tool_config"]["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with(s))
                })
            })
            .collect();
        let (items, has_more, next_cursor) = page.slice(&matching);
        let tools: Vec<Value> = items.iter().map(|t| (*t).clone()).collect();
        ApiResponse::ok(json!({
            "tools": tools,
            "has_more": has_more,
            "next_cursor": next_cursor,
        }))
    }
}

/// A list request's page: `page_size` (1..=100, default 30) and the opaque `cursor` (here the
/// offset of the next item).
struct Page {
    size: usize,
    offset: usize,
}

impl Page {
    fn from_query(query: &[(String, String)]) -> Result<Page, ApiResponse> {
        let mut size = PAGE_SIZE_DEFAULT;
        if let Some(v) = query_value(query, "page_size") {
            let loc = vec![json!("query"), json!("page_size")];
            match v.parse::<i64>() {
                Err(_) => {
                    return Err(ApiResponse::invalid(vec![error(
                        loc,
                        "int_parsing",
                        "Input should be a valid integer, unable to parse string as an integer",
                        &json!(v),
                    )]))
                }
                Ok(n) if n > PAGE_SIZE_MAX as i64 => {
                    return Err(ApiResponse::invalid(vec![error(
                        loc,
                        "less_than_equal",
                        &format!("Input should be less than or equal to {PAGE_SIZE_MAX}"),
                        &json!(v),
                    )]))
                }
                Ok(n) if n < 1 => {
                    return Err(ApiResponse::invalid(vec![error(
                        loc,
                        "greater_than_equal",
                        "Input should be greater than or equal to 1",
                        &json!(v),
                    )]))
                }
                Ok(n) => size = n as usize,
            }
        }
        let offset = match query_value(query, "cursor") {
            None => 0,
            Some(c) => match c.strip_prefix("c").and_then(|n| n.parse().ok()) {
                Some(n) => n,
                None => {
                    return Err(ApiResponse::invalid(vec![error(
                        vec![json!("query"), json!("cursor")],
                        "value_error",
                        "Value error, invalid cursor",
                        &json!(c),
                    )]))
                }
            },
        };
        Ok(Page { size, offset })
    }

    fn slice<'v>(&self, all: &[&'v Value]) -> (Vec<&'v Value>, bool, Value) {
        let items: Vec<&Value> = all
            .iter()
            .skip(self.offset)
            .take(self.size)
            .copied()
            .collect();
        let end = self.offset.saturating_add(items.len());
        let has_more = end < all.len();
        let cursor = if has_more {
            json!(format!("c{end}"))
        } else {
            Value::Null
        };
        (items, has_more, cursor)
    }
}

fn query_value<'q>(query: &'q [(String, String)], key: &str) -> Option<&'q str> {
    query
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// `AgentSummaryResponseModel` (SDK `types/agent_summary_response_model.py`).
fn agent_summary(a: &Value) -> Value {
    json!({
        "agent_id": a["agent_id"],
        "name": a["name"],
        "voice_id": a["conversation_config"]["tts"]["voice_id"],
        "tags": a["tags"],
        "created_at_unix_secs": a["metadata"]["created_at_unix_secs"],
        "updated_at_unix_secs": a["metadata"]["updated_at_unix_secs"],
        "access_info": a["access_info"],
        "last_call_time_unix_secs": null,
        "archived": a["platform_settings"]["archived"].as_bool().unwrap_or(false),
    })
}

/// `ResourceAccessInfo`: the emulator's single user owns everything.
fn access_info() -> Value {
    json!({
        "is_creator": true,
        "creator_name": "Emulator",
        "creator_email": "emulator@localhost",
        "role": "admin",
    })
}

fn agent_not_found(id: &str) -> ApiResponse {
    ApiResponse::detail(404, "agent_not_found", &format!("Agent {id} not found"))
}

fn tool_not_found(id: &str) -> ApiResponse {
    ApiResponse::detail(404, "tool_not_found", &format!("Tool {id} not found"))
}

/// The workspace cap answers 422 (not 429): waiting does not lift it, so a client that retries
/// 429s must not be told to retry; only deleting agents or tools does.
fn limit_reached(what: &str, max: usize) -> ApiResponse {
    ApiResponse::invalid(vec![error(
        vec![json!("body")],
        "value_error",
        &format!("Value error, this workspace already holds the maximum of {max} {what}"),
        &Value::Null,
    )])
}

fn fault_code(status: u16) -> &'static str {
    match status {
        429 => "rate_limit_exceeded",
        500..=599 => "service_unavailable",
        _ => "injected_fault",
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// FastAPI's reading of a JSON body: empty → missing, undecodable → `json_invalid` at the
/// byte offset, not an object → `model_attributes_type`.
fn parse_body(body: &[u8]) -> Result<Value, ApiResponse> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiResponse::invalid(vec![error(
            vec![json!("body")],
            "missing",
            "Field required",
            &Value::Null,
        )]));
    }
    let doc: Value = serde_json::from_slice(body).map_err(|e| {
        let offset = byte_offset(body, e.line(), e.column());
        ApiResponse::invalid(vec![json!({
            "loc": ["body", offset],
            "msg": "JSON decode error",
            "type": "json_invalid",
            "input": {},
            "ctx": { "error": e.to_string() },
        })])
    })?;
    if !doc.is_object() {
        return Err(ApiResponse::invalid(vec![error(
            vec![json!("body")],
            "model_attributes_type",
            "Input should be a valid dictionary or object to extract fields from",
            &doc,
        )]));
    }
    Ok(doc)
}

fn byte_offset(body: &[u8], line: usize, column: usize) -> usize {
    let line_start: usize = body
        .split(|b| *b == b'\n')
        .take(line.saturating_sub(1))
        .map(|l| l.len() + 1)
        .sum();
    (line_start + column.saturating_sub(1)).min(body.len())
}

fn error(loc: Vec<Value>, kind: &str, msg: &str, input: &Value) -> Value {
    json!({ "loc": loc, "msg": msg, "type": kind, "input": input })
}

fn type_error(loc: &[Value], expected: &str, input: &Value) -> Value {
    let (kind, msg) = match expected {
        "string" => ("string_type", "Input should be a valid string"),
        "boolean" => ("bool_type", "Input should be a valid boolean"),
        "integer" => ("int_type", "Input should be a valid integer"),
        "number" => ("float_type", "Input should be a valid number"),
        "list" => ("list_type", "Input should be a valid list"),
        _ => ("dict_type", "Input should be a valid dictionary"),
    };
    error(loc.to_vec(), kind, msg, input)
}

/// pydantic's enum message: `Input should be 'a', 'b' or 'c'`.
fn enum_error(loc: &[Value], allowed: &[&str], input: &Value) -> Value {
    let quoted: Vec<String> = allowed.iter().map(|a| format!("'{a}'")).collect();
    let msg = match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => {
            format!("Input should be {} or {last}", rest.join(", "))
        }
        _ => format!("Input should be {}", quoted.join("")),
    };
    error(loc.to_vec(), "enum", &msg, input)
}

/// Check the known fields of an object model; `null` is accepted everywhere (all optional).
fn check_fields(v: &Value, fields: &[(&str, Ty)], loc: &mut Vec<Value>, errors: &mut Vec<Value>) {
    let Some(obj) = v.as_object() else { return };
    for (name, ty) in fields {
        if let Some(fv) = obj.get(*name) {
            loc.push(json!(name));
            check(fv, *ty, loc, errors);
            loc.pop();
        }
    }
}

fn check(v: &Value, ty: Ty, loc: &mut Vec<Value>, errors: &mut Vec<Value>) {
    if v.is_null() {
        return;
    }
    match ty {
        Str if !v.is_string() => errors.push(type_error(loc, "string", v)),
        Bool if !v.is_boolean() => errors.push(type_error(loc, "boolean", v)),
        Int => check_int(v, loc, errors),
        Num if !v.is_number() => errors.push(type_error(loc, "number", v)),
        StrList | EnumList(_) => match v.as_array() {
            None => errors.push(type_error(loc, "list", v)),
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    loc.push(json!(i));
                    match (ty, item.as_str()) {
                        (_, None) => errors.push(type_error(loc, "string", item)),
                        (EnumList(allowed), Some(s)) if !allowed.contains(&s) => {
                            errors.push(enum_error(loc, allowed, item))
                        }
                        _ => {}
                    }
                    loc.pop();
                }
            }
        },
        Enum(allowed) => match v.as_str() {
            Some(s) if allowed.contains(&s) => {}
            _ => errors.push(enum_error(loc, allowed, v)),
        },
        Obj(model, fields) => {
            if v.is_object() {
                check_fields(v, fields, loc, errors);
            } else {
                errors.push(error(
                    loc.clone(),
                    "model_type",
                    &format!("Input should be a valid dictionary or instance of {model}"),
                    v,
                ));
            }
        }
        AnyObj if !v.is_object() => errors.push(type_error(loc, "object", v)),
        _ => {}
    }
}

/// pydantic accepts an integral float (`5.0`) for an `int`.
fn check_int(v: &Value, loc: &[Value], errors: &mut Vec<Value>) {
    match v {
        Value::Number(n) if n.is_i64() || n.is_u64() => {}
        Value::Number(n) if n.as_f64().is_some_and(|f| f.fract() == 0.0) => {}
        Value::Number(_) => errors.push(error(
            loc.to_vec(),
            "int_from_float",
            "Input should be a valid integer, got a number with a fractional part",
            v,
        )),
        _ => errors.push(type_error(loc, "integer", v)),
    }
}

fn int_of(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| {
        v.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
            .map(|f| f as i64)
    })
}

/// `ToolRequestModelToolConfig`: a union discriminated by `type`; pydantic puts the tag in
/// the location of its members' errors (`["body","tool_config","client","name"]`).
fn check_tool_config(c: &Value, loc: &mut Vec<Value>, errors: &mut Vec<Value>) {
    const TAGS: &[&str] = &["client", "mcp", "system", "webhook"];
    let Some(obj) = c.as_object() else {
        errors.push(error(
            loc.clone(),
            "model_attributes_type",
            "Input should be a valid dictionary or object to extract fields from",
            c,
        ));
        return;
    };
    match obj.get("type").and_then(Value::as_str) {
        None => {
            errors.push(json!({
                "loc": loc.clone(),
                "msg": "Unable to extract tag using discriminator 'type'",
                "type": "union_tag_not_found",
                "input": c,
                "ctx": { "discriminator": "'type'" },
            }));
            return;
        }
        Some("client") => {}
        Some(t) if TAGS.contains(&t) => {
            // A real type the emulator does not run: refusing beats accepting silently.
            loc.push(json!("type"));
            errors.push(error(
                loc.clone(),
                "value_error",
                &format!("Value error, the emulator supports client tools only, not {t:?} tools"),
                &json!(t),
            ));
            loc.pop();
            return;
        }
        Some(t) => {
            errors.push(json!({
                "loc": loc.clone(),
                "msg": format!("Input tag '{t}' found using 'type' does not match any of the expected tags: 'client', 'mcp', 'system', 'webhook'"),
                "type": "union_tag_invalid",
                "input": c,
                "ctx": { "discriminator": "'type'", "tag": t, "expected_tags": "'client', 'mcp', 'system', 'webhook'" },
            }));
            return;
        }
    }
    loc.push(json!("client"));
    check_client_tool(obj, c, loc, errors);
    loc.pop();
}

/// `ToolRequestModelToolConfig_Client` (SDK `types/tool_request_model_tool_config.py`).
fn check_client_tool(
    obj: &Map<String, Value>,
    c: &Value,
    loc: &mut Vec<Value>,
    errors: &mut Vec<Value>,
) {
    let at = |loc: &Vec<Value>, field: &str| {
        let mut l = loc.clone();
        l.push(json!(field));
        l
    };
    for field in ["name", "description"] {
        match obj.get(field) {
            None => errors.push(error(at(loc, field), "missing", "Field required", c)),
            Some(Value::String(s)) if s.is_empty() => errors.push(json!({
                "loc": at(loc, field),
                "msg": "String should have at least 1 character",
                "type": "string_too_short",
                "input": s,
                "ctx": { "min_length": 1 },
            })),
            Some(Value::String(s)) if field == "name" && !valid_tool_name(s) => {
                errors.push(json!({
                    "loc": at(loc, field),
                    "msg": format!("String should match pattern '{TOOL_NAME_PATTERN}'"),
                    "type": "string_pattern_mismatch",
                    "input": s,
                    "ctx": { "pattern": TOOL_NAME_PATTERN },
                }))
            }
            Some(Value::String(_)) => {}
            Some(v) => errors.push(type_error(&at(loc, field), "string", v)),
        }
    }
    for field in [
        "expects_response",
        "disable_interruptions",
        "force_pre_tool_speech",
    ] {
        if let Some(v) = obj.get(field) {
            check(v, Bool, &mut at(loc, field), errors);
        }
    }
    if let Some(v) = obj.get("execution_mode") {
        check(
            v,
            Enum(&["immediate", "post_tool_speech", "async"]),
            &mut at(loc, "execution_mode"),
            errors,
        );
    }
    // "Must be between 1 and 120 seconds (inclusive), or -1 to wait for the client's response
    // indefinitely (requires expects_response)" (SDK `ClientToolConfigInput`).
    if let Some(v) = obj.get("response_timeout_secs").filter(|v| !v.is_null()) {
        let l = at(loc, "response_timeout_secs");
        let before = errors.len();
        check_int(v, &l, errors);
        if errors.len() == before {
            let n = int_of(v).unwrap_or(0);
            let expects = obj.get("expects_response") == Some(&Value::Bool(true));
            if !((1..=120).contains(&n) || (n == -1 && expects)) {
                errors.push(error(
                    l,
                    "value_error",
                    "Value error, response_timeout_secs must be between 1 and 120 (inclusive), or -1 with expects_response true",
                    v,
                ));
            }
        }
    }
    if let Some(p) = obj.get("parameters").filter(|p| !p.is_null()) {
        let mut l = at(loc, "parameters");
        check_object_schema(p, &mut l, errors, 0);
    }
}

fn valid_tool_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Nesting the schema checks follow (serde_json already bounds parsing depth at 128).
const MAX_SCHEMA_DEPTH: usize = 32;

/// `ObjectJsonSchemaPropertyInput`: `type` "object" if given, `properties` a map of
/// properties, `required` names among them.
fn check_object_schema(v: &Value, loc: &mut Vec<Value>, errors: &mut Vec<Value>, depth: usize) {
    let Some(obj) = v.as_object() else {
        errors.push(error(
            loc.clone(),
            "model_type",
            "Input should be a valid dictionary or instance of ObjectJsonSchemaPropertyInput",
            v,
        ));
        return;
    };
    if depth > MAX_SCHEMA_DEPTH {
        errors.push(error(
            loc.clone(),
            "value_error",
            &format!("Value error, schemas nest at most {MAX_SCHEMA_DEPTH} levels"),
            &Value::Null,
        ));
        return;
    }
    if let Some(t) = obj.get("type").filter(|t| !t.is_null()) {
        if t != "object" {
            loc.push(json!("type"));
            errors.push(json!({
                "loc": loc.clone(),
                "msg": "Input should be 'object'",
                "type": "literal_error",
                "input": t,
                "ctx": { "expected": "'object'" },
            }));
            loc.pop();
        }
    }
    for field in ["description", "dynamic_variable"] {
        if let Some(d) = obj.get(field) {
            loc.push(json!(field));
            check(d, Str, loc, errors);
            loc.pop();
        }
    }
    let mut names: Vec<&str> = Vec::new();
    if let Some(props) = obj.get("properties").filter(|p| !p.is_null()) {
        loc.push(json!("properties"));
        match props.as_object() {
            None => errors.push(type_error(loc, "object", props)),
            Some(map) => {
                for (name, prop) in map {
                    names.push(name);
                    loc.push(json!(name));
                    check_property(prop, loc, errors, depth + 1);
                    loc.pop();
                }
            }
        }
        loc.pop();
    }
    if let Some(req) = obj.get("required").filter(|r| !r.is_null()) {
        loc.push(json!("required"));
        match req.as_array() {
            None => errors.push(type_error(loc, "list", req)),
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    loc.push(json!(i));
                    match item.as_str() {
                        None => errors.push(type_error(loc, "string", item)),
                        // *Assumed* server check: a required name must be a property.
                        Some(s) if !names.contains(&s) => errors.push(error(
                            loc.clone(),
                            "value_error",
                            &format!("Value error, required property {s:?} is not in properties"),
                            item,
                        )),
                        Some(_) => {}
                    }
                    loc.pop();
                }
            }
        }
        loc.pop();
    }
}

/// `ObjectJsonSchemaPropertyInputPropertiesValue` = literal | object | array.
fn check_property(v: &Value, loc: &mut Vec<Value>, errors: &mut Vec<Value>, depth: usize) {
    const LITERAL_TYPES: &[&str] = &["boolean", "string", "integer", "number"];
    let Some(obj) = v.as_object() else {
        errors.push(error(
            loc.clone(),
            "model_type",
            "Input should be a valid dictionary or instance of LiteralJsonSchemaProperty, ObjectJsonSchemaPropertyInput or ArrayJsonSchemaPropertyInput",
            v,
        ));
        return;
    };
    match obj.get("type") {
        Some(Value::String(t)) if LITERAL_TYPES.contains(&t.as_str()) => {
            check_literal(obj, loc, errors)
        }
        // `LiteralJsonSchemaPropertyType` also admits a list of type names.
        Some(Value::Array(ts)) => {
            loc.push(json!("type"));
            for (i, t) in ts.iter().enumerate() {
                if !t.is_string() {
                    loc.push(json!(i));
                    errors.push(type_error(loc, "string", t));
                    loc.pop();
                }
            }
            loc.pop();
            check_literal(obj, loc, errors);
        }
        Some(Value::String(t)) if t == "array" => check_array(obj, loc, errors, depth),
        Some(Value::String(t)) if t == "object" => check_object_schema(v, loc, errors, depth),
        // Without `type` only the object and array models (all fields optional) can match.
        None | Some(Value::Null) if obj.contains_key("items") => {
            check_array(obj, loc, errors, depth)
        }
        None | Some(Value::Null) => check_object_schema(v, loc, errors, depth),
        Some(t) => {
            loc.push(json!("type"));
            errors.push(enum_error(
                loc,
                &["boolean", "string", "integer", "number", "object", "array"],
                t,
            ));
            loc.pop();
        }
    }
}

/// `LiteralJsonSchemaProperty`: exactly one value source ("Only ONE of the following fields
/// can be set: description, dynamic_variable, is_system_provided, constant_value, or
/// is_omitted"); that one must be set at all is *assumed* (a literal the LLM has no
/// description for cannot be filled).
fn check_literal(obj: &Map<String, Value>, loc: &mut Vec<Value>, errors: &mut Vec<Value>) {
    for field in ["description", "dynamic_variable"] {
        if let Some(d) = obj.get(field) {
            loc.push(json!(field));
            check(d, Str, loc, errors);
            loc.pop();
        }
    }
    for field in ["is_system_provided", "is_omitted"] {
        if let Some(d) = obj.get(field) {
            loc.push(json!(field));
            check(d, Bool, loc, errors);
            loc.pop();
        }
    }
    if let Some(e) = obj.get("enum") {
        loc.push(json!("enum"));
        check(e, StrList, loc, errors);
        loc.pop();
    }
    let sources = ["description", "dynamic_variable", "constant_value"]
        .iter()
        .filter(|f| obj.get(**f).is_some_and(|v| !v.is_null()))
        .count()
        + ["is_system_provided", "is_omitted"]
            .iter()
            .filter(|f| obj.get(**f) == Some(&Value::Bool(true)))
            .count();
    if sources != 1 {
        errors.push(error(
            loc.clone(),
            "value_error",
            "Value error, a literal property needs exactly one of description, dynamic_variable, is_system_provided, constant_value, is_omitted",
            &Value::Object(obj.clone()),
        ));
    }
}

/// `ArrayJsonSchemaPropertyInput`: `items` is one property (optional in the SDK).
fn check_array(
    obj: &Map<String, Value>,
    loc: &mut Vec<Value>,
    errors: &mut Vec<Value>,
    depth: usize,
) {
    if let Some(d) = obj.get("description") {
        loc.push(json!("description"));
        check(d, Str, loc, errors);
        loc.pop();
    }
    if depth > MAX_SCHEMA_DEPTH {
        errors.push(error(
            loc.clone(),
            "value_error",
            &format!("Value error, schemas nest at most {MAX_SCHEMA_DEPTH} levels"),
            &Value::Null,
        ));
        return;
    }
    if let Some(items) = obj.get("items").filter(|i| !i.is_null()) {
        loc.push(json!("items"));
        check_property(items, loc, errors, depth + 1);
        loc.pop();
    }
}

/// PATCH semantics: objects merge key by key, `null` removes (the default comes back), arrays
/// and scalars replace.
fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else if let Some(slot) = t.get_mut(k) {
                    merge(slot, v);
                } else {
                    let mut v = v.clone();
                    strip_nulls(&mut v);
                    t.insert(k.clone(), v);
                }
            }
        }
        _ => {
            let mut v = patch.clone();
            strip_nulls(&mut v);
            *target = v;
        }
    }
}

/// Drop `null` members of objects (an unset optional field), recursively.
fn strip_nulls(v: &mut Value) {
    if let Some(obj) = v.as_object_mut() {
        obj.retain(|_, v| !v.is_null());
        for v in obj.values_mut() {
            strip_nulls(v);
        }
    }
}

/// Insert every field of `defaults` that `target` lacks, recursively into objects.
fn fill_defaults(target: &mut Value, defaults: &Value) {
    let (Some(t), Some(d)) = (target.as_object_mut(), defaults.as_object()) else {
        return;
    };
    for (k, dv) in d {
        match t.get_mut(k) {
            None => {
                t.insert(k.clone(), dv.clone());
            }
            Some(tv) => fill_defaults(tv, dv),
        }
    }
}

struct Api {
    api_key: String,
    workspace: Arc<Workspace>,
}

/// The axum routes of the agents and tools API over `workspace`, checking `api_key`.
pub fn router(workspace: Arc<Workspace>, api_key: String) -> Router {
    let state = Arc::new(Api { api_key, workspace });
    Router::new()
        .route("/v1/convai/agents", any(serve))
        .route("/v1/convai/agents/{id}", any(serve))
        .route("/v1/convai/tools", any(serve))
        .route("/v1/convai/tools/{id}", any(serve))
        .with_state(state)
}

async fn serve(
    State(api): State<Arc<Api>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    body: Body,
) -> Response {
    let key_ok = headers
        .get("xi-api-key")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|k| {
            bool::from(subtle::ConstantTimeEq::ct_eq(
                k.as_bytes(),
                api.api_key.as_bytes(),
            ))
        });
    let bytes = read_limited(body).await;
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let now_unix_secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let resp = api.workspace.handle(&ApiRequest {
        method: method.as_str(),
        path: uri.path(),
        query: &query,
        key_ok,
        body: bytes.as_deref(),
        now_unix_secs,
    });
    let status = StatusCode::from_u16(resp.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut out = (status, Json(resp.body)).into_response();
    if let Some(secs) = resp.retry_after_secs {
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            out.headers_mut().insert("retry-after", v);
        }
    }
    out
}

/// The body, or `None` when it is larger than [`MAX_BODY_BYTES`]; the excess is read and
/// dropped (up to a bound) so the client receives the 413 instead of a reset connection.
async fn read_limited(body: Body) -> Option<Vec<u8>> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else { return None };
        seen = seen.saturating_add(chunk.len());
        if seen <= MAX_BODY_BYTES {
            buf.extend_from_slice(&chunk);
        } else if seen > MAX_DRAINED_BYTES {
            return None;
        }
    }
    (seen <= MAX_BODY_BYTES).then_some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(ws: &Workspace, method: &str, path: &str, body: &str) -> ApiResponse {
        ws.handle(&ApiRequest {
            method,
            path,
            query: &[],
            key_ok: true,
            body: Some(body.as_bytes()),
            now_unix_secs: 1_700_000_000,
        })
    }

    #[test]
    fn merge_replaces_arrays_and_removes_nulls() {
        let mut t = json!({"a": {"b": 1, "c": [1, 2]}, "d": 1});
        merge(
            &mut t,
            &json!({"a": {"c": [3], "e": {"f": null, "g": 2}}, "d": null}),
        );
        assert_eq!(t, json!({"a": {"b": 1, "c": [3], "e": {"g": 2}}}));
    }

    #[test]
    fn enum_message_is_pydantics() {
        let e = enum_error(&[json!("x")], &["a", "b", "c"], &json!("z"));
        assert_eq!(e["msg"], "Input should be 'a', 'b' or 'c'");
        assert_eq!(e["type"], "enum");
    }

    #[test]
    fn json_error_carries_the_byte_offset() {
        let ws = Workspace::default();
        let r = call(&ws, "POST", "/v1/convai/agents/create", "{\n  \"a\": x}");
        assert_eq!(r.status, 422);
        assert_eq!(r.body["detail"][0]["type"], "json_invalid");
        assert_eq!(r.body["detail"][0]["loc"], json!(["body", 9]));
    }

    #[test]
    fn tool_ids_must_name_workspace_tools() {
        let ws = Workspace::default();
        let r = call(
            &ws,
            "POST",
            "/v1/convai/agents/create",
            r#"{"conversation_config":{"agent":{"prompt":{"tool_ids":["tool_x"]}}}}"#,
        );
        assert_eq!(r.status, 422);
        assert_eq!(
            r.body["detail"][0]["loc"],
            json!([
                "body",
                "conversation_config",
                "agent",
                "prompt",
                "tool_ids",
                0
            ])
        );
        assert!(ws.agents().is_empty());
    }

    #[test]
    fn fault_is_consumed_then_served() {
        let ws = Workspace::default();
        ws.fail_next(503, 1, None);
        assert_eq!(call(&ws, "GET", "/v1/convai/tools", "").status, 503);
        assert_eq!(call(&ws, "GET", "/v1/convai/tools", "").status, 200);
        assert_eq!(ws.requests().len(), 2);
    }

    #[test]
    fn paging_walks_every_item_once() {
        let ws = Workspace::default();
        for i in 0..5 {
            let body =
                format!(r#"{{"tool_config":{{"type":"client","name":"t{i}","description":"d"}}}}"#);
            assert_eq!(call(&ws, "POST", "/v1/convai/tools", &body).status, 200);
        }
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut q = vec![("page_size".to_owned(), "2".to_owned())];
            if let Some(c) = &cursor {
                q.push(("cursor".to_owned(), c.clone()));
            }
            let r = ws.handle(&ApiRequest {
                method: "GET",
                path: "/v1/convai/tools",
                query: &q,
                key_ok: true,
                body: Some(b""),
                now_unix_secs: 0,
            });
            for t in r.body["tools"].as_array().unwrap() {
                seen.push(t["tool_config"]["name"].as_str().unwrap().to_owned());
            }
            match r.body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        assert_eq!(seen, ["t4", "t3", "t2", "t1", "t0"]);
    }
}
