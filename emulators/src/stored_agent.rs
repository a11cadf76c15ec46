//! What a conversation takes from the agent stored in the workspace, as the real server applies
//! it: the audio formats, the first message, the `client_events` it sends, the override
//! permissions it enforces at initiation, and the client tools the LLM may call with their
//! parameter schemas.
//!
//! Sources: the AsyncAPI contract and SDK 2.78 as summarised in PROTOCOLS.md (an override the
//! agent does not allow → `error` event `override_error` and close 1008; only enabled
//! `client_events` are sent; only declared client tools are called). The LLM fills a tool's
//! arguments from its schema; arguments that break it are never sent (the server validates
//! them before the call reaches the client).
use std::collections::{BTreeMap, BTreeSet};

use pulsara_media::audio::Format;
use serde_json::Value;

/// A client tool the agent declares.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredTool {
    /// The `parameters` object schema.
    pub parameters: Value,
    /// How long the server waits for `client_tool_result`.
    pub response_timeout_secs: u64,
}

/// The stored agent, as one conversation uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationAgent {
    pub agent_id: String,
    /// From the `restaurant:<id>` tag, when the agent has one.
    pub restaurant: Option<String>,
    pub input_format: Format,
    pub output_format: Format,
    /// Empty: the agent waits for the caller to speak first.
    pub first_message: String,
    pub client_events: BTreeSet<String>,
    /// `platform_settings.overrides.conversation_config_override`.
    override_flags: Value,
    /// By tool name.
    pub tools: BTreeMap<String, DeclaredTool>,
}

/// Server defaults when a stored tool omits its timeout (tools API reference: 20 s).
const DEFAULT_TOOL_TIMEOUT_SECS: u64 = 20;

