//! The bridge's front door on loopback: silent sockets are closed and a genuine call gets through
//! a flood of them; streams that would wait for `start` beyond the cap are refused with 503 before
//! the upgrade (and counted in `/metrics`); on shutdown the probes keep answering through the
//! grace period, `/readyz` says "draining", new streams get 503, and a call ended by the grace
//! hears why before it is put through.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pulsara_bridge::config::BridgeConfig;
use pulsara_bridge::ports::{
    CallSink, MemoryConfigSource, MemorySink, ToolContext, ToolError, ToolOutcome, ToolRunner,
};
use pulsara_emulators::exposition;
use pulsara_emulators::twilio_rest::{self, RestRecorder};
use pulsara_emulators::scripted::{
    run_caller, AgentAction, AgentScript, CallerScript, FakeAgent, };
use pulsara_bridge::App;
use pulsara_core::call_record::EndReason;
use pulsara_core::handoff::{HandoffClaims, HandoffKeys};
use pulsara_core::secret::Secret;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const API_KEY: &str = "xi-test-key";
const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "twilio-test-token";
const KEYS: &str = "k1:handoff-test-key-0123456789";
/// Generous bound for "eventually" (the deadlines under test are far shorter).
const WITHIN: Duration = Duration::from_secs(20);

struct NoTools;

#[async_trait::async_trait]
impl ToolRunner for NoTools {
    async fn run(
        &self,
        _: &ToolContext,
        tool: &str,
        _: serde_json::Value,
    ) -> Result<ToolOutcome, ToolError> {
        Err(ToolError::UnknownTool(tool.to_owned()))
    }
}

