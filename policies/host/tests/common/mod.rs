//! Shared test helpers: the built modules (from `cargo xtask build-wasm`), the example
//! restaurants, and input documents.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use pulsara_core::config::{KnowledgeBase, RestaurantConfig};
use pulsara_policy_host::abi::{CallContext, GrantedData, ToolInput, ABI_VERSION};
use pulsara_policy_host::{DirSource, HostConfig, PolicyHost};
use serde_json::Value;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `target/policies`, failing with what to run when the modules are not built.
pub fn modules_dir() -> PathBuf {
    let dir = repo_root().join("target/policies");
    if !dir.join("manifest.json").is_file() {
        panic!(
            "policy modules are not built ({} has no manifest.json): run `cargo xtask build-wasm` first \
             (`cargo xtask test` does it for you)",
            dir.display()
        );
    }
    dir
}

pub fn module_bytes(name: &str) -> Vec<u8> {
    let path = modules_dir().join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!("{}: {e}; run `cargo xtask build-wasm`", path.display())
    })
}

pub fn dir_source() -> Arc<DirSource> {
    Arc::new(DirSource::open(modules_dir()).expect("module directory"))
}

pub fn host_with(config: HostConfig) -> PolicyHost {
    PolicyHost::new(config, dir_source()).expect("policy host")
}

pub fn host() -> PolicyHost {
    host_with(HostConfig::default())
}

pub fn restaurant(id: &str) -> (RestaurantConfig, KnowledgeBase) {
    let dir = repo_root().join("restaurants").join(id);
    let cfg: RestaurantConfig =
        serde_json::from_slice(&std::fs::read(dir.join("restaurant.json")).expect("restaurant.json"))
            .expect("valid restaurant.json");
    let kb: KnowledgeBase =
        serde_json::from_slice(&std::fs::read(dir.join("knowledge_base.json")).expect("knowledge_base.json"))
            .expect("valid knowledge_base.json");
    (cfg, kb)
}

pub fn context(cfg: &RestaurantConfig, local_time: &str) -> CallContext {
    CallContext {
        restaurant_id: cfg.id.clone(),
        restaurant_name: cfg.name.clone(),
        call_sid: "CA00000000000000000000000000000001".into(),
        caller: "+15551230000".into(),
        local_time: local_time.into(),
        time_zone: cfg.time_zone.clone(),
        earlier_results: Vec::new(),
    }
}

/// A bare input document (no restaurant data) for the test guests.
pub fn bare_input(tool: &str, params: Value) -> String {
    let input = ToolInput {
        abi_version: ABI_VERSION,
        tool: tool.into(),
        params,
        context: CallContext {
            restaurant_id: "test".into(),
            local_time: "2026-12-01T12:00:00+00:00".into(),
            time_zone: "UTC".into(),
            ..Default::default()
        },
        data: GrantedData::default(),
    };
    serde_json::to_string(&input).unwrap()
}
