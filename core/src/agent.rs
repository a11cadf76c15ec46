//! The ElevenLabs agent a restaurant needs, derived from its configuration and its tools: what
//! `pulsara agents sync` and the dashboard's sync job create and keep in place, and what the
//! bridge relies on during a call.
//!
//! Field names are the agents and tools API's (`POST /v1/convai/agents/create`, `PATCH
//! /v1/convai/agents/{id}`, `POST /v1/convai/tools`; ElevenLabs SDK 2.78):
//! - every tool is a workspace **client tool** (`tool_config.type = "client"`) with the policy's
//!   description and parameter schema ([`ToolSpec`]); the agent lists them in
//!   `conversation_config.agent.prompt.tool_ids` (the inline `prompt.tools` list is deprecated);
//! - `conversation_config.conversation.client_events` holds every event the bridge consumes
//!   ([`CLIENT_EVENTS`]): `client_tool_call` and `agent_response_correction` are not in the
//!   server's default list, and without them tools never run and barge-in is not corrected;
//! - `platform_settings.overrides.conversation_config_override` allows exactly the fields the
//!   bridge overrides per call ([`Override`]): the server refuses a conversation that overrides a
//!   field its agent does not allow (`override_error`, close 1008);
//! - input and output audio formats are `ulaw_8000` unless the restaurant asks otherwise, so
//!   Twilio's audio passes through untouched.
//!
//! [`drift`] compares the specification with what the API returns (which holds many more
//! fields, with the server's defaults): only the fields the specification sets count.
//!
//! Pure: no I/O, no clock.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::config::RestaurantConfig;

/// The ElevenLabs audio formats (asr input and tts output).
pub const AUDIO_FORMATS: &[&str] = &[
    "pcm_8000",
    "pcm_16000",
    "pcm_22050",
    "pcm_24000",
    "pcm_44100",
    "pcm_48000",
    "ulaw_8000",
];

/// Twilio Media Streams' own format: the default both ways.
pub const DEFAULT_AUDIO_FORMAT: &str = "ulaw_8000";

/// The server events the bridge consumes, as `client_events` names.
pub const CLIENT_EVENTS: &[&str] = &[
    "conversation_initiation_metadata",
    "ping",
    "audio",
    "interruption",
    "user_transcript",
    "agent_response",
    "agent_response_correction",
    "client_tool_call",
    "client_error",
];

/// The tag every agent Pulsara provisions carries.
pub const TAG: &str = "pulsara";

/// The tag naming the restaurant an agent answers for: `restaurant:<id>`.
pub fn restaurant_tag(restaurant_id: &str) -> String {
    format!("restaurant:{restaurant_id}")
}

/// A field of `conversation_config_override` the bridge sets per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Override {
    /// `agent.prompt.prompt`: the filled prompt template.
    Prompt,
    /// `agent.first_message`: the filled first message (or a resumed call's).
    FirstMessage,
    /// `agent.language`.
    Language,
    /// `tts.voice_id`, when the restaurant names a voice.
    VoiceId,
}

impl Override {
    pub const ALL: [Override; 4] = [
        Override::Prompt,
        Override::FirstMessage,
        Override::Language,
        Override::VoiceId,
    ];

    /// The field's path inside `conversation_config_override` (and inside the permission flags).
    pub fn path(self) -> &'static str {
        match self {
            Override::Prompt => "agent.prompt.prompt",
            Override::FirstMessage => "agent.first_message",
            Override::Language => "agent.language",
            Override::VoiceId => "tts.voice_id",
        }
    }

    /// The override whose path is `path`.
    pub fn from_path(path: &str) -> Option<Override> {
        Override::ALL.into_iter().find(|o| o.path() == path)
    }
}

/// The overrides the bridge sends for this restaurant: the prompt, first message and language
/// always, the voice when one is set.
pub fn overrides_needed(cfg: &RestaurantConfig) -> Vec<Override> {
    Override::ALL
        .into_iter()
        .filter(|o| *o != Override::VoiceId || cfg.agent.voice_id.is_some())
        .collect()
}

/// The overrides an agent (as `GET /v1/convai/agents/{id}` returns it) allows, by path.
pub fn overrides_allowed(agent: &Value) -> Vec<String> {
    let flags = &agent["platform_settings"]["overrides"]["conversation_config_override"];
    Override::ALL
        .into_iter()
        .filter(|o| at(flags, o.path()).and_then(Value::as_bool) == Some(true))
        .map(|o| o.path().to_owned())
        .collect()
}

