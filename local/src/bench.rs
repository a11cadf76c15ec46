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

use pulsara_emulators::exposition;
use pulsara_emulators::scripted::{AgentAction, AgentScript, FakeAgent};
use pulsara_emulators::twilio_rest::{self, RestConfig, RunningRest};

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
    /// Soak instead: keep `calls` calls up for `seconds`, each lasting about `call_seconds` and
    /// then replaced by a new one, with scripted tool calls; sample the bridge's RSS and open
    /// file descriptors every second.
    #[arg(long)]
    pub soak: bool,
    /// Soak: length of each call, seconds (the actual length varies by ±25 %).
    #[arg(long, default_value_t = 60)]
    pub call_seconds: u64,
    /// Soak: where to write the per-second samples (CSV).
    #[arg(long)]
    pub samples: Option<PathBuf>,
    /// Soak: where to write the RSS/FD plot (SVG).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Soak: restaurants the calls are spread over (each with its own outbox lane, as in
    /// production, where one restaurant has a handful of lines).
    #[arg(long, default_value_t = 50)]
    pub restaurants: usize,
    /// Soak: the restaurant directory whose `knowledge_base.json` the soak restaurants reuse.
    #[arg(long, default_value = "restaurants/sakura-sushi")]
    pub knowledge_base_from: PathBuf,
    /// Latency instead: `calls` calls through the whole local stack with realistic vendor
    /// delays, sequential then prepared, `latency_concurrency` at a time
    /// ([`crate::latency_bench`]).
    #[arg(long)]
    pub latency: bool,
    #[arg(long, default_value_t = 8)]
    pub latency_concurrency: usize,
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
    if args.latency {
        return crate::latency_bench::run(args.calls, args.latency_concurrency, "target/policies".into(), "restaurants".into()).await;
    }
    if args.soak {
        return soak(args).await;
    }
    let n = args.calls.max(1);
    let script = AgentScript {
        input_format: if args.pcm { "pcm_16000" } else { "ulaw_8000" }.into(),
        output_format: if args.pcm { "pcm_16000" } else { "ulaw_8000" }.into(),
        echo: true,
        record_payloads: false,
        ..Default::default()
    };
    let kb = json!({"version": 1});
    let Rig { mut child, pid, base, ws_url, dir, keys, http, idle_rss, .. } =
        Rig::start(&args, script, 1, Vec::new(), kb).await?;

    let stats = Arc::new(CallerStats::default());
    let stop = tokio_util::sync::CancellationToken::new();
    let ramp = Duration::from_secs(args.ramp).max(Duration::from_millis(1));
    let t_start = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let at = t_start + ramp.mul_f64(i as f64 / n as f64);
        let sid = format!("CA{i:08}");
        let now = chrono::Utc::now().timestamp() + ramp.as_secs() as i64 * (i as i64) / n as i64;
        let token = handoff(&keys, &sid, &bench_restaurant(0), now)?;
        let (url, stats, stop) = (ws_url.clone(), stats.clone(), stop.clone());
        handles.push(tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            bench_caller(url, sid, token, stats, stop, None).await
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

/// The bridge under test (a child `pulsara serve` with its own embedded dashboard and outbox) and
/// the outside world it talks to (a fake agent and a Twilio REST recorder), on loopback.
struct Rig {
    child: tokio::process::Child,
    pid: u32,
    base: String,
    ws_url: String,
    dir: PathBuf,
    keys: HandoffKeys,
    http: reqwest::Client,
    agent: Arc<FakeAgent>,
    /// Held so the REST recorder lives as long as the rig.
    _rest: RunningRest,
    idle_rss: u64,
}

impl Rig {
    /// Starts the fake agent, the REST recorder and the bridge, with `restaurants` restaurants
    /// ([`bench_restaurant`], each capped above its share of `args.calls`) offering `tools`;
    /// waits until it is ready.
    async fn start(
        args: &BenchArgs,
        script: AgentScript,
        restaurants: usize,
        tools: Vec<serde_json::Value>,
        mut knowledge_base: serde_json::Value,
    ) -> Result<Rig, String> {
        let n = args.calls.max(1);
        let agent = FakeAgent::new(API_KEY, script);
        let agent_base = agent.spawn().await.map_err(|e| e.to_string())?;
        let rest = twilio_rest::spawn(RestConfig { account_sid: SID.into(), auth_token: TOKEN.into() })
            .await
            .map_err(|e| e.to_string())?;
        let rest_base = rest.base_url();

        let dir = std::env::temp_dir().join(format!("pulsara-bench-{}", std::process::id()));
        let restaurants = restaurants.max(1);
        for r in 0..restaurants {
            let id = bench_restaurant(r);
            let rdir = dir.join("restaurants").join(&id);
            std::fs::create_dir_all(&rdir).map_err(|e| e.to_string())?;
            let cfg = json!({
                "id": id, "version": 1, "name": format!("Bench Bistro {r}"),
                "phone_numbers": [format!("+1555{:07}", r)],
                "time_zone": "UTC", "hours": {"weekly": []},
                "after_hours": {"mode": "message", "message": "Closed"},
                "staff_number": "+15559999999",
                "agent": {"elevenlabs_agent_id": "agent_bench", "prompt_template": "You are {{restaurant_name}}.", "first_message": "Hi"},
                "tools": tools,
                "max_concurrent_calls": n / restaurants + 10
            });
            knowledge_base["restaurant_id"] = json!(id);
            std::fs::write(rdir.join("restaurant.json"), cfg.to_string()).map_err(|e| e.to_string())?;
            std::fs::write(rdir.join("knowledge_base.json"), knowledge_base.to_string())
                .map_err(|e| e.to_string())?;
        }

        let port = free_port()?;
        let bin = match &args.bridge_bin {
            Some(b) => b.clone(),
            None => std::env::current_exe().map_err(|e| e.to_string())?,
        };
        let dashboard_port = free_port()?;
        let child = tokio::process::Command::new(bin)
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
        Ok(Rig {
            child,
            pid,
            ws_url: format!("ws://127.0.0.1:{port}/media"),
            base,
            dir,
            keys: HandoffKeys::parse(&Secret::new(KEYS)).map_err(|e| e.to_string())?,
            http,
            agent,
            _rest: rest,
            idle_rss: rss_kb(pid).unwrap_or(0),
        })
    }
}

/// The id of the bench's `r`-th restaurant.
fn bench_restaurant(r: usize) -> String {
    if r == 0 {
        "bench-bistro".into()
    } else {
        format!("bench-bistro-{r}")
    }
}

/// A 60-second handoff token for one bench call to `restaurant`, issued at `iat`.
fn handoff(keys: &HandoffKeys, call_sid: &str, restaurant: &str, iat: i64) -> Result<String, String> {
    keys.issue(&HandoffClaims {
        call_sid: call_sid.to_owned(),
        restaurant_id: restaurant.to_owned(),
        config_version: 1,
        region: String::new(),
        iat,
        exp: iat + 60,
    })
    .map_err(|e| e.to_string())
}

async fn bench_caller(
    url: String,
    sid: String,
    token: String,
    stats: Arc<CallerStats>,
    stop: tokio_util::sync::CancellationToken,
    hang_up_at: Option<Instant>,
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
            _ = async { tokio::time::sleep_until(hang_up_at.expect("guarded").into()).await }, if hang_up_at.is_some() => break,
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

/// One per-second sample of the soak.
#[derive(Debug, Clone, Copy)]
struct Sample {
    t_s: f64,
    rss_kb: u64,
    fds: u64,
    active_calls: u64,
    outbox_depth: u64,
}

/// The soak (`--soak`): `calls` concurrent calls for `seconds`, each replaced by a new one when
/// it ends, two scripted tool calls per call; RSS and FDs sampled every second.
async fn soak(args: BenchArgs) -> Result<String, String> {
    let n = args.calls.max(1);
    let tool_call = |id: &str, question: &str| AgentAction::ToolCall {
        tool: "answer_question".into(),
        id: id.into(),
        params: json!({ "question": question }),
    };
    let script = AgentScript {
        echo: true,
        record_payloads: false,
        // 50 caller chunks a second: a question 2 s and 30 s into every call.
        on_chunk: vec![
            (100, tool_call("soak-1", "Do you have vegetarian options?")),
            (1_500, tool_call("soak-2", "Are you open on Sunday?")),
        ],
        ..Default::default()
    };
    let kb_path = args.knowledge_base_from.join("knowledge_base.json");
    let kb: serde_json::Value = std::fs::read_to_string(&kb_path)
        .map_err(|e| format!("{}: {e}", kb_path.display()))
        .and_then(|t| serde_json::from_str(&t).map_err(|e| format!("{}: {e}", kb_path.display())))?;
    let tools = vec![json!({
        "name": "answer_question", "module_sha256": "builtin:answer_question",
        "grants": {"menu": true, "knowledge_base": true, "hours": true}
    })];
    let restaurants = args.restaurants.clamp(1, n);
    let mut rig = Rig::start(&args, script, restaurants, tools, kb).await?;
    let keys = Arc::new(std::mem::replace(
        &mut rig.keys,
        HandoffKeys::parse(&Secret::new(KEYS)).map_err(|e| e.to_string())?,
    ));

    let stats = Arc::new(CallerStats::default());
    let ended = Arc::new(AtomicU64::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let ramp = Duration::from_secs(args.ramp).max(Duration::from_millis(1));
    let t0 = Instant::now();
    let soak_end = t0 + ramp + Duration::from_secs(args.seconds);
    let call_len = Duration::from_secs(args.call_seconds.max(1));
    let mut workers = Vec::with_capacity(n);
    for i in 0..n {
        let first = t0 + ramp.mul_f64(i as f64 / n as f64);
        let (url, stats, stop, keys, ended) =
            (rig.ws_url.clone(), stats.clone(), stop.clone(), keys.clone(), ended.clone());
        workers.push(tokio::spawn(async move {
            tokio::time::sleep_until(first.into()).await;
            let mut k = 0u64;
            while Instant::now() < soak_end && !stop.is_cancelled() {
                let sid = format!("CA{i:05}{k:07}");
                // Lengths spread over ±25 % so calls do not all end together.
                let spread = 0.75 + 0.5 * (((i as u64 * 7919 + k * 104_729) % 1000) as f64 / 1000.0);
                let hang_up = (Instant::now() + call_len.mul_f64(spread)).min(soak_end);
                let restaurant = bench_restaurant(i % restaurants);
                let Ok(token) = handoff(&keys, &sid, &restaurant, chrono::Utc::now().timestamp()) else {
                    break;
                };
                bench_caller(url.clone(), sid, token, stats.clone(), stop.clone(), Some(hang_up)).await;
                ended.fetch_add(1, Ordering::Relaxed);
                k += 1;
            }
        }));
    }

    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while Instant::now() < soak_end {
        tick.tick().await;
        let text = scrape(&rig.http, &rig.base).await.unwrap_or_default();
        samples.push(Sample {
            t_s: t0.elapsed().as_secs_f64(),
            rss_kb: rss_kb(rig.pid).unwrap_or(0),
            fds: fd_count(rig.pid).unwrap_or(0),
            active_calls: metric_sum(&text, "pulsara_active_calls") as u64,
            outbox_depth: metric_value(&text, "pulsara_outbox_depth").unwrap_or(0.0) as u64,
        });
    }
    stop.cancel();
    for w in workers {
        let _ = w.await;
    }
    // Let the last records reach the dashboard.
    let mut text = String::new();
    for _ in 0..60 {
        text = scrape(&rig.http, &rig.base).await.unwrap_or_default();
        if metric_value(&text, "pulsara_outbox_depth") == Some(0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let logs = rig.agent.logs();
    let tool_results: usize = logs.iter().map(|l| l.of_type("client_tool_result").len()).sum();
    let tool_errors: usize = logs
        .iter()
        .flat_map(|l| l.of_type("client_tool_result"))
        .filter(|m| m["is_error"] == true)
        .count();
    let _ = rig.child.start_kill();
    let _ = rig.child.wait().await;
    let _ = std::fs::remove_dir_all(&rig.dir);

    if let Some(path) = &args.samples {
        let mut csv = String::from("t_s,rss_kb,fds,active_calls,outbox_depth\n");
        for s in &samples {
            let _ = writeln!(csv, "{:.1},{},{},{},{}", s.t_s, s.rss_kb, s.fds, s.active_calls, s.outbox_depth);
        }
        std::fs::write(path, csv).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, plot_svg(&samples, n)).map_err(|e| format!("{}: {e}", path.display()))?;
    }

    // Flat after warm-up: compare the first and the last minute after the first two.
    let warm = ramp.as_secs_f64() + 120.0;
    let steady: Vec<&Sample> = samples.iter().filter(|s| s.t_s >= warm).collect();
    let mut o = String::new();
    let _ = writeln!(
        o,
        "soak: {n} concurrent calls over {restaurants} restaurants for {} s (+{} s ramp), calls of {} s ±25 %, 2 answer_question tool calls each",
        args.seconds, args.ramp, args.call_seconds
    );
    let _ = writeln!(
        o,
        "calls: {} placed, {} ended, {} failed to connect; tool results {tool_results} ({tool_errors} errors); outbox depth at end {}, delivered {}",
        stats.connected.load(Ordering::SeqCst),
        ended.load(Ordering::SeqCst),
        stats.failed.load(Ordering::SeqCst),
        metric_value(&text, "pulsara_outbox_depth").unwrap_or(-1.0),
        metric_value(&text, "pulsara_outbox_delivered_total").unwrap_or(-1.0),
    );
    let sent = stats.sent.load(Ordering::SeqCst);
    let recv = stats.received.load(Ordering::SeqCst);
    let _ = writeln!(o, "frames: sent {sent}, echoed back {recv}");
    if steady.len() >= 120 {
        let minute = |xs: &[&Sample], f: fn(&Sample) -> u64| -> (u64, u64, f64) {
            let v: Vec<u64> = xs.iter().map(|s| f(s)).collect();
            let (lo, hi) = (v.iter().copied().min().unwrap_or(0), v.iter().copied().max().unwrap_or(0));
            (lo, hi, v.iter().sum::<u64>() as f64 / v.len().max(1) as f64)
        };
        let (first, last) = (&steady[..60], &steady[steady.len() - 60..]);
        for (name, f) in [("RSS KB", (|s: &Sample| s.rss_kb) as fn(&Sample) -> u64), ("FDs", |s: &Sample| s.fds)] {
            let (a_lo, a_hi, a_mean) = minute(first, f);
            let (b_lo, b_hi, b_mean) = minute(last, f);
            let _ = writeln!(
                o,
                "{name}: first steady minute mean {a_mean:.0} (min {a_lo}, max {a_hi}); last minute mean {b_mean:.0} (min {b_lo}, max {b_hi}); change {:+.1} %",
                (b_mean - a_mean) * 100.0 / a_mean.max(1.0)
            );
        }
    } else {
        let _ = writeln!(o, "(fewer than 120 steady samples: run longer to judge flatness)");
    }
    let peak = samples.iter().map(|s| s.rss_kb).max().unwrap_or(0);
    let _ = writeln!(o, "RSS: idle {} KB, peak {peak} KB; samples {}", rig.idle_rss, samples.len());
    Ok(o)
}

async fn scrape(http: &reqwest::Client, base: &str) -> Result<String, String> {
    http.get(format!("{base}/metrics"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())
}

fn fd_count(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// RSS (MB), open FDs and active calls against time, one panel each, as a standalone SVG.
fn plot_svg(samples: &[Sample], calls: usize) -> String {
    const W: f64 = 900.0;
    const PANEL: f64 = 180.0;
    const LEFT: f64 = 70.0;
    const TOP: f64 = 40.0;
    let t_max = samples.last().map_or(1.0, |s| s.t_s.max(1.0));
    type Series = (&'static str, &'static str, fn(&Sample) -> f64);
    let series: [Series; 3] = [
        ("RSS (MB)", "#c0392b", |s| s.rss_kb as f64 / 1024.0),
        ("open file descriptors", "#2471a3", |s| s.fds as f64),
        ("active calls", "#1e8449", |s| s.active_calls as f64),
    ];
    let height = TOP + series.len() as f64 * (PANEL + 40.0) + 20.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="22" font-size="15">pulsara bench --soak: {calls} concurrent calls, sampled every second</text>"#
    );
    for (i, (label, colour, f)) in series.iter().enumerate() {
        let y0 = TOP + i as f64 * (PANEL + 40.0);
        let max = samples.iter().map(f).fold(0.0_f64, f64::max).max(1.0) * 1.1;
        let _ = writeln!(
            svg,
            r##"<rect x="{LEFT}" y="{y0}" width="{}" height="{PANEL}" fill="none" stroke="#999"/>"##,
            W - LEFT - 20.0
        );
        let _ = writeln!(svg, r#"<text x="{}" y="{}">{label}</text>"#, LEFT + 6.0, y0 + 16.0);
        for frac in [0.0, 0.5, 1.0] {
            let y = y0 + PANEL * (1.0 - frac);
            let _ = writeln!(svg, r#"<text x="{}" y="{}" text-anchor="end">{:.0}</text>"#, LEFT - 6.0, y + 4.0, max * frac);
        }
        // At most ten time ticks, on a round step.
        let step = [5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0]
            .into_iter()
            .find(|s| t_max / s <= 10.0)
            .unwrap_or(t_max / 10.0);
        let mut t = 0.0;
        while t <= t_max {
            let x = LEFT + (W - LEFT - 20.0) * t / t_max;
            let _ = writeln!(svg, r#"<text x="{x:.1}" y="{}" text-anchor="middle">{:.0} s</text>"#, y0 + PANEL + 15.0, t);
            t += step;
        }
        let points: Vec<String> = samples
            .iter()
            .map(|s| {
                let x = LEFT + (W - LEFT - 20.0) * s.t_s / t_max;
                let y = y0 + PANEL * (1.0 - f(s) / max);
                format!("{x:.1},{y:.1}")
            })
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
            points.join(" ")
        );
    }
    svg.push_str("</svg>\n");
    svg
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
    let Ok(m) = exposition::parse(text) else {
        return BTreeMap::new();
    };
    ["to_agent", "to_caller"]
        .into_iter()
        .filter_map(|dir| {
            let buckets = m.buckets("pulsara_added_latency_seconds", &[("dir", dir)]);
            let count = buckets.iter().map(|(_, c)| *c).max()?;
            Some((dir.to_owned(), Hist { buckets, count }))
        })
        .collect()
}

/// An unlabelled sample of `/metrics` text.
fn metric_value(text: &str, name: &str) -> Option<f64> {
    exposition::parse(text).ok()?.value(name, &[])
}

/// The sum of every series of `name` (labelled or not).
fn metric_sum(text: &str, name: &str) -> f64 {
    exposition::parse(text).map_or(0.0, |m| m.sum(name))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soak_plot_has_one_line_per_series_through_every_sample() {
        let samples: Vec<Sample> = (0..30)
            .map(|i| Sample {
                t_s: i as f64,
                rss_kb: 50_000 + i * 10,
                fds: 2_000 + i,
                active_calls: 1_000,
                outbox_depth: 0,
            })
            .collect();
        let svg = plot_svg(&samples, 1_000);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        let lines: Vec<&str> = svg.lines().filter(|l| l.starts_with("<polyline")).collect();
        assert_eq!(lines.len(), 3, "RSS, FDs and active calls");
        for l in lines {
            assert_eq!(l.matches(',').count(), 30, "one point per sample: {l}");
        }
        assert!(svg.contains("RSS (MB)") && svg.contains("open file descriptors"));
    }

    #[test]
    fn metric_values_are_read_from_prometheus_text() {
        let text = "pulsara_active_calls 12\npulsara_outbox_depth 0\npulsara_active_calls_x 3\n";
        let hist = "# TYPE pulsara_added_latency_seconds histogram\n\
            pulsara_added_latency_seconds_bucket{dir=\"to_agent\",le=\"0.0002\"} 3\n\
            pulsara_added_latency_seconds_bucket{dir=\"to_agent\",le=\"+Inf\"} 4\n";
        let h = &parse_histograms(hist)["to_agent"];
        assert_eq!((h.count, h.quantile(0.5), h.max_bucket()), (4, "200".to_owned(), "inf".to_owned()));
        assert_eq!(metric_value(text, "pulsara_active_calls"), Some(12.0));
        assert_eq!(metric_value(text, "pulsara_outbox_depth"), Some(0.0));
        assert_eq!(metric_value(text, "pulsara_missing"), None);
        let labelled = "pulsara_active_calls{restaurant=\"a\"} 2\npulsara_active_calls{restaurant=\"b\"} 5\n";
        assert_eq!(metric_sum(labelled, "pulsara_active_calls"), 7.0);
        assert_eq!(metric_sum(text, "pulsara_active_calls"), 12.0);
    }
}
