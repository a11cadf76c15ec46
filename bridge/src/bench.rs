//! Load harness behind `pulsara bench` (and `cargo xtask bench bridge`).
//!
//! The bridge runs as a child process (`pulsara serve`), so its CPU time and RSS are measured on
//! their own; this process plays the outside world on loopback: a fake agent that echoes every
//! caller chunk back as agent audio (so both directions carry a frame every 20 ms per call), a
//! Twilio REST recorder, and N callers sending 20 ms μ-law frames at real-time cadence.
//!
//! Reported: added latency per frame per direction inside the bridge (its own histograms,
//! scraped from `/metrics`: time from reading a frame to having written it to the other side),
//! the caller-observed round trip (caller → bridge → agent → bridge → caller), dropped frames,
//! bridge CPU % (of one core) and RSS per call (steady-state RSS minus idle RSS, divided by N).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use pulsara_core::handoff::{HandoffClaims, HandoffKeys};
use pulsara_core::secret::Secret;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::testkit::{AgentScript, FakeAgent, FakeRest};

/// Bench options.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Concurrent calls.
    #[arg(long, default_value_t = 500)]
    pub calls: usize,
    /// Steady-state measurement window, seconds (after all calls are up).
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Spread call set-up over this many seconds.
    #[arg(long, default_value_t = 5)]
    pub ramp: u64,
    /// Use a PCM 16 kHz agent (transcoding path) instead of μ-law pass-through.
    #[arg(long)]
    pub pcm: bool,
    /// The `pulsara` binary to run as the bridge (default: this executable).
    #[arg(long)]
    pub bridge_bin: Option<PathBuf>,
}

const KEYS: &str = "bench:bench-handoff-key-0123456789";
const API_KEY: &str = "xi-bench";
const SID: &str = "ACbench";
const TOKEN: &str = "bench-token";
const DASHBOARD_SECRET: &str = "bench-dashboard-signing-secret-0123456789";

#[derive(Default)]
struct CallerStats {
    sent: AtomicU64,
    received: AtomicU64,
    connected: AtomicU64,
    failed: AtomicU64,
    rtt_us: std::sync::Mutex<Vec<u32>>,
}

