//! Every scenario in `scenarios/` end to end with the real Worker: the edge compiled to
//! WebAssembly in workerd (`wrangler dev`), `pulsara serve` (bridge + embedded dashboard, policy
//! modules fetched from the dashboard) and the emulators (`pulsara emulate elevenlabs`, which
//! plays each scenario's agent script, and `pulsara emulate twilio-rest`) as separate processes
//! on loopback, each call placed by `pulsara call --test-clock` and checked by it against the
//! scenario's `[expect]`, including the call record read back from the dashboard.
//!
//! Time: the edge decides opening hours at the scenario's `[call] at` (`X-Pulsara-Test-Now`);
//! `pulsara serve` starts its clock there (`PULSARA_TEST_NOW`), so one serve runs per distinct
//! instant, on the same ports, with a fresh dashboard database and outbox. Scenarios sharing an
//! instant are placed at the same time, as in `pulsara demo`.
//!
//! Needs the `pulsara` binary next to this test's directory (`cargo test --workspace --release`
//! builds it; alone: `cargo build --release -p pulsara-cli`), the edge worker and the policy
//! modules (`cargo xtask build-wasm`). Missing or stale pieces fail the test with the command to
//! run; nothing is skipped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use pulsara_emulators::scenario::Scenario;
use pulsara_tests::process::{free_port, repo_root, ProcessGroup, TempDir};
use pulsara_tests::workerd::WorkerdEdge;

const ACCOUNT_SID: &str = "ACscenarios00000000000000000000000";
const TWILIO_AUTH_TOKEN: &str = "scenarios-twilio-auth-token";
const ELEVENLABS_API_KEY: &str = "scenarios-elevenlabs-api-key";
const HANDOFF_KEYS: &str = "k1:scenarios-handoff-key-0123456789abcdef";
const EDGE_SIGNING_SECRET: &str = "scenarios-edge-signing-secret-0123456789";
const BRIDGE_SIGNING_SECRET: &str = "scenarios-bridge-signing-secret-0123456789";
const ADMIN_SIGNING_SECRET: &str = "scenarios-admin-signing-secret-0123456789";
const WEBHOOK_SECRET: &str = "whsec_c2NlbmFyaW9zLXdlYmhvb2stc2VjcmV0";
const ELEVENLABS_WEBHOOK_SECRET: &str = "scenarios-elevenlabs-webhook-secret";
/// Every region a restaurant in `restaurants/` may name, plus the default.
const REGIONS: [&str; 4] = ["default", "eu-west", "us-east", "ap-northeast"];

/// The sources the `pulsara` binary is built from; it must not be older than any of them.
const BINARY_SOURCES: [&str; 10] = [
    "bridge/src",
    "cli/src",
    "core/src",
    "dashboard/src",
    "edge/src",
    "emulators/src",
    "local/src",
    "media/src",
    "policies/abi/src",
    "policies/host/src",
];

fn newest_mtime(dir: &Path) -> Option<(SystemTime, PathBuf)> {
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let found = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .map(|t| (t, path))
        };
        if let Some(f) = found {
            if newest.as_ref().is_none_or(|n| f.0 > n.0) {
                newest = Some(f);
            }
        }
    }
    newest
}

