//! `cargo xtask <task>`: the one entry point for builds that are more than `cargo build`.
//!
//! - `build-wasm`: the edge worker (`edge/build/`) and the policy modules (`target-wasm/policies/`).
//! - `test`: everything CI runs: builds the wasm artefacts, then every Rust test including the
//!   integration tests that run the worker in workerd.
//! - `demo`: the main job, a full simulated call on embedded defaults.
//! - `bench <edge|bridge|policies>`: the benchmarks behind BENCHMARKS.md.
//!
//! Modules: [`util`] (process helpers), [`toolchain`] (wasm compiler, pinned tools, npm),
//! [`edge`] (worker build), [`policies`] (policy module build).

mod edge;
mod policies;
mod toolchain;
mod util;

use anyhow::{bail, Result};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let task = args.first().map(String::as_str).unwrap_or("help");
    let rest = &args[args.len().min(1)..];
    match task {
        "build-wasm" => build_wasm(),
        "build-policies" => policies::build(&toolchain::Wasm::prepare()?),
        "test" => test(rest),
        "demo" => demo(rest),
        "bench" => bench(rest),
        "help" | "--help" | "-h" => {
            println!("usage: cargo xtask <build-wasm|build-policies|test|demo|bench <edge|bridge|policies>>");
            Ok(())
        }
        other => bail!("unknown task {other:?}; run `cargo xtask help`"),
    }
}

fn build_wasm() -> Result<()> {
    let tc = toolchain::Wasm::prepare()?;
    edge::build(&tc)?;
    policies::build(&tc)?;
    Ok(())
}

/// Every test, as CI runs it.
fn test(extra: &[String]) -> Result<()> {
    build_wasm()?;
    policies::test()?;
    util::step("cargo test (workspace)");
    let mut args = vec!["test", "--workspace", "--release", "--no-fail-fast"];
    args.extend(extra.iter().map(String::as_str));
    util::cargo(&args)?;
    // The README's first command, run as a test: every scenario must meet its expectations.
    util::step("demo (every scenario end to end)");
    util::cargo(&[
        "run", "--release", "--package", "pulsara-bridge", "--bin", "pulsara", "--", "demo", "--out", "target/demo-ci",
    ])?;
    Ok(())
}

/// The main job. Needs only the policy modules (the edge runs as its native shell).
fn demo(extra: &[String]) -> Result<()> {
    policies::build(&toolchain::Wasm::prepare()?)?;
    util::step("demo");
    let mut args = vec!["run", "--release", "--package", "pulsara-bridge", "--bin", "pulsara", "--", "demo"];
    args.extend(extra.iter().map(String::as_str));
    util::cargo(&args)
}

fn bench(extra: &[String]) -> Result<()> {
    match extra.first().map(String::as_str) {
        Some("edge") => edge::bench(),
        Some("policies") => policies::bench(),
        Some("bridge") => {
            util::cargo(&["run", "--release", "--package", "pulsara-bridge", "--bin", "pulsara", "--", "bench"])
        }
        _ => bail!("usage: cargo xtask bench <edge|bridge|policies>"),
    }
}
