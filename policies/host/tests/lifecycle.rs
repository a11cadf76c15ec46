//! Module lifecycle: hash verification, the precompiled cache across restarts, tool-set hot swap
//! under live calls, and exact replay.

mod common;

use std::sync::Arc;

use common::*;
use pulsara_core::config::{Grants, KnowledgeBase, PolicyLimits, RestaurantConfig, ToolBinding};
use pulsara_core::crypto::sha256_hex;
use pulsara_policy_host::{
    HostConfig, Limits, MemorySource, PolicyError, PolicyHost, RunOutcome, RunRecord,
};
use serde_json::json;

fn config_with(version: u64, module: &str) -> RestaurantConfig {
    let (mut cfg, _) = restaurant("trattoria-roma");
    cfg.version = version;
    cfg.tools = vec![ToolBinding {
        name: "echo".into(),
        module_sha256: module.into(),
        grants: Grants::default(),
        // A generous deadline: these tests share a loaded machine; deadlines are tested in sandbox.rs.
        limits: PolicyLimits { deadline_ms: Some(1000), ..PolicyLimits::default() },
    }];
    cfg
}

#[test]
fn module_whose_bytes_do_not_match_their_hash_is_refused() {
    let source = Arc::new(MemorySource::new());
    let good = module_bytes("test_echo");
    let claimed = sha256_hex(&good);
    let mut tampered = good.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0xff;
    source.insert_as(&claimed, tampered);
    let host = PolicyHost::new(HostConfig::default(), source.clone()).unwrap();
    let err = host.load(&claimed).unwrap_err();
    assert!(matches!(&err, PolicyError::HashMismatch { expected, .. } if *expected == claimed), "{err:?}");
    // The tool that references it fails cleanly; nothing was cached.
    let cfg = config_with(1, &claimed);
    let set = host.tool_set(&cfg);
    let (_, kb) = restaurant("trattoria-roma");
    let run = host.call(&set, &cfg, &kb, "echo", json!({}), context(&cfg, "2026-12-01T12:00:00+01:00"));
    assert!(matches!(run.result, Err(PolicyError::HashMismatch { .. })));
    // Once the right bytes are there, it loads.
    source.insert_as(&claimed, good);
    assert!(host.load(&claimed).is_ok());
    assert!(matches!(host.load(&"0".repeat(64)), Err(PolicyError::ModuleNotFound(_))));
}

#[test]
fn precompiled_artefacts_survive_a_restart_and_corruption_is_recompiled() {
    let cache = tempfile::tempdir().unwrap();
    let config = HostConfig { cache_dir: Some(cache.path().to_path_buf()), ..HostConfig::default() };
    let source = Arc::new(MemorySource::new());
    let sha = source.insert(module_bytes("test_echo"));
    let input = bare_input("test_echo", json!({"text": "cached"}));

    let first = PolicyHost::new(config.clone(), source.clone()).unwrap();
    let fp = first.engine_fingerprint().to_owned();
    let m = first.load(&sha).unwrap();
    let a = first.run_module(&m, "test_echo", &input, Limits { deadline_ms: 1000, ..Limits::DEFAULT }, &[]);
    let artefact = cache.path().join(&fp).join(format!("{sha}.cwasm"));
    assert!(artefact.is_file(), "artefact written to {}", artefact.display());
    assert_eq!((first.load_stats().compiled, first.load_stats().deserialised, first.load_stats().resident), (1, 0, 1));
    assert!(first.is_loaded(&sha));
    let written = std::fs::metadata(&artefact).unwrap().modified().unwrap();
    drop(first);

    // A new host (a restart) deserialises: the artefact is not rewritten, and runs are identical.
    let second = PolicyHost::new(config.clone(), source.clone()).unwrap();
    let m = second.load(&sha).unwrap();
    let b = second.run_module(&m, "test_echo", &input, Limits { deadline_ms: 1000, ..Limits::DEFAULT }, &[]);
    assert_eq!(std::fs::metadata(&artefact).unwrap().modified().unwrap(), written);
    assert_eq!((second.load_stats().compiled, second.load_stats().deserialised), (0, 1));
    assert_eq!(a.result.unwrap(), b.result.unwrap());
    assert_eq!(a.record.unwrap().fuel_used, b.record.unwrap().fuel_used);
    drop(second);

    // A damaged artefact is detected and replaced by a fresh compile.
    std::fs::write(&artefact, b"not machine code").unwrap();
    let third = PolicyHost::new(config, source).unwrap();
    let m = third.load(&sha).unwrap();
    assert!(third.run_module(&m, "test_echo", &input, Limits { deadline_ms: 1000, ..Limits::DEFAULT }, &[]).result.is_ok());
    assert_ne!(std::fs::read(&artefact).unwrap(), b"not machine code");
    assert_eq!((third.load_stats().compiled, third.load_stats().deserialised), (1, 0));
}

#[test]
fn concurrent_loads_of_one_module_compile_it_once() {
    let source = Arc::new(MemorySource::new());
    let sha = source.insert(module_bytes("test_echo"));
    let host = Arc::new(PolicyHost::new(HostConfig::default(), source).unwrap());
    assert!(!host.is_loaded(&sha));
    let loaders: Vec<_> = (0..4)
        .map(|_| {
            let (host, sha) = (host.clone(), sha.clone());
            std::thread::spawn(move || host.load(&sha).map(|m| m.sha256.clone()))
        })
        .collect();
    for l in loaders {
        assert_eq!(l.join().unwrap().unwrap(), sha);
    }
    assert_eq!(host.load_stats().compiled, 1, "the others waited for the first compile");
    assert!(host.is_loaded(&sha));
}

