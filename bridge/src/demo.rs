//! `pulsara demo`: the main job. Starts a whole local Pulsara ([`crate::stack`]), places every
//! scenario call through the front door exactly as Twilio would ([`crate::frontdoor`]), prints a
//! readable report per call, writes `demo-out/<scenario>.wav` (caller left, agent right) and
//! `demo-out/<scenario>.json` (the call record as the dashboard received it), and fails when any
//! scenario misses what its `[expect]` section states.
//!
//! Scenarios set the instant they happen at (`[call] at`); the stack's clock jumps there, and
//! scenarios sharing an instant run at the same time (so two restaurants take calls at once).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use pulsara_core::call_record::{CallRecord, Role};
use pulsara_emulators::elevenlabs::ConversationRecord;
use pulsara_emulators::scenario::Scenario;
use pulsara_emulators::twilio_rest::RestRequest;

use crate::frontdoor::{EdgeDecision, PlacedCall};
use crate::stack::{Stack, StackOptions};

/// `pulsara demo` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Scenario files (`*.toml`).
    #[arg(long, default_value = "scenarios")]
    pub scenarios: PathBuf,
    /// Restaurant files the embedded dashboard is seeded from.
    #[arg(long, default_value = "restaurants")]
    pub restaurants: PathBuf,
    /// Built policy modules (`cargo xtask build-wasm`).
    #[arg(long, default_value = "target/policies")]
    pub policies: PathBuf,
    /// Where recordings and call records go.
    #[arg(long, default_value = "demo-out")]
    pub out: PathBuf,
    /// Run only these scenarios (by name).
    #[arg(long)]
    pub only: Vec<String>,
}

/// The outcome of one scenario.
#[derive(Debug)]
pub struct ScenarioOutcome {
    pub name: String,
    pub report: String,
    pub failures: Vec<String>,
    pub record: Option<CallRecord>,
}

/// Runs the demo; `Ok(false)` when any scenario missed its expectations.
///
/// # Errors
/// When the scenarios cannot be read, the stack cannot start, or the output cannot be written.
pub async fn run(args: DemoArgs) -> anyhow::Result<bool> {
    let mut scenarios = Scenario::load_dir(&args.scenarios)?;
    if !args.only.is_empty() {
        scenarios.retain(|s| args.only.contains(&s.name));
        anyhow::ensure!(!scenarios.is_empty(), "no scenario named {:?} in {}", args.only, args.scenarios.display());
    }
    anyhow::ensure!(
        args.policies.join("manifest.json").is_file(),
        "policy modules are missing in {}: run `cargo xtask build-wasm` (or `cargo xtask demo`)",
        args.policies.display()
    );
    let state_dir = args.out.join("state");
    let _ = std::fs::remove_dir_all(&state_dir);
    std::fs::create_dir_all(&args.out)?;

    println!("Starting the local stack: embedded dashboard, edge, bridge, ElevenLabs and Twilio emulators, SMTP sink…");
    let stack = Stack::start(StackOptions {
        restaurants_dir: args.restaurants.clone(),
        policies_dir: args.policies.clone(),
        data_dir: state_dir,
        scenarios: scenarios.clone(),
        clock: crate::clock::Clock::system(),
    })
    .await?;
    println!("  edge      {}\n  bridge    {}\n  dashboard {}\n", stack.edge_url, stack.bridge_url, stack.dashboard.url());

    let outcomes = run_scenarios(&stack, &scenarios, Some(&args.out)).await;
    let metrics = stack_metrics(&stack).await;
    stack.stop().await;

    let mut passed = 0;
    for o in &outcomes {
        println!("{}", o.report);
        if o.failures.is_empty() {
            passed += 1;
        }
    }
    let depth = metric(&metrics, "pulsara_outbox_depth");
    let delivered = metric(&metrics, "pulsara_outbox_delivered_total");
    println!("outbox: {} delivered, {} waiting (bridge /metrics)", fmt_metric(delivered), fmt_metric(depth));
    let metrics_ok = depth == Some(0.0) && delivered.is_some_and(|d| d > 0.0);
    if !metrics_ok {
        println!("MISSED    the outbox did not drain, or /metrics lacks it");
    }
    println!("demo: {passed} passed, {} failed", outcomes.len() - passed);
    println!("recordings and call records: {}", args.out.display());
    Ok(passed == outcomes.len() && metrics_ok)
}