/// What the agent needs to know about a tool: written next to the policy (`tool.json` in its
/// crate, carried by the policy manifest and stored with the module), once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolSpec {
    /// When the LLM should call the tool and what it does.
    pub description: String,
    /// The parameters: an object schema in the subset ElevenLabs accepts (see
    /// [`ToolSpec::validate`]), which is also valid JSON Schema.
    pub parameters: Value,
    /// Whether the agent waits for the result before it goes on (default: it does).
    #[serde(default = "yes")]
    pub expects_response: bool,
    /// How long the agent waits, 1–120 s (unset: ElevenLabs' default).
    #[serde(default)]
    pub response_timeout_secs: Option<i64>,
}

fn yes() -> bool {
    true
}

/// A tool specification that ElevenLabs would refuse, naming where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct SpecError {
    pub path: String,
    pub reason: String,
}

fn spec_err(path: &str, reason: impl Into<String>) -> SpecError {
    SpecError {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

impl ToolSpec {
    /// Reads a `tool.json`.
    ///
    /// # Errors
    /// Invalid JSON, unknown fields, or a specification [`ToolSpec::validate`] refuses.
    pub fn from_json(text: &str) -> Result<ToolSpec, SpecError> {
        let spec: ToolSpec =
            serde_json::from_str(text).map_err(|e| spec_err("tool.json", e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Checks what the tools API checks: a description, a timeout of 1–120 s, and parameters in
    /// ElevenLabs' schema subset: an object with `properties`, each property a literal
    /// (`string`, `integer`, `number`, `boolean`, with a `description` and optionally an `enum`
    /// of strings), an `array` with `items`, or a nested `object`; `required` names properties.
    ///
    /// # Errors
    /// The first offending field, by path.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.description.trim().is_empty() {
            return Err(spec_err("description", "must not be empty"));
        }
        if let Some(t) = self.response_timeout_secs {
            if !(1..=120).contains(&t) {
                return Err(spec_err(
                    "response_timeout_secs",
                    "must be 1 to 120 seconds",
                ));
            }
        }
        check_object(&self.parameters, "parameters")
    }
}

fn check_object(v: &Value, path: &str) -> Result<(), SpecError> {
    let Some(o) = v.as_object() else {
        return Err(spec_err(path, "must be a JSON object (a schema)"));
    };
    if o.get("type").and_then(Value::as_str) != Some("object") {
        return Err(spec_err(&format!("{path}.type"), "must be \"object\""));
    }
    let empty = Map::new();
    let props = match o.get("properties") {
        None => &empty,
        Some(Value::Object(p)) => p,
        Some(_) => return Err(spec_err(&format!("{path}.properties"), "must be an object")),
    };
    for (name, prop) in props {
        check_property(prop, &format!("{path}.properties.{name}"))?;
    }
    match o.get("required") {
        None => {}
        Some(Value::Array(req)) => {
            for r in req {
                let Some(name) = r.as_str() else {
                    return Err(spec_err(&format!("{path}.required"), "must list names"));
                };
                if !props.contains_key(name) {
                    return Err(spec_err(
                        &format!("{path}.required"),
                        format!("names {name:?}, which is not a property"),
                    ));
                }
            }
        }
        Some(_) => return Err(spec_err(&format!("{path}.required"), "must be a list")),
    }
    Ok(())
}

fn check_property(v: &Value, path: &str) -> Result<(), SpecError> {
    let Some(o) = v.as_object() else {
        return Err(spec_err(path, "must be a JSON object (a schema)"));
    };
    match o.get("type").and_then(Value::as_str) {
        Some("object") => check_object(v, path),
        Some("array") => match o.get("items") {
            Some(items) => check_property(items, &format!("{path}.items")),
            None => Err(spec_err(&format!("{path}.items"), "an array needs items")),
        },
        Some("string" | "integer" | "number" | "boolean") => {
            let described = o
                .get("description")
                .and_then(Value::as_str)
                .is_some_and(|d| !d.trim().is_empty());
            if !described
                && !o.contains_key("dynamic_variable")
                && !o.contains_key("constant_value")
            {
                return Err(spec_err(
                    &format!("{path}.description"),
                    "a value the LLM fills needs a description",
                ));
            }
            match o.get("enum") {
                None => Ok(()),
                Some(Value::Array(e)) if e.iter().all(Value::is_string) && !e.is_empty() => Ok(()),
                Some(_) => Err(spec_err(
                    &format!("{path}.enum"),
                    "must be a list of strings",
                )),
            }
        }
        Some(other) => Err(spec_err(
            &format!("{path}.type"),
            format!("{other:?} is not a schema type ElevenLabs accepts"),
        )),
        None => Err(spec_err(&format!("{path}.type"), "is missing")),
    }
}

/// The client tool `tool_config` for the tools API.
pub fn tool_config(name: &str, spec: &ToolSpec) -> Value {
    let mut v = json!({
        "type": "client",
        "name": name,
        "description": spec.description,
        "parameters": spec.parameters,
        "expects_response": spec.expects_response,
    });
    if let Some(t) = spec.response_timeout_secs {
        v["response_timeout_secs"] = json!(t);
    }
    v
}

/// The agent's `name`, `tags`, `conversation_config` and `platform_settings` for this restaurant,
/// with its client tools' ids (`tool_ids`, in the order of the restaurant's tools).
pub fn agent_document(cfg: &RestaurantConfig, tool_ids: &[String]) -> Value {
    let a = &cfg.agent;
    let format = a.audio_format.as_deref().unwrap_or(DEFAULT_AUDIO_FORMAT);
    let mut prompt = json!({ "prompt": a.prompt_template, "tool_ids": tool_ids });
    if let Some(llm) = &a.llm {
        if let Some(m) = &llm.model {
            prompt["llm"] = json!(m);
        }
        if let Some(t) = llm.temperature {
            prompt["temperature"] = json!(t);
        }
        if let Some(t) = llm.max_tokens {
            prompt["max_tokens"] = json!(t);
        }
    }
    let mut tts = json!({ "agent_output_audio_format": format });
    if let Some(v) = &a.voice_id {
        tts["voice_id"] = json!(v);
    }
    let mut conversation_config = json!({
        "asr": { "user_input_audio_format": format },
        "tts": tts,
        "conversation": { "client_events": CLIENT_EVENTS },
        "agent": {
            "first_message": a.first_message,
            "language": a.language,
            "prompt": prompt,
        },
    });
    if let Some(turn) = &a.turn {
        let mut t = Map::new();
        if let Some(s) = turn.turn_timeout_secs {
            t.insert("turn_timeout".into(), json!(s));
        }
        if let Some(s) = turn.silence_end_call_timeout_secs {
            t.insert("silence_end_call_timeout".into(), json!(s));
        }
        if !t.is_empty() {
            conversation_config["turn"] = Value::Object(t);
        }
    }
    let mut flags = json!({});
    for o in overrides_needed(cfg) {
        set(&mut flags, o.path(), json!(true));
    }
    json!({
        "name": cfg.name,
        "tags": [TAG, restaurant_tag(&cfg.id)],
        "conversation_config": conversation_config,
        "platform_settings": { "overrides": { "conversation_config_override": flags } },
    })
}

/// sha256 of the specification (agent document without tool ids, and every tool config), so a
/// restaurant's synced state says which specification its agent was brought to.
pub fn spec_sha256(cfg: &RestaurantConfig, tools: &[(String, ToolSpec)]) -> String {
    let configs: Vec<Value> = tools.iter().map(|(n, s)| tool_config(n, s)).collect();
    let doc = json!({ "agent": agent_document(cfg, &[]), "tools": configs });
    crate::crypto::sha256_hex(doc.to_string().as_bytes())
}

/// One field where what an agent (or tool) has differs from what it needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Drift {
    /// Dotted path, e.g. `conversation_config.conversation.client_events`.
    pub path: String,
    /// What it has; `None` when the field is absent.
    pub have: Option<Value>,
    pub want: Value,
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let have = self
            .have
            .as_ref()
            .map_or_else(|| "(absent)".to_owned(), Value::to_string);
        write!(
            f,
            "{}\n  - {}\n  + {}",
            self.path,
            clip(&have),
            clip(&self.want.to_string())
        )
    }
}

fn clip(s: &str) -> String {
    const MAX: usize = 160;
    if s.chars().count() <= MAX {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(MAX).collect();
    out.push('…');
    out
}

/// The fields of `want` that `have` lacks or holds differently. Objects are compared field by
/// field (fields only `have` holds, the server's defaults, do not count); `client_events`,
/// `tool_ids` and `tags` are compared as sets, other lists and scalars as values (numbers by
/// value, so `7` equals `7.0`).
pub fn drift(want: &Value, have: &Value) -> Vec<Drift> {
    let mut out = Vec::new();
    walk(want, Some(have), "", &mut out);
    out
}

const SET_FIELDS: [&str; 3] = ["client_events", "tool_ids", "tags"];

fn walk(want: &Value, have: Option<&Value>, path: &str, out: &mut Vec<Drift>) {
    let key = path.rsplit('.').next().unwrap_or(path);
    match want {
        Value::Object(w) => {
            let h = have.and_then(Value::as_object);
            for (k, wv) in w {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk(wv, h.and_then(|h| h.get(k)), &p, out);
            }
        }
        Value::Array(w) if SET_FIELDS.contains(&key) => {
            let as_set = |v: &[Value]| v.iter().map(Value::to_string).collect::<BTreeSet<_>>();
            let same = have
                .and_then(Value::as_array)
                .is_some_and(|h| as_set(h) == as_set(w));
            if !same {
                out.push(Drift {
                    path: path.to_owned(),
                    have: have.cloned(),
                    want: want.clone(),
                });
            }
        }
        _ => {
            if !have.is_some_and(|h| same_value(h, want)) {
                out.push(Drift {
                    path: path.to_owned(),
                    have: have.cloned(),
                    want: want.clone(),
                });
            }
        }
    }
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_value(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_value(v, w)))
        }
        _ => a == b,
    }
}

