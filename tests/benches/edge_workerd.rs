//! The edge worker's cost in workerd (`wrangler dev`, local mode): N sequential signed voice
//! webhooks to an open restaurant with a warm KV cache, reporting wall time per request (through
//! wrangler's local proxy) and the CPU time the workerd processes spent per request, read from
//! `/proc/<pid>/stat` before and after. The CPU figure includes workerd's own HTTP handling and
//! the local KV emulation, so it is an upper bound of the Worker's billed CPU time.
//!
//! Run: `cargo xtask bench edge` (builds the worker first), or after `cargo xtask build-wasm`:
//! `cargo bench -p pulsara-tests --bench edge_workerd`. `EDGE_BENCH_REQUESTS` sets N (default 500).

#[path = "../tests/edge_workerd.rs"]
mod harness;

use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use harness::{at, Dashboard, Edge};

/// workerd processes in the process group `pgid`.
fn workerd_pids(pgid: u32) -> Vec<u32> {
    let out = Command::new("ps")
        .args(["-eo", "pid=,pgid=,comm="])
        .output()
        .expect("ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let pid = it.next()?.parse().ok()?;
            let group: u32 = it.next()?.parse().ok()?;
            (group == pgid && it.next()? == "workerd").then_some(pid)
        })
        .collect()
}

/// utime + stime of `pid`, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i)?.parse::<f64>().ok())
        .sum();
    let hz = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0);
    ticks / hz
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::var("EDGE_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let stub = Arc::new(Dashboard::load_restaurants());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dashboard_url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .fallback(harness::dashboard)
        .with_state(stub.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let edge = Edge::start(&dashboard_url).await;

    // Warm up: fill KV and let workerd compile the module.
    for i in 0..20 {
        let (_, body, _) = edge
            .call(
                &format!("CAwarm{i:028}"),
                "+390612345678",
                at::ROME_TUESDAY_LUNCH,
            )
            .await;
        assert!(body.contains("<Stream"), "{body}");
    }
    let fetches = stub.config_requests.load(Ordering::SeqCst);
    let pids = workerd_pids(edge.wrangler.id());
    assert!(!pids.is_empty(), "no workerd process found under wrangler");
    let cpu = || -> f64 { pids.iter().map(|&p| cpu_secs(p)).sum() };
    // Baseline: GET /healthz (routing + settings parse, no KV, no crypto) through the same path.
    let cpu_before = cpu();
    for _ in 0..n {
        let r = edge
            .http
            .get(format!("{}/healthz", edge.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let healthz_cpu = (cpu() - cpu_before) * 1e3 / n as f64;
    let cpu_before = cpu();
    let mut walls = Vec::with_capacity(n);
    for i in 0..n {
        let (status, _, took) = edge
            .call(
                &format!("CA{i:032}"),
                "+390612345678",
                at::ROME_TUESDAY_LUNCH,
            )
            .await;
        assert_eq!(status, 200);
        walls.push(took);
    }
    let voice_cpu = (cpu() - cpu_before) * 1e3 / n as f64;
    assert_eq!(
        stub.config_requests.load(Ordering::SeqCst),
        fetches,
        "warm cache: no dashboard requests expected"
    );
    walls.sort();
    let mean = walls.iter().sum::<Duration>() / n as u32;
    println!("edge in workerd (wrangler dev, local): {n} sequential signed voice webhooks, warm KV cache");
    println!(
        "  wall per request: mean {:.2} ms, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        mean.as_secs_f64() * 1e3,
        percentile(&walls, 0.5).as_secs_f64() * 1e3,
        percentile(&walls, 0.99).as_secs_f64() * 1e3,
        walls[n - 1].as_secs_f64() * 1e3
    );
    println!("  workerd CPU per request ({} workerd processes, includes wrangler's local proxy and KV emulation):", pids.len());
    println!("    voice webhook {voice_cpu:.3} ms, GET /healthz {healthz_cpu:.3} ms, difference (the voice path's own work) {:.3} ms", voice_cpu - healthz_cpu);
}