#[test]
fn hot_swap_changes_new_calls_only() {
    let source = Arc::new(MemorySource::new());
    let echo = source.insert(module_bytes("test_echo"));
    let happy = source.insert(module_bytes("happy_hour"));
    let host = Arc::new(PolicyHost::new(HostConfig::default(), source).unwrap());
    let (_, kb) = restaurant("trattoria-roma");
    let kb = Arc::new(kb);

    let v1 = Arc::new(config_with(1, &echo));
    let live = host.tool_set(&v1);
    assert_eq!(live.module_sha256("echo"), Some(echo.as_str()));
    assert!(Arc::ptr_eq(&live, &host.tool_set(&v1)), "same version → the same shared set");

    // Live calls on v1 keep running on other threads while the set is swapped.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..2 {
        let (host, live, v1, kb, stop) = (host.clone(), live.clone(), v1.clone(), kb.clone(), stop.clone());
        workers.push(std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || n < 50 {
                let run = host.call(&live, &v1, &kb, "echo", json!({"text": "live"}), context(&v1, "2026-12-01T12:00:00+01:00"));
                let record = run.record.expect("ran");
                assert_eq!(record.module_sha256, echo_sha(&live));
                assert_eq!(run.result.unwrap().result, "echo: live");
                n += 1;
            }
            n
        }));
    }

    // policy.updated: version 2 points the tool at another module.
    let v2 = config_with(2, &happy);
    host.invalidate(&v2.id);
    let fresh = host.tool_set(&v2);
    assert_eq!(fresh.module_sha256("echo"), Some(happy.as_str()));
    let run = host.call(&fresh, &v2, &kb, "echo", json!({"item": "water"}), context(&v2, "2026-12-01T12:00:00+01:00"));
    // happy_hour without the menu grant refuses with its own message: proof the new module ran.
    assert!(matches!(&run.result, Err(PolicyError::Guest(m)) if m.contains("menu")), "{:?}", run.result);
    assert_eq!(run.record.unwrap().module_sha256, happy);

    // The old set is still what the live calls use; an older config never displaces the newer set.
    let again_old = host.tool_set(&v1);
    assert_eq!(again_old.module_sha256("echo"), Some(echo.as_str()));
    assert!(Arc::ptr_eq(&fresh, &host.tool_set(&v2)), "the cached set stays the newest version");

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        assert!(w.join().expect("no live call failed") >= 50);
    }
}

fn echo_sha(set: &pulsara_policy_host::ToolSet) -> String {
    set.module_sha256("echo").unwrap().to_owned()
}

#[test]
fn replay_reproduces_output_and_fuel_exactly() {
    let host = host();
    let (mut cfg, kb) = restaurant("trattoria-roma");
    for tool in &mut cfg.tools {
        tool.limits.deadline_ms = Some(1000);
    }
    let set = host.tool_set(&cfg);
    let run = host.call(
        &set,
        &cfg,
        &kb,
        "take_order",
        json!({"items": [{"name": "margarita", "quantity": 2, "modifiers": ["large", "olives"]}], "customer_name": "Ada"}),
        context(&cfg, "2026-12-01T19:10:00+01:00"),
    );
    let record = run.record.expect("recorded");
    assert!(matches!(record.outcome, RunOutcome::Ok { .. }), "{:?}", record.outcome);
    assert!(record.fuel_used > 0);

    // Through JSON, as `pulsara policy replay run.json` reads it, on a fresh host.
    let json = serde_json::to_string_pretty(&record).unwrap();
    let parsed: RunRecord = serde_json::from_str(&json).unwrap();
    let other = super_host();
    let again = other.replay(&parsed).unwrap().record.unwrap();
    assert_eq!(again.outcome, record.outcome);
    assert_eq!(again.fuel_used, record.fuel_used);
    assert_eq!(again.input.get(), record.input.get());

    // A failing run replays to the same failure with the same fuel.
    let m = host.load_bytes(&module_bytes("test_infinite_loop")).unwrap();
    let failed = host
        .run_module(&m, "spin", &bare_input("spin", json!({})), Limits { fuel: 1_000_000, deadline_ms: 1000, ..Limits::DEFAULT }, &[])
        .record
        .unwrap();
    let again = other.replay(&failed).unwrap().record.unwrap();
    assert_eq!(again.outcome, failed.outcome);
    assert_eq!(again.fuel_used, 1_000_000);
}

fn super_host() -> PolicyHost {
    host()
}

#[test]
fn kb_is_unused_by_empty_grant() {
    // The echo tool has an empty grant: its input carries no restaurant data at all.
    let source = Arc::new(MemorySource::new());
    let echo = source.insert(module_bytes("test_echo"));
    let host = PolicyHost::new(HostConfig::default(), source).unwrap();
    let cfg = config_with(1, &echo);
    let kb = KnowledgeBase { restaurant_id: cfg.id.clone(), ..Default::default() };
    let set = host.tool_set(&cfg);
    let run = host.call(&set, &cfg, &kb, "echo", json!({"text": "x"}), context(&cfg, "2026-12-01T12:00:00+01:00"));
    let record = run.record.unwrap();
    let input: serde_json::Value = serde_json::from_str(record.input.get()).unwrap();
    assert_eq!(input["data"], json!({}));
    assert!(matches!(host.call(&set, &cfg, &kb, "nope", json!({}), context(&cfg, "2026-12-01T12:00:00+01:00")).result,
        Err(PolicyError::UnknownTool(_))));
}
