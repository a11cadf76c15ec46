//! Memory held by Media Streams that upgrade and never send `start` (a harness that prints
//! numbers, not a test): 2,000 such streams against one in-process bridge, RSS before, at the
//! peak and after they are gone, once with the start backlog effectively unbounded (as before
//! `PULSARA_MAX_PENDING_START`) and once with the default cap.
//!
//! `cargo bench -p pulsara-bridge --bench idle_upgrades`
//!
//! The clients are raw sockets that write one upgrade request and read the 101, so they add
//! almost nothing to the process's RSS themselves.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pulsara_bridge::config::BridgeConfig;
use pulsara_bridge::ports::{CallSink, MemoryConfigSource, MemorySink, ToolContext, ToolError, ToolOutcome, ToolRunner};
use pulsara_emulators::twilio_rest;
use pulsara_emulators::scripted::{AgentScript, FakeAgent, };
use pulsara_bridge::App;
use pulsara_core::secret::Secret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const STREAMS: usize = 2_000;

struct NoTools;

#[async_trait::async_trait]
impl ToolRunner for NoTools {
    async fn run(&self, _: &ToolContext, tool: &str, _: serde_json::Value) -> Result<ToolOutcome, ToolError> {
        Err(ToolError::UnknownTool(tool.to_owned()))
    }
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

async fn bridge(max_pending_start: usize) -> (Arc<App>, std::net::SocketAddr) {
    let agent = FakeAgent::new("xi", AgentScript::default());
    let agent_base = agent.spawn().await.unwrap();
    let (_rest, rest_base) = twilio_rest::spawn_detached("AC0", "t").await.unwrap();
    let mut cfg = BridgeConfig {
        handoff_keys: Some(Secret::new("k1:handoff-bench-key-0123456789")),
        elevenlabs_api_key: Some(Secret::new("xi")),
        elevenlabs_base_url: agent_base,
        twilio_account_sid: "AC0".into(),
        twilio_auth_token: Some(Secret::new("t")),
        twilio_api_base: rest_base,
        ..Default::default()
    };
    cfg.limits.max_pending_start = max_pending_start;
    cfg.limits.start_timeout_ms = 60_000;
    cfg.validate().unwrap();
    let sink = Arc::new(MemorySink::new(10));
    let app = App::new(cfg, Arc::new(MemoryConfigSource::new()), Arc::new(NoTools), sink as Arc<dyn CallSink>).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(pulsara_bridge::run(listener, app.clone(), std::future::pending()));
    (app, addr)
}

/// Opens an upgrade and returns the socket when the bridge answered 101.
async fn upgrade(addr: std::net::SocketAddr) -> Option<TcpStream> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    let req = format!(
        "GET /media HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).await.ok()?;
    buf[..n].starts_with(b"HTTP/1.1 101").then_some(s)
}

async fn phase(label: &str, max_pending_start: usize) {
    let (app, addr) = bridge(max_pending_start).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kb();
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..STREAMS {
        match upgrade(addr).await {
            Some(s) => held.push(s),
            None => refused += 1,
        }
    }
    let t0 = Instant::now();
    while app.metrics.streams_pending_start.get() < held.len() as i64 && t0.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let peak = rss_kb();
    let accepted = held.len();
    drop(held);
    let t0 = Instant::now();
    while app.metrics.streams_pending_start.get() > 0 && t0.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kb();
    let per = (peak.saturating_sub(before) as f64) / accepted.max(1) as f64;
    println!(
        "{label:<28} accepted {accepted:>5}  refused {refused:>5}  RSS before {:>6.1} MB  peak {:>6.1} MB (+{:.1} MB, {per:.1} KB/stream)  after close {:>6.1} MB (+{:.1} MB kept)",
        before as f64 / 1024.0,
        peak as f64 / 1024.0,
        peak.saturating_sub(before) as f64 / 1024.0,
        after as f64 / 1024.0,
        after.saturating_sub(before) as f64 / 1024.0,
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let which = std::env::args().nth(1).unwrap_or_default();
    println!("{STREAMS} upgrades that never send start, one process, RSS from /proc/self/status");
    // Each phase in a fresh process gives the cleanest numbers; both in one shows the order too.
    if which != "capped" {
        phase("unbounded (cap 100000)", 100_000).await;
    }
    if which != "unbounded" {
        phase("default cap (256)", pulsara_bridge::config::Limits::default().max_pending_start).await;
    }
}