/// The bridge's `/metrics` text once the outbox has drained (notifications go out after the
/// records), or as it is after 15 s; empty when unreachable.
async fn stack_metrics(stack: &Stack) -> String {
    let url = stack.bridge_url.replace("ws://", "http://").replace("/media", "/metrics");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let text = match reqwest::get(&url).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if metric(&text, "pulsara_outbox_depth") == Some(0.0) || tokio::time::Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

fn fmt_metric(v: Option<f64>) -> String {
    v.map(|v| format!("{v}")).unwrap_or_else(|| "?".into())
}

/// Runs scenarios grouped by their instant, each group concurrently, and checks expectations.
pub async fn run_scenarios(stack: &Stack, scenarios: &[Scenario], out: Option<&Path>) -> Vec<ScenarioOutcome> {
    let mut waves: BTreeMap<Option<DateTime<Utc>>, Vec<&Scenario>> = BTreeMap::new();
    for s in scenarios {
        waves.entry(scenario_instant(s)).or_default().push(s);
    }
    let mut outcomes = Vec::new();
    for (at, wave) in waves {
        if let Some(at) = at {
            stack.clock.jump_to(at);
        }
        let names: Vec<&str> = wave.iter().map(|s| s.name.as_str()).collect();
        println!("── {} ── {}", at.map(|a| a.to_rfc3339()).unwrap_or_else(|| "now".into()), names.join(" + "));
        let results = futures_util::future::join_all(wave.iter().map(|s| run_one(stack, s, out))).await;
        outcomes.extend(results);
    }
    outcomes
}

fn scenario_instant(s: &Scenario) -> Option<DateTime<Utc>> {
    s.call.at.as_deref().and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&Utc))
}

/// A CallSid unique to the scenario and this run.
fn call_sid_for(name: &str) -> String {
    let digest = pulsara_dashboard::sha256_hex(format!("{name}:{}", Utc::now().timestamp_nanos_opt().unwrap_or(0)).as_bytes());
    format!("CA{}", &digest[..32])
}

async fn run_one(stack: &Stack, s: &Scenario, out: Option<&Path>) -> ScenarioOutcome {
    let call_sid = call_sid_for(&s.name);
    let stop: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
        Box::pin(stack.twilio_rest.recorder.wait_call_update(&call_sid));
    let mut failures = Vec::new();
    let placed = match stack.front_door().place(s, &call_sid, Some(stop)).await {
        Ok(p) => p,
        Err(e) => {
            return ScenarioOutcome {
                name: s.name.clone(),
                report: format!("■ {} — could not place the call: {e}", s.name),
                failures: vec![e.to_string()],
                record: None,
            }
        }
    };
    let record = if placed.caller.is_some() { wait_record(stack, &call_sid).await } else { None };
    let conversation = stack
        .elevenlabs
        .recorder
        .conversations()
        .into_iter()
        .filter(|c| c.scenario.as_deref() == Some(s.name.as_str()))
        .last();
    let rest: Vec<RestRequest> = stack.twilio_rest.recorder.requests();

    check(s, &placed, record.as_ref(), conversation.as_ref(), &rest, &mut failures);

    if let Some(out) = out {
        if let Some(caller) = &placed.caller {
            if let Err(e) = caller.write_wav(&out.join(format!("{}.wav", s.name))) {
                failures.push(format!("writing the recording: {e}"));
            }
        }
        let json = match &record {
            Some(r) => serde_json::to_string_pretty(r).unwrap_or_default(),
            None => serde_json::json!({"call_sid": call_sid, "edge_decision": placed.decision.label(), "twiml": placed.twiml}).to_string(),
        };
        if let Err(e) = std::fs::write(out.join(format!("{}.json", s.name)), json) {
            failures.push(format!("writing the call record: {e}"));
        }
    }
    let mails: Vec<String> = stack
        .smtp
        .messages()
        .iter()
        .filter(|m| m.body().contains(&call_sid) || record.as_ref().is_some_and(|r| m.body().contains(&r.caller)))
        .map(|m| m.header("Subject").unwrap_or_default())
        .collect();
    let report = render_report(s, &placed, record.as_ref(), &rest, &mails, &failures);
    ScenarioOutcome { name: s.name.clone(), report, failures, record }
}

