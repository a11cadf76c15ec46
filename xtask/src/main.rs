//! `cargo xtask <task>`: the one entry point for builds that are more than `cargo build`.
//!
//! - `build-wasm`: the edge worker (`edge/build/`) and the policy modules (`target/policies/`).
//! - `build-policies`: the policy modules only; needs only the wasm compiler, not the edge tools.
//! - `test`: everything CI runs: builds the wasm artefacts, then every Rust test including the
//!   integration tests that run the worker in workerd, then the demo.
//! - `demo`: the main job, every scenario call through a whole local stack in one process.
//! - `bench <edge|bridge|policies|soak>`: the benchmarks behind BENCHMARKS.md (`soak`: 1,000 calls for 10 minutes, RSS/FD samples and plot in `benchmarks/`).
//!
//! Modules: [`util`] (process helpers), [`toolchain`] (wasm compiler; the edge's pinned tools and npm),
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
        "build-policies" => policies::build(&toolchain::Wasm::compiler()?),
        "test" => test(rest),
        "demo" => demo(rest),
        "bench" => bench(rest),
        "help" | "--help" | "-h" => {
            println!("usage: cargo xtask <build-wasm|build-policies|test|demo|bench <edge|bridge|policies|soak>>");
            Ok(())
        }
        other => bail!("unknown task {other:?}; run `cargo xtask help`"),
    }
}

fn build_wasm() -> Result<()> {
    let tc = toolchain::Edge::prepare()?;
    edge::build(&tc)?;
    policies::build(&tc.wasm)?;
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
    let demo_args = ["demo", "--out", "target/demo-ci"];
    // `cargo test --workspace` has just built the binary; `cargo run -p pulsara-cli` would
    // build it again, because its dependencies' features differ without the other members.
    let built = util::native_target_dir().join("release").join("pulsara");
    if built.is_file() {
        eprintln!("    {}", built.display());
        util::run(std::process::Command::new(&built).args(demo_args).current_dir(util::root()))?;
    } else {
        let mut args = vec!["run", "--release", "--package", "pulsara-cli", "--bin", "pulsara", "--"];
        args.extend(demo_args);
        util::cargo(&args)?;
    }
    Ok(())
}

/// The main job. Needs only the policy modules (the edge runs as its native shell), so only the
/// wasm compiler, not the edge tools.
fn demo(extra: &[String]) -> Result<()> {
    policies::build(&toolchain::Wasm::compiler()?)?;
    util::step("demo");
    let mut args = vec!["run", "--release", "--package", "pulsara-cli", "--bin", "pulsara", "--", "demo"];
    args.extend(extra.iter().map(String::as_str));
    util::cargo(&args)
}

fn bench(extra: &[String]) -> Result<()> {
    match extra.first().map(String::as_str) {
        Some("edge") => edge::bench(),
        Some("policies") => policies::bench(),
        Some("bridge") => {
            util::cargo(&["run", "--release", "--package", "pulsara-cli", "--bin", "pulsara", "--", "bench"])
        }
        Some("latency") => {
            // The stack's restaurants use the built-in policies.
            policies::build(&toolchain::Wasm::compiler()?)?;
            let mut args = vec!["run", "--release", "--package", "pulsara-cli", "--bin", "pulsara", "--", "bench", "--latency", "--calls", "200"];
            args.extend(extra[1..].iter().map(String::as_str));
            util::cargo(&args)
        }
        Some("soak") => {
            // The soak's restaurants use the built-in answer_question policy.
            policies::build(&toolchain::Wasm::compiler()?)?;
            std::fs::create_dir_all("benchmarks")?;
            let mut args = vec![
                "run", "--release", "--package", "pulsara-cli", "--bin", "pulsara", "--", "bench", "--soak",
                "--calls", "1000", "--seconds", "600", "--ramp", "30",
                "--samples", "benchmarks/soak.csv", "--plot", "benchmarks/soak.svg",
            ];
            args.extend(extra[1..].iter().map(String::as_str));
            util::cargo(&args)
        }
        _ => bail!("usage: cargo xtask bench <edge|bridge|policies|latency|soak>"),
    }
}
