//! End-to-end tests of the bridge on loopback: a simulated Twilio caller → `/media` → the bridge
//! → a scripted agent server, with Twilio REST recorded. Every test runs the real server, sockets
//! and tasks; only the outside world is simulated.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use pulsara_bridge::config::BridgeConfig;
use pulsara_bridge::ports::{
    load_one, CallSink, MemoryConfigSource, MemorySink, ToolContext, ToolError, ToolOutcome,
    ToolRunner,
};
use pulsara_emulators::exposition;
use pulsara_emulators::twilio_rest::{self, RestRecorder};
use pulsara_emulators::scripted::{
    eventually, run_caller, AgentAction, AgentScript, CallerAction, CallerLog, CallerScript, FakeAgent,
    };
use pulsara_bridge::App;
use pulsara_core::call_record::{CallRecord, EndReason, Role};
use pulsara_core::handoff::{HandoffClaims, HandoffKeys};
use pulsara_core::secret::Secret;
use pulsara_policy_abi::Action;
use serde_json::json;

const API_KEY: &str = "xi-test-key";
const SID: &str = "AC0123456789";
const TOKEN: &str = "twilio-test-token";
const KEYS: &str = "k1:handoff-test-key-0123456789";

struct Stack {
    app: Arc<App>,
    ws_url: String,
    http_base: String,
    agent: Arc<FakeAgent>,
    rest: Arc<RestRecorder>,
    sink: Arc<MemorySink>,
    keys: HandoffKeys,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Order tool used by the tests: records an order, or fails / hangs on request.
struct TestTools;

#[async_trait]
impl ToolRunner for TestTools {
    async fn run(
        &self,
        ctx: &ToolContext,
        tool: &str,
        params: serde_json::Value,
    ) -> Result<ToolOutcome, ToolError> {
        match tool {
            "take_order" => {
                let item = params["item"].as_str().unwrap_or("?").to_owned();
                let order = serde_json::from_value(json!({
                    "items": [{"item_id": "x", "name": item, "quantity": 1, "unit_price_minor": 900, "line_total_minor": 900}],
                    "subtotal_minor": 900, "tax_minor": 90, "total_minor": 990, "currency": "EUR",
                    "fulfillment": "pickup", "customer_phone": ctx.caller,
                }))
                .expect("valid order");
                Ok(ToolOutcome {
                    result: format!("One {item} for {}, 9.90 EUR", ctx.restaurant.name),
                    actions: vec![Action::RecordOrder(order)],
                    fuel_used: Some(4242),
                    module_sha256: Some("ab".repeat(32)),
                    ..Default::default()
                })
            }
            "slow" => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(ToolOutcome::default())
            }
            other => Err(ToolError::UnknownTool(other.to_owned())),
        }
    }
}

fn restaurants(cap: u32) -> Arc<MemoryConfigSource> {
    let src = MemoryConfigSource::new();
    for id in ["trattoria-roma", "brooklyn-smokehouse", "sakura-sushi"] {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../restaurants")
            .join(id);
        let (mut cfg, kb) = load_one(&dir).expect("example restaurant");
        cfg.max_concurrent_calls = cap;
        src.insert(cfg, kb);
    }
    Arc::new(src)
}

async fn stack_with(script: AgentScript, cap: u32, tweak: impl FnOnce(&mut BridgeConfig)) -> Stack {
    stack_on(script, restaurants(cap), tweak).await
}

async fn stack_on(
    script: AgentScript,
    configs: Arc<MemoryConfigSource>,
    tweak: impl FnOnce(&mut BridgeConfig),
) -> Stack {
    let agent = FakeAgent::new(API_KEY, script);
    let agent_base = agent.spawn().await.unwrap();
    let (rest, rest_base) = twilio_rest::spawn_detached(SID, TOKEN).await.unwrap();
    let mut cfg = BridgeConfig {
        handoff_keys: Some(Secret::new(KEYS)),
        elevenlabs_api_key: Some(Secret::new(API_KEY)),
        elevenlabs_base_url: agent_base,
        twilio_account_sid: SID.into(),
        twilio_auth_token: Some(Secret::new(TOKEN)),
        twilio_api_base: rest_base,
        ..Default::default()
    };
    cfg.limits.tool_timeout_ms = 500;
    cfg.limits.shutdown_grace_ms = 5_000;
    tweak(&mut cfg);
    cfg.validate().unwrap();
    let sink = Arc::new(MemorySink::new(10_000));
    let app = App::new(
        cfg,
        configs,
        Arc::new(TestTools),
        sink.clone() as Arc<dyn CallSink>,
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(pulsara_bridge::run(listener, app.clone(), async move {
        let _ = rx.await;
    }));
    Stack {
        app,
        ws_url: format!("ws://{addr}/media"),
        http_base: format!("http://{addr}"),
        agent,
        rest,
        sink,
        keys: HandoffKeys::parse(&Secret::new(KEYS)).unwrap(),
        stop: Some(stop),
        server,
    }
}

async fn stack(script: AgentScript) -> Stack {
    stack_with(script, 50, |_| {}).await
}

fn token(keys: &HandoffKeys, call_sid: &str, restaurant: &str, iat: i64) -> String {
    keys.issue(&HandoffClaims {
        call_sid: call_sid.into(),
        restaurant_id: restaurant.into(),
        config_version: 1,
        region: "eu-west".into(),
        iat,
        exp: iat + 60,
    })
    .unwrap()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Stack {
    fn caller(&self, call_sid: &str, restaurant: &str, frames: u64) -> CallerScript {
        let mut params = BTreeMap::new();
        params.insert(
            "handoff".to_owned(),
            token(&self.keys, call_sid, restaurant, now()),
        );
        params.insert("restaurant_id".to_owned(), restaurant.to_owned());
        params.insert("caller".to_owned(), format!("+1555{}", &call_sid[2..]));
        params.insert("called".to_owned(), "+390612345678".to_owned());
        CallerScript {
            ws_url: self.ws_url.clone(),
            call_sid: call_sid.into(),
            stream_sid: format!("MZ{}", &call_sid[2..]),
            params,
            frames,
            frame_interval: Duration::from_millis(20),
            fill: 0x5a,
            actions: Vec::new(),
            linger: Duration::from_millis(300),
        }
    }

    async fn record(&self, call_sid: &str) -> CallRecord {
        self.sink
            .wait_for(call_sid, Duration::from_secs(10))
            .await
            .expect("call record delivered")
    }

    async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(15), self.server).await;
    }
}