/// Waits for the outbox to deliver the call's record to the dashboard.
async fn wait_record(stack: &Stack, call_sid: &str) -> Option<CallRecord> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(v) = stack.admin.call(call_sid).await {
            let v = v.get("record").cloned().unwrap_or(v);
            if let Ok(r) = serde_json::from_value::<CallRecord>(v) {
                return Some(r);
            }
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn check(
    s: &Scenario,
    placed: &PlacedCall,
    record: Option<&CallRecord>,
    conversation: Option<&ConversationRecord>,
    rest: &[RestRequest],
    failures: &mut Vec<String>,
) {
    let e = &s.expect;
    let want_edge = e.extra.get("edge").and_then(|v| v.as_str()).unwrap_or("stream");
    if placed.decision.label() != want_edge {
        failures.push(format!("edge answered {:?}, expected {want_edge:?}", placed.decision.label()));
    }
    if want_edge != "stream" {
        if placed.caller.is_some() {
            failures.push("an after-hours call must not open a media stream".into());
        }
        return;
    }
    let Some(r) = record else {
        failures.push("no call record reached the dashboard within 20 s".into());
        return;
    };
    let tools: Vec<&str> = r.tool_runs.iter().map(|t| t.tool.as_str()).collect();
    if !e.tools.is_empty() && tools != e.tools.iter().map(String::as_str).collect::<Vec<_>>() {
        failures.push(format!("tools called {tools:?}, expected {:?}", e.tools));
    }
    for t in r.tool_runs.iter().filter(|t| t.is_error && !e.tools.is_empty()) {
        failures.push(format!("tool {} failed: {}", t.tool, t.output));
    }
    let heard: String = r.transcript.iter().map(|l| l.text.as_str()).collect::<Vec<_>>().join(" ");
    for needle in &e.transcript_contains {
        if !heard.to_lowercase().contains(&needle.to_lowercase()) {
            failures.push(format!("transcript lacks {needle:?}"));
        }
    }
    let transferred = r.transfer.is_some()
        || rest.iter().any(|q| matches!(q, RestRequest::CallUpdate { call_sid, twiml: Some(t), .. } if *call_sid == r.call_sid && t.contains("<Dial")));
    if let Some(want) = e.transferred {
        if transferred != want {
            failures.push(format!("transferred = {transferred}, expected {want}"));
        }
    }
    let interrupted = placed.caller.as_ref().is_some_and(|c| !c.clears_ms.is_empty());
    if let Some(want) = e.interrupted {
        if interrupted != want {
            failures.push(format!("interrupted = {interrupted}, expected {want}"));
        }
    }
    if let Some(want) = e.fallback {
        if r.fallback.is_some() != want {
            failures.push(format!("fallback = {}, expected {want}", r.fallback.is_some()));
        }
    }
    if let Some(c) = conversation {
        for f in &c.failures {
            failures.push(format!("agent side: {f}"));
        }
        if !c.pongs_missing.is_empty() || !c.pongs_wrong.is_empty() {
            failures.push(format!("pings unanswered {:?} / wrong {:?}", c.pongs_missing, c.pongs_wrong));
        }
    }
    if let Some(caller) = &placed.caller {
        if let Some(after) = caller.clears_ms.last() {
            // Zero overlap: nothing of the agent may play in the 100 ms after a clear.
            let leaked = caller.agent_audible_ms_between(*after + 1, *after + 100);
            if leaked > 0 {
                failures.push(format!("{leaked} ms of agent audio played right after a clear"));
            }
        }
    }
}

fn money(minor: i64, currency: &str) -> String {
    format!("{}.{:02} {currency}", minor / 100, (minor % 100).abs())
}

fn render_report(
    s: &Scenario,
    placed: &PlacedCall,
    record: Option<&CallRecord>,
    rest: &[RestRequest],
    mails: &[String],
    failures: &[String],
) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let mark = if failures.is_empty() { "✔" } else { "✘" };
    let _ = writeln!(o, "{mark} {} — {}", s.name, s.description);
    let _ = writeln!(o, "  call      {} → {} ({})", s.call.from, s.call.to, s.restaurant);
    let decision = match &placed.decision {
        EdgeDecision::Stream { url, .. } => format!("open → media stream to {url}"),
        EdgeDecision::Voicemail { message } => format!("closed → voicemail: “{message}”"),
        EdgeDecision::Dial { number, message } => format!("dial {number}: “{message}”"),
        EdgeDecision::Message { message } => format!("message then hang up: “{message}”"),
    };
    let _ = writeln!(o, "  edge      {decision}");
    if let Some(r) = record {
        let _ = writeln!(o, "  ended     {:?} after {:.1} s", r.end_reason, r.duration_ms as f64 / 1000.0);
        let _ = writeln!(o, "  transcript (what the caller heard):");
        for l in &r.transcript {
            let who = match l.role {
                Role::Agent => "agent ",
                _ => "caller",
            };
            let cut = if l.cut { "  [cut off by the caller]" } else { "" };
            let _ = writeln!(o, "    {:>6.1}s {who}  {}{cut}", l.at_ms as f64 / 1000.0, l.text);
        }
        for t in &r.tool_runs {
            let fuel = t.fuel_used.map(|f| format!(", {f} fuel")).unwrap_or_default();
            let status = if t.is_error { "error" } else { "ok" };
            let _ = writeln!(o, "  tool      {} {status} in {} µs{fuel}: {}", t.tool, t.duration_us, first_line(&t.output));
        }
        for order in &r.orders {
            match serde_json::from_value::<pulsara_policy_abi::Order>(order.clone()) {
                Ok(ord) => {
                    let items: Vec<String> = ord
                        .items
                        .iter()
                        .map(|i| {
                            let mods: Vec<&str> = i.modifiers.iter().map(|m| m.option.as_str()).collect();
                            if mods.is_empty() {
                                format!("{}× {}", i.quantity, i.name)
                            } else {
                                format!("{}× {} ({})", i.quantity, i.name, mods.join(", "))
                            }
                        })
                        .collect();
                    let when = ord.pickup_time.as_deref().map(|t| format!(", pickup {t}")).unwrap_or_default();
                    let _ = writeln!(o, "  order     {} — total {}{when}", items.join(", "), money(ord.total_minor, &ord.currency));
                }
                Err(e) => {
                    let _ = writeln!(o, "  order     (unreadable: {e})");
                }
            }
        }
        for b in &r.bookings {
            let _ = writeln!(
                o,
                "  booking   {} {} for {} under {}",
                b.get("date").and_then(|v| v.as_str()).unwrap_or("?"),
                b.get("time").and_then(|v| v.as_str()).unwrap_or("?"),
                b.get("party_size").and_then(|v| v.as_u64()).unwrap_or(0),
                b.get("name").and_then(|v| v.as_str()).unwrap_or("?"),
            );
        }
        if let Some(t) = &r.transfer {
            let _ = writeln!(o, "  transfer  to {} ({})", t.to, t.reason);
        }
        if let Some(f) = &r.fallback {
            let _ = writeln!(o, "  fallback  {} ({})", f.kind, f.reason);
        }
        if let Some(summary) = r.summary.as_ref().and_then(|s| s.get("paragraph")).and_then(|p| p.as_str()) {
            let _ = writeln!(o, "  summary   {summary}");
        }
        if let Some(sent) = &r.sentiment {
            let label = sent.pointer("/call/label").or_else(|| sent.get("label")).and_then(|v| v.as_str()).unwrap_or("?");
            let score = sent.pointer("/call/score").or_else(|| sent.get("score")).and_then(|v| v.as_f64()).unwrap_or(0.0);
            let _ = writeln!(o, "  sentiment {label} ({score:+.2})");
        }
        for n in &r.notifications {
            let _ = writeln!(o, "  notify    {} to {} — {}", n.channel, n.to, n.status);
        }
    }
    let sms: Vec<&RestRequest> = rest
        .iter()
        .filter(|q| matches!(q, RestRequest::Message { to, .. } if *to == s.call.from))
        .collect();
    for q in sms {
        if let RestRequest::Message { body, .. } = q {
            let _ = writeln!(o, "  sms sent  “{}”", first_line(body));
        }
    }
    for m in mails {
        let _ = writeln!(o, "  email     {m}");
    }
    for f in failures {
        let _ = writeln!(o, "  MISSED    {f}");
    }
    o
}

