//! What the agent is told about the restaurant at the start of a call: dynamic variables
//! (restaurant name, address, today's hours, next opening, caller number, specials, a short FAQ
//! summary) and the filled prompt / first-message overrides. Pure; `now` is passed in.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use pulsara_core::agent::Override;
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

/// The `conversation_initiation_client_data` for one call, and the overrides left out of it.
///
/// The server closes a conversation (1008, `override_error`) whose initiation overrides a field
/// the agent does not allow, so only the overrides of the restaurant's synced state
/// (`agent.synced.overrides`) are sent; before its first sync the agent is assumed to allow
/// all of them. The caller logs the skipped ones: the agent then speaks its own stored prompt,
/// first message, language or voice for that field.
pub fn initiation(
    cfg: &RestaurantConfig,
    kb: &KnowledgeBase,
    caller: &str,
    now: DateTime<Utc>,
    first_message_override: Option<&str>,
) -> (InitiationClientData, Vec<Override>) {
    let vars = dynamic_variables(cfg, kb, caller, now);
    let allowed = |o: Override| {
        cfg.agent
            .synced
            .as_ref()
            .is_none_or(|s| s.overrides.iter().any(|p| p == o.path()))
    };
    let mut skipped = Vec::new();
    let mut keep = |o: Override, value: Option<String>| {
        let value = value?;
        if allowed(o) {
            Some(value)
        } else {
            skipped.push(o);
            None
        }
    };
    let prompt = keep(Override::Prompt, Some(fill(&cfg.agent.prompt_template, &vars)));
    let first = keep(
        Override::FirstMessage,
        Some(
            first_message_override
                .map(str::to_owned)
                .unwrap_or_else(|| fill(&cfg.agent.first_message, &vars)),
        ),
    );
    let language = keep(Override::Language, Some(cfg.agent.language.clone()));
    let voice = keep(Override::VoiceId, cfg.agent.voice_id.clone());
    let agent = (prompt.is_some() || first.is_some() || language.is_some()).then(|| AgentOverride {
        prompt: prompt.map(|prompt| PromptOverride { prompt }),
        first_message: first,
        language,
    });
    let tts = voice.map(|v| TtsOverride { voice_id: Some(v) });
    let overrides = (agent.is_some() || tts.is_some()).then_some(ConfigOverride { agent, tts });
    (
        InitiationClientData {
            conversation_config_override: overrides,
            dynamic_variables: vars,
        },
        skipped,
    )
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
        let (init, skipped) = initiation(&cfg, &kb, "+391234", now, None);
        assert!(skipped.is_empty(), "never synced: every override is sent");
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

    #[test]
    fn only_the_overrides_the_agent_allows_are_sent() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../restaurants/trattoria-roma");
        let (mut cfg, kb) = crate::ports::load_one(&dir).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 1, 14, 12, 0, 0).unwrap();
        cfg.agent.synced = Some(pulsara_core::config::AgentSynced {
            overrides: vec!["agent.prompt.prompt".into(), "agent.first_message".into()],
            ..Default::default()
        });
        let (init, skipped) = initiation(&cfg, &kb, "+391234", now, Some("Welcome back"));
        assert_eq!(skipped, vec![Override::Language, Override::VoiceId]);
        let o = init.conversation_config_override.unwrap();
        assert!(o.tts.is_none());
        let agent = o.agent.unwrap();
        assert_eq!(agent.first_message.as_deref(), Some("Welcome back"));
        assert!(agent.prompt.is_some() && agent.language.is_none());
        // The dynamic variables are not overrides: always sent.
        assert_eq!(init.dynamic_variables["restaurant_name"], "Trattoria Roma");

        // An agent that allows nothing gets no override object at all.
        cfg.agent.synced = Some(pulsara_core::config::AgentSynced::default());
        let (init, skipped) = initiation(&cfg, &kb, "+391234", now, None);
        assert!(init.conversation_config_override.is_none());
        assert_eq!(skipped.len(), 4);
    }
}