/// The patch that repairs `drifts` (each drifted field at its path, nothing else).
pub fn patch_for(drifts: &[Drift]) -> Value {
    let mut patch = json!({});
    for d in drifts {
        set(&mut patch, &d.path, d.want.clone());
    }
    patch
}

/// The value at a dotted path.
pub fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

fn set(v: &mut Value, path: &str, value: Value) {
    let mut cur = v;
    let mut parts = path.split('.').peekable();
    while let Some(k) = parts.next() {
        if !cur.is_object() {
            *cur = json!({});
        }
        let Some(obj) = cur.as_object_mut() else {
            return;
        };
        if parts.peek().is_none() {
            obj.insert(k.to_owned(), value);
            return;
        }
        cur = obj.entry(k.to_owned()).or_insert_with(|| json!({}));
    }
}

/// Tool name → its drift, for a restaurant's tools against the tools the API returns.
pub type ToolDrift = BTreeMap<String, Vec<Drift>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn restaurant(extra_agent: &str) -> RestaurantConfig {
        serde_json::from_str(&format!(
            r#"{{"id": "r1", "version": 3, "name": "Chez R", "phone_numbers": ["+15550100"],
                "time_zone": "UTC", "hours": {{"weekly": []}},
                "after_hours": {{"mode": "message", "message": "closed"}},
                "agent": {{"prompt_template": "You are {{{{restaurant_name}}}}.", "first_message": "Hi!",
                           "language": "en" {extra_agent}}}}}"#
        ))
        .unwrap()
    }

    fn spec(params: Value) -> ToolSpec {
        ToolSpec {
            description: "d".into(),
            parameters: params,
            expects_response: true,
            response_timeout_secs: Some(10),
        }
    }

    #[test]
    fn the_document_holds_what_the_bridge_relies_on() {
        let cfg = restaurant("");
        let doc = agent_document(&cfg, &["tool_1".into()]);
        let cc = &doc["conversation_config"];
        assert_eq!(cc["asr"]["user_input_audio_format"], "ulaw_8000");
        assert_eq!(cc["tts"]["agent_output_audio_format"], "ulaw_8000");
        let events: Vec<&str> = cc["conversation"]["client_events"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for e in [
            "client_tool_call",
            "agent_response_correction",
            "audio",
            "interruption",
            "ping",
        ] {
            assert!(events.contains(&e), "{e} missing from {events:?}");
        }
        assert_eq!(cc["agent"]["prompt"]["tool_ids"], json!(["tool_1"]));
        assert_eq!(doc["tags"], json!(["pulsara", "restaurant:r1"]));
        // No voice set: the voice is neither overridden nor allowed to be.
        assert_eq!(
            overrides_allowed(&doc),
            vec![
                "agent.prompt.prompt",
                "agent.first_message",
                "agent.language"
            ]
        );
        assert!(cc["tts"].get("voice_id").is_none());
        let voiced = restaurant(
            r#", "voice_id": "v9", "audio_format": "pcm_16000", "llm": {"model": "gpt-4o-mini", "temperature": 0.3}, "turn": {"turn_timeout_secs": 7}"#,
        );
        let doc = agent_document(&voiced, &[]);
        assert_eq!(overrides_allowed(&doc).len(), 4);
        assert_eq!(doc["conversation_config"]["tts"]["voice_id"], "v9");
        assert_eq!(
            doc["conversation_config"]["asr"]["user_input_audio_format"],
            "pcm_16000"
        );
        assert_eq!(
            doc["conversation_config"]["agent"]["prompt"]["llm"],
            "gpt-4o-mini"
        );
        assert_eq!(doc["conversation_config"]["turn"]["turn_timeout"], 7.0);
    }

    #[test]
    fn drift_ignores_server_defaults_and_order_of_sets() {
        let cfg = restaurant("");
        let want = agent_document(&cfg, &["a".into(), "b".into()]);
        let mut have = want.clone();
        have["conversation_config"]["tts"]["model_id"] = json!("eleven_flash_v2");
        have["conversation_config"]["agent"]["prompt"]["tool_ids"] = json!(["b", "a"]);
        have["agent_id"] = json!("agent_x");
        assert_eq!(drift(&want, &have), vec![]);

        have["conversation_config"]["conversation"]["client_events"] = json!([
            "audio",
            "interruption",
            "agent_response",
            "user_transcript",
            "ping"
        ]);
        have["platform_settings"]["overrides"]["conversation_config_override"]["agent"]
            ["language"] = json!(false);
        let d = drift(&want, &have);
        let paths: Vec<&str> = d.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "conversation_config.conversation.client_events",
                "platform_settings.overrides.conversation_config_override.agent.language"
            ]
        );
        let patch = patch_for(&d);
        assert_eq!(
            patch["platform_settings"]["overrides"]["conversation_config_override"]["agent"]
                ["language"],
            true
        );
        assert!(patch.get("name").is_none(), "{patch}");
        let shown = d[0].to_string();
        assert!(
            shown.contains("client_events") && shown.contains("client_tool_call"),
            "{shown}"
        );
    }

    #[test]
    fn numbers_compare_by_value() {
        assert!(drift(&json!({"t": 7}), &json!({"t": 7.0})).is_empty());
        assert_eq!(drift(&json!({"t": 7}), &json!({"t": 8})).len(), 1);
        assert_eq!(drift(&json!({"t": {"u": 1}}), &json!({})).len(), 1);
    }

    #[test]
    fn the_spec_hash_follows_the_specification_only() {
        let a = restaurant("");
        let mut b = a.clone();
        b.version = 9;
        b.agent.elevenlabs_agent_id = "agent_z".into();
        let tools = vec![(
            "t".to_owned(),
            spec(json!({"type": "object", "properties": {}})),
        )];
        assert_eq!(spec_sha256(&a, &tools), spec_sha256(&b, &tools));
        b.agent.first_message = "Hello!".into();
        assert_ne!(spec_sha256(&a, &tools), spec_sha256(&b, &tools));
    }

    #[test]
    fn tool_specs_are_checked_as_elevenlabs_checks_them() {
        let ok = spec(json!({"type": "object", "required": ["q"], "properties": {
            "q": {"type": "string", "description": "the question"},
            "n": {"type": "array", "description": "x", "items": {"type": "object", "properties": {
                "k": {"type": "string", "enum": ["a", "b"], "description": "k"}}}}}}));
        ok.validate().unwrap();
        let bad = [
            (json!({"type": "string"}), "parameters.type"),
            (json!([1]), "parameters"),
            (
                json!({"type": "object", "properties": {"q": {"type": "string"}}}),
                "parameters.properties.q.description",
            ),
            (
                json!({"type": "object", "properties": {"q": {"type": "date", "description": "d"}}}),
                "parameters.properties.q.type",
            ),
            (
                json!({"type": "object", "properties": {"q": {"type": "array", "description": "d"}}}),
                "parameters.properties.q.items",
            ),
            (
                json!({"type": "object", "required": ["z"], "properties": {}}),
                "parameters.required",
            ),
            (
                json!({"type": "object", "properties": {"q": {"type": "string", "description": "d", "enum": [1]}}}),
                "parameters.properties.q.enum",
            ),
        ];
        for (params, path) in bad {
            let err = spec(params.clone()).validate().unwrap_err();
            assert_eq!(err.path, path, "{params}: {err}");
        }
        let mut t = ok.clone();
        t.response_timeout_secs = Some(0);
        assert_eq!(t.validate().unwrap_err().path, "response_timeout_secs");
        t.response_timeout_secs = None;
        t.description = " ".into();
        assert_eq!(t.validate().unwrap_err().path, "description");
        let err = ToolSpec::from_json(r#"{"description": "d", "parameters": {}, "colour": 1}"#)
            .unwrap_err();
        assert!(err.reason.contains("colour"), "{err}");
        assert!(ToolSpec::from_json("{").is_err());
    }

    #[test]
    fn tool_config_is_a_client_tool() {
        let c = tool_config(
            "take_order",
            &spec(json!({"type": "object", "properties": {}})),
        );
        assert_eq!(c["type"], "client");
        assert_eq!(c["name"], "take_order");
        assert_eq!(c["response_timeout_secs"], 10);
        assert_eq!(c["expects_response"], true);
    }
}
