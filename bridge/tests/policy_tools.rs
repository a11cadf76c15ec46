//! The policy tool runner as the bridge uses it: built-in tools from `target/policies` (run
//! `cargo xtask build-wasm` first), the restaurant's grants, earlier results, clean errors.

use std::path::PathBuf;
use std::sync::Arc;

use pulsara_bridge::ports::{EarlierResult, ToolContext, ToolError, ToolRunner};
use pulsara_bridge::tools::PolicyToolRunner;
use pulsara_core::config::{KnowledgeBase, RestaurantConfig};
use pulsara_policy_abi::Action;
use serde_json::json;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn runner() -> PolicyToolRunner {
    let dir = root().join("target/policies");
    assert!(
        dir.join("manifest.json").is_file(),
        "policy modules are not built: run `cargo xtask build-wasm` first ({} is missing)",
        dir.join("manifest.json").display()
    );
    PolicyToolRunner::from_dir(&dir, None).expect("runner")
}

fn ctx(id: &str, local_time: &str) -> ToolContext {
    let dir = root().join("restaurants").join(id);
    let cfg: RestaurantConfig = serde_json::from_slice(&std::fs::read(dir.join("restaurant.json")).unwrap()).unwrap();
    let kb: KnowledgeBase = serde_json::from_slice(&std::fs::read(dir.join("knowledge_base.json")).unwrap()).unwrap();
    ToolContext {
        restaurant: Arc::new(cfg),
        kb: Arc::new(kb),
        call_sid: "CA0123".into(),
        caller: "+12125550100".into(),
        local_time: local_time.into(),
        earlier: Vec::new(),
    }
}

#[tokio::test]
async fn order_then_confirmation_through_the_runner() {
    let runner = runner();
    let mut c = ctx("brooklyn-smokehouse", "2026-12-01T12:00:00-05:00");
    let params = json!({"items": [{"name": "pulled pork", "quantity": 2, "modifiers": ["extra sauce"]}], "fulfillment": "pickup", "customer_name": "Sam"});
    let (outcome, record) = runner.run_recorded(&c, "take_order", params).await.unwrap();
    assert!(!outcome.is_error, "{}", outcome.result);
    assert!(matches!(&outcome.actions[..], [Action::RecordOrder(o)] if o.items[0].quantity == 2));
    assert!(outcome.fuel_used.unwrap() > 0);
    let record = record.unwrap();
    assert_eq!(Some(record.module_sha256.clone()), outcome.module_sha256);

    c.earlier.push(EarlierResult { tool: "take_order".into(), output: outcome.output.clone().unwrap() });
    let sms = runner.run(&c, "send_confirmation", json!({"channel": "sms"})).await.unwrap();
    assert!(matches!(&sms.actions[..], [Action::SendSms { to, body }] if to == "+12125550100" && body.contains("Pulled Pork")), "{sms:?}");
}

#[tokio::test]
async fn failures_are_speakable_errors_and_unknown_tools_are_typed() {
    let runner = runner();
    let c = ctx("trattoria-roma", "2026-12-01T19:10:00+01:00");
    let err = runner.run(&c, "book_table", json!({})).await.unwrap_err();
    assert_eq!(err, ToolError::UnknownTool("book_table".into()));
    let bad = runner.run(&c, "take_order", json!({"items": 3})).await.unwrap();
    assert!(bad.is_error && bad.result.contains("invalid parameters"), "{bad:?}");
    assert!(bad.fuel_used.is_some());
}

