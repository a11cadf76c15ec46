//! Every tool call a shipped scenario scripts is one the emulator will make: the tool is one of
//! the restaurant's, and its parameters validate against the schema in the policy's `tool.json`
//! (the schema the agent is synced with).
#[path = "common/agents.rs"]
mod agents;

use pulsara_emulators::scenario::Scenario;
use pulsara_emulators::stored_agent::check_arguments;

#[test]
fn scenario_tool_parameters_validate_against_the_tools_schemas() {
    let root = agents::root();
    let mut checked = 0;
    for sc in Scenario::load_dir(&root.join("scenarios")).unwrap() {
        let cfg: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(
                root.join(format!("restaurants/{}/restaurant.json", sc.restaurant)),
            )
            .unwrap_or_else(|e| panic!("{}: restaurant {}: {e}", sc.name, sc.restaurant)),
        )
        .unwrap();
        for (i, turn) in sc.agent.turns.iter().enumerate() {
            for call in &turn.tool_calls {
                let tool = cfg["tools"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|t| t["name"] == call.tool.as_str())
                    .unwrap_or_else(|| {
                        panic!(
                            "{} turn {}: {} is not a tool of {}",
                            sc.name,
                            i + 1,
                            call.tool,
                            sc.restaurant
                        )
                    });
                let builtin = tool["module_sha256"]
                    .as_str()
                    .unwrap()
                    .strip_prefix("builtin:")
                    .unwrap();
                let spec = agents::builtin_spec(builtin);
                let errors = check_arguments(&spec.parameters, &call.params);
                assert!(
                    errors.is_empty(),
                    "{} turn {}: {}: {errors:?}",
                    sc.name,
                    i + 1,
                    call.tool
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 5,
        "only {checked} tool calls in the shipped scenarios"
    );
}

#[test]
fn the_check_catches_what_the_server_refuses() {
    let spec = agents::builtin_spec("book_table");
    let ok =
        serde_json::json!({"date": "2026-12-05", "time": "19:30", "party_size": 4, "name": "Kim"});
    assert!(check_arguments(&spec.parameters, &ok).is_empty());
    let bad = serde_json::json!({"date": "2026-12-05", "time": "19:30", "party_size": "four"});
    assert!(!check_arguments(&spec.parameters, &bad).is_empty());
    let missing = serde_json::json!({"date": "2026-12-05", "time": "19:30"});
    assert!(!check_arguments(&spec.parameters, &missing).is_empty());
}