fn first_line(s: &str) -> &str {
    let line = s.lines().next().unwrap_or("");
    match line.char_indices().nth(140) {
        Some((i, _)) => &line[..i],
        None => line,
    }
}

/// `pulsara call` arguments: one scenario against a separately running edge and bridge.
#[derive(clap::Args, Debug, Clone)]
pub struct CallArgs {
    /// The scenario file.
    #[arg(long)]
    pub scenario: PathBuf,
    /// The edge's base URL (`http://127.0.0.1:8787`); the webhook goes to `…/twilio/voice`.
    #[arg(long)]
    pub edge_url: String,
    /// The Twilio account the edge expects.
    #[arg(long, env = "TWILIO_ACCOUNT_SID")]
    pub account_sid: String,
    /// The auth token the edge validates signatures with (from the environment, never a flag).
    #[arg(skip)]
    pub auth_token: Option<pulsara_core::secret::Secret>,
    /// Write the stereo recording here.
    #[arg(long)]
    pub wav: Option<PathBuf>,
}

/// Places one scenario call and prints what happened; `Ok(false)` when the edge's decision or
/// the media stream missed the scenario's expectations that can be checked from outside.
///
/// # Errors
/// A missing `TWILIO_AUTH_TOKEN`, an unreadable scenario, or a call that could not be placed.
pub async fn call(args: CallArgs) -> anyhow::Result<bool> {
    let token = args
        .auth_token
        .clone()
        .or_else(|| std::env::var("TWILIO_AUTH_TOKEN").ok().map(pulsara_core::secret::Secret::new))
        .ok_or_else(|| anyhow::anyhow!("set TWILIO_AUTH_TOKEN to the auth token the edge validates with"))?;
    let s = Scenario::load(&args.scenario)?;
    let door = crate::frontdoor::FrontDoor {
        edge_url: args.edge_url.clone(),
        account_sid: args.account_sid.clone(),
        auth_token: token,
        http: reqwest::Client::new(),
    };
    let call_sid = call_sid_for(&s.name);
    let placed = door.place(&s, &call_sid, None).await?;
    let want_edge = s.expect.extra.get("edge").and_then(|v| v.as_str()).unwrap_or("stream");
    println!("{} {call_sid}: edge answered {}", s.name, placed.decision.label());
    let mut ok = placed.decision.label() == want_edge;
    if let Some(c) = &placed.caller {
        println!(
            "  stream {} ms, {} frames sent, {} agent messages received, {} clears, ended {:?}",
            c.duration_ms,
            c.frames_sent,
            c.received.len(),
            c.clears_ms.len(),
            c.end
        );
        ok &= c.first_agent_audio_ms.is_some();
        if let Some(path) = &args.wav {
            c.write_wav(path)?;
            println!("  recording: {}", path.display());
        }
    }
    Ok(ok)
}
