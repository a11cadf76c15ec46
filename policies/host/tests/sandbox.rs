//! The sandbox holds: each adversarial guest fails with its own error inside its limit, and the
//! next call (on the same host) is unaffected.

mod common;

use common::*;
use pulsara_policy_host::{Limits, PolicyError, PolicyHost, ToolRun};
use serde_json::json;

/// The default limits with a generous deadline (tests share a loaded machine); the deadline
/// itself is tested on its own below.
const LIMITS: Limits = Limits { deadline_ms: 1000, ..Limits::DEFAULT };

fn run(host: &PolicyHost, name: &str, limits: Limits, granted: &[&str]) -> ToolRun {
    let module = host.load_bytes(&module_bytes(name)).expect("module loads");
    let granted: Vec<String> = granted.iter().map(|s| s.to_string()).collect();
    host.run_module(&module, name, &bare_input(name, json!({"text": "hi"})), limits, &granted)
}

fn echo_still_works(host: &PolicyHost) {
    let out = run(host, "test_echo", LIMITS, &[]).result.expect("echo after a failure");
    assert_eq!(out.result, "test_echo: hi");
}

#[test]
fn infinite_loop_runs_out_of_fuel() {
    let host = host();
    let r = run(&host, "test_infinite_loop", LIMITS, &[]);
    assert_eq!(r.result.unwrap_err(), PolicyError::OutOfFuel { fuel: Limits::DEFAULT.fuel });
    let record = r.record.unwrap();
    assert_eq!(record.fuel_used, Limits::DEFAULT.fuel, "all fuel consumed, not more");
    echo_still_works(&host);
}

#[test]
fn infinite_loop_hits_the_deadline_when_fuel_is_plentiful() {
    let host = host();
    let limits = Limits { fuel: Limits::MAXIMA.fuel, deadline_ms: 5, ..Limits::DEFAULT };
    let r = run(&host, "test_infinite_loop", limits, &[]);
    assert_eq!(r.result.unwrap_err(), PolicyError::Timeout { deadline_ms: 5 });
    let record = r.record.unwrap();
    assert!(record.fuel_used < limits.fuel);
    // Generous bound: the epoch tick is 1 ms; this only guards against "never stopped".
    assert!(record.duration_us < 2_000_000, "stopped after {} µs", record.duration_us);
    echo_still_works(&host);
}

#[test]
fn memory_bomb_hits_the_memory_limit() {
    let host = host();
    // Plenty of fuel: touching 16 MiB costs more than the default budget.
    let lots = Limits { fuel: Limits::MAXIMA.fuel, ..LIMITS };
    let r = run(&host, "test_memory_bomb", lots, &[]);
    assert_eq!(r.result.unwrap_err(), PolicyError::MemoryLimit { limit_bytes: Limits::DEFAULT.memory_bytes });
    let small = Limits { memory_bytes: 4 << 20, ..lots };
    let r = run(&host, "test_memory_bomb", small, &[]);
    assert_eq!(r.result.unwrap_err(), PolicyError::MemoryLimit { limit_bytes: 4 << 20 });
    echo_still_works(&host);
}

#[test]
fn deep_recursion_overflows_the_stack() {
    let host = host();
    let r = run(&host, "test_deep_recursion", LIMITS, &[]);
    assert_eq!(r.result.unwrap_err(), PolicyError::StackOverflow);
    echo_still_works(&host);
}

#[test]
fn huge_output_is_refused() {
    let host = host();
    // Plenty of fuel: building and encoding 1 MiB costs more than the default budget.
    let r = run(&host, "test_huge_output", Limits { fuel: Limits::MAXIMA.fuel, ..LIMITS }, &[]);
    match r.result.unwrap_err() {
        PolicyError::OutputTooLarge { bytes, max } => {
            assert!(bytes > 1 << 20);
            assert_eq!(max, Limits::DEFAULT.output_bytes);
        }
        other => panic!("expected OutputTooLarge, got {other:?}"),
    }
    echo_still_works(&host);
}

#[test]
fn invalid_output_is_refused() {
    let host = host();
    let r = run(&host, "test_invalid_output", LIMITS, &[]);
    assert!(matches!(r.result, Err(PolicyError::InvalidOutput(_))), "{:?}", r.result);
    echo_still_works(&host);
}

#[test]
fn panic_is_a_crash() {
    let host = host();
    let r = run(&host, "test_panic", LIMITS, &[]);
    let err = r.result.unwrap_err();
    assert!(matches!(err, PolicyError::Crashed(_)), "{err:?}");
    assert_eq!(err.kind(), "crashed");
    assert!(!err.speakable().contains("unreachable"), "no internals in what the agent hears");
    echo_still_works(&host);
}

#[test]
fn ungranted_action_is_refused_and_granted_passes() {
    let host = host();
    let r = run(&host, "test_ungranted_action", LIMITS, &["end_call"]);
    assert_eq!(r.result.unwrap_err(), PolicyError::UngrantedAction { kind: "send_sms".into() });
    let r = run(&host, "test_ungranted_action", LIMITS, &["send_sms", "end_call"]);
    assert_eq!(r.result.unwrap().actions.len(), 2);
}

#[test]
fn wrong_abi_version_is_refused_at_load() {
    let host = host();
    let err = host.load_bytes(&module_bytes("test_wrong_abi")).unwrap_err();
    let abi = pulsara_policy_host::abi::ABI_VERSION;
    assert!(matches!(err, PolicyError::AbiMismatch { module, host, .. } if host == abi && module == abi + 1000), "{err:?}");
    echo_still_works(&host);
}

#[test]
fn oversized_input_is_refused_before_running() {
    let host = host();
    let module = host.load_bytes(&module_bytes("test_echo")).unwrap();
    let input = bare_input("test_echo", json!({"text": "x".repeat(200_000)}));
    let r = host.run_module(&module, "test_echo", &input, Limits::DEFAULT, &[]);
    assert!(matches!(r.result, Err(PolicyError::InputTooLarge { max, .. }) if max == 128 * 1024));
    assert_eq!(r.record.unwrap().fuel_used, 0);
}

#[test]
fn guest_errors_reach_the_agent_verbatim() {
    let host = host();
    let module = host.load_bytes(&module_bytes("test_echo")).unwrap();
    let r = host.run_module(&module, "test_echo", "{\"abi_version\":1}", LIMITS, &[]);
    match r.result.unwrap_err() {
        PolicyError::Guest(message) => assert!(message.contains("invalid tool input"), "{message}"),
        other => panic!("{other:?}"),
    }
}