#[tokio::test]
async fn every_run_is_kept_as_a_replayable_record() {
    let dir = std::env::temp_dir().join(format!("pulsara-policy-runs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let runner = runner().with_run_log(pulsara_bridge::tools::RunLog::open(&dir, 100).unwrap());
    let c = ctx("trattoria-roma", "2026-12-04T19:30:00+01:00");
    let params = json!({"items": [{"name": "tiramisu", "quantity": 1}], "fulfillment": "pickup"});
    let (outcome, _) = runner.run_recorded(&c, "take_order", params).await.unwrap();
    // A failing run is kept too.
    let unknown = runner.run(&c, "take_order", json!({"items": "not a list"})).await.unwrap();
    assert!(unknown.is_error);

    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files[0].to_str().unwrap().ends_with("-CA0123-take_order.json"));
    let record: pulsara_policy_host::RunRecord = serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    assert_eq!(Some(record.fuel_used), outcome.fuel_used);
    let replayed = runner.host().replay(&record).unwrap();
    assert_eq!(replayed.result.as_ref().ok(), outcome.output.as_ref());
    assert_eq!(replayed.record.unwrap().fuel_used, record.fuel_used);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A runner whose host has only `slots` instance slots, over the built modules.
fn runner_with_slots(slots: u32) -> PolicyToolRunner {
    let source = pulsara_policy_host::DirSource::open(&root().join("target/policies")).expect("built modules");
    let config = pulsara_policy_host::HostConfig { max_concurrent_calls: slots, ..Default::default() };
    PolicyToolRunner::new(Arc::new(pulsara_policy_host::PolicyHost::new(config, Arc::new(source)).expect("host")))
}

/// Trattoria Roma offering the test guest `echo` with `deadline_ms` (at most 1,000) and the
/// most fuel a restaurant may grant, so the spinning runs below end well inside it.
fn echo_ctx(deadline_ms: u64) -> ToolContext {
    let mut c = ctx("trattoria-roma", "2026-12-01T19:10:00+01:00");
    let mut cfg = (*c.restaurant).clone();
    cfg.tools = vec![serde_json::from_value(json!({
        "name": "echo", "module_sha256": "builtin:test_echo", "limits": {"deadline_ms": deadline_ms, "fuel": 100_000_000}
    }))
    .unwrap()];
    c.restaurant = Arc::new(cfg);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_tool_calls_than_slots_queue_instead_of_failing_busy() {
    // 16 short runs (a few ms each) against 2 slots: without the queue the host refuses most
    // of them with `Busy`; with it every one runs. The whole batch needs far less than one
    // tool deadline (1 s) even on a loaded machine, so the outcome does not depend on timing.
    // The module is compiled first: a cold compile inside the first two slots can itself take
    // longer than a deadline on a loaded machine, and it is not what this test is about.
    let runner = runner_with_slots(2);
    let c = echo_ctx(5_000);
    let warm = runner.run(&c, "echo", json!({"text": "warm", "spin": 1})).await.unwrap();
    assert!(!warm.is_error, "{}", warm.result);
    let runs: Vec<_> = (0..16)
        .map(|i| {
            let (runner, c) = (runner.clone(), c.clone());
            tokio::spawn(async move { runner.run(&c, "echo", json!({"text": format!("n{i}"), "spin": 200_000})).await })
        })
        .collect();
    for (i, run) in runs.into_iter().enumerate() {
        let out = run.await.unwrap().unwrap();
        assert!(!out.is_error, "run {i}: {}", out.result);
        assert_eq!(out.result.lines().next(), Some(format!("echo: n{i}").as_str()));
    }
    assert_eq!((runner.running(), runner.queued()), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_call_that_waits_past_its_deadline_for_a_slot_is_busy() {
    let runner = runner_with_slots(1);
    // The one slot is held by a long run...
    let long = {
        let (runner, c) = (runner.clone(), echo_ctx(10_000));
        tokio::spawn(async move { runner.run(&c, "echo", json!({"text": "long", "spin": 5_000_000})).await })
    };
    while runner.running() == 0 {
        tokio::task::yield_now().await;
    }
    // ...so a tool allowed 1 ms cannot get one in time: a speakable busy answer, no run.
    let (out, record) = runner.run_recorded(&echo_ctx(1), "echo", json!({"text": "short"})).await.unwrap();
    assert!(out.is_error && out.result.contains("busy"), "{out:?}");
    assert!(record.is_none());
    assert!(!long.await.unwrap().unwrap().is_error);
    // With the slot free again the same call runs.
    let out = runner.run(&echo_ctx(1_000), "echo", json!({"text": "short"})).await.unwrap();
    assert!(!out.is_error, "{}", out.result);
}
