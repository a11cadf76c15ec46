//! Building and benchmarking the edge worker.
//!
//! `build` runs worker-build (pinned) in `edge/`, which compiles `pulsara-edge` to
//! `wasm32-unknown-unknown` (in `target/wasm`, separate from native builds), runs wasm-bindgen,
//! wasm-opt and esbuild, and writes `edge/build/index.js` + `edge/build/index_bg.wasm`: the files
//! `wrangler.toml` points at. Size-oriented release settings are applied through
//! `CARGO_PROFILE_RELEASE_*` for this build only.
//!
//! `bench` runs the criterion benchmark of the edge core, then measures the worker in workerd
//! (`wrangler dev`): time per signed voice webhook and the worker's size raw and gzipped.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::toolchain::Wasm;
use crate::util;

/// The worker's entry module and its wasm, as produced by worker-build.
pub fn artefacts() -> (PathBuf, PathBuf) {
    let dir = util::root().join("edge").join("build");
    (dir.join("index.js"), dir.join("index_bg.wasm"))
}

/// Builds the worker into `edge/build/`.
///
/// # Errors
/// When worker-build fails or does not produce its artefacts.
pub fn build(tc: &Wasm) -> Result<()> {
    util::step("edge worker (worker-build → edge/build/)");
    let edge_dir = tc.root.join("edge");
    let mut cmd = Command::new(&tc.worker_build);
    tc.apply_env(&mut cmd);
    cmd.current_dir(&edge_dir)
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "s")
        .env("CARGO_PROFILE_RELEASE_LTO", "true")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
        .env("CARGO_PROFILE_RELEASE_PANIC", "abort")
        .arg("--release")
        .arg("--")
        .arg("--target-dir")
        .arg(tc.target_dir());
    util::run(&mut cmd).context("building the edge worker failed")?;
    let (js, wasm) = artefacts();
    if !js.exists() || !wasm.exists() {
        bail!("worker-build finished but {} / {} are missing", js.display(), wasm.display());
    }
    let size = std::fs::metadata(&wasm)?.len();
    eprintln!("    {} ({} KiB)", wasm.display(), size / 1024);
    Ok(())
}

/// `cargo xtask bench edge`.
pub fn bench() -> Result<()> {
    bail!("edge benchmark not implemented yet")
}