impl ConversationAgent {
    /// From the stored agent (as `GET /v1/convai/agents/{id}` returns it) and the workspace's
    /// tools (as `GET /v1/convai/tools/{id}` returns them).
    ///
    /// # Errors
    /// A stored audio format the conversation cannot speak (the API refuses those on write, so
    /// this means a corrupt store).
    pub fn from_stored(agent: &Value, workspace_tools: &[Value]) -> Result<Self, String> {
        let cc = &agent["conversation_config"];
        let format = |v: &Value, field: &str| -> Result<Format, String> {
            let name = v.as_str().unwrap_or("pcm_16000");
            name.parse::<Format>()
                .map_err(|_| format!("agent {field} {name:?} is not an audio format"))
        };
        let input_format = format(
            &cc["asr"]["user_input_audio_format"],
            "asr.user_input_audio_format",
        )?;
        let output_format = format(
            &cc["tts"]["agent_output_audio_format"],
            "tts.agent_output_audio_format",
        )?;
        let client_events = cc["conversation"]["client_events"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let restaurant = agent["tags"].as_array().and_then(|tags| {
            tags.iter()
                .filter_map(Value::as_str)
                .find_map(|t| t.strip_prefix("restaurant:"))
                .map(str::to_owned)
        });
        let prompt = &cc["agent"]["prompt"];
        let mut tools = BTreeMap::new();
        let mut add = |config: &Value| {
            if config["type"] != "client" {
                return;
            }
            if let Some(name) = config["name"].as_str() {
                tools.insert(
                    name.to_owned(),
                    DeclaredTool {
                        parameters: config["parameters"].clone(),
                        response_timeout_secs: config["response_timeout_secs"]
                            .as_u64()
                            .unwrap_or(DEFAULT_TOOL_TIMEOUT_SECS),
                    },
                );
            }
        };
        for id in prompt["tool_ids"].as_array().into_iter().flatten() {
            if let Some(t) = workspace_tools.iter().find(|t| t["id"] == *id) {
                add(&t["tool_config"]);
            }
        }
        for inline in prompt["tools"].as_array().into_iter().flatten() {
            add(inline);
        }
        Ok(ConversationAgent {
            agent_id: agent["agent_id"].as_str().unwrap_or_default().to_owned(),
            restaurant,
            input_format,
            output_format,
            first_message: cc["agent"]["first_message"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            client_events,
            override_flags: agent["platform_settings"]["overrides"]["conversation_config_override"]
                .clone(),
            tools,
        })
    }

    /// Whether the server sends events of this `type` to the client.
    pub fn sends(&self, event: &str) -> bool {
        self.client_events.contains(event)
    }

    /// The first field of `conversation_config_override` the agent does not allow, as the
    /// name the server's message uses (the last path segment) and its dotted path.
    pub fn refused_override(&self, config_override: &Value) -> Option<(String, String)> {
        refused_override(&self.override_flags, config_override)
    }
}

/// The first field of `config_override` that `flags` (an agent's
/// `platform_settings.overrides.conversation_config_override`) does not allow: the name the
/// server's message uses (the last path segment) and its dotted path.
pub fn refused_override(flags: &Value, config_override: &Value) -> Option<(String, String)> {
    fn walk(value: &Value, flags: &Value, path: &mut Vec<String>) -> Option<(String, String)> {
        match value {
            Value::Null => None,
            Value::Object(map) if !flags.is_boolean() => {
                for (k, v) in map {
                    path.push(k.clone());
                    let found = walk(v, &flags[k.as_str()], path);
                    path.pop();
                    if found.is_some() {
                        return found;
                    }
                }
                None
            }
            _ if flags.as_bool() == Some(true) => None,
            _ => Some((path.last().cloned().unwrap_or_default(), path.join("."))),
        }
    }
    walk(config_override, flags, &mut Vec::new())
}

/// Where `args` break the `schema` (the object-schema subset the tools API accepts: `type`,
/// `properties`, `required`, `items`, `enum`), one message per violation, each naming the
/// JSON pointer; empty when they conform. Properties not in the schema are violations: the
/// model is constrained to the declared ones.
pub fn check_arguments(schema: &Value, args: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check_value(schema, args, &mut String::new(), &mut errors, 0);
    errors
}

const MAX_DEPTH: usize = 32;
const MAX_ERRORS: usize = 20;

fn check_value(schema: &Value, v: &Value, at: &mut String, errors: &mut Vec<String>, depth: usize) {
    if errors.len() >= MAX_ERRORS || depth > MAX_DEPTH {
        return;
    }
    let here = |at: &str| {
        if at.is_empty() {
            "/".to_owned()
        } else {
            at.to_owned()
        }
    };
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ if schema.get("items").is_some() => vec!["array"],
        _ if schema.get("properties").is_some() => vec!["object"],
        _ => vec![],
    };
    let is = |t: &str| match t {
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "null" => v.is_null(),
        _ => false,
    };
    if !types.is_empty() && !types.iter().any(|t| is(t)) {
        errors.push(format!(
            "{}: expected {}, got {v}",
            here(at),
            types.join(" or ")
        ));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(v) {
            errors.push(format!(
                "{}: {v} is not one of {}",
                here(at),
                Value::Array(allowed.clone())
            ));
        }
    }
    if let (Some(obj), Some(props)) = (v.as_object(), schema["properties"].as_object()) {
        for name in schema["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !obj.contains_key(name) {
                errors.push(format!("{}: missing required property {name:?}", here(at)));
            }
        }
        for (k, val) in obj {
            let len = at.len();
            at.push('/');
            at.push_str(&k.replace('~', "~0").replace('/', "~1"));
            match props.get(k) {
                Some(p) => check_value(p, val, at, errors, depth + 1),
                None => errors.push(format!("{at}: property not in the tool's schema")),
            }
            at.truncate(len);
        }
    }
    if let (Some(items), Some(item_schema)) = (v.as_array(), schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            let len = at.len();
            at.push_str(&format!("/{i}"));
            check_value(item_schema, item, at, errors, depth + 1);
            at.truncate(len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn agent() -> ConversationAgent {
        let stored = json!({
            "agent_id": "agent_1",
            "tags": ["pulsara", "restaurant:trattoria-roma"],
            "conversation_config": {
                "asr": {"user_input_audio_format": "ulaw_8000"},
                "tts": {"agent_output_audio_format": "pcm_24000"},
                "conversation": {"client_events": ["audio", "ping"]},
                "agent": {"first_message": "Ciao", "prompt": {"tool_ids": ["tool_1", "tool_gone"],
                    "tools": [{"type": "webhook", "name": "server_side"}]}},
            },
            "platform_settings": {"overrides": {"conversation_config_override": {
                "agent": {"first_message": true, "language": false, "prompt": {"prompt": true}},
                "tts": {"voice_id": false},
            }}},
        });
        let tools = [
            json!({"id": "tool_1", "tool_config": {"type": "client", "name": "book_table",
            "parameters": {"type": "object"}, "response_timeout_secs": 10}}),
        ];
        ConversationAgent::from_stored(&stored, &tools).unwrap()
    }

    #[test]
    fn reads_what_the_conversation_needs() {
        let a = agent();
        assert_eq!(a.restaurant.as_deref(), Some("trattoria-roma"));
        assert_eq!(
            (a.input_format, a.output_format),
            (Format::Ulaw8000, Format::Pcm(24000))
        );
        assert_eq!(a.first_message, "Ciao");
        assert!(a.sends("ping") && !a.sends("client_tool_call"));
        // Only client tools that exist are callable.
        assert_eq!(a.tools.keys().collect::<Vec<_>>(), ["book_table"]);
        assert_eq!(a.tools["book_table"].response_timeout_secs, 10);
    }

    #[test]
    fn overrides_are_checked_field_by_field() {
        let a = agent();
        let allowed = json!({"agent": {"first_message": "Hi", "prompt": {"prompt": "p"}}});
        assert_eq!(a.refused_override(&allowed), None);
        let lang = json!({"agent": {"first_message": "Hi", "language": "it"}});
        assert_eq!(
            a.refused_override(&lang),
            Some(("language".into(), "agent.language".into()))
        );
        let voice = json!({"tts": {"voice_id": "v"}});
        assert_eq!(a.refused_override(&voice).unwrap().1, "tts.voice_id");
        // A field with no permission at all is refused; nulls are not overrides.
        assert_eq!(
            a.refused_override(&json!({"conversation": {"text_only": true}}))
                .unwrap()
                .1,
            "conversation.text_only"
        );
        assert_eq!(
            a.refused_override(&json!({"agent": {"language": null}})),
            None
        );
    }

    #[test]
    fn arguments_are_checked_against_the_schema() {
        let schema = json!({"type": "object", "required": ["date", "party_size"], "properties": {
            "date": {"type": "string"},
            "party_size": {"type": "integer"},
            "channel": {"type": "string", "enum": ["sms", "email"]},
            "items": {"type": "array", "items": {"type": "object", "required": ["name"],
                "properties": {"name": {"type": "string"}, "quantity": {"type": "integer"}}}},
        }});
        let ok = json!({"date": "2026-12-05", "party_size": 4, "channel": "sms",
            "items": [{"name": "Margherita", "quantity": 1}]});
        assert!(check_arguments(&schema, &ok).is_empty());
        let bad = json!({"party_size": "four", "channel": "fax", "colour": "red",
            "items": [{"quantity": 1.5}]});
        let errs = check_arguments(&schema, &bad);
        for want in [
            "/: missing required property \"date\"",
            "/party_size: expected integer",
            "/channel: \"fax\" is not one of",
            "/colour: property not in the tool's schema",
            "/items/0: missing required property \"name\"",
            "/items/0/quantity: expected integer",
        ] {
            assert!(
                errs.iter().any(|e| e.starts_with(want)),
                "{want} in {errs:?}"
            );
        }
        assert_eq!(
            check_arguments(&schema, &json!([])),
            ["/: expected object, got []"]
        );
    }
}
