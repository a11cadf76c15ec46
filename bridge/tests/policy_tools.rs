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