fn say(text: &str, chunks: usize, event_id: u64, fill: u8) -> AgentAction {
    AgentAction::Say {
        text: text.into(),
        chunks,
        event_id,
        fill,
    }
}

fn agent_texts(rec: &CallRecord, role: Role) -> Vec<String> {
    rec.transcript
        .iter()
        .filter(|l| l.role == role)
        .map(|l| l.full_text.clone().unwrap_or(l.text.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_call_with_tool_call() {
    let script = AgentScript {
        on_start: vec![say("Buongiorno, Trattoria Roma!", 10, 1, 0x11)],
        on_chunk: vec![
            (
                10,
                AgentAction::UserTranscript("A margherita please".into()),
            ),
            (
                10,
                AgentAction::ToolCall {
                    tool: "take_order".into(),
                    id: "tc1".into(),
                    params: json!({"item": "Margherita"}),
                },
            ),
            (30, say("Your margherita is ordered.", 10, 2, 0x12)),
        ],
        ..Default::default()
    };
    let s = stack(script).await;
    let log = run_caller(s.caller("CA1001", "trattoria-roma", 50))
        .await
        .unwrap();
    let rec = s.record("CA1001").await;
    assert_eq!(rec.end_reason, EndReason::CallerHungUp);
    assert_eq!(rec.restaurant_id, "trattoria-roma");
    assert_eq!(rec.tool_runs.len(), 1, "{:?}", rec.tool_runs);
    let run = &rec.tool_runs[0];
    assert_eq!(
        (run.tool.as_str(), run.tool_call_id.as_str(), run.is_error),
        ("take_order", "tc1", false)
    );
    assert_eq!(run.input, json!({"item": "Margherita"}));
    assert_eq!(run.fuel_used, Some(4242));
    assert_eq!(rec.orders.len(), 1);
    assert_eq!(rec.orders[0]["items"][0]["name"], "Margherita");
    assert_eq!(
        agent_texts(&rec, Role::Agent),
        ["Buongiorno, Trattoria Roma!", "Your margherita is ordered."]
    );
    assert_eq!(agent_texts(&rec, Role::Caller), ["A margherita please"]);
    assert!(
        rec.transcript.iter().all(|l| !l.cut && l.heard),
        "{:?}",
        rec.transcript
    );
    // The agent got the tool result and the initiation with the restaurant's variables.
    let alog = s.agent.logs().pop().unwrap();
    let results = alog.of_type("client_tool_result");
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["tool_call_id"], "tc1");
    assert_eq!(results[0]["is_error"], false);
    assert!(results[0]["result"]
        .as_str()
        .unwrap()
        .contains("Trattoria Roma"));
    let init = alog.initiation.unwrap();
    assert_eq!(
        init["dynamic_variables"]["restaurant_name"],
        "Trattoria Roma"
    );
    assert_eq!(init["dynamic_variables"]["caller_number"], "+15551001");
    assert!(
        init["conversation_config_override"]["agent"]["prompt"]["prompt"]
            .as_str()
            .unwrap()
            .contains("Trattoria Roma")
    );
    // The caller heard 20 agent chunks and echoed a mark for each.
    assert_eq!(log.media.len(), 20);
    assert_eq!(log.marks_echoed, 20);
    assert_eq!(
        alog.audio_chunks, 50,
        "every caller frame reached the agent"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barge_in_clears_and_no_interrupted_audio_reaches_the_caller() {
    let script = AgentScript {
        on_start: vec![say(
            "one two three four five six seven eight nine ten",
            50,
            1,
            0x11,
        )],
        on_chunk: vec![
            (
                10,
                AgentAction::Interrupt {
                    event_id: 1,
                    transcript: "wait, stop".into(),
                },
            ),
            (
                10,
                AgentAction::LateAudio {
                    chunks: 5,
                    event_id: 1,
                    fill: 0x33,
                },
            ),
            (12, say("Sure, go ahead.", 5, 2, 0x22)),
        ],
        ..Default::default()
    };
    let s = stack(script).await;
    let log = run_caller(s.caller("CA1002", "trattoria-roma", 30))
        .await
        .unwrap();
    let rec = s.record("CA1002").await;
    assert_eq!(log.clears, 1);
    let late = B64.encode([0x33u8; 160]);
    let old = B64.encode([0x11u8; 160]);
    assert!(
        log.media.iter().all(|(p, _)| p != &late),
        "interrupted audio reached the caller"
    );
    let after_clear: Vec<&String> = log
        .media
        .iter()
        .filter(|(_, c)| *c == 1)
        .map(|(p, _)| p)
        .collect();
    assert_eq!(
        after_clear.len(),
        5,
        "only the new response plays after the clear"
    );
    assert!(after_clear.iter().all(|p| **p != old));
    let first = &rec.transcript[0];
    assert_eq!(first.role, Role::Agent);
    assert!(first.cut && first.heard, "{first:?}");
    let heard_words = first.text.split_whitespace().count();
    assert!(
        (1..=6).contains(&heard_words),
        "caller heard ~200-400 ms of a 1 s line: {first:?}"
    );
    assert_eq!(
        first.full_text.as_deref(),
        Some("one two three four five six seven eight nine ten")
    );
    let second = rec
        .transcript
        .iter()
        .find(|l| l.text == "Sure, go ahead.")
        .unwrap();
    assert!(!second.cut);
    // The barge-in and the first audio are measured, with the bridge's own share.
    let lat = rec.latency.expect("latency figures");
    assert_eq!(lat.barge_in_us.len(), 1, "{lat:?}");
    assert!(lat.first_audio_ms.is_some() && lat.first_audio_bridge_us.is_some(), "{lat:?}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_get_pongs_with_the_same_event_id() {
    let script = AgentScript {
        on_start: vec![AgentAction::Ping(42)],
        on_chunk: vec![(5, AgentAction::Ping(43)), (6, AgentAction::Ping(7))],
        ..Default::default()
    };
    let s = stack(script).await;
    run_caller(s.caller("CA1003", "sakura-sushi", 15))
        .await
        .unwrap();
    s.record("CA1003").await;
    let alog = s.agent.logs().pop().unwrap();
    let ids: Vec<u64> = alog
        .of_type("pong")
        .iter()
        .map(|p| p["event_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [42, 43, 7]);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtmf_zero_transfers_to_staff_through_twilio_rest() {
    let s = stack(AgentScript {
        on_start: vec![say("Hello", 5, 1, 0x11)],
        ..Default::default()
    })
    .await;
    let mut c = s.caller("CA1004", "trattoria-roma", 200);
    c.actions = vec![
        (5, CallerAction::Dtmf("5".into())),
        (10, CallerAction::Dtmf("0".into())),
    ];
    let log = run_caller(c).await.unwrap();
    let rec = s.record("CA1004").await;
    let update = s
        .rest
        .wait_for("CA1004", Duration::from_secs(2))
        .await
        .expect("call update");
    assert!(
        update.twiml.contains("<Dial") && update.twiml.contains("+390612345600"),
        "{}",
        update.twiml
    );
    assert_eq!(rec.end_reason, EndReason::Transfer);
    let t = rec.transfer.unwrap();
    assert_eq!((t.to.as_str(), t.ok), ("+390612345600", true));
    assert_eq!(
        rec.dtmf
            .iter()
            .map(|d| (d.digit.as_str(), d.action.as_str()))
            .collect::<Vec<_>>(),
        [("5", "contextual_update"), ("0", "transfer_to_staff")]
    );
    assert!(
        log.closed_by_bridge,
        "the bridge ends the stream after the transfer"
    );
    let alog = s.agent.logs().pop().unwrap();
    assert!(alog
        .of_type("contextual_update")
        .iter()
        .any(|m| m["text"].as_str().unwrap().contains("key 5")));
    assert_eq!(
        s.rest.unauthorized(),
        0
    );
    // The agent session is closed.
    eventually("the agent session to close", Duration::from_secs(5), || s.agent.logs().pop().is_some_and(|l| l.closed)).await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_drop_mid_call_falls_back_within_two_seconds() {
    let script = AgentScript {
        on_start: vec![say("Hello", 5, 1, 0x11)],
        on_chunk: vec![(10, AgentAction::Drop)],
        ..Default::default()
    };
    let s = stack(script).await;
    // The first conversation is accepted, the reconnect is refused: the fallback must play.
    s.agent
        .accept_ws
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let t0 = Instant::now();
    let caller = tokio::spawn(run_caller(s.caller("CA1005", "brooklyn-smokehouse", 300)));
    let update = s
        .rest
        .wait_for("CA1005", Duration::from_secs(5))
        .await
        .expect("fallback call update");
    // Frame 10 leaves the caller at ~200 ms; the fallback must follow within 2 s of the drop.
    assert!(
        update.at.duration_since(t0) < Duration::from_millis(2_300),
        "{:?}",
        update.at.duration_since(t0)
    );
    assert!(update.twiml.contains("<Dial"), "{}", update.twiml);
    let rec = s.record("CA1005").await;
    assert_eq!(rec.end_reason, EndReason::AgentFailed);
    let fb = rec.fallback.unwrap();
    assert_eq!(fb.kind, "dial");
    assert!(fb.ok);
    let _ = caller.await;
    assert_eq!(
        s.agent.logs().len(),
        1,
        "the reconnect was attempted but refused"
    );
    assert_eq!(
        s.agent
            .signed_url_requests
            .load(std::sync::atomic::Ordering::SeqCst),
        2
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_url_failure_is_retried_once() {
    let s = stack(AgentScript {
        on_start: vec![say("Hello after retry", 3, 1, 0x11)],
        ..Default::default()
    })
    .await;
    s.agent
        .refuse_signed_url
        .store(1, std::sync::atomic::Ordering::SeqCst);
    run_caller(s.caller("CA1013", "trattoria-roma", 20))
        .await
        .unwrap();
    let rec = s.record("CA1013").await;
    assert_eq!(rec.end_reason, EndReason::CallerHungUp);
    assert_eq!(agent_texts(&rec, Role::Agent), ["Hello after retry"]);
    assert!(s.rest.updates_for("CA1013").is_empty());
    // Both attempts failing → fallback.
    s.agent
        .refuse_signed_url
        .store(2, std::sync::atomic::Ordering::SeqCst);
    run_caller(s.caller("CA1014", "sakura-sushi", 60))
        .await
        .unwrap();
    let rec = s.record("CA1014").await;
    assert_eq!(rec.end_reason, EndReason::AgentFailed);
    assert!(s
        .rest
        .wait_for("CA1014", Duration::from_secs(1))
        .await
        .is_some());
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ulaw_agent_passes_payload_bytes_through_untouched() {
    let s = stack(AgentScript {
        on_start: vec![say("Hi", 8, 1, 0x21)],
        ..Default::default()
    })
    .await;
    let log = run_caller(s.caller("CA1006", "trattoria-roma", 25))
        .await
        .unwrap();
    let rec = s.record("CA1006").await;
    assert_eq!(rec.agent_audio_format.as_deref(), Some("ulaw_8000"));
    let alog = s.agent.logs().pop().unwrap();
    let sent = B64.encode([0x5au8; 160]);
    assert_eq!(alog.audio_payloads.len(), 25);
    assert!(
        alog.audio_payloads.iter().all(|p| *p == sent),
        "caller payloads reach the agent byte for byte"
    );
    let agent_chunk = B64.encode([0x21u8; 160]);
    assert_eq!(log.media.len(), 8);
    assert!(
        log.media.iter().all(|(p, _)| *p == agent_chunk),
        "agent payloads reach the caller byte for byte"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_audio_faster_than_real_time_never_reaches_the_agent_at_that_rate() {
    let s = stack(AgentScript::default()).await;
    // 2,000 frames of 20 ms (40 s of audio) at one per millisecond: about 20x real time.
    let mut c = s.caller("CA1060", "trattoria-roma", 2_000);
    c.frame_interval = Duration::from_millis(1);
    c.linger = Duration::from_millis(100);
    let began = Instant::now();
    let log = run_caller(c).await.unwrap();
    let elapsed_ms = began.elapsed().as_millis() as u64;
    assert_eq!(log.sent_frames, 2_000);
    s.record("CA1060").await;
    let chunks = s.agent.log_for_caller("+15551060").unwrap().audio_chunks;
    // Real time plus the 2 s burst, and a frame of rounding.
    let allowed = (elapsed_ms + 2_000) / 20 + 1;
    assert!(
        chunks <= allowed,
        "{chunks} chunks reached the agent in {elapsed_ms} ms (at most {allowed} in real time)"
    );
    assert!(chunks >= 100, "the burst still goes through ({chunks})");
    let metrics = reqwest::get(format!("{}/metrics", s.http_base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        exposition::parse(&metrics).unwrap().value("pulsara_errors_total", &[("kind", "caller_audio_policed")]) == Some(1.0),
        "the policed call is counted"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcm_agent_is_transcoded_with_resampling() {
    let script = AgentScript {
        input_format: "pcm_16000".into(),
        output_format: "pcm_16000".into(),
        on_start: vec![say("Hi", 25, 1, 100)],
        ..Default::default()
    };
    let s = stack(script).await;
    let log = run_caller(s.caller("CA1007", "trattoria-roma", 25))
        .await
        .unwrap();
    let rec = s.record("CA1007").await;
    assert_eq!(rec.agent_audio_format.as_deref(), Some("pcm_16000"));
    let alog = s.agent.logs().pop().unwrap();
    let pcm_bytes: usize = alog
        .audio_payloads
        .iter()
        .map(|p| B64.decode(p).unwrap().len())
        .sum();
    // 500 ms of caller audio → ~16,000 bytes of 16 kHz PCM16 (minus the resampler's delay).
    assert!((14_000..=16_000).contains(&pcm_bytes), "{pcm_bytes}");
    let ulaw: Vec<u8> = log
        .media
        .iter()
        .flat_map(|(p, _)| B64.decode(p).unwrap())
        .collect();
    // 500 ms of agent audio → ~4,000 bytes of μ-law, and a tone, not a constant.
    assert!((3_500..=4_000).contains(&ulaw.len()), "{}", ulaw.len());
    let distinct: std::collections::BTreeSet<u8> = ulaw.iter().copied().collect();
    assert!(distinct.len() > 20, "transcoded audio carries the tone");
    s.shutdown().await;
}

async fn rejected(mut c: CallerScript, token: String) -> CallerLog {
    c.params.insert("handoff".into(), token);
    run_caller(c).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_wrong_call_and_replayed_tokens_are_rejected_without_the_agent() {
    let s = stack(AgentScript::default()).await;
    let forger = HandoffKeys::parse(&Secret::new("k1:not-the-real-key-0123456")).unwrap();
    let cases = [
        ("CA2001", token(&forger, "CA2001", "trattoria-roma", now())),
        (
            "CA2002",
            token(&s.keys, "CA2002", "trattoria-roma", now() - 600),
        ),
        ("CA2003", token(&s.keys, "CA9999", "trattoria-roma", now())),
        ("CA2004", "v1.k1.garbage.garbage".to_owned()),
    ];
    for (sid, tok) in cases {
        let log = rejected(s.caller(sid, "trattoria-roma", 50), tok).await;
        assert!(log.closed_by_bridge, "{sid}");
        assert_eq!(log.close_code, Some(1008), "{sid}");
        assert!(log.media.is_empty());
    }
    assert_eq!(
        s.agent
            .signed_url_requests
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    // A good token works once…
    let c = s.caller("CA2005", "trattoria-roma", 5);
    let tok = c.params["handoff"].clone();
    run_caller(c.clone()).await.unwrap();
    s.record("CA2005").await;
    assert_eq!(
        s.agent
            .signed_url_requests
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    // …and is refused when replayed.
    let log = rejected(c, tok).await;
    assert_eq!(log.close_code, Some(1008));
    assert_eq!(
        s.agent
            .signed_url_requests
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert_eq!(s.app.metrics.errors_of("handoff_replayed"), 1);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_unknown_messages_do_not_kill_the_call() {
    let script = AgentScript {
        on_start: vec![
            AgentAction::Raw("this is not json".into()),
            AgentAction::Raw(r#"{"type":"brand_new_event","x":1}"#.into()),
            AgentAction::Raw(
                r#"{"type":"audio","audio_event":{"audio_base_64":"!!!","event_id":1}}"#.into(),
            ),
            say("Still here", 5, 1, 0x11),
        ],
        on_chunk: vec![(15, say("And still here", 5, 2, 0x12))],
        ..Default::default()
    };
    let s = stack(script).await;
    let mut c = s.caller("CA1008", "brooklyn-smokehouse", 25);
    c.actions = vec![
        (3, CallerAction::Raw("{{{".into())),
        (
            4,
            CallerAction::Raw(r#"{"event":"something_new","streamSid":"MZ1008"}"#.into()),
        ),
        (
            5,
            CallerAction::Raw(r#"{"event":"media","streamSid":"MZ1008"}"#.into()),
        ),
        (
            6,
            CallerAction::Raw(
                r#"{"event":"media","streamSid":"MZ1008","media":{"payload":"<script>"}}"#.into(),
            ),
        ),
    ];
    let log = run_caller(c).await.unwrap();
    let rec = s.record("CA1008").await;
    assert_eq!(rec.end_reason, EndReason::CallerHungUp);
    assert_eq!(
        agent_texts(&rec, Role::Agent),
        ["Still here", "And still here"]
    );
    assert_eq!(log.media.len(), 10);
    assert!(!log.closed_by_bridge);
    assert_eq!(s.agent.logs().pop().unwrap().audio_chunks, 25);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_timeout_and_unknown_tool_answer_is_error() {
    let script = AgentScript {
        on_chunk: vec![
            (
                2,
                AgentAction::ToolCall {
                    tool: "slow".into(),
                    id: "t1".into(),
                    params: json!({}),
                },
            ),
            (
                3,
                AgentAction::ToolCall {
                    tool: "nonexistent".into(),
                    id: "t2".into(),
                    params: json!({}),
                },
            ),
        ],
        ..Default::default()
    };
    let s = stack(script).await;
    run_caller(s.caller("CA1009", "trattoria-roma", 50))
        .await
        .unwrap();
    let rec = s.record("CA1009").await;
    let alog = s.agent.logs().pop().unwrap();
    let results = alog.of_type("client_tool_result");
    assert_eq!(results.len(), 2);
    assert!(results.iter().all(|r| r["is_error"] == true));
    let slow = rec.tool_runs.iter().find(|r| r.tool == "slow").unwrap();
    assert!(
        slow.is_error && slow.duration_us >= 500_000 && slow.duration_us < 2_000_000,
        "{slow:?}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restaurant_cap_plays_busy_message() {
    let s = stack_with(AgentScript::default(), 1, |_| {}).await;
    let first = tokio::spawn(run_caller(s.caller("CA1010", "sakura-sushi", 50)));
    eventually("the first call to be live", Duration::from_secs(5), || s.app.live_calls() == 1).await;
    let log = run_caller(s.caller("CA1011", "sakura-sushi", 50))
        .await
        .unwrap();
    assert!(log.closed_by_bridge);
    let rec = s.record("CA1011").await;
    assert_eq!(rec.end_reason, EndReason::Busy);
    let update = s
        .rest
        .wait_for("CA1011", Duration::from_secs(1))
        .await
        .unwrap();
    assert!(update.twiml.contains("<Say"), "{}", update.twiml);
    first.await.unwrap().unwrap();
    assert_eq!(s.record("CA1010").await.end_reason, EndReason::CallerHungUp);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_calls_to_three_restaurants() {
    let script = AgentScript {
        on_start: vec![say("Welcome, {caller_number}", 5, 1, 0x11)],
        on_chunk: vec![
            (
                10,
                AgentAction::UserTranscript("This is {caller_number} calling".into()),
            ),
            (20, say("Thank you {caller_number}", 5, 2, 0x12)),
        ],
        ..Default::default()
    };
    let s = stack_with(script, 100, |_| {}).await;
    let ids = ["trattoria-roma", "brooklyn-smokehouse", "sakura-sushi"];
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for i in 0..200u32 {
        let c = s.caller(&format!("CA3{i:03}"), ids[i as usize % 3], 40);
        handles.push(tokio::spawn(run_caller(c)));
    }
    for h in handles {
        h.await.unwrap().unwrap();
    }
    for i in 0..200u32 {
        let sid = format!("CA3{i:03}");
        let rec = s.record(&sid).await;
        let caller = format!("+15553{i:03}");
        assert_eq!(rec.restaurant_id, ids[i as usize % 3]);
        assert_eq!(rec.end_reason, EndReason::CallerHungUp, "{sid}");
        assert_eq!(
            agent_texts(&rec, Role::Agent),
            [format!("Welcome, {caller}"), format!("Thank you {caller}")],
            "{sid}"
        );
        assert_eq!(
            agent_texts(&rec, Role::Caller),
            [format!("This is {caller} calling")]
        );
    }
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    assert_eq!(s.app.metrics.active_total(), 0);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_live_calls_then_ends_the_rest_politely() {
    let s = stack_with(
        AgentScript {
            on_start: vec![say("Hi", 3, 1, 0x11)],
            ..Default::default()
        },
        50,
        |c| {
            c.limits.shutdown_grace_ms = 1_500;
        },
    )
    .await;
    // A short call that finishes inside the grace period, a long one that does not.
    let short = tokio::spawn(run_caller(s.caller("CA1020", "trattoria-roma", 40)));
    let long = tokio::spawn(run_caller(s.caller("CA1021", "trattoria-roma", 1_000)));
    eventually("both calls to be live", Duration::from_secs(5), || s.app.live_calls() == 2).await;
    let app = s.app.clone();
    let http = s.http_base.clone();
    let ws = s.ws_url.clone();
    let keys = s.keys.clone();
    let sink = s.sink.clone();
    let rest = s.rest.clone();
    let t0 = Instant::now();
    let mut stack = s;
    let _ = stack.stop.take().unwrap().send(());
    eventually("the bridge to start draining", Duration::from_secs(2), || !app.is_ready()).await;
    // New streams are refused while draining (the listener is closed or answers 503).
    let mut late = stack.caller("CA1022", "trattoria-roma", 5);
    late.ws_url = ws;
    late.params.insert(
        "handoff".into(),
        token(&keys, "CA1022", "trattoria-roma", now()),
    );
    assert!(run_caller(late)
        .await
        .map(|l| l.closed_by_bridge)
        .unwrap_or(true));
    let _ = http;
    short.await.unwrap().unwrap();
    assert_eq!(
        sink.wait_for("CA1020", Duration::from_secs(3))
            .await
            .unwrap()
            .end_reason,
        EndReason::CallerHungUp
    );
    let _ = long.await.unwrap();
    let rec = sink
        .wait_for("CA1021", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(rec.end_reason, EndReason::BridgeShutdown);
    let elapsed = t0.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1_400) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
    assert!(
        rest.wait_for("CA1021", Duration::from_secs(1))
            .await
            .is_some(),
        "the long call was ended politely"
    );
    assert!(sink.get("CA1022").is_none());
    tokio::time::timeout(Duration::from_secs(10), stack.server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_metrics_endpoints() {
    let s = stack(AgentScript {
        on_start: vec![say("Hi", 3, 1, 0x11)],
        ..Default::default()
    })
    .await;
    run_caller(s.caller("CA1030", "trattoria-roma", 10))
        .await
        .unwrap();
    s.record("CA1030").await;
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(format!("{}/healthz", s.http_base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(format!("{}/readyz", s.http_base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let text = http
        .get(format!("{}/metrics", s.http_base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let m = exposition::parse(&text).unwrap();
    assert_eq!(m.value("pulsara_frames_total", &[("dir", "in_twilio")]), Some(10.0), "{text}");
    assert_eq!(m.value("pulsara_frames_total", &[("dir", "out_twilio")]), Some(3.0), "{text}");
    assert_eq!(m.value("pulsara_calls_ended_total", &[("reason", "caller_hung_up")]), Some(1.0), "{text}");
    // Frames that arrived before the agent was ready are buffered, not timed.
    let timed = m.value("pulsara_added_latency_seconds_count", &[("dir", "to_agent")]).unwrap();
    assert!((1.0..=10.0).contains(&timed), "{text}");
    assert_eq!(m.value("pulsara_added_latency_seconds_count", &[("dir", "to_caller")]), Some(3.0), "{text}");
    // Every family the bridge and its listener expose says what it is.
    assert_eq!(m.families_missing_help_or_type(), Vec::<String>::new(), "{text}");
    for family in ["pulsara_frames_total", "pulsara_added_latency_seconds", "pulsara_http_connections_accepted_total"] {
        assert!(m.help.contains_key(family) && m.types.contains_key(family), "{family}: {text}");
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_signature_is_checked_against_the_public_url() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let s = stack_with(AgentScript::default(), 50, |c| {
        c.public_base_url = Some("https://bridge.example.com".into());
        c.require_twilio_signature = true;
    })
    .await;
    let good = pulsara_core::twilio::compute_signature(
        &Secret::new(TOKEN),
        "wss://bridge.example.com/media",
        &[],
    );
    let forged = pulsara_core::twilio::compute_signature(
        &Secret::new("wrong"),
        "wss://bridge.example.com/media",
        &[],
    );
    let attempt = |sig: Option<String>| {
        let url = s.ws_url.clone();
        async move {
            let mut req = url.into_client_request().unwrap();
            if let Some(sig) = sig {
                req.headers_mut()
                    .insert("X-Twilio-Signature", sig.parse().unwrap());
            }
            match tokio_tungstenite::connect_async(req).await {
                Ok(_) => 101,
                Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
                Err(e) => panic!("{e}"),
            }
        }
    };
    assert_eq!(attempt(None).await, 403);
    assert_eq!(attempt(Some(forged)).await, 403);
    assert_eq!(attempt(Some(String::new())).await, 403);
    assert_eq!(attempt(Some(good)).await, 101);
    assert_eq!(
        s.agent
            .signed_url_requests
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_ending_the_conversation_hangs_up_after_the_goodbye_plays() {
    let script = AgentScript {
        on_start: vec![say("Hello", 3, 1, 0x11)],
        on_chunk: vec![
            (10, say("Goodbye, see you soon!", 25, 2, 0x12)),
            (10, AgentAction::Close),
        ],
        ..Default::default()
    };
    let s = stack(script).await;
    let t0 = Instant::now();
    let log = run_caller(s.caller("CA1040", "trattoria-roma", 500))
        .await
        .unwrap();
    let rec = s.record("CA1040").await;
    assert_eq!(rec.end_reason, EndReason::AgentEnded);
    let update = s
        .rest
        .wait_for("CA1040", Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(update.status.as_deref(), Some("completed"), "the call is ended, not redirected");
    // Not before the 500 ms goodbye (sent at ~200 ms) has played.
    assert!(
        update.at.duration_since(t0) >= Duration::from_millis(650),
        "{:?}",
        update.at.duration_since(t0)
    );
    // And soon after its last mark came back, while the caller still streams a frame every
    // 20 ms (500 frames: 10 s): a timer re-armed by every frame would never fire.
    let last_mark = log.last_mark_at.expect("the goodbye's marks were echoed");
    let after_mark = update.at.saturating_duration_since(last_mark);
    assert!(after_mark <= Duration::from_millis(250), "hang-up {after_mark:?} after the last mark");
    assert!(
        log.sent_frames < 250,
        "the bridge hung up while the caller was still sending (sent {})",
        log.sent_frames
    );
    assert_eq!(log.media.len(), 28);
    assert!(rec.fallback.is_none());
    assert!(
        !rec.transcript.iter().any(|l| l.cut),
        "{:?}",
        rec.transcript
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_conversation_keeps_elevenlabs_reason_on_the_record_and_in_metrics() {
    // An agent that does not allow the language override; the restaurant was never synced, so
    // the bridge sends it, and the agent refuses as the server does.
    let script = AgentScript {
        allowed_overrides: vec!["agent.prompt.prompt".into(), "agent.first_message".into(), "tts.voice_id".into()],
        ..Default::default()
    };
    let s = stack(script).await;
    let caller = tokio::spawn(run_caller(s.caller("CA1050", "brooklyn-smokehouse", 150)));
    let update = s
        .rest
        .wait_for("CA1050", Duration::from_secs(5))
        .await
        .expect("fallback call update");
    assert!(update.twiml.contains("<Dial"), "{}", update.twiml);
    let rec = s.record("CA1050").await;
    let _ = caller.await;
    assert_eq!(rec.end_reason, EndReason::AgentFailed);
    let detail = rec.end_reason_detail.expect("ElevenLabs' reason is on the record");
    assert_eq!(detail.error_type.as_deref(), Some("override_error"));
    assert_eq!(detail.error_code, Some(1008));
    assert_eq!(detail.close_code, Some(1008));
    assert_eq!(detail.close_reason.as_deref(), Some("override_error"));
    let fb = rec.fallback.expect("fallback");
    assert!(fb.reason.contains("override_error"), "{}", fb.reason);
    // Counted once per call (the retried connect was refused the same way).
    assert_eq!(s.app.metrics.agent_errors_of("override_error"), 1);
    let metrics = reqwest::get(format!("{}/metrics", s.http_base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        exposition::parse(&metrics).unwrap().value("pulsara_agent_errors_total", &[("type", "override_error")]),
        Some(1.0),
        "{metrics}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_mid_call_is_kept_with_the_close_code() {
    let script = AgentScript {
        on_start: vec![say("Hello", 3, 1, 0x11)],
        on_chunk: vec![(
            10,
            AgentAction::Fail {
                error_type: "max_duration_exceeded".into(),
                close_code: 1011,
            },
        )],
        ..Default::default()
    };
    let s = stack(script).await;
    s.agent
        .accept_ws
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let caller = tokio::spawn(run_caller(s.caller("CA1051", "brooklyn-smokehouse", 150)));
    let rec = s.record("CA1051").await;
    let _ = caller.await;
    let detail = rec.end_reason_detail.expect("reason kept");
    assert_eq!(detail.error_type.as_deref(), Some("max_duration_exceeded"));
    assert_eq!(detail.close_code, Some(1011));
    assert_eq!(s.app.metrics.agent_errors_of("max_duration_exceeded"), 1);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_down_voicemail_reports_to_a_signed_route_that_keeps_it() {
    // Brooklyn without a staff or fallback number: the agent-down fallback is a voicemail.
    let src = restaurants(50);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../restaurants/brooklyn-smokehouse");
    let (mut cfg, kb) = load_one(&dir).unwrap();
    cfg.staff_number = None;
    cfg.fallback_number = None;
    src.insert(cfg, kb);
    let script = AgentScript {
        refuse: Some("internal_error".into()),
        ..Default::default()
    };
    let public = "https://bridge.test";
    let s = stack_on(script, src, |c| c.public_base_url = Some(public.into())).await;
    let caller = tokio::spawn(run_caller(s.caller("CA1060", "brooklyn-smokehouse", 100)));
    let update = s.rest.wait_for("CA1060", Duration::from_secs(5)).await.expect("fallback");
    let _ = caller.await;
    let doc = pulsara_emulators::twiml::parse(&update.twiml).unwrap();
    let record = doc.find("Record").expect("a <Record>");
    let action = record.attr("action").expect("action");
    assert_eq!(record.attr("recordingStatusCallback"), Some(action));
    let expected = "https://bridge.test/twilio/recording?restaurant=brooklyn-smokehouse&caller=%2B15551060";
    assert_eq!(action, expected);
    let rec = s.record("CA1060").await;
    assert_eq!(rec.fallback.as_ref().map(|f| f.kind.as_str()), Some("voicemail"));

    // Twilio's callbacks, signed over the public URL.
    let path_and_query = &expected[public.len()..];
    let post = |params: Vec<(&str, &str)>, sig: Option<String>| {
        let url = format!("{}{path_and_query}", s.http_base);
        let owned: Vec<(String, String)> = params.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        let sig = sig.unwrap_or_else(|| {
            pulsara_core::twilio::compute_signature(&Secret::new(TOKEN), expected, &owned)
        });
        async move {
            reqwest::Client::new()
                .post(url)
                .header("X-Twilio-Signature", sig)
                .form(&owned)
                .send()
                .await
                .unwrap()
        }
    };
    let status = vec![
        ("AccountSid", SID),
        ("CallSid", "CA1060"),
        ("RecordingSid", "RE1060"),
        ("RecordingUrl", "https://api.twilio.com/2010-04-01/Accounts/AC0/Recordings/RE1060"),
        ("RecordingStatus", "completed"),
        ("RecordingDuration", "9"),
    ];
    let forged = post(status.clone(), Some("AAAAAAAAAAAAAAAAAAAAAAAAAAA=".into())).await;
    assert_eq!(forged.status(), 403);
    assert!(s.sink.voicemails().is_empty(), "a forged callback stores nothing");
    let ok = post(status, None).await;
    assert_eq!(ok.status(), 204);
    let kept = s.sink.voicemails();
    assert_eq!(kept.len(), 1);
    let (sid, rid, event) = &kept[0];
    assert_eq!((sid.as_str(), rid.as_str()), ("CA1060", "brooklyn-smokehouse"));
    let vm = pulsara_dashboard::voicemail::from_event(event).expect("a voicemail");
    assert_eq!(vm.recording_sid.as_deref(), Some("RE1060"));
    assert_eq!(vm.duration_secs, Some(9));
    assert_eq!(vm.caller.as_deref(), Some("+15551060"));
    // The action request ends the call instead of replaying the stream's TwiML.
    let action_reply = post(vec![("CallSid", "CA1060"), ("RecordingUrl", "https://x/RE1060"), ("Digits", "hangup")], None).await;
    assert_eq!(action_reply.status(), 200);
    assert!(action_reply.text().await.unwrap().contains("<Hangup/>"));
    s.shutdown().await;
}

impl Stack {
    /// `POST /prepare` as the edge sends it; the status.
    async fn prepare(&self, call_sid: &str, handoff: &str) -> u16 {
        reqwest::Client::new()
            .post(format!("{}/prepare", self.http_base))
            .json(&json!({"call_sid": call_sid, "handoff": handoff, "caller": format!("+1555{}", &call_sid[2..]), "called": "+390612345678"}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let text = reqwest::get(format!("{}/metrics", self.http_base)).await.unwrap().text().await.unwrap();
        exposition::parse(&text).unwrap().value(name, labels)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_prepared_while_twilio_connects_is_adopted_by_its_stream() {
    let script = AgentScript { on_start: vec![say("Buongiorno, Trattoria Roma!", 10, 1, 0x11)], ..Default::default() };
    let s = stack(script).await;
    let caller = s.caller("CA2001", "trattoria-roma", 40);
    let token = caller.params["handoff"].clone();
    assert_eq!(s.prepare("CA2001", &token).await, 202);
    // The agent session is open, initiated, before any stream exists.
    eventually("the prepared session", Duration::from_secs(5), || s.agent.logs().first().is_some_and(|l| l.initiation.is_some())).await;
    assert_eq!(s.metric("pulsara_prepared_sessions", &[]).await, Some(1.0));
    let log = run_caller(caller).await.unwrap();
    let rec = s.record("CA2001").await;
    assert_eq!(s.agent.logs().len(), 1, "the stream adopted the prepared session instead of opening another");
    assert_eq!(s.agent.signed_url_requests.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(log.media.len(), 10, "the greeting played");
    assert_eq!(agent_texts(&rec, Role::Agent), ["Buongiorno, Trattoria Roma!"]);
    let lat = rec.latency.expect("latency figures");
    assert!(lat.prepared, "{lat:?}");
    assert_eq!(s.agent.logs()[0].audio_chunks, 40, "every caller frame reached the agent, in order");
    assert_eq!(s.metric("pulsara_prepare_claimed_total", &[]).await, Some(1.0));
    assert_eq!(s.metric("pulsara_prepared_sessions", &[]).await, Some(0.0));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_session_nobody_claims_is_closed_in_time_and_costed() {
    let s = stack_with(AgentScript::default(), 50, |c| c.limits.prepare_ttl_ms = 300).await;
    let caller = s.caller("CA2002", "trattoria-roma", 30);
    let token = caller.params["handoff"].clone();
    assert_eq!(s.prepare("CA2002", &token).await, 202);
    eventually("the prepared session closed", Duration::from_secs(3), || s.agent.logs().first().is_some_and(|l| l.closed)).await;
    assert_eq!(s.metric("pulsara_prepare_unclaimed_total", &[]).await, Some(1.0));
    let held_ms = s.metric("pulsara_prepare_unclaimed_agent_ms_total", &[]).await.unwrap();
    assert!((100.0..3000.0).contains(&held_ms), "{held_ms}");
    assert_eq!(s.metric("pulsara_prepared_sessions", &[]).await, Some(0.0));
    // The call's stream, arriving late, connects as it always did.
    run_caller(caller).await.unwrap();
    let rec = s.record("CA2002").await;
    assert_eq!(rec.end_reason, EndReason::CallerHungUp);
    assert!(!rec.latency.is_some_and(|l| l.prepared));
    assert_eq!(s.agent.logs().len(), 2);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_other_region_and_excess_prepares_are_refused() {
    let s = stack_with(AgentScript::default(), 50, |c| {
        c.region = "eu-west".into();
        c.limits.max_prepared_per_restaurant = 1;
    })
    .await;
    let forged = token(&HandoffKeys::parse(&Secret::new("k1:some-other-key-0123456789")).unwrap(), "CA2003", "trattoria-roma", now());
    assert_eq!(s.prepare("CA2003", &forged).await, 403);
    let good = token(&s.keys, "CA2003", "trattoria-roma", now());
    assert_eq!(s.prepare("CA2099", &good).await, 403, "another call's token");
    let us = s.keys.issue(&HandoffClaims {
        call_sid: "CA2004".into(),
        restaurant_id: "trattoria-roma".into(),
        config_version: 1,
        region: "us-east".into(),
        iat: now(),
        exp: now() + 60,
    });
    assert_eq!(s.prepare("CA2004", &us.unwrap()).await, 403, "a token for another region");
    let malformed = reqwest::Client::new().post(format!("{}/prepare", s.http_base)).body("{not json").send().await.unwrap();
    assert_eq!(malformed.status().as_u16(), 400);
    assert_eq!(s.prepare("CA2003", &good).await, 202);
    assert_eq!(s.prepare("CA2003", &good).await, 409, "single use");
    // One per restaurant here: another Roma call is refused, a Brooklyn one is taken.
    assert_eq!(s.prepare("CA2005", &token(&s.keys, "CA2005", "trattoria-roma", now())).await, 429);
    assert_eq!(s.prepare("CA2006", &token(&s.keys, "CA2006", "brooklyn-smokehouse", now())).await, 202);
    assert_eq!(s.metric("pulsara_prepare_refused_total", &[("reason", "bad_token")]).await, Some(3.0));
    assert_eq!(s.metric("pulsara_prepare_refused_total", &[("reason", "replayed")]).await, Some(1.0));
    assert_eq!(s.metric("pulsara_prepare_refused_total", &[("reason", "restaurant_full")]).await, Some(1.0));
    assert_eq!(s.metric("pulsara_prepare_refused_total", &[("reason", "malformed")]).await, Some(1.0));
    // A stream carrying a different token for a prepared call does not adopt its session.
    let mut other = s.caller("CA2006", "brooklyn-smokehouse", 20);
    other.params.insert("handoff".into(), token(&s.keys, "CA2006", "brooklyn-smokehouse", now() - 1));
    run_caller(other).await.unwrap();
    assert!(!s.record("CA2006").await.latency.is_some_and(|l| l.prepared));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepare_that_fails_leaves_the_call_to_connect_on_its_stream() {
    let script = AgentScript { on_start: vec![say("Hello!", 5, 1, 0x11)], ..Default::default() };
    let s = stack(script).await;
    // ElevenLabs refuses the prepare's signed URL once; the stream's own connect succeeds.
    s.agent.refuse_signed_url.store(1, std::sync::atomic::Ordering::SeqCst);
    let caller = s.caller("CA2007", "sakura-sushi", 30);
    let token = caller.params["handoff"].clone();
    assert_eq!(s.prepare("CA2007", &token).await, 202);
    eventually("the prepare's attempt", Duration::from_secs(3), || s.agent.signed_url_requests.load(std::sync::atomic::Ordering::SeqCst) >= 1).await;
    let log = run_caller(caller).await.unwrap();
    let rec = s.record("CA2007").await;
    assert_eq!(rec.end_reason, EndReason::CallerHungUp, "{rec:?}");
    assert!(rec.fallback.is_none(), "{:?}", rec.fallback);
    assert_eq!(log.media.len(), 5, "the greeting played");
    assert_eq!(s.agent.logs().len(), 1);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepare_arriving_after_its_stream_started_opens_nothing() {
    let s = stack(AgentScript::default()).await;
    let caller = s.caller("CA2008", "trattoria-roma", 30);
    let token = caller.params["handoff"].clone();
    let call = tokio::spawn(run_caller(caller));
    eventually("the stream's own agent session", Duration::from_secs(5), || s.agent.logs().len() == 1).await;
    assert_eq!(s.prepare("CA2008", &token).await, 409, "the stream came first");
    call.await.unwrap().unwrap();
    s.record("CA2008").await;
    assert_eq!(s.agent.logs().len(), 1, "no second session was opened");
    s.shutdown().await;
}
