//! Building and benchmarking the edge worker.
//!
//! `build` runs worker-build (pinned) in `edge/`, which compiles `pulsara-edge` to
//! `wasm32-unknown-unknown` (in `target/wasm-edge`, separate from native builds), runs wasm-bindgen,
//! wasm-opt and esbuild, and writes `edge/build/index.js` + `edge/build/index_bg.wasm`: the files
//! `wrangler.toml` points at. Size-oriented release settings are applied through
//! `CARGO_PROFILE_RELEASE_*` for this build only.
//!
//! `bench` runs the criterion benchmark of the edge core, then measures the worker in workerd
//! (`wrangler dev`): time per signed voice webhook and the worker's size raw and gzipped.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::toolchain::Edge;
use crate::util;

/// The worker's entry module and its wasm, as produced by worker-build.
pub fn artefacts() -> (PathBuf, PathBuf) {
    let dir = util::root().join("edge").join("build");
    (dir.join("index.js"), dir.join("index_bg.wasm"))
}

/// The edge's own wasm target dir: its size-oriented profile differs from other wasm builds, and a
/// separate directory lets them build without waiting on each other's lock.
fn target_dir(tc: &Edge) -> PathBuf {
    tc.wasm.root.join("target").join("wasm-edge")
}

/// Builds the worker into `edge/build/`.
///
/// # Errors
/// When worker-build fails or does not produce its artefacts.
pub fn build(tc: &Edge) -> Result<()> {
    util::step("edge worker (worker-build → edge/build/)");
    let edge_dir = tc.wasm.root.join("edge");
    let mut cmd = tc.worker_build_command();
    cmd.current_dir(&edge_dir)
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "s")
        .env("CARGO_PROFILE_RELEASE_LTO", "true")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
        .env("CARGO_PROFILE_RELEASE_PANIC", "abort")
        .arg("--release")
        .arg("--")
        .arg("--target-dir")
        .arg(target_dir(tc));
    util::run(&mut cmd).context("building the edge worker failed")?;
    let (js, wasm) = artefacts();
    if !js.exists() || !wasm.exists() {
        bail!(
            "worker-build finished but {} / {} are missing",
            js.display(),
            wasm.display()
        );
    }
    let size = std::fs::metadata(&wasm)?.len();
    eprintln!("    {} ({} KiB)", wasm.display(), size / 1024);
    Ok(())
}

/// `cargo xtask bench edge`: builds the worker, prints its size (raw, gzip -9, and the bundle
/// `wrangler deploy --dry-run` would upload), runs the criterion benchmark of the core natively and
/// the workerd benchmark (`tests/benches/edge_workerd.rs`).
pub fn bench() -> Result<()> {
    let tc = Edge::prepare()?;
    build(&tc)?;
    let root = &tc.wasm.root;

    util::step("worker size");
    let (js, wasm) = artefacts();
    let raw = std::fs::metadata(&wasm)?.len() + std::fs::metadata(&js)?.len();
    let gz = gzip_len(&wasm)? + gzip_len(&js)?;
    eprintln!(
        "    edge/build (index.js + index_bg.wasm): {} KiB raw, {} KiB gzip -9",
        raw / 1024,
        gz / 1024
    );
    let outdir = root.join("target").join("edge-dry-run");
    let mut dry = Command::new(root.join("node_modules/.bin/wrangler"));
    dry.current_dir(root)
        .args(["deploy", "--dry-run", "--outdir"])
        .arg(&outdir)
        .env("WRANGLER_SEND_METRICS", "false")
        .env("CLOUDFLARE_CF_FETCH_ENABLED", "false");
    util::run(&mut dry).context("wrangler deploy --dry-run")?;

    util::step("criterion: edge core, natively");
    util::cargo(&["bench", "-p", "pulsara-edge", "--bench", "edge_core"])?;

    util::step("edge in workerd (wrangler dev): time and CPU per request");
    util::cargo(&["bench", "-p", "pulsara-tests", "--bench", "edge_workerd"])?;
    Ok(())
}

fn gzip_len(path: &std::path::Path) -> Result<u64> {
    let out = Command::new("gzip")
        .arg("-9")
        .arg("-c")
        .arg(path)
        .output()
        .context("gzip")?;
    if !out.status.success() {
        bail!("gzip failed on {}", path.display());
    }
    Ok(out.stdout.len() as u64)
}
