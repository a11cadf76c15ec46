//! The shipped example restaurants are valid documents of the dashboard model and differ where the
//! product needs them to (time zone, after-hours mode, tools, language), so the demo and tests
//! exercise each path.

use std::collections::BTreeSet;
use std::path::PathBuf;

use pulsara_core::config::{AfterHours, KnowledgeBase, RestaurantConfig};

fn restaurants_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../restaurants")
}

fn load() -> Vec<(RestaurantConfig, KnowledgeBase)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(restaurants_dir()).expect("restaurants/ exists") {
        let dir = entry.unwrap().path();
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
        let cfg: RestaurantConfig = serde_json::from_str(&read("restaurant.json"))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let kb: KnowledgeBase = serde_json::from_str(&read("knowledge_base.json"))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        assert_eq!(cfg.id, dir.file_name().unwrap().to_str().unwrap(), "directory name is the id");
        assert_eq!(kb.restaurant_id, cfg.id);
        out.push((cfg, kb));
    }
    out
}

#[test]
fn example_restaurants_parse_and_differ() {
    let all = load();
    assert!(all.len() >= 3, "ship at least three example restaurants");
    let zones: BTreeSet<_> = all.iter().map(|(c, _)| c.time_zone.clone()).collect();
    assert_eq!(zones.len(), all.len(), "each example restaurant has its own time zone");
    let modes: BTreeSet<_> = all
        .iter()
        .map(|(c, _)| match c.after_hours {
            AfterHours::Message { .. } => "message",
            AfterHours::Voicemail { .. } => "voicemail",
            AfterHours::Forward { .. } => "forward",
        })
        .collect();
    assert_eq!(modes.len(), 3, "every after-hours mode is exercised");
    let tool_sets: BTreeSet<Vec<String>> =
        all.iter().map(|(c, _)| c.tools.iter().map(|t| t.name.clone()).collect()).collect();
    assert_eq!(tool_sets.len(), all.len(), "tool sets differ");
    let numbers: Vec<_> = all.iter().flat_map(|(c, _)| c.phone_numbers.clone()).collect();
    let unique: BTreeSet<_> = numbers.iter().collect();
    assert_eq!(unique.len(), numbers.len(), "no number belongs to two restaurants");
    for (cfg, kb) in &all {
        assert!(cfg.phone_numbers.iter().all(|n| n.starts_with('+')), "{}: E.164 numbers", cfg.id);
        assert!(kb.menu.iter().any(|i| !i.available), "{}: has an 86'd item to exercise", cfg.id);
        assert!(!kb.faq.is_empty());
        cfg.validate().unwrap_or_else(|e| panic!("{}: {e}", cfg.id));
    }
    assert!(
        all.iter().any(|(c, _)| c.agent.language != "en"),
        "at least one example restaurant is not English"
    );
}

/// Trattoria Roma is Italian end to end: ElevenLabs is told `it`, and everything Twilio speaks
/// for it (after hours, busy, fallback) is `it-IT` with an Italian voice.
#[test]
fn trattoria_roma_speaks_italian_to_both_vendors() {
    let all = load();
    let (roma, _) = all.iter().find(|(c, _)| c.id == "trattoria-roma").expect("trattoria-roma");
    assert_eq!(roma.agent.language, "it");
    let voice = roma.say_voice();
    assert_eq!((voice.language(), voice.voice()), ("it-IT", "Polly.Bianca"));
    let say = r#"<Say language="it-IT" voice="Polly.Bianca">"#;
    let after_hours = voice.after_hours(&roma.after_hours, "https://edge.example/twilio/status");
    assert!(after_hours.contains(say) && after_hours.contains("<Record"), "{after_hours}");
    let busy = voice.busy(roma.agent.busy_message.as_deref().unwrap(), roma.fallback_target());
    assert!(busy.contains(say), "{busy}");
    let apology = voice.fallback(None, roma.agent.apology_message.as_deref().unwrap());
    assert!(apology.contains(say), "{apology}");
}
