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
use pulsara_dashboard::client::{ClientConfig, DashboardClient};
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
        clock: pulsara_bridge::clock::Clock::system(),
        prepare_sessions: true,
        elevenlabs_delays: Default::default(),
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

/// An unlabelled sample of the bridge's `/metrics` text (`None` when absent or unreadable).
fn metric(text: &str, name: &str) -> Option<f64> {
    pulsara_emulators::exposition::parse(text).ok()?.value(name, &[])
}

fn fmt_metric(v: Option<f64>) -> String {
    v.map(|v| format!("{v}")).unwrap_or_else(|| "?".into())
}

/// What the caller waited for on one call, in one line: first audio (from the webhook and from
/// the stream start, with the bridge's own share), turns and barge-ins.
pub fn latency_line(l: &pulsara_core::call_record::CallLatency) -> String {
    let mut parts = Vec::new();
    if let Some(ms) = l.first_audio_ms {
        let webhook = l.first_audio_from_webhook_ms.map(|w| format!("{w} ms from the webhook, ")).unwrap_or_default();
        let bridge = l.first_audio_bridge_us.map(|us| format!(" (bridge {us} µs)")).unwrap_or_default();
        parts.push(format!("first audio {webhook}{ms} ms from stream start{bridge}"));
    }
    if !l.turn_ms.is_empty() {
        let turns: Vec<String> = l.turn_ms.iter().map(u64::to_string).collect();
        let worst_bridge = l.turn_bridge_us.iter().max().copied().unwrap_or(0);
        parts.push(format!("turns {} ms (bridge ≤ {worst_bridge} µs)", turns.join("/")));
    }
    if !l.barge_in_us.is_empty() {
        let b: Vec<String> = l.barge_in_us.iter().map(u64::to_string).collect();
        parts.push(format!("barge-in {} µs", b.join("/")));
    }
    if l.early_frames > 0 {
        parts.push(format!("{} caller frames held {} ms while the agent connected", l.early_frames, l.early_wait_ms));
    }
    parts.join("; ")
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
    let digest = pulsara_core::crypto::sha256_hex(format!("{name}:{}", Utc::now().timestamp_nanos_opt().unwrap_or(0)).as_bytes());
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
    let record = if placed.caller.is_some() { wait_record(&stack.admin, &call_sid).await } else { None };
    let conversation = stack
        .elevenlabs
        .recorder
        .conversations()
        .into_iter()
        .filter(|c| c.scenario.as_deref() == Some(s.name.as_str()))
        .last();
    let rest: Vec<RestRequest> = stack.twilio_rest.recorder.requests();

    let seen = match &record {
        Some(r) => RecordSeen::Delivered(r),
        None => RecordSeen::Missing,
    };
    check(s, &placed, seen, conversation.as_ref(), &rest, &mut failures);

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

/// Waits for the outbox to deliver the call's record to the dashboard (`admin` reads it back).
async fn wait_record(admin: &DashboardClient, call_sid: &str) -> Option<CallRecord> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(v) = admin.call(call_sid).await {
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

/// Whether the call record was looked for, and what was found.
#[derive(Clone, Copy)]
enum RecordSeen<'a> {
    Delivered(&'a CallRecord),
    /// Looked for, but the dashboard did not have it within 20 s.
    Missing,
    /// No dashboard to ask (`pulsara call` without `--dashboard-url`).
    NotAsked,
}

/// Checks a placed call against the scenario's `[expect]`: the edge's decision, what the caller
/// heard, the agent side (when its record is at hand) and the call record (when looked for).
fn check(
    s: &Scenario,
    placed: &PlacedCall,
    record: RecordSeen<'_>,
    conversation: Option<&ConversationRecord>,
    rest: &[RestRequest],
    failures: &mut Vec<String>,
) {
    let e = &s.expect;
    let want_edge = e.extra.get("edge").and_then(|v| v.as_str()).unwrap_or("stream");
    if placed.decision.label() != want_edge {
        failures.push(format!("edge answered {:?}, expected {want_edge:?}", placed.decision.label()));
    }
    // What Twilio speaks is checked only when the edge gave the expected kind of answer.
    if (e.say_language.is_some() || e.say_voice.is_some()) && placed.decision.label() == want_edge {
        check_says(&placed.twiml, e.say_language.as_deref(), e.say_voice.as_deref(), failures);
    }
    if want_edge != "stream" {
        if placed.caller.is_some() {
            failures.push("an after-hours call must not open a media stream".into());
        }
        return;
    }
    if let Some(caller) = &placed.caller {
        if caller.first_agent_audio_ms.is_none() {
            failures.push("no agent audio reached the caller".into());
        }
        if let Some(want) = e.interrupted {
            let interrupted = !caller.clears_ms.is_empty();
            if interrupted != want {
                failures.push(format!("interrupted = {interrupted}, expected {want}"));
            }
        }
        if let Some(after) = caller.clears_ms.last() {
            // Zero overlap: nothing of the agent may play in the 100 ms after a clear.
            let leaked = caller.agent_audible_ms_between(*after + 1, *after + 100);
            if leaked > 0 {
                failures.push(format!("{leaked} ms of agent audio played right after a clear"));
            }
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
    let r = match record {
        RecordSeen::Delivered(r) => r,
        RecordSeen::Missing => {
            failures.push("no call record reached the dashboard within 20 s".into());
            return;
        }
        RecordSeen::NotAsked => return,
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
    // A transfer to staff, or a fallback that dialled a number; Twilio's REST log confirms it
    // when it can be read.
    let transferred = r.transfer.is_some()
        || r.fallback.as_ref().is_some_and(|f| f.kind == "dial" && f.ok)
        || rest.iter().any(|q| matches!(q, RestRequest::CallUpdate { call_sid, twiml: Some(t), .. } if *call_sid == r.call_sid && t.contains("<Dial")));
    if let Some(want) = e.transferred {
        if transferred != want {
            failures.push(format!("transferred = {transferred}, expected {want}"));
        }
    }
    if let Some(want) = e.fallback {
        if r.fallback.is_some() != want {
            failures.push(format!("fallback = {}, expected {want}", r.fallback.is_some()));
        }
    }
}

/// Every `<Say>` in the edge's TwiML carries the expected `language` and `voice` (a Twilio locale
/// such as `it-IT`, never the ElevenLabs code `it`), and there is at least one.
fn check_says(twiml: &str, language: Option<&str>, voice: Option<&str>, failures: &mut Vec<String>) {
    let doc = match pulsara_emulators::twiml::parse(twiml) {
        Ok(d) => d,
        Err(e) => {
            failures.push(format!("the edge's answer: {e}"));
            return;
        }
    };
    let says = doc.all("Say");
    if says.is_empty() {
        failures.push("the edge's TwiML has no <Say> to check the language of".into());
    }
    for say in says {
        for (attr, want) in [("language", language), ("voice", voice)] {
            let Some(want) = want else { continue };
            let got = say.attr(attr);
            if got != Some(want) {
                failures.push(format!("<Say {attr}> is {got:?}, expected {want:?}"));
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
        if let Some(l) = &r.latency {
            let _ = writeln!(o, "  waits     {}", latency_line(l));
        }
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
    /// Send the scenario's `[call] at` as `X-Pulsara-Test-Now`, so an edge started with
    /// `ALLOW_TEST_CLOCK=1` decides opening hours at the scenario's instant (start the bridge
    /// with `PULSARA_TEST_NOW` at the same instant).
    #[arg(long)]
    pub test_clock: bool,
    /// The dashboard the bridge delivers call records to: the record is read back and checked
    /// against `[expect]`. Needs an admin key in the environment: `PULSARA_ADMIN_KEY_ID` +
    /// `PULSARA_ADMIN_SIGNING_SECRET`, or `PULSARA_ADMIN_API_KEY`.
    #[arg(long)]
    pub dashboard_url: Option<String>,
    /// The ElevenLabs emulator the bridge talks to (`pulsara emulate elevenlabs`): what the
    /// agent side found wrong is checked too.
    #[arg(long)]
    pub elevenlabs_url: Option<String>,
    /// Write the stereo recording here.
    #[arg(long)]
    pub wav: Option<PathBuf>,
    /// How long "Twilio" waits between the TwiML and opening the stream, as a real call does.
    #[arg(long, default_value_t = crate::frontdoor::TWILIO_STREAM_SETUP.as_millis() as u64)]
    pub stream_setup_ms: u64,
}

/// An admin client of the dashboard at `url`, with the key from the environment.
fn admin_client(url: &str, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<DashboardClient> {
    let get = |k: &str| env(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let mut cfg = ClientConfig::new(url.trim_end_matches('/'));
    match (get("PULSARA_ADMIN_KEY_ID"), get("PULSARA_ADMIN_SIGNING_SECRET"), get("PULSARA_ADMIN_API_KEY")) {
        (Some(id), Some(secret), _) => cfg = cfg.signing_key(id, pulsara_core::secret::Secret::new(secret)),
        (None, None, Some(key)) => cfg = cfg.api_key(pulsara_core::secret::Secret::new(key)),
        _ => anyhow::bail!(
            "--dashboard-url needs an admin key: set PULSARA_ADMIN_KEY_ID and PULSARA_ADMIN_SIGNING_SECRET, \
             or PULSARA_ADMIN_API_KEY"
        ),
    }
    Ok(DashboardClient::new(cfg, pulsara_dashboard::system_clock())?)
}

/// The emulator's record of the last conversation that played `scenario`, as far as the checks
/// read it.
async fn emulated_conversation(http: &reqwest::Client, base: &str, scenario: &str) -> anyhow::Result<Option<ConversationRecord>> {
    let url = format!("{}/emulator/conversations", base.trim_end_matches('/'));
    let all: Vec<serde_json::Value> = http
        .get(&url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| anyhow::anyhow!("reading {url}: {e}"))?
        .json()
        .await
        .map_err(|e| anyhow::anyhow!("reading {url}: {e}"))?;
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect()).unwrap_or_default()
    };
    let numbers = |v: &serde_json::Value| -> Vec<u64> {
        v.as_array().map(|a| a.iter().filter_map(serde_json::Value::as_u64).collect()).unwrap_or_default()
    };
    Ok(all.iter().filter(|c| c["scenario"].as_str() == Some(scenario)).last().map(|c| ConversationRecord {
        conversation_id: c["conversation_id"].as_str().unwrap_or_default().to_owned(),
        agent_id: c["agent_id"].as_str().unwrap_or_default().to_owned(),
        scenario: Some(scenario.to_owned()),
        failures: strings(&c["failures"]),
        pongs_missing: numbers(&c["pongs_missing"]),
        pongs_wrong: numbers(&c["pongs_wrong"]),
        ..ConversationRecord::default()
    }))
}

/// Places one scenario call and prints what happened; `Ok(false)` when the call missed any of
/// the scenario's expectations that can be checked from outside: always the edge's decision
/// and what the caller heard; with `--dashboard-url` the delivered call record (tools,
/// transcript, transfer, fallback); with `--elevenlabs-url` the agent side's findings. These are
/// the checks `pulsara demo` applies.
///
/// # Errors
/// A missing `TWILIO_AUTH_TOKEN` or admin key, an unreadable scenario, a scenario without an
/// instant under `--test-clock`, or a call that could not be placed.
pub async fn call(args: CallArgs) -> anyhow::Result<bool> {
    let token = args
        .auth_token
        .clone()
        .or_else(|| std::env::var("TWILIO_AUTH_TOKEN").ok().map(pulsara_core::secret::Secret::new))
        .ok_or_else(|| anyhow::anyhow!("set TWILIO_AUTH_TOKEN to the auth token the edge validates with"))?;
    let s = Scenario::load(&args.scenario)?;
    let test_now = match args.test_clock {
        true => Some(scenario_instant(&s).ok_or_else(|| {
            anyhow::anyhow!("--test-clock needs `[call] at` in {}", args.scenario.display())
        })?),
        false => None,
    };
    let admin = match &args.dashboard_url {
        Some(url) => Some(admin_client(url, |k| std::env::var(k).ok())?),
        None => None,
    };
    let http = reqwest::Client::new();
    let door = crate::frontdoor::FrontDoor {
        edge_url: args.edge_url.clone(),
        account_sid: args.account_sid.clone(),
        auth_token: token,
        http: http.clone(),
        stream_setup: Duration::from_millis(args.stream_setup_ms),
    };
    let call_sid = call_sid_for(&s.name);
    let placed = door.place_at(&s, &call_sid, None, test_now).await?;
    let record = match (&admin, &placed.caller) {
        (Some(admin), Some(_)) => wait_record(admin, &call_sid).await,
        _ => None,
    };
    let conversation = match (&args.elevenlabs_url, &placed.caller) {
        (Some(url), Some(_)) => emulated_conversation(&http, url, &s.name).await?,
        _ => None,
    };
    let seen = match (&admin, &record) {
        (_, Some(r)) => RecordSeen::Delivered(r),
        (Some(_), None) => RecordSeen::Missing,
        (None, None) => RecordSeen::NotAsked,
    };
    let mut failures = Vec::new();
    check(&s, &placed, seen, conversation.as_ref(), &[], &mut failures);
    if args.elevenlabs_url.is_some() && placed.caller.is_some() && conversation.is_none() {
        failures.push("the ElevenLabs emulator has no conversation for this scenario".into());
    }
    println!("{call_sid}");
    print!("{}", render_report(&s, &placed, record.as_ref(), &[], &[], &failures));
    if let Some(c) = &placed.caller {
        println!(
            "  stream    {} ms, {} frames sent, {} agent messages received, {} clears, ended {:?}",
            c.duration_ms,
            c.frames_sent,
            c.received.len(),
            c.clears_ms.len(),
            c.end
        );
        if let Some(path) = &args.wav {
            c.write_wav(path)?;
            println!("  recording {}", path.display());
        }
    }
    Ok(failures.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulsara_core::call_record::Fallback;
    use pulsara_emulators::caller::{CallEnd, CallResult};

    fn scenario(file: &str) -> Scenario {
        Scenario::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios").join(file)).unwrap()
    }

    fn streamed() -> PlacedCall {
        let caller = CallResult {
            call_sid: "CA1".into(),
            stream_sid: "MZ1".into(),
            duration_ms: 12_000,
            end: CallEnd::ServerClosed("closed".into()),
            received: Vec::new(),
            marks: Vec::new(),
            clears_ms: Vec::new(),
            steps: Vec::new(),
            frames_sent: 600,
            first_agent_audio_ms: Some(400),
            cleared_samples: 0,
            playback_overflow_samples: 0,
            caller_audio: Vec::new(),
            agent_audio: Vec::new(),
            caller_ulaw: Vec::new(),
            agent_ulaw: Vec::new(),
        };
        PlacedCall {
            call_sid: "CA1".into(),
            twiml: String::new(),
            decision: EdgeDecision::Stream { url: "wss://127.0.0.1:9/media".into(), parameters: BTreeMap::new() },
            caller: Some(caller),
        }
    }

    fn failures(s: &Scenario, placed: &PlacedCall, record: RecordSeen<'_>) -> Vec<String> {
        let mut f = Vec::new();
        check(s, placed, record, None, &[], &mut f);
        f
    }

    #[test]
    fn the_after_hours_scenario_wants_twilio_s_italian_not_the_elevenlabs_code() {
        let s = scenario("trattoria-after-hours.toml");
        let placed = |twiml: &str| PlacedCall {
            call_sid: "CA1".into(),
            twiml: twiml.into(),
            decision: crate::frontdoor::parse_twiml(twiml).unwrap(),
            caller: None,
        };
        let italian = pulsara_core::twiml::SayVoice::new("it-IT", None).unwrap().say_record("Siamo chiusi.", 90, "https://e/rec");
        assert_eq!(failures(&s, &placed(&italian), RecordSeen::NotAsked), Vec::<String>::new());
        // What the edge answered before agent.language and the Twilio locale were told apart.
        let old = r#"<?xml version="1.0" encoding="UTF-8"?><Response><Say language="it">Siamo chiusi.</Say><Record maxLength="90" playBeep="true"/><Hangup/></Response>"#;
        let f = failures(&s, &placed(old), RecordSeen::NotAsked);
        assert!(f.iter().any(|m| m.contains("<Say language>") && m.contains("it-IT")), "{f:?}");
        assert!(f.iter().any(|m| m.contains("<Say voice>")), "{f:?}");
    }

    #[test]
    fn a_dialled_fallback_counts_as_a_transfer_and_a_missing_record_fails_only_when_looked_for() {
        let s = scenario("brooklyn-elevenlabs-drop.toml");
        let placed = streamed();
        let mut record = CallRecord { call_sid: "CA1".into(), ..CallRecord::default() };
        record.fallback = Some(Fallback {
            kind: "dial".into(),
            to: Some("+17185550199".into()),
            reason: "agent connection dropped".into(),
            at_ms: 5000,
            ok: true,
        });
        assert_eq!(failures(&s, &placed, RecordSeen::Delivered(&record)), Vec::<String>::new());
        assert_eq!(failures(&s, &placed, RecordSeen::NotAsked), Vec::<String>::new());
        assert_eq!(failures(&s, &placed, RecordSeen::Missing), ["no call record reached the dashboard within 20 s"]);

        let plain = CallRecord { call_sid: "CA1".into(), ..CallRecord::default() };
        assert_eq!(
            failures(&s, &placed, RecordSeen::Delivered(&plain)),
            ["transferred = false, expected true", "fallback = false, expected true"]
        );
        record.fallback.as_mut().unwrap().ok = false;
        assert_eq!(failures(&s, &placed, RecordSeen::Delivered(&record)), ["transferred = false, expected true"]);

        let mut silent = streamed();
        silent.caller.as_mut().unwrap().first_agent_audio_ms = None;
        assert_eq!(failures(&s, &silent, RecordSeen::NotAsked), ["no agent audio reached the caller"]);
    }

    #[test]
    fn the_edge_decision_is_checked_first() {
        let closed = scenario("trattoria-after-hours.toml");
        assert_eq!(failures(&closed, &streamed(), RecordSeen::NotAsked).len(), 2);
        let voicemail = PlacedCall {
            call_sid: "CA2".into(),
            twiml: pulsara_core::twiml::SayVoice::new("it-IT", None).unwrap().say_record("Closed", 90, ""),
            decision: EdgeDecision::Voicemail { message: "Closed".into() },
            caller: None,
        };
        assert_eq!(failures(&closed, &voicemail, RecordSeen::Missing), Vec::<String>::new());
        let open = scenario("trattoria-order.toml");
        assert_eq!(failures(&open, &voicemail, RecordSeen::NotAsked), ["edge answered \"voicemail\", expected \"stream\""]);
    }

    #[test]
    fn the_admin_key_comes_from_the_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned())
        };
        let url = "http://127.0.0.1:8088";
        assert!(admin_client(url, env(&[])).is_err());
        assert!(admin_client(url, env(&[("PULSARA_ADMIN_KEY_ID", "admin")])).is_err());
        assert!(admin_client(url, env(&[("PULSARA_ADMIN_KEY_ID", "admin"), ("PULSARA_ADMIN_SIGNING_SECRET", "s3cret")])).is_ok());
        assert!(admin_client(url, env(&[("PULSARA_ADMIN_API_KEY", "pk_s3cret")])).is_ok());
        let missing = admin_client(url, env(&[("PULSARA_ADMIN_SIGNING_SECRET", "s3cret")])).unwrap_err().to_string();
        assert!(missing.contains("PULSARA_ADMIN_KEY_ID") && !missing.contains("s3cret"), "{missing}");
    }
}