/// A loopback port nothing listens on right now.
fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// Runs the bench and returns a printable report.
///
/// # Errors
/// Set-up failures (ports, child process, readiness), as text.
pub async fn run(args: BenchArgs) -> Result<String, String> {
    let n = args.calls.max(1);
    let script = AgentScript {
        input_format: if args.pcm { "pcm_16000" } else { "ulaw_8000" }.into(),
        output_format: if args.pcm { "pcm_16000" } else { "ulaw_8000" }.into(),
        echo: true,
        record_payloads: false,
        ..Default::default()
    };
    let agent = FakeAgent::new(API_KEY, script);
    let agent_base = agent.spawn().await.map_err(|e| e.to_string())?;
    let rest = FakeRest::new(SID, TOKEN);
    let rest_base = rest.spawn().await.map_err(|e| e.to_string())?;

    // A restaurant for the bench, with a cap above N.
    let dir = std::env::temp_dir().join(format!("pulsara-bench-{}", std::process::id()));
    let rdir = dir.join("restaurants/bench-bistro");
    std::fs::create_dir_all(&rdir).map_err(|e| e.to_string())?;
    let cfg = json!({
        "id": "bench-bistro", "version": 1, "name": "Bench Bistro", "phone_numbers": ["+15550000000"],
        "time_zone": "UTC", "hours": {"weekly": []},
        "after_hours": {"mode": "message", "message": "Closed"},
        "staff_number": "+15550000001",
        "agent": {"elevenlabs_agent_id": "agent_bench", "prompt_template": "You are {{restaurant_name}}.", "first_message": "Hi"},
        "max_concurrent_calls": n + 10
    });
    std::fs::write(rdir.join("restaurant.json"), cfg.to_string()).map_err(|e| e.to_string())?;
    std::fs::write(
        rdir.join("knowledge_base.json"),
        r#"{"restaurant_id":"bench-bistro","version":1}"#,
    )
    .map_err(|e| e.to_string())?;

    let port = free_port()?;
    let bin = match &args.bridge_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe().map_err(|e| e.to_string())?,
    };
    let dashboard_port = free_port()?;
    let mut child = tokio::process::Command::new(bin)
        .arg("serve")
        .env("PULSARA_LISTEN", format!("127.0.0.1:{port}"))
        // Its own embedded dashboard, outbox and policy state, all in the bench's directory.
        .env("PULSARA_DASHBOARD_LISTEN", format!("127.0.0.1:{dashboard_port}"))
        .env("PULSARA_DASHBOARD_DB", dir.join("dashboard.sqlite"))
        .env("PULSARA_DASHBOARD_SIGNING_KEYS", format!("bench-bridge:bridge:{DASHBOARD_SECRET}"))
        .env("DASHBOARD_KEY_ID", "bench-bridge")
        .env("DASHBOARD_SIGNING_SECRET", DASHBOARD_SECRET)
        .env("PULSARA_OUTBOX_PATH", dir.join("outbox.sqlite"))
        .env("PULSARA_POLICY_CACHE_DIR", dir.join("policy-cache"))
        .env("PULSARA_POLICY_RUNS_DIR", dir.join("policy-runs"))
        .env("HANDOFF_KEYS", KEYS)
        .env("ELEVENLABS_API_KEY", API_KEY)
        .env("ELEVENLABS_BASE_URL", &agent_base)
        .env("TWILIO_ACCOUNT_SID", SID)
        .env("TWILIO_AUTH_TOKEN", TOKEN)
        .env("TWILIO_API_BASE", &rest_base)
        .env("PULSARA_RESTAURANTS_DIR", dir.join("restaurants"))
        .env("PULSARA_CALL_RECORDS", dir.join("records.jsonl"))
        .env("PULSARA_MAX_CALLS", (n + 10).to_string())
        .env("PULSARA_SHUTDOWN_GRACE_MS", "2000")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting the bridge: {e}"))?;
    let pid = child.id().ok_or("bridge exited at once")?;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..100 {
        if http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !ready {
        return Err("bridge did not become ready".into());
    }
    let idle_rss = rss_kb(pid).unwrap_or(0);

    let keys = HandoffKeys::parse(&Secret::new(KEYS)).map_err(|e| e.to_string())?;
    let stats = Arc::new(CallerStats::default());
    let stop = tokio_util::sync::CancellationToken::new();
    let ws_url = format!("ws://127.0.0.1:{port}/media");
    let ramp = Duration::from_secs(args.ramp).max(Duration::from_millis(1));
    let t_start = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let at = t_start + ramp.mul_f64(i as f64 / n as f64);
        let sid = format!("CA{i:08}");
        let now = chrono::Utc::now().timestamp() + ramp.as_secs() as i64 * (i as i64) / n as i64;
        let token = keys
            .issue(&HandoffClaims {
                call_sid: sid.clone(),
                restaurant_id: "bench-bistro".into(),
                config_version: 1,
                region: String::new(),
                iat: now,
                exp: now + 60,
            })
            .map_err(|e| e.to_string())?;
        let (url, stats, stop) = (ws_url.clone(), stats.clone(), stop.clone());
        handles.push(tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            bench_caller(url, sid, token, stats, stop).await
        }));
    }
    tokio::time::sleep_until((t_start + ramp + Duration::from_secs(1)).into()).await;
    let connected = stats.connected.load(Ordering::SeqCst);
    // Steady state: measure CPU over the window; reset caller-side counters at its start.
    let cpu0 = cpu_ticks(pid).unwrap_or(0);
    let sent0 = stats.sent.load(Ordering::SeqCst);
    let recv0 = stats.received.load(Ordering::SeqCst);
    stats
        .rtt_us
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
    let w0 = Instant::now();
    let mut rss_peak = 0;
    while w0.elapsed() < Duration::from_secs(args.seconds) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss_peak = rss_peak.max(rss_kb(pid).unwrap_or(0));
    }
    let wall = w0.elapsed().as_secs_f64();
    let cpu1 = cpu_ticks(pid).unwrap_or(0);
    let sent = stats.sent.load(Ordering::SeqCst) - sent0;
    let recv = stats.received.load(Ordering::SeqCst) - recv0;
    let metrics_text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    stop.cancel();
    for h in handles {
        let _ = h.await;
    }
    // SIGTERM-equivalent: let the child drain.
    let _ = child.start_kill();
    let _ = child.wait().await;
    let _ = std::fs::remove_dir_all(&dir);

    let ticks_per_s = 100.0;
    let cpu_pct = (cpu1.saturating_sub(cpu0)) as f64 / ticks_per_s / wall * 100.0;
    let mut rtt = std::mem::take(&mut *stats.rtt_us.lock().unwrap_or_else(|e| e.into_inner()));
    rtt.sort_unstable();
    let q = |v: &[u32], p: f64| {
        v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let hist = parse_histograms(&metrics_text);
    let dropped_metric = metric_value(&metrics_text, "pulsara_dropped_frames_total").unwrap_or(0.0);
    let mut o = String::new();
    let mode = if args.pcm {
        "pcm_16000 (transcoding)"
    } else {
        "ulaw_8000 (pass-through)"
    };
    let _ = writeln!(
        o,
        "bridge bench: {n} calls requested, {connected} connected, {} failed; agent {mode}",
        stats.failed.load(Ordering::SeqCst)
    );
    let _ = writeln!(
        o,
        "window: {wall:.1} s steady state, frames every 20 ms each way per call"
    );
    for dir in ["to_agent", "to_caller"] {
        if let Some(h) = hist.get(dir) {
            let _ = writeln!(
                o,
                "added latency {dir:9}: p50 ≤ {} µs, p99 ≤ {} µs, max bucket ≤ {} ({} frames)",
                h.quantile(0.50),
                h.quantile(0.99),
                h.max_bucket(),
                h.count
            );
        }
    }
    let _ = writeln!(
        o,
        "caller round trip (bridge twice + agent echo + loopback): p50 {} µs, p99 {} µs, max {} µs ({} samples)",
        q(&rtt, 0.5), q(&rtt, 0.99), rtt.last().copied().unwrap_or(0), rtt.len()
    );
    let lost = sent.saturating_sub(recv);
    let _ = writeln!(o, "frames in window: sent {sent}, echoed back {recv}, missing {lost} ({:.3} %); bridge dropped_frames_total {dropped_metric}", if sent > 0 { lost as f64 * 100.0 / sent as f64 } else { 0.0 });
    let _ = writeln!(
        o,
        "bridge CPU: {cpu_pct:.1} % of one core ({:.2} ms CPU per call-second)",
        if connected > 0 {
            cpu_pct * 10.0 / connected as f64
        } else {
            0.0
        }
    );
    let per_call = if connected > 0 {
        (rss_peak.saturating_sub(idle_rss)) as f64 / connected as f64
    } else {
        0.0
    };
    let _ = writeln!(
        o,
        "bridge RSS: idle {idle_rss} KB, peak {rss_peak} KB, {per_call:.1} KB per call"
    );
    Ok(o)
}

