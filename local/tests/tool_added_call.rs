//! A tool added to a restaurant in the dashboard is called by its agent on the next call, with
//! nobody running a command: the whole local stack (edge, bridge, embedded dashboard with its
//! agent sync job, the ElevenLabs emulator holding the agents) and a scripted caller.
//!
//! Trattoria Roma has no `book_table`. Its agent, as synced, does not declare it, so the
//! emulator refuses the scripted call as the server would (the LLM never calls an undeclared
//! tool). Once an admin edit adds booking settings and the tool, the sync job declares it on the
//! agent, the bridge loads its module, and the same call books the table.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pulsara_core::config::ToolBinding;
use pulsara_emulators::scenario::Scenario;
use pulsara_local::demo::run_scenarios;
use pulsara_local::stack::{Stack, StackOptions};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Friday 13:00 in Rome (open); the caller books a table for the evening.
const BOOKING: &str = r#"
name = "trattoria-books-a-table"
description = "A booking at a restaurant whose agent had no booking tool until an admin edit."
restaurant = "trattoria-roma"

[call]
from = "+393331110042"
to = "+390612345678"
at = "2026-12-04T12:00:00Z"

[[agent.turns]]
user = "Can I book a table for two tonight at eight? The name is Bianchi."
agent = "Certo, a table for two at eight tonight under Bianchi."
[[agent.turns.tool_calls]]
tool = "book_table"
params = { date = "2026-12-04", time = "20:00", party_size = 2, name = "Bianchi" }
expect_error = false

[caller]
max_duration_ms = 60000

[[caller.steps]]
after_agent_ms = 300
say = "Can I book a table for two tonight at eight? The name is Bianchi."

[[caller.steps]]
after_agent_ms = 300
hangup = true

[expect]
tools = ["book_table"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_added_in_the_dashboard_is_called_by_the_agent_after_the_automatic_sync() {
    let scenario = Scenario::from_toml(BOOKING, "tool_added_call.rs").unwrap();
    let data = std::env::temp_dir().join(format!("pulsara-tool-added-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let stack = Stack::start(StackOptions {
        restaurants_dir: root().join("restaurants"),
        policies_dir: root().join("target/policies"),
        data_dir: data.clone(),
        scenarios: vec![scenario.clone()],
        clock: pulsara_bridge::clock::Clock::system(),
        prepare_sessions: true,
        elevenlabs_delays: Default::default(),
    })
    .await
    .expect("local stack (run `cargo xtask build-policies` first)");
    let workspace = stack.elevenlabs.recorder.workspace();
    let trattoria = stack.dashboard.store.restaurant("trattoria-roma").unwrap().unwrap();
    assert!(trattoria.tools.iter().all(|t| t.name != "book_table"), "the seed has no booking tool");

    // Before: the agent does not declare book_table, so it is never called.
    let before = run_scenarios(&stack, std::slice::from_ref(&scenario), None).await.remove(0);
    let first = stack.elevenlabs.recorder.conversations().pop().expect("a conversation");
    assert_eq!(first.refused_tool_calls.len(), 1, "{:?}", first.refused_tool_calls);
    assert!(first.refused_tool_calls[0].contains("book_table"), "{:?}", first.refused_tool_calls);
    assert!(first.tool_results.is_empty(), "{:?}", first.tool_results);
    assert!(!before.failures.is_empty(), "the expected tool call was missing: {}", before.report);
    let record = before.record.expect("the first call's record");
    assert!(record.tool_runs.is_empty(), "{:?}", record.tool_runs);

    // An admin starts taking bookings: booking settings, and the tool (the module Brooklyn books
    // with). Nobody runs a command.
    let brooklyn = stack.dashboard.store.restaurant("brooklyn-smokehouse").unwrap().unwrap();
    let book: ToolBinding = brooklyn.tools.iter().find(|t| t.name == "book_table").unwrap().clone();
    let mut edit = trattoria.clone();
    edit.booking = brooklyn.booking.clone().map(|mut b| {
        b.booked.clear();
        b
    });
    edit.tools.push(book);
    let edited = stack.admin.admin_put_restaurant(&edit).await.unwrap();
    assert!(edited.version > trattoria.version);
    stack.dashboard.wait_agent_syncs(Duration::from_secs(30)).await.expect("the edit's sync");
    let synced = stack.dashboard.store.restaurant("trattoria-roma").unwrap().unwrap();
    let book_id = synced.agent.synced.as_ref().and_then(|s| s.tool_ids.get("book_table")).expect("declared").clone();
    let agent = workspace.agent(&synced.agent.elevenlabs_agent_id).unwrap();
    assert!(agent["conversation_config"]["agent"]["prompt"]["tool_ids"].as_array().unwrap().iter().any(|t| t == &book_id), "{agent}");

    // After: the same call, and the agent calls the tool; the bridge runs it.
    let after = run_scenarios(&stack, std::slice::from_ref(&scenario), None).await.remove(0);
    let second = stack.elevenlabs.recorder.conversations().pop().expect("a second conversation");
    assert_ne!(second.conversation_id, first.conversation_id);
    assert!(second.refused_tool_calls.is_empty(), "{:?}", second.refused_tool_calls);
    assert_eq!(second.tool_results.iter().map(|t| t.tool_name.as_str()).collect::<Vec<_>>(), ["book_table"]);
    assert!(after.failures.is_empty(), "{}\n{:?}", after.report, after.failures);
    let record = after.record.expect("the second call's record");
    assert_eq!(record.tool_runs.iter().map(|t| t.tool.as_str()).collect::<Vec<_>>(), ["book_table"], "{record:?}");
    // What the caller waited for: the first audio counted from the webhook includes Twilio's
    // stream set-up, so it is the longer; the turn includes the agent noticing the end of speech
    // (the emulator's 400 ms of silence), so it is no shorter than that.
    let lat = record.latency.expect("latency figures");
    let (first, from_webhook) = (lat.first_audio_ms.unwrap(), lat.first_audio_from_webhook_ms.unwrap());
    assert!(from_webhook >= first && from_webhook < 10_000, "{lat:?}");
    assert!(lat.first_audio_bridge_us.is_some_and(|us| us < 1_000_000), "{lat:?}");
    assert!(lat.prepared, "the edge had the bridge prepare the session while Twilio connected: {lat:?}");
    assert_eq!(lat.turn_ms.len(), 1, "{lat:?}");
    assert!((400..5_000).contains(&lat.turn_ms[0]), "{lat:?}");
    assert!(after.report.contains("first audio") && after.report.contains("turns"), "{}", after.report);
    let metrics_url = stack.bridge_url.replace("ws://", "http://").replace("/media", "/metrics");
    let metrics = reqwest::get(metrics_url).await.unwrap().text().await.unwrap();
    let parsed = pulsara_emulators::exposition::parse(&metrics).unwrap();
    let turns = parsed.value("pulsara_caller_wait_seconds_count", &[("restaurant", "trattoria-roma"), ("wait", "turn")]);
    assert_eq!(turns, Some(2.0), "one turn on each of the two calls\n{metrics}");
    stack.stop().await;
    let _ = std::fs::remove_dir_all(&data);
}