/// `target/release/pulsara`: this test runs from `target/release/deps/`.
fn pulsara_binary(root: &Path) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join(format!("pulsara{}", std::env::consts::EXE_SUFFIX)))
        .expect("the test runs from <target>/<profile>/deps");
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build --release -p pulsara-cli` into the same target \
         directory (`cargo test --workspace --release` and `cargo xtask test` build it)",
        bin.display()
    );
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .expect("binary mtime");
    for dir in BINARY_SOURCES {
        if let Some((changed, path)) = newest_mtime(&root.join(dir)) {
            assert!(
                changed <= built,
                "{} changed after {} was built: run `cargo build --release -p pulsara-cli` again",
                path.display(),
                bin.display()
            );
        }
    }
    bin
}

/// A `pulsara` subcommand as a process group, with only the environment given here.
fn pulsara(
    bin: &Path,
    root: &Path,
    args: &[&str],
    env: &[(&str, String)],
    log: &Path,
) -> ProcessGroup {
    let mut cmd = Command::new(bin);
    cmd.current_dir(root)
        .args(args)
        .env_clear()
        .env("RUST_LOG", "info");
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    ProcessGroup::spawn(cmd, log)
        .unwrap_or_else(|e| panic!("starting {} {args:?}: {e}", bin.display()))
}

/// Waits until `url` answers 200, failing with the process's log if it exits or takes 60 s.
/// Waits until `pulsara serve`'s `/metrics` shows no agent sync pending.
async fn wait_agents_synced(http: &reqwest::Client, metrics_url: &str, serve: &mut ProcessGroup) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = match http.get(metrics_url).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let pending = text
            .lines()
            .find_map(|l| l.strip_prefix("pulsara_agent_sync_pending "))
            .and_then(|v| v.trim().parse::<f64>().ok());
        if pending == Some(0.0) {
            return;
        }
        assert!(!serve.exited(), "pulsara serve exited:\n{}", serve.log_tail(60));
        assert!(
            Instant::now() < deadline,
            "agent syncs still pending ({pending:?}):\n{}",
            serve.log_tail(60)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_ready(http: &reqwest::Client, url: &str, process: &mut ProcessGroup, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(url).send().await {
            if r.status() == 200 {
                return;
            }
        }
        assert!(
            !process.exited(),
            "{what} exited:\n{}",
            process.log_tail(60)
        );
        assert!(
            Instant::now() < deadline,
            "{what} not ready in 60 s ({url}):\n{}",
            process.log_tail(60)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The outcome of one `pulsara call`.
struct Played {
    scenario: String,
    passed: bool,
    output: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_through_the_edge_in_workerd() {
    let started = Instant::now();
    let root = repo_root();
    let bin = pulsara_binary(&root);
    assert!(
        root.join("target/policies/manifest.json").is_file(),
        "the policy modules are not built: run `cargo xtask build-wasm` first (`cargo xtask test` does it)"
    );
    // The same files `pulsara demo` plays (`Scenario::load_dir` rejects duplicate names).
    Scenario::load_dir(&root.join("scenarios")).expect("scenarios/");
    let mut scenarios: Vec<(PathBuf, Scenario)> = std::fs::read_dir(root.join("scenarios"))
        .expect("scenarios/")
        .map(|e| e.expect("scenarios/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| {
            let s = Scenario::load(&p).unwrap_or_else(|e| panic!("{e}"));
            (p, s)
        })
        .collect();
    scenarios.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!scenarios.is_empty(), "no scenarios in scenarios/");
    let mut waves: BTreeMap<String, Vec<&(PathBuf, Scenario)>> = BTreeMap::new();
    for entry in &scenarios {
        let s = &entry.1;
        let at = s
            .call
            .at
            .clone()
            .unwrap_or_else(|| panic!("{} has no `[call] at`", s.name));
        waves.entry(at).or_default().push(entry);
    }

    let dir = TempDir::new("pulsara-scenarios-workerd");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    // The outside world.
    let elevenlabs_addr = format!("127.0.0.1:{}", free_port());
    let mut elevenlabs = pulsara(
        &bin,
        &root,
        &[
            "emulate",
            "elevenlabs",
            "--listen",
            &elevenlabs_addr,
            "--scenarios",
            "scenarios",
        ],
        &[("ELEVENLABS_API_KEY", ELEVENLABS_API_KEY.into())],
        &dir.path().join("elevenlabs.log"),
    );
    let rest_addr = format!("127.0.0.1:{}", free_port());
    let mut rest = pulsara(
        &bin,
        &root,
        &["emulate", "twilio-rest", "--listen", &rest_addr],
        &[
            ("TWILIO_ACCOUNT_SID", ACCOUNT_SID.into()),
            ("TWILIO_AUTH_TOKEN", TWILIO_AUTH_TOKEN.into()),
        ],
        &dir.path().join("twilio-rest.log"),
    );
    let elevenlabs_url = format!("http://{elevenlabs_addr}");
    wait_ready(
        &http,
        &format!("{elevenlabs_url}/emulator/healthz"),
        &mut elevenlabs,
        "the ElevenLabs emulator",
    )
    .await;
    let rest_deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(&rest_addr).await.is_err() {
        assert!(
            !rest.exited(),
            "the Twilio REST emulator exited:\n{}",
            rest.log_tail(60)
        );
        assert!(
            Instant::now() < rest_deadline,
            "the Twilio REST emulator is not listening:\n{}",
            rest.log_tail(60)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // `pulsara serve` comes and goes per instant on these ports; the edge points at them.
    let bridge_addr = format!("127.0.0.1:{}", free_port());
    let dashboard_url = format!("http://127.0.0.1:{}", free_port());
    let bridge_urls: Vec<String> = REGIONS
        .iter()
        .map(|r| format!("{r}=wss://{bridge_addr}"))
        .collect();
    let bridge_urls = bridge_urls.join(",");
    // The Worker posts each open call's prepare to serve directly, without the TLS Twilio needs.
    let prepare_urls: Vec<String> = REGIONS
        .iter()
        .map(|r| format!("{r}=http://{bridge_addr}/prepare"))
        .collect();
    let prepare_urls = prepare_urls.join(",");
    let edge = WorkerdEdge::start(
        &[
            ("BRIDGE_URLS", &bridge_urls),
            ("BRIDGE_PREPARE_URLS", &prepare_urls),
            ("DEFAULT_REGION", "default"),
            ("DASHBOARD_URL", &dashboard_url),
            ("DASHBOARD_KEY_ID", "edge"),
            ("ALLOW_TEST_CLOCK", "1"),
        ],
        &[
            ("TWILIO_AUTH_TOKEN", TWILIO_AUTH_TOKEN),
            ("HANDOFF_KEYS", HANDOFF_KEYS),
            ("DASHBOARD_SIGNING_SECRET", EDGE_SIGNING_SECRET),
            ("DASHBOARD_WEBHOOK_SECRETS", WEBHOOK_SECRET),
            ("ELEVENLABS_WEBHOOK_SECRET", ELEVENLABS_WEBHOOK_SECRET),
        ],
    )
    .await;
    eprintln!(
        "edge in workerd at {} after {:.1} s",
        edge.base,
        started.elapsed().as_secs_f64()
    );

    let mut played = Vec::new();
    for (i, (at, wave)) in waves.iter().enumerate() {
        let state = dir.path().join(format!("instant-{i}"));
        std::fs::create_dir_all(&state).unwrap();
        let serve_env = [
            ("PULSARA_TEST_NOW", at.clone()),
            ("ALLOW_TEST_CLOCK", "1".into()),
            ("PULSARA_LISTEN", bridge_addr.clone()),
            ("PUBLIC_BASE_URL", format!("https://{bridge_addr}")),
            ("PULSARA_REQUIRE_TWILIO_SIGNATURE", "true".into()),
            ("HANDOFF_KEYS", HANDOFF_KEYS.into()),
            ("ELEVENLABS_API_KEY", ELEVENLABS_API_KEY.into()),
            ("ELEVENLABS_BASE_URL", elevenlabs_url.clone()),
            ("TWILIO_ACCOUNT_SID", ACCOUNT_SID.into()),
            ("TWILIO_AUTH_TOKEN", TWILIO_AUTH_TOKEN.into()),
            ("TWILIO_API_BASE", format!("http://{rest_addr}")),
            ("PULSARA_RESTAURANTS_DIR", root.join("restaurants").display().to_string()),
            ("PULSARA_DASHBOARD_LISTEN", dashboard_url.trim_start_matches("http://").to_owned()),
            ("PULSARA_DASHBOARD_DB", state.join("dashboard.sqlite").display().to_string()),
            (
                "PULSARA_DASHBOARD_SIGNING_KEYS",
                format!("edge:edge:{EDGE_SIGNING_SECRET},bridge:bridge:{BRIDGE_SIGNING_SECRET},admin:admin:{ADMIN_SIGNING_SECRET}"),
            ),
            ("DASHBOARD_KEY_ID", "bridge".into()),
            ("DASHBOARD_SIGNING_SECRET", BRIDGE_SIGNING_SECRET.into()),
            ("PULSARA_OUTBOX_PATH", state.join("outbox.sqlite").display().to_string()),
            ("PULSARA_POLICY_CACHE_DIR", state.join("policy-cache").display().to_string()),
            ("PULSARA_POLICY_RUNS_DIR", state.join("policy-runs").display().to_string()),
        ];
        let mut serve = pulsara(
            &bin,
            &root,
            &["serve"],
            &serve_env,
            &state.join("serve.log"),
        );
        wait_ready(
            &http,
            &format!("http://{bridge_addr}/readyz"),
            &mut serve,
            "pulsara serve",
        )
        .await;
        // As in production, calls reach agents a sync made: this fresh dashboard's seeded
        // restaurants get theirs from serve's agent sync job before the wave is placed.
        wait_agents_synced(&http, &format!("http://{bridge_addr}/metrics"), &mut serve).await;

        let names: Vec<&str> = wave.iter().map(|(_, s)| s.name.as_str()).collect();
        eprintln!(
            "── {at} ── {} ({:.1} s)",
            names.join(" + "),
            started.elapsed().as_secs_f64()
        );
        let calls = wave.iter().map(|(path, s)| {
            let mut cmd = tokio::process::Command::new(&bin);
            cmd.current_dir(&root)
                .env_clear()
                .env("RUST_LOG", "warn")
                .env("TWILIO_ACCOUNT_SID", ACCOUNT_SID)
                .env("TWILIO_AUTH_TOKEN", TWILIO_AUTH_TOKEN)
                .env("PULSARA_ADMIN_KEY_ID", "admin")
                .env("PULSARA_ADMIN_SIGNING_SECRET", ADMIN_SIGNING_SECRET)
                .arg("call")
                .arg("--scenario")
                .arg(path)
                .args(["--edge-url", &edge.base, "--test-clock"])
                .args([
                    "--dashboard-url",
                    &dashboard_url,
                    "--elevenlabs-url",
                    &elevenlabs_url,
                ])
                .stdin(Stdio::null())
                .kill_on_drop(true);
            let name = s.name.clone();
            async move {
                let out = tokio::time::timeout(Duration::from_secs(180), cmd.output()).await;
                match out {
                    Ok(Ok(out)) => Played {
                        scenario: name,
                        passed: out.status.success(),
                        output: format!(
                            "{}{}",
                            String::from_utf8_lossy(&out.stdout),
                            String::from_utf8_lossy(&out.stderr)
                        ),
                    },
                    Ok(Err(e)) => Played {
                        scenario: name,
                        passed: false,
                        output: format!("could not run pulsara call: {e}"),
                    },
                    Err(_) => Played {
                        scenario: name,
                        passed: false,
                        output: "pulsara call took over 180 s".into(),
                    },
                }
            }
        });
        let results = futures_join_all(calls).await;
        let failed = results.iter().any(|p| !p.passed);
        for p in &results {
            eprintln!("{}", p.output);
        }
        if failed {
            eprintln!("--- pulsara serve ({at}) ---\n{}", serve.log_tail(80));
        }
        // The Worker had serve prepare each streamed call's agent session after its TwiML
        // (waitUntil), and every stream adopted its own.
        let streamed = results.iter().filter(|p| p.output.contains("media stream to")).count();
        let metrics = http.get(format!("http://{bridge_addr}/metrics")).send().await.unwrap().text().await.unwrap();
        let claimed = pulsara_emulators::exposition::parse(&metrics).unwrap().value("pulsara_prepare_claimed_total", &[]);
        assert_eq!(claimed, Some(streamed as f64), "prepared sessions adopted in the {at} wave\n{}", serve.log_tail(40));
        played.extend(results);
        drop(serve);
        // The wave's tool calls left replayable run records where serve was told to keep them.
        let scripted_tools = wave.iter().any(|(_, s)| s.agent.turns.iter().any(|t| !t.tool_calls.is_empty()));
        let records = std::fs::read_dir(state.join("policy-runs")).map_or(0, |d| d.count());
        assert_eq!(records > 0, scripted_tools, "{records} policy run records for the {at} wave");
    }

    let names: Vec<&str> = played.iter().map(|p| p.scenario.as_str()).collect();
    assert_eq!(
        names.len(),
        scenarios.len(),
        "every scenario is played once: {names:?}"
    );
    let failed: Vec<&str> = played
        .iter()
        .filter(|p| !p.passed)
        .map(|p| p.scenario.as_str())
        .collect();
    assert!(
        failed.is_empty(),
        "scenarios missed their expectations: {failed:?} (reports above)\n--- ElevenLabs emulator ---\n{}\n--- wrangler ---\n{}",
        elevenlabs.log_tail(30),
        edge.wrangler.log_tail(30)
    );
    eprintln!(
        "{} scenarios passed in {:.1} s",
        played.len(),
        started.elapsed().as_secs_f64()
    );
}

/// Runs the futures concurrently and returns their outputs in order.
async fn futures_join_all<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output>
where
    F: Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("call task"));
    }
    out
}
