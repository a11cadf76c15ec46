//! The edge as it runs on Cloudflare: `pulsara-edge` compiled to WebAssembly by
//! `cargo xtask build-wasm`, served by workerd through `wrangler dev` (local mode, loopback only,
//! telemetry off, a fresh local KV namespace and its own state directory).
//!
//! Used by `tests/tests/edge_workerd.rs` (against a dashboard stub), by
//! `tests/tests/scenarios_workerd.rs` (against `pulsara serve`) and by the edge benchmark. The
//! artefacts must be built first; [`WorkerdEdge::start`] fails (it does not skip) when they are
//! missing or older than their sources.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::{free_port, repo_root, ProcessGroup, TempDir};

/// A running `wrangler dev`, stopped (with workerd) when dropped.
pub struct WorkerdEdge {
    /// `http://127.0.0.1:PORT`, also the edge's `PUBLIC_BASE_URL`.
    pub base: String,
    pub http: reqwest::Client,
    pub wrangler: ProcessGroup,
    _dir: TempDir,
}

/// Fails (with the command to run) when the worker has not been built or is older than its
/// sources, so a test never silently exercises stale code.
pub fn check_artefacts(root: &Path) {
    let wasm = root.join("edge/build/index_bg.wasm");
    let js = root.join("edge/build/index.js");
    assert!(
        wasm.exists() && js.exists(),
        "the edge worker is not built ({} missing): run `cargo xtask build-wasm` first (`cargo xtask test` does it)",
        if js.exists() { wasm.display() } else { js.display() }
    );
    let built = std::fs::metadata(&wasm)
        .and_then(|m| m.modified())
        .expect("wasm mtime");
    for dir in ["edge/src", "core/src"] {
        for entry in std::fs::read_dir(root.join(dir)).expect("source dir") {
            let path = entry.unwrap().path();
            let changed = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .expect("source mtime");
            assert!(
                changed <= built,
                "{} changed after the worker was built: run `cargo xtask build-wasm` again",
                path.display()
            );
        }
    }
    assert!(
        root.join("node_modules/.bin/wrangler").exists(),
        "wrangler is not installed: run `cargo xtask build-wasm` (it runs `npm ci`)"
    );
}

impl WorkerdEdge {
    /// Starts `wrangler dev` on a free loopback port and waits for `/healthz`.
    ///
    /// `PUBLIC_BASE_URL` is set to the edge's own address; `vars` are the other non-secret
    /// settings (passed with `--var`, which wins over `[vars]` in `wrangler.toml`); `secrets` go
    /// only into the env file, as `wrangler secret put` would hold them.
    pub async fn start(vars: &[(&str, &str)], secrets: &[(&str, &str)]) -> WorkerdEdge {
        let root = repo_root();
        check_artefacts(&root);
        let dir = TempDir::new("pulsara-edge-workerd");
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let mut all_vars = vec![("PUBLIC_BASE_URL", base.as_str())];
        all_vars.extend_from_slice(vars);
        let env_file = dir.path().join("edge.env");
        let text: String = all_vars
            .iter()
            .chain(secrets)
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect();
        std::fs::write(&env_file, text).unwrap();
        let mut cmd = Command::new(root.join("node_modules/.bin/wrangler"));
        cmd.current_dir(&root)
            .arg("dev")
            .arg("--config")
            .arg(root.join("wrangler.toml"))
            .args(["--ip", "127.0.0.1", "--port", &port.to_string()])
            .args(["--inspector-port", &free_port().to_string()])
            .arg("--persist-to")
            .arg(dir.path().join("state"))
            .arg("--env-file")
            .arg(&env_file)
            .arg("--show-interactive-dev-session=false")
            .env("WRANGLER_SEND_METRICS", "false")
            .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
            .env("WRANGLER_LOG_PATH", dir.path().join("logs"))
            .env("CI", "1");
        for (k, v) in &all_vars {
            cmd.arg("--var").arg(format!("{k}:{v}"));
        }
        let log = dir.path().join("wrangler.log");
        let mut wrangler = ProcessGroup::spawn(cmd, &log).expect("start wrangler dev");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(r) = http.get(format!("{base}/healthz")).send().await {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                assert_eq!(
                    status,
                    200,
                    "edge /healthz: {body}\n--- wrangler ---\n{}",
                    wrangler.log_tail(40)
                );
                break;
            }
            assert!(
                !wrangler.exited(),
                "wrangler dev exited:\n{}",
                wrangler.log_tail(60)
            );
            assert!(
                Instant::now() < deadline,
                "wrangler dev not ready in 90 s:\n{}",
                wrangler.log_tail(60)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        WorkerdEdge {
            base,
            http,
            wrangler,
            _dir: dir,
        }
    }
}