struct Stack {
    app: Arc<App>,
    addr: std::net::SocketAddr,
    rest: Arc<RestRecorder>,
    sink: Arc<MemorySink>,
    keys: HandoffKeys,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn stack(tweak: impl FnOnce(&mut BridgeConfig)) -> Stack {
    let agent = FakeAgent::new(
        API_KEY,
        AgentScript {
            on_start: vec![AgentAction::Say {
                text: "Hi".into(),
                chunks: 3,
                event_id: 1,
                fill: 0x11,
            }],
            ..Default::default()
        },
    );
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
    tweak(&mut cfg);
    cfg.validate().unwrap();
    let configs = MemoryConfigSource::new();
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../restaurants/trattoria-roma");
    let (restaurant, kb) = pulsara_bridge::ports::load_one(&dir).expect("example restaurant");
    configs.insert(restaurant, kb);
    let sink = Arc::new(MemorySink::new(1_000));
    let app = App::new(
        cfg,
        Arc::new(configs),
        Arc::new(NoTools),
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
        addr,
        rest,
        sink,
        keys: HandoffKeys::parse(&Secret::new(KEYS)).unwrap(),
        stop: Some(stop),
        server,
    }
}

impl Stack {
    fn caller(&self, call_sid: &str, frames: u64) -> CallerScript {
        let now = chrono::Utc::now().timestamp();
        let token = self
            .keys
            .issue(&HandoffClaims {
                call_sid: call_sid.into(),
                restaurant_id: "trattoria-roma".into(),
                config_version: 1,
                region: "eu-west".into(),
                iat: now,
                exp: now + 60,
            })
            .unwrap();
        let mut params = BTreeMap::new();
        params.insert("handoff".to_owned(), token);
        params.insert("caller".to_owned(), "+15550001234".to_owned());
        params.insert("called".to_owned(), "+390612345678".to_owned());
        CallerScript {
            ws_url: format!("ws://{}/media", self.addr),
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

    async fn get(&self, path: &str) -> (u16, String) {
        let resp = reqwest::get(format!("http://{}{path}", self.addr))
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }
}

/// True when the server closed the socket (EOF or reset) within [`WITHIN`].
async fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    matches!(
        tokio::time::timeout(WITHIN, s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < WITHIN, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The status and body of a `/media` upgrade attempt that the bridge refused.
async fn refused_upgrade(addr: std::net::SocketAddr) -> (u16, String) {
    match tokio_tungstenite::connect_async(format!("ws://{addr}/media")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => (
            resp.status().as_u16(),
            String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned(),
        ),
        Err(e) => panic!("upgrade failed without an HTTP answer: {e}"),
        Ok(_) => panic!("upgrade accepted"),
    }
}

/// The sample `name` with exactly `labels` in `/metrics` text; panics when it is absent.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    exposition::parse(text)
        .unwrap()
        .value(name, labels)
        .unwrap_or_else(|| panic!("no {name}{labels:?} in\n{text}")) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_are_closed_and_a_call_gets_through_the_flood() {
    let s = stack(|c| {
        c.limits.http_header_timeout_ms = 500;
        c.limits.http_max_unserved = Some(64);
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(TcpStream::connect(s.addr).await.unwrap());
    }
    let log = run_caller(s.caller("CA7001", 20)).await.unwrap();
    assert!(!log.media.is_empty(), "the caller heard the agent");
    let rec = s
        .sink
        .wait_for("CA7001", WITHIN)
        .await
        .expect("call record");
    assert_eq!(rec.end_reason, EndReason::CallerHungUp);
    for sock in &mut silent {
        assert!(
            closed_by_server(sock).await,
            "a silent socket was held open"
        );
    }
    let (_, text) = s.get("/metrics").await;
    let evicted = metric(&text, "pulsara_http_connections_evicted_total", &[("listener", "bridge")]);
    let timed_out = metric(&text, "pulsara_http_header_timeouts_total", &[("listener", "bridge")]);
    assert!(evicted + timed_out >= 300, "{text}");
    assert!(evicted >= 300 - 64, "the cap held the flood to 64: {text}");
    assert_eq!(
        metric(&text, "pulsara_http_upgrades_total", &[("listener", "bridge")]),
        1,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_waiting_for_start_beyond_the_cap_are_refused_with_503() {
    let s = stack(|c| {
        c.limits.max_pending_start = 4;
        c.limits.start_timeout_ms = 30_000;
    })
    .await;
    // Four streams upgrade and never send `start`.
    let mut idle = Vec::new();
    for _ in 0..4 {
        let (ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/media", s.addr))
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 101);
        idle.push(ws);
    }
    let (status, body) = refused_upgrade(s.addr).await;
    assert_eq!(
        (status, body.as_str()),
        (503, "overloaded: too many streams waiting to start")
    );
    let (_, text) = s.get("/metrics").await;
    assert_eq!(metric(&text, "pulsara_streams_pending_start", &[]), 4, "{text}");
    assert_eq!(
        metric(&text, "pulsara_streams_shed_total", &[("reason", "start_backlog")]),
        1,
        "{text}"
    );
    assert!(exposition::parse(&text).unwrap().value("pulsara_scheduling_lag_seconds", &[]).is_some(), "{text}");
    // One idle stream goes away: its place is released and a genuine call gets in.
    drop(idle.pop());
    let app = s.app.clone();
    wait_for("a released place", || {
        app.metrics.streams_pending_start.get() == 3
    })
    .await;
    let log = run_caller(s.caller("CA7002", 10)).await.unwrap();
    assert!(!log.media.is_empty());
    let rec = s
        .sink
        .wait_for("CA7002", WITHIN)
        .await
        .expect("call record");
    assert_eq!(rec.end_reason, EndReason::CallerHungUp);
    let (_, text) = s.get("/metrics").await;
    assert_eq!(
        metric(&text, "pulsara_stream_start_wait_seconds_count", &[]),
        1,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_answer_through_the_grace_and_the_listener_closes_after_the_drain() {
    let mut s = stack(|c| c.limits.shutdown_grace_ms = 1_500).await;
    // A call longer than the grace period.
    let long = tokio::spawn(run_caller(s.caller("CA7003", 1_000)));
    let app = s.app.clone();
    wait_for("the call to start", || app.live_calls() == 1).await;
    let t0 = Instant::now();
    let _ = s.stop.take().unwrap().send(());
    wait_for("draining", || !app.is_ready()).await;
    assert_eq!(s.get("/readyz").await, (503, "draining".to_owned()));
    assert_eq!(s.get("/healthz").await, (200, "ok".to_owned()));
    let (status, text) = s.get("/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        refused_upgrade(s.addr).await,
        (503, "draining: this bridge is shutting down".to_owned())
    );
    assert_eq!(metric(&text, "pulsara_active_calls", &[("restaurant", "trattoria-roma")]), 1, "{text}");
    // Still answering most of the way through the grace period.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(s.get("/readyz").await.0, 503);
    let _ = long.await.unwrap();
    let rec = s
        .sink
        .wait_for("CA7003", WITHIN)
        .await
        .expect("call record");
    assert_eq!(rec.end_reason, EndReason::BridgeShutdown);
    tokio::time::timeout(WITHIN, s.server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(1_400),
        "{:?}",
        t0.elapsed()
    );
    assert!(
        TcpStream::connect(s.addr).await.is_err(),
        "the listener closes after the drain"
    );
    let text = pulsara_net::metrics::render(&s.app.registry);
    assert_eq!(metric(&text, "pulsara_streams_shed_total", &[("reason", "draining")]), 1, "{text}");
    // The caller ended by the grace hears why, then is put through to the restaurant.
    let update = s
        .rest
        .wait_for("CA7003", WITHIN)
        .await
        .expect("the call was ended politely");
    let say = update.twiml.find("<Say").expect("a <Say>");
    let dial = update.twiml.find("<Dial").expect("a <Dial>");
    assert!(
        say < dial && update.twiml.contains("+390612345600"),
        "{}",
        update.twiml
    );
}
