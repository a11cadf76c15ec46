//! Shared helpers for the dashboard's loopback tests: a pinned clock, signing keys, a fake policy
//! manifest for the example restaurants' `builtin:` tools, and an embedded dashboard seeded from
//! the repository's `restaurants/`.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use pulsara_core::secret::Secret;
use pulsara_dashboard::auth::SigningKeys;
use pulsara_dashboard::client::{ClientConfig, DashboardClient};
use pulsara_dashboard::embedded::{EmbeddedDashboard, EmbeddedOptions};
use pulsara_dashboard::seed::SeedOptions;
use pulsara_dashboard::Clock;

pub const EDGE_SECRET: &str = "edge-signing-secret-0123456789";
pub const BRIDGE_SECRET: &str = "bridge-signing-secret-0123456789";
pub const ADMIN_SECRET: &str = "admin-signing-secret-0123456789";

#[derive(Clone)]
pub struct TestClock(pub Arc<AtomicI64>);

impl TestClock {
    pub fn new() -> Self {
        Self(Arc::new(AtomicI64::new(chrono::Utc::now().timestamp())))
    }
    pub fn clock(&self) -> Clock {
        let a = self.0.clone();
        Arc::new(move || a.load(Ordering::SeqCst))
    }
    pub fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

pub fn signing_keys() -> SigningKeys {
    SigningKeys::parse(&Secret::new(format!(
        "edge1:edge:{EDGE_SECRET},bridge1:bridge:{BRIDGE_SECRET},admin1:admin:{ADMIN_SECRET}"
    )))
    .unwrap()
}

pub fn restaurants_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../restaurants")
}

/// Writes a stand-in module (valid wasm magic + the name) for every `builtin:` tool of the
/// example restaurants and a manifest describing them, as `cargo xtask build-wasm` would.
pub fn fake_manifest(dir: &Path) -> PathBuf {
    let mut names = BTreeSet::new();
    for e in std::fs::read_dir(restaurants_dir()).unwrap().flatten() {
        let Ok(raw) = std::fs::read_to_string(e.path().join("restaurant.json")) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
        for t in v["tools"].as_array().into_iter().flatten() {
            if let Some(n) = t["module_sha256"]
                .as_str()
                .and_then(pulsara_policy_abi::manifest::builtin_name)
            {
                names.insert(n.to_owned());
            }
        }
    }
    let mut modules = serde_json::Map::new();
    for n in names {
        let mut bytes = b"\0asm\x01\0\0\0".to_vec();
        bytes.extend_from_slice(n.as_bytes());
        std::fs::write(dir.join(format!("{n}.wasm")), &bytes).unwrap();
        modules.insert(n.clone(), serde_json::json!({"sha256": pulsara_core::crypto::sha256_hex(&bytes), "path": format!("{n}.wasm"),
            "tool": {"description": format!("The {n} tool."), "parameters": {"type": "object", "properties": {}}}}));
    }
    let path = dir.join("manifest.json");
    std::fs::write(
        &path,
        serde_json::to_vec(&serde_json::json!({ "modules": modules })).unwrap(),
    )
    .unwrap();
    path
}

pub struct Dash {
    pub dash: EmbeddedDashboard,
    pub dir: tempfile::TempDir,
    pub clock: TestClock,
}

impl Dash {
    pub fn url(&self) -> String {
        self.dash.url()
    }
    pub fn client(&self, kid: &str, secret: &str) -> DashboardClient {
        client(&self.url(), kid, secret, &self.clock)
    }
}

pub fn client(url: &str, kid: &str, secret: &str, clock: &TestClock) -> DashboardClient {
    DashboardClient::new(
        ClientConfig::new(url).signing_key(kid, Secret::new(secret)),
        clock.clock(),
    )
    .unwrap()
}

/// Starts an embedded dashboard on a fresh loopback port, seeded from `restaurants/`.
pub async fn start_dashboard() -> Dash {
    start_dashboard_on(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        None,
    )
    .await
}

pub async fn start_dashboard_on(listener: tokio::net::TcpListener, db: Option<PathBuf>) -> Dash {
    let dir = tempfile::tempdir().unwrap();
    let manifest = fake_manifest(dir.path());
    let clock = TestClock::new();
    let dash = EmbeddedDashboard::start(
        listener,
        EmbeddedOptions {
            db_path: Some(db.unwrap_or_else(|| dir.path().join("dashboard.db"))),
            restaurants_dir: Some(restaurants_dir()),
            seed: SeedOptions {
                manifest: Some(manifest),
                strict: true,
            },
            signing_keys: signing_keys(),
        },
        clock.clock(),
    )
    .await
    .unwrap();
    Dash { dash, dir, clock }
}

/// Polls `f` every 20 ms until it returns true or `secs` pass.
pub async fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    while tokio::time::Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    f()
}

pub fn record(
    call_sid: &str,
    restaurant_id: &str,
    caller_says: &str,
) -> pulsara_core::call_record::CallRecord {
    use pulsara_core::call_record::{CallRecord, Role, TranscriptLine};
    CallRecord {
        call_sid: call_sid.into(),
        restaurant_id: restaurant_id.into(),
        caller: "+15550001111".into(),
        started_at: "2026-11-28T18:00:00Z".into(),
        ended_at: "2026-11-28T18:01:00Z".into(),
        duration_ms: 60_000,
        transcript: vec![
            TranscriptLine {
                role: Role::Agent,
                text: "Hello!".into(),
                at_ms: 0,
                heard: true,
                cut: false,
                full_text: None,
            },
            TranscriptLine {
                role: Role::Caller,
                text: caller_says.into(),
                at_ms: 1500,
                heard: true,
                cut: false,
                full_text: None,
            },
        ],
        ..Default::default()
    }
}
