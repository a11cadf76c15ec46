//! 10,000 tool calls leave the process's memory flat. A test binary of its own: RSS is
//! process-wide, so tests running beside it (the memory bomb grows to 16 MiB) would blur it.

mod common;

use common::*;
use pulsara_policy_host::{HostConfig, Limits};
use serde_json::json;

const LIMITS: Limits = Limits { deadline_ms: 1000, ..Limits::DEFAULT };

#[test]
fn ten_thousand_calls_keep_memory_flat() {
    let host = host_with(HostConfig { max_concurrent_calls: 4, ..HostConfig::default() });
    let module = host.load_bytes(&module_bytes("test_echo")).unwrap();
    let input = bare_input("test_echo", json!({"text": "hello", "spin": 100}));
    let call = || {
        let out = host.run_module(&module, "test_echo", &input, LIMITS, &[]).result.unwrap();
        assert_eq!(out.result, "test_echo: hello");
    };
    for _ in 0..500 {
        call();
    }
    let before = rss_kib();
    for _ in 0..10_000 {
        call();
    }
    let after = rss_kib();
    if let (Some(before), Some(after)) = (before, after) {
        // Generous: a leak of even 1 KiB per call would add ~10 MiB.
        assert!(after < before + 8 * 1024, "RSS grew from {before} KiB to {after} KiB over 10,000 calls");
    }
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
