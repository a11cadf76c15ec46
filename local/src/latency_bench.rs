//! `pulsara bench --latency` (`cargo xtask bench latency`): what the caller waits for, with the
//! ElevenLabs session opened only when the stream arrives (sequential) versus prepared by the
//! edge while Twilio connects (prepared), in one run.
//!
//! The whole local stack runs in this process (edge, bridge, embedded dashboard, emulators),
//! with the emulators' realistic delays on ([`ServiceDelays::realistic`] and Twilio's stream
//! set-up, [`crate::frontdoor::TWILIO_STREAM_SETUP`]): neither vendor documents them, so the
//! report states them, and the gain is what they produce, not an assumption. Each call greets
//! the caller, hears one question, answers and ends; the figures come from the call records
//! ([`pulsara_core::call_record::CallLatency`]).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use pulsara_core::call_record::CallLatency;
use pulsara_emulators::elevenlabs::ServiceDelays;
use pulsara_emulators::scenario::Scenario;

use crate::stack::{Stack, StackOptions};

/// One mode's figures.
struct Figures {
    from_webhook_ms: Vec<u64>,
    from_stream_ms: Vec<u64>,
    bridge_us: Vec<u64>,
    turn_ms: Vec<u64>,
    prepared: usize,
    failed: usize,
}

fn pct(v: &mut [u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

const SCENARIO: &str = r#"
name = "latency-bench"
description = "Greeting, one question, one answer, hang up."
restaurant = "trattoria-roma"

[call]
from = "+393330000001"
to = "+390612345678"
at = "2026-12-04T12:00:00Z"

[agent]
response_delay_ms = 300

[[agent.turns]]
user = "Are you open tonight?"
agent = "Yes, from seven."

[caller]
max_duration_ms = 30000

[[caller.steps]]
after_agent_ms = 200
say = "Are you open tonight?"

[[caller.steps]]
after_agent_ms = 200
hangup = true
"#;

/// Runs `calls` calls each way, `concurrency` at a time (at most the bridge's prepared sessions
/// per restaurant, 8 by default), and reports.
///
/// # Errors
/// The stack cannot start, or a mode has no successful call to measure.
pub async fn run(calls: usize, concurrency: usize, policies_dir: PathBuf, restaurants_dir: PathBuf) -> Result<String, String> {
    let mut report = String::new();
    let delays = ServiceDelays::realistic();
    let _ = writeln!(
        report,
        "latency bench: {calls} calls per mode, {concurrency} at a time; assumed delays: Twilio stream set-up {} ms, ElevenLabs signed URL {} ms, socket handshake {} ms, greeting synthesis {} ms, reply think time 300 ms",
        crate::frontdoor::TWILIO_STREAM_SETUP.as_millis(),
        delays.signed_url.as_millis(),
        delays.handshake.as_millis(),
        delays.greeting.as_millis()
    );
    for prepare in [false, true] {
        let f = mode(calls, concurrency, prepare, delays, &policies_dir, &restaurants_dir).await?;
        report.push_str(&render(if prepare { "prepared" } else { "sequential" }, f));
    }
    Ok(report)
}

async fn mode(
    calls: usize,
    concurrency: usize,
    prepare: bool,
    delays: ServiceDelays,
    policies_dir: &std::path::Path,
    restaurants_dir: &std::path::Path,
) -> Result<Figures, String> {
    let mut scenarios = Vec::new();
    for i in 0..calls {
        let mut s = Scenario::from_toml(SCENARIO, "latency bench").map_err(|e| e.to_string())?;
        s.name = format!("latency-{i:04}");
        s.call.from = format!("+39333{i:07}");
        scenarios.push(s);
    }
    let data_dir = std::env::temp_dir().join(format!("pulsara-latency-bench-{}-{prepare}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let stack = Stack::start(StackOptions {
        restaurants_dir: restaurants_dir.to_owned(),
        policies_dir: policies_dir.to_owned(),
        data_dir: data_dir.clone(),
        scenarios: scenarios.clone(),
        clock: pulsara_bridge::clock::Clock::system(),
        prepare_sessions: prepare,
        elevenlabs_delays: delays,
    })
    .await
    .map_err(|e| e.to_string())?;
    // Trattoria Roma has 4 lines; the bench's calls overlap `concurrency` at a time.
    let mut roma = stack.dashboard.store.restaurant("trattoria-roma").map_err(|e| e.to_string())?.ok_or("no trattoria-roma")?;
    roma.max_concurrent_calls = u32::try_from(concurrency).unwrap_or(u32::MAX).max(roma.max_concurrent_calls);
    stack.admin.admin_put_restaurant(&roma).await.map_err(|e| e.to_string())?;
    stack.dashboard.wait_agent_syncs(Duration::from_secs(30)).await?;
    // The edit's webhooks reach the edge's and the bridge's caches.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut records: Vec<Option<CallLatency>> = Vec::new();
    for chunk in scenarios.chunks(concurrency.max(1)) {
        let outcomes = crate::demo::run_scenarios(&stack, chunk, None).await;
        records.extend(outcomes.into_iter().map(|o| o.record.and_then(|r| r.latency)));
    }
    stack.stop().await;
    let _ = std::fs::remove_dir_all(&data_dir);
    let mut f = Figures { from_webhook_ms: vec![], from_stream_ms: vec![], bridge_us: vec![], turn_ms: vec![], prepared: 0, failed: 0 };
    for l in records {
        let Some(l) = l.filter(|l| l.first_audio_ms.is_some()) else {
            f.failed += 1;
            continue;
        };
        f.from_stream_ms.extend(l.first_audio_ms);
        f.from_webhook_ms.extend(l.first_audio_from_webhook_ms);
        f.bridge_us.extend(l.first_audio_bridge_us);
        f.turn_ms.extend(l.turn_ms.iter().copied());
        f.prepared += usize::from(l.prepared);
    }
    if f.from_stream_ms.is_empty() {
        return Err(format!("no call reached its first audio (prepare: {prepare})"));
    }
    Ok(f)
}

fn render(name: &str, mut f: Figures) -> String {
    let mut o = String::new();
    let n = f.from_stream_ms.len();
    let _ = writeln!(o, "{name}: {n} calls measured ({} prepared, {} without a first audio)", f.prepared, f.failed);
    let _ = writeln!(
        o,
        "  first audio from the webhook  p50 {} ms  p99 {} ms",
        pct(&mut f.from_webhook_ms, 0.5),
        pct(&mut f.from_webhook_ms, 0.99)
    );
    let _ = writeln!(
        o,
        "  first audio from stream start p50 {} ms  p99 {} ms",
        pct(&mut f.from_stream_ms, 0.5),
        pct(&mut f.from_stream_ms, 0.99)
    );
    let _ = writeln!(
        o,
        "  bridge's own share of it      p50 {} µs  p99 {} µs",
        pct(&mut f.bridge_us, 0.5),
        pct(&mut f.bridge_us, 0.99)
    );
    let _ = writeln!(
        o,
        "  turn response ({} turns)      p50 {} ms  p99 {} ms",
        f.turn_ms.len(),
        pct(&mut f.turn_ms, 0.5),
        pct(&mut f.turn_ms, 0.99)
    );
    o
}
