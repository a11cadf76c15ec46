//! What the agent is told about the restaurant at the start of a call: dynamic variables
//! (restaurant name, address, today's hours, next opening, caller number, specials, a short FAQ
//! summary) and the filled prompt / first-message overrides. Pure; `now` is passed in.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use pulsara_core::config::{KnowledgeBase, RestaurantConfig};
use pulsara_core::hours;
use pulsara_media::convai::{
    AgentOverride, ConfigOverride, InitiationClientData, PromptOverride, TtsOverride,
};
use serde_json::Value;

/// Longest value of one dynamic variable (characters); keeps the initiation message small.
const MAX_VAR_CHARS: usize = 600;

/// The dynamic variables for one call.
pub fn dynamic_variables(
    cfg: &RestaurantConfig,
    kb: &KnowledgeBase,
    caller: &str,
    now: DateTime<Utc>,
) -> BTreeMap<String, Value> {
    let (today, next) = match hours::parse_tz(&cfg.time_zone) {
        Ok(tz) => (
            hours::describe_today(&cfg.hours, tz, now),
            hours::describe_next_open(&cfg.hours, tz, now),
        ),
        Err(_) => (String::new(), String::new()),
    };
    let specials = if kb.specials.is_empty() {
        "none today".to_owned()
    } else {
        kb.specials.join("; ")
    };
    let faq: Vec<&str> = kb.faq.iter().map(|d| d.title.as_str()).take(8).collect();
    let mut v = BTreeMap::new();
    let mut put = |k: &str, s: String| {
        v.insert(
            k.to_owned(),
            Value::String(s.chars().take(MAX_VAR_CHARS).collect()),
        );
    };
    put("restaurant_name", cfg.name.clone());
    put("restaurant_address", cfg.address.clone());
    put("hours_today", today);
    put("next_opening", next);
    put("caller_number", caller.to_owned());
    put("specials", specials);
    put("faq_topics", faq.join("; "));
    v
}

/// Replaces `{{name}}` placeholders with the variables' values; unknown names are left as they are.
pub fn fill(template: &str, vars: &BTreeMap<String, Value>) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                let name = after[..end].trim();
                match vars.get(name) {
                    Some(Value::String(s)) => out.push_str(s),
                    Some(other) => out.push_str(&other.to_string()),
                    None => out.push_str(&rest[start..start + 2 + end + 2]),
                }
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// The `conversation_initiation_client_data` for one call.
pub fn initiation(
    cfg: &RestaurantConfig,
    kb: &KnowledgeBase,
    caller: &str,
    now: DateTime<Utc>,
    first_message_override: Option<&str>,
) -> InitiationClientData {
    let vars = dynamic_variables(cfg, kb, caller, now);
    let prompt = fill(&cfg.agent.prompt_template, &vars);
    let first = first_message_override
        .map(str::to_owned)
        .unwrap_or_else(|| fill(&cfg.agent.first_message, &vars));
    InitiationClientData {
        conversation_config_override: Some(ConfigOverride {
            agent: Some(AgentOverride {
                prompt: Some(PromptOverride { prompt }),
                first_message: Some(first),
                language: Some(cfg.agent.language.clone()),
            }),
            tts: cfg
                .agent
                .voice_id
                .clone()
                .map(|v| TtsOverride { voice_id: Some(v) }),
        }),
        dynamic_variables: vars,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn fills_placeholders_and_keeps_unknown_ones() {
        let mut vars = BTreeMap::new();
        vars.insert("a".to_owned(), Value::String("X".into()));
        assert_eq!(
            fill("{{a}} and {{ a }} and {{b}} and {{", &vars),
            "X and X and {{b}} and {{"
        );
    }

    #[test]
    fn example_restaurant_variables() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../restaurants/trattoria-roma");
        let (cfg, kb) = crate::ports::load_one(&dir).unwrap();
        // Wednesday 2026-01-14 13:00 in Rome = 12:00 UTC: open for lunch.
        let now = Utc.with_ymd_and_hms(2026, 1, 14, 12, 0, 0).unwrap();
        let init = initiation(&cfg, &kb, "+391234", now, None);
        let vars = &init.dynamic_variables;
        assert_eq!(vars["restaurant_name"], "Trattoria Roma");
        assert_eq!(vars["caller_number"], "+391234");
        assert!(
            vars["hours_today"].as_str().unwrap().contains("12:00"),
            "{vars:?}"
        );
        let agent = init.conversation_config_override.unwrap().agent.unwrap();
        let prompt = agent.prompt.unwrap().prompt;
        assert!(
            prompt.contains("Trattoria Roma") && !prompt.contains("{{restaurant_name}}"),
            "{prompt}"
        );
        // ElevenLabs gets its own language code, never the Twilio locale (`it-IT`).
        assert_eq!(agent.language.as_deref(), Some("it"));
        assert_eq!(cfg.say_voice().language(), "it-IT");
    }
}