async fn bench_caller(
    url: String,
    sid: String,
    token: String,
    stats: Arc<CallerStats>,
    stop: tokio_util::sync::CancellationToken,
) {
    let Ok((ws, _)) = tokio_tungstenite::connect_async_with_config(url.as_str(), None, true).await
    else {
        stats.failed.fetch_add(1, Ordering::SeqCst);
        return;
    };
    let (mut tx, mut rx) = ws.split();
    let mut params = BTreeMap::new();
    params.insert("handoff", token);
    params.insert("caller", format!("+1555{}", &sid[2..]));
    let stream_sid = format!("MZ{}", &sid[2..]);
    let start = json!({"event":"start","sequenceNumber":"1","streamSid":stream_sid,"start":{
        "accountSid":"AC0","streamSid":stream_sid,"callSid":sid,"tracks":["inbound"],
        "customParameters":params,"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}});
    if tx.send(Message::text(start.to_string())).await.is_err() {
        stats.failed.fetch_add(1, Ordering::SeqCst);
        return;
    }
    stats.connected.fetch_add(1, Ordering::SeqCst);
    // Each frame's bytes are its sequence number mod 256, so an echo identifies its frame.
    let payloads: Vec<String> = (0..=255u8).map(|b| B64.encode([b; 160])).collect();
    let mut sent_at = [None::<Instant>; 256];
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut seq: u64 = 1;
    let mut local_rtt = Vec::with_capacity(64);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {
                seq += 1;
                let b = (seq % 256) as usize;
                let frame = format!(
                    r#"{{"event":"media","sequenceNumber":"{seq}","streamSid":"{stream_sid}","media":{{"track":"inbound","chunk":"{seq}","timestamp":"{}","payload":"{}"}}}}"#,
                    seq * 20, payloads[b]
                );
                sent_at[b] = Some(Instant::now());
                if tx.send(Message::text(frame)).await.is_err() { break; }
                stats.sent.fetch_add(1, Ordering::Relaxed);
            }
            msg = rx.next() => {
                let Some(Ok(Message::Text(t))) = msg else {
                    if matches!(msg, None | Some(Err(_)) | Some(Ok(Message::Close(_)))) { break; }
                    continue;
                };
                if let Ok(pulsara_media::twilio::Outbound::Media { payload_b64, .. }) = pulsara_media::twilio::parse_outbound(&t) {
                    stats.received.fetch_add(1, Ordering::Relaxed);
                    if let Some(first) = B64.decode(payload_b64.get(..4).unwrap_or("")).ok().and_then(|b| b.first().copied()) {
                        if let Some(at) = sent_at[first as usize].take() {
                            local_rtt.push(at.elapsed().as_micros().min(u32::MAX as u128) as u32);
                            if local_rtt.len() >= 64 {
                                stats.rtt_us.lock().unwrap_or_else(|e| e.into_inner()).extend(local_rtt.drain(..));
                            }
                        }
                    }
                }
            }
        }
    }
    stats
        .rtt_us
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(local_rtt);
    let stop_msg = json!({"event":"stop","streamSid":stream_sid,"sequenceNumber":(seq + 1).to_string(),"stop":{"accountSid":"AC0","callSid":sid}});
    let _ = tx.send(Message::text(stop_msg.to_string())).await;
    let _ = tx.close().await;
}

struct Hist {
    buckets: Vec<(f64, u64)>,
    count: u64,
}

impl Hist {
    fn quantile(&self, q: f64) -> String {
        let target = (self.count as f64 * q).ceil() as u64;
        for (le, cum) in &self.buckets {
            if *cum >= target {
                return fmt_us(*le);
            }
        }
        "inf".into()
    }
    fn max_bucket(&self) -> String {
        let mut prev = 0;
        let mut last = 0.0;
        for (le, cum) in &self.buckets {
            if *cum > prev {
                last = *le;
            }
            prev = *cum;
        }
        fmt_us(last)
    }
}

fn fmt_us(le: f64) -> String {
    if le.is_infinite() {
        "inf".into()
    } else {
        format!("{}", (le * 1e6).round() as u64)
    }
}

fn parse_histograms(text: &str) -> BTreeMap<String, Hist> {
    let mut out: BTreeMap<String, Hist> = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("pulsara_added_latency_seconds_bucket{dir=\"") else {
            continue;
        };
        let Some((dir, rest)) = rest.split_once("\",le=\"") else {
            continue;
        };
        let Some((le, cum)) = rest.split_once("\"} ") else {
            continue;
        };
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::INFINITY)
        };
        let cum: u64 = cum.trim().parse().unwrap_or(0);
        let h = out.entry(dir.to_owned()).or_insert(Hist {
            buckets: Vec::new(),
            count: 0,
        });
        h.buckets.push((le, cum));
        h.count = h.count.max(cum);
    }
    out
}

fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| {
        l.strip_prefix("VmRSS:")?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    })
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) of stat; index 11 and 12 after the command name.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}
