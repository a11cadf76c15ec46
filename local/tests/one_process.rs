//! `pulsara serve` in-process (`service::serve`), on loopback, with the far ends faked:
//!
//! - a bridge started while its (remote) dashboard is down forwards a genuine call to the
//!   fallback number signed into the handoff, in the restaurant's `<Say>` voice, and the call's
//!   record reaches the dashboard once it is back;
//! - with a remote dashboard, the tool modules are loaded before the first call, so that call's
//!   tool run loads nothing, and a `policy.updated` loads the new module without any call;
//! - one process serves the bridge, the edge shell and the embedded dashboard together: a signed
//!   voice webhook at the edge, then a stream upgrade signed over the bridge's own URL; an
//!   admin edit reaches the bridge's cache by the embedded dashboard's signed webhook.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use pulsara_bridge::config::BridgeConfig;
use pulsara_emulators::twilio_rest;
use pulsara_emulators::scripted::{AgentAction, AgentScript, FakeAgent, };
use pulsara_core::handoff::{HandoffClaims, HandoffFallback, HandoffKeys};
use pulsara_core::secret::Secret;
use pulsara_dashboard::auth::{SigningKey, SigningKeys};
use pulsara_dashboard::client::{ClientConfig, DashboardClient};
use pulsara_dashboard::embedded::{EmbeddedDashboard, EmbeddedOptions};
use pulsara_dashboard::keys::Scope;
use pulsara_dashboard::seed::SeedOptions;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const SID: &str = "AC00000000000000000000000000000001";
const TOKEN: &str = "twilio-auth-token-0123456789";
const KEYS: &str = "k1:handoff-secret-0123456789";
const API_KEY: &str = "xi-test-key";
const EDGE_SECRET: &str = "edge-signing-secret-0123456789";
const BRIDGE_SECRET: &str = "bridge-signing-secret-0123456789";
const ADMIN_SECRET: &str = "admin-signing-secret-0123456789";
const WEBHOOK_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn policies() -> PathBuf {
    root().join("target/policies")
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "pulsara-one-process-{what}-{}-{}",
            std::process::id(),
            pulsara_core::random::hex_token(6)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn keys() -> SigningKeys {
    SigningKeys::new(vec![
        SigningKey { id: "edge1".into(), scope: Scope::Edge, secret: Secret::new(EDGE_SECRET) },
        SigningKey { id: "bridge1".into(), scope: Scope::Bridge, secret: Secret::new(BRIDGE_SECRET) },
        SigningKey { id: "admin1".into(), scope: Scope::Admin, secret: Secret::new(ADMIN_SECRET) },
    ])
}

/// A dashboard in its own right (what the bridge sees as remote), on `listener`.
async fn remote_dashboard(listener: tokio::net::TcpListener, db: &str) -> EmbeddedDashboard {
    EmbeddedDashboard::start(
        listener,
        EmbeddedOptions {
            db_path: Some(db.into()),
            restaurants_dir: Some(root().join("restaurants")),
            seed: SeedOptions { manifest: Some(policies().join("manifest.json")), strict: true },
            signing_keys: keys(),
        },
        Arc::new(now),
    )
    .await
    .unwrap()
}

fn admin(url: &str) -> DashboardClient {
    DashboardClient::new(ClientConfig::new(url).signing_key("admin1", Secret::new(ADMIN_SECRET)), Arc::new(now)).unwrap()
}

/// A running `pulsara serve`.
struct Serve {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Serve {
    async fn start(vars: BTreeMap<String, String>) -> Serve {
        let cfg = BridgeConfig::load(None, vars).unwrap();
        let base = format!("http://{}", cfg.listen);
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(pulsara_bridge::service::serve(cfg, async move {
            let _ = rx.await;
        }));
        let http = reqwest::Client::new();
        for _ in 0..600 {
            if task.is_finished() {
                panic!("pulsara serve stopped: {:?}", task.await);
            }
            if http.get(format!("{base}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
                return Serve { base, stop: Some(stop), task };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("pulsara serve did not come up on {base}");
    }

    async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.base)).await.unwrap().text().await.unwrap()
    }

    /// The sample `name` with exactly `labels`, as `/metrics` shows it now.
    async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        pulsara_emulators::exposition::parse(&self.metrics().await).unwrap().value(name, labels)
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(20), self.task).await;
    }
}

/// The settings every bridge of these tests has.
fn bridge_vars(port: u16, agent: &str, rest: &str, dir: &TempDir) -> BTreeMap<String, String> {
    [
        ("PULSARA_LISTEN", format!("127.0.0.1:{port}")),
        ("HANDOFF_KEYS", KEYS.into()),
        ("ELEVENLABS_API_KEY", API_KEY.into()),
        ("ELEVENLABS_BASE_URL", agent.into()),
        ("TWILIO_ACCOUNT_SID", SID.into()),
        ("TWILIO_AUTH_TOKEN", TOKEN.into()),
        ("TWILIO_API_BASE", rest.into()),
        ("DASHBOARD_KEY_ID", "bridge1".into()),
        ("DASHBOARD_SIGNING_SECRET", BRIDGE_SECRET.into()),
        ("DASHBOARD_WEBHOOK_SECRETS", WEBHOOK_SECRET.into()),
        ("DASHBOARD_TIMEOUT_MS", "500".into()),
        ("PULSARA_OUTBOX_PATH", dir.path("outbox.sqlite")),
        ("PULSARA_POLICY_CACHE_DIR", dir.path("policy-cache")),
        ("PULSARA_POLICY_RUNS_DIR", dir.path("policy-runs")),
        ("PULSARA_RESTAURANTS_DIR", root().join("restaurants").display().to_string()),
        ("PULSARA_WARM_UP_PARALLELISM", "1".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn token(call_sid: &str, restaurant: &str, fallback: &HandoffFallback) -> String {
    let iat = now();
    HandoffKeys::parse(&Secret::new(KEYS))
        .unwrap()
        .issue_with(
            &HandoffClaims {
                call_sid: call_sid.into(),
                restaurant_id: restaurant.into(),
                config_version: 1,
                region: "eu-west".into(),
                iat,
                exp: iat + 60,
            },
            fallback,
        )
        .unwrap()
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a Media Stream as Twilio does (`X-Twilio-Signature` when given) and sends `start`.
async fn open_stream(
    ws_url: &str,
    signature: Option<String>,
    call_sid: &str,
    params: &BTreeMap<String, String>,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut req = ws_url.into_client_request()?;
    if let Some(sig) = signature {
        req.headers_mut().insert("X-Twilio-Signature", sig.parse().unwrap());
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
    let stream_sid = format!("MZ{}", call_sid.trim_start_matches("CA"));
    ws.send(Message::text(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#)).await?;
    let start = json!({"event":"start","sequenceNumber":"1","streamSid":stream_sid,"start":{
        "accountSid":SID,"streamSid":stream_sid,"callSid":call_sid,"tracks":["inbound"],
        "customParameters":params,
        "mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}});
    ws.send(Message::text(start.to_string())).await?;
    Ok(ws)
}

/// Plays `frames` of caller audio at real time, then `stop`.
async fn talk_and_hang_up(ws: &mut Ws, call_sid: &str, frames: u64) {
    use base64::Engine;
    let payload = base64::engine::general_purpose::STANDARD.encode([0xffu8; 160]);
    let stream_sid = format!("MZ{}", call_sid.trim_start_matches("CA"));
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for i in 0..frames {
        tick.tick().await;
        let m = json!({"event":"media","sequenceNumber":(i + 2).to_string(),"streamSid":stream_sid,
            "media":{"track":"inbound","chunk":(i + 1).to_string(),"timestamp":(i * 20).to_string(),"payload":payload}});
        if ws.send(Message::text(m.to_string())).await.is_err() {
            return;
        }
        // Keep reading so the bridge's writes never stall.
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(1), ws.next()).await {}
    }
    let stop = json!({"event":"stop","streamSid":stream_sid,"sequenceNumber":(frames + 2).to_string(),"stop":{"accountSid":SID,"callSid":call_sid}});
    let _ = ws.send(Message::text(stop.to_string())).await;
    let _ = ws.close(None).await;
}

/// Polls the dashboard for a call record.
async fn record_at(dashboard: &DashboardClient, call_sid: &str, secs: u64) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Ok(rec) = dashboard.call(call_sid).await {
            return rec;
        }
        assert!(tokio::time::Instant::now() < deadline, "no record of {call_sid} within {secs} s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboard_down_at_start_forwards_the_caller_and_records_the_call_once_it_is_back() {
    let dir = TempDir::new("down");
    let agent = FakeAgent::new(API_KEY, AgentScript::default());
    let agent_base = agent.spawn().await.unwrap();
    let (rest, rest_base) = twilio_rest::spawn_detached(SID, TOKEN).await.unwrap();
    // Nothing listens on the dashboard's port yet.
    let dash_port = free_port();
    let dash_url = format!("http://127.0.0.1:{dash_port}");
    let mut vars = bridge_vars(free_port(), &agent_base, &rest_base, &dir);
    vars.insert("DASHBOARD_URL".into(), dash_url.clone());
    let serve = Serve::start(vars).await;

    let call_sid = "CA0000000000000000000000000000dd01";
    let fallback = HandoffFallback {
        fallback_number: Some("+390612345699".into()),
        say_language: Some("it-IT".into()),
        say_voice: Some("Polly.Bianca".into()),
        apology: Some("Ci scusi, la passiamo subito al ristorante.".into()),
    };
    let params: BTreeMap<String, String> = [
        ("handoff", token(call_sid, "trattoria-roma", &fallback)),
        ("caller", "+393331234567".into()),
        ("called", "+390612345678".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let ws_url = format!("{}/media", serve.base.replace("http://", "ws://"));
    let mut ws = open_stream(&ws_url, None, call_sid, &params).await.unwrap();

    // The caller is forwarded: the apology in the restaurant's voice, then the fallback number.
    let update = rest.wait_for(call_sid, Duration::from_secs(15)).await.expect("a call update");
    let twiml = update.twiml;
    let say = twiml
        .find(r#"<Say language="it-IT" voice="Polly.Bianca">Ci scusi, la passiamo subito al ristorante.</Say>"#)
        .unwrap_or_else(|| panic!("{twiml}"));
    let dial = twiml.find("<Dial").unwrap_or_else(|| panic!("{twiml}"));
    assert!(say < dial && twiml.contains("+390612345699</Dial>"), "{twiml}");
    // …and the stream is closed, the agent never contacted.
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(m)) = ws.next().await {
            if m.is_close() {
                break;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the bridge closed the stream");
    assert!(agent.logs().is_empty());
    assert_eq!(serve.metric("pulsara_errors_total", &[("kind", "config_unavailable")]).await, Some(1.0));

    // The outbox has tried to deliver the record to the dashboard that is down.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while serve.metric("pulsara_outbox_failed_attempts_total", &[]).await.unwrap_or(0.0) < 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "no delivery attempt:\n{}", serve.metrics().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The dashboard comes back: the outbox delivers the record.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", dash_port)).await.unwrap();
    let dash = remote_dashboard(listener, &dir.path("dashboard.sqlite")).await;
    let rec = record_at(&admin(&dash_url), call_sid, 60).await;
    assert_eq!(rec["end_reason"], "config_unavailable", "{rec}");
    assert_eq!(rec["restaurant_id"], "trattoria-roma");
    assert_eq!((rec["caller"].as_str(), rec["called"].as_str()), (Some("+393331234567"), Some("+390612345678")));
    assert_eq!(rec["fallback"]["kind"], "dial", "{rec}");
    assert_eq!(rec["fallback"]["to"], "+390612345699");
    assert_eq!(rec["fallback"]["ok"], true);
    assert!(rec["fallback"]["reason"].as_str().unwrap().starts_with("configuration unavailable"), "{rec}");
    assert_eq!(dash.store.call_count().unwrap(), 1);
    serve.stop().await;
    dash.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remote_dashboard_tools_are_loaded_before_the_first_call_and_on_policy_updated() {
    let dir = TempDir::new("warm");
    let dash = remote_dashboard(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(), &dir.path("dashboard.sqlite")).await;
    let dash_url = dash.url();
    let script = AgentScript {
        on_start: vec![AgentAction::ToolCall {
            tool: "answer_question".into(),
            id: "tc1".into(),
            params: json!({"question": "Are you open on Sunday?"}),
        }],
        ..Default::default()
    };
    let agent = FakeAgent::new(API_KEY, script);
    let agent_base = agent.spawn().await.unwrap();
    let (_rest, rest_base) = twilio_rest::spawn_detached(SID, TOKEN).await.unwrap();
    let port = free_port();
    let mut vars = bridge_vars(port, &agent_base, &rest_base, &dir);
    vars.insert("DASHBOARD_URL".into(), dash_url.clone());
    let serve = Serve::start(vars).await;

    // The start-up warm-up lists the dashboard's restaurants and loads their modules.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    while serve.metric("pulsara_tools_warm_up_done", &[]).await != Some(1.0) {
        assert!(tokio::time::Instant::now() < deadline, "warm-up did not finish:\n{}", serve.metrics().await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(serve.metric("pulsara_tools_warm_up_ready_restaurants", &[]).await, Some(3.0));
    // The whole process's families (bridge, listener, outbox, config cache, tools, warm-up) are
    // each described.
    let all = pulsara_emulators::exposition::parse(&serve.metrics().await).unwrap();
    assert!(all.families_missing_help_or_type().is_empty(), "{:?}", all.families_missing_help_or_type());
    assert!(all.help.contains_key("pulsara_tool_runs_queued") && all.help.contains_key("pulsara_outbox_depth"));
    let compiled = serve.metric("pulsara_policy_modules_compiled_total", &[]).await.unwrap();
    let loads = compiled + serve.metric("pulsara_policy_modules_deserialised_total", &[]).await.unwrap();
    assert!(compiled >= 5.0, "every distinct module of the three restaurants compiled: {compiled}");

    // The first call's tool run loads nothing.
    let call_sid = "CA0000000000000000000000000000aa01";
    let params: BTreeMap<String, String> =
        [("handoff", token(call_sid, "trattoria-roma", &HandoffFallback::default())), ("caller", "+393331234567".into())]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
    let mut ws = open_stream(&format!("ws://127.0.0.1:{port}/media"), None, call_sid, &params).await.unwrap();
    talk_and_hang_up(&mut ws, call_sid, 60).await;
    let admin = admin(&dash_url);
    let rec = record_at(&admin, call_sid, 60).await;
    let runs = rec["tool_runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{rec}");
    assert_eq!(runs[0]["tool"], "answer_question");
    assert!(runs[0]["module_sha256"].as_str().is_some_and(|s| s.len() == 64), "the policy ran: {rec}");
    assert_eq!(runs[0]["is_error"], false, "{rec}");
    let after = serve.metric("pulsara_policy_modules_compiled_total", &[]).await.unwrap()
        + serve.metric("pulsara_policy_modules_deserialised_total", &[]).await.unwrap();
    assert_eq!(after, loads, "the call loaded no module");

    // A new module version announced by `policy.updated` is loaded with no call in sight.
    admin
        .admin_add_webhook(&format!("http://127.0.0.1:{port}/webhooks/dashboard"), Some(&Secret::new(WEBHOOK_SECRET)))
        .await
        .unwrap();
    // A module no restaurant used so far, uploaded to the dashboard.
    let echo = dash.store.put_policy("test_echo", &std::fs::read(policies().join("test_echo.wasm")).unwrap()).unwrap();
    let mut tools = dash.store.restaurant("trattoria-roma").unwrap().unwrap().tools;
    tools.push(pulsara_core::config::ToolBinding {
        name: "echo".into(),
        module_sha256: echo,
        grants: Default::default(),
        limits: Default::default(),
    });
    admin.admin_put_tools("trattoria-roma", &tools).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while serve.metric("pulsara_policy_modules_compiled_total", &[]).await.unwrap() < compiled + 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "the new module was not loaded:\n{}", serve.metrics().await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    serve.stop().await;
    dash.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_process_serves_edge_bridge_and_embedded_dashboard_with_their_own_public_urls() {
    let dir = TempDir::new("all");
    let agent = FakeAgent::new(API_KEY, AgentScript::default());
    let agent_base = agent.spawn().await.unwrap();
    let (_rest, rest_base) = twilio_rest::spawn_detached(SID, TOKEN).await.unwrap();
    let (bridge_port, edge_port, dash_port) = (free_port(), free_port(), free_port());
    let mut vars = bridge_vars(bridge_port, &agent_base, &rest_base, &dir);
    let bridge_public = format!("https://127.0.0.1:{bridge_port}");
    let edge_public = format!("http://127.0.0.1:{edge_port}");
    for (k, v) in [
        // The bridge's own URL: upgrades are signed over wss://…:bridge_port/media.
        ("PUBLIC_BASE_URL", bridge_public.clone()),
        ("PULSARA_REQUIRE_TWILIO_SIGNATURE", "1".into()),
        // The embedded dashboard, with an edge key the co-hosted edge picks up.
        ("PULSARA_DASHBOARD_LISTEN", format!("127.0.0.1:{dash_port}")),
        ("PULSARA_DASHBOARD_DB", dir.path("dashboard.sqlite")),
        (
            "PULSARA_DASHBOARD_SIGNING_KEYS",
            format!("bridge1:bridge:{BRIDGE_SECRET},edge1:edge:{EDGE_SECRET},admin1:admin:{ADMIN_SECRET}"),
        ),
        ("PULSARA_POLICIES_DIR", policies().display().to_string()),
        // The edge shell, on its own public URL.
        ("PULSARA_EDGE_LISTEN", format!("127.0.0.1:{edge_port}")),
        ("PULSARA_EDGE_PUBLIC_BASE_URL", edge_public.clone()),
        ("ALLOW_TEST_CLOCK", "1".into()),
    ] {
        vars.insert(k.to_owned(), v);
    }
    // No webhook secret: the process makes one for its own receivers.
    vars.remove("DASHBOARD_WEBHOOK_SECRETS");
    let serve = Serve::start(vars).await;

    // Twilio rings the edge: a signed voice webhook to the edge's own URL.
    let front = pulsara_local::frontdoor::FrontDoor {
        edge_url: edge_public.clone(),
        account_sid: SID.into(),
        auth_token: Secret::new(TOKEN),
        http: reqwest::Client::new(),
        stream_setup: Duration::ZERO,
    };
    let call_sid = "CA0000000000000000000000000000ee01";
    // A Tuesday at 13:00 in Rome: Trattoria Roma is open (the edge honours the test clock).
    let lunchtime = chrono::DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z").unwrap().to_utc();
    let mut decision = None;
    for _ in 0..100 {
        match front.ring_at(call_sid, "+393331234567", "+390612345678", Some(lunchtime)).await {
            Ok((_, d)) => {
                decision = Some(d);
                break;
            }
            // The edge listener comes up right after the bridge's.
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let decision = decision.expect("the edge answered the voice webhook");
    let pulsara_local::frontdoor::EdgeDecision::Stream { url, parameters } = decision else {
        panic!("expected a stream for an open restaurant, got {decision:?}");
    };
    assert_eq!(url, format!("wss://127.0.0.1:{bridge_port}/media"), "the edge streams to this bridge");
    assert_eq!(parameters["restaurant_id"], "trattoria-roma");

    // The co-hosted edge had this bridge prepare the agent session over loopback while
    // "Twilio" set up the stream.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while serve.metric("pulsara_prepare_accepted_total", &[]).await != Some(1.0) {
        assert!(tokio::time::Instant::now() < deadline, "no prepare reached the bridge:\n{}", serve.metrics().await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ws_url = pulsara_local::frontdoor::local_ws_url(&url).unwrap();
    // Signed over the edge's URL instead: refused.
    let wrong = pulsara_core::twilio::compute_signature(&Secret::new(TOKEN), &format!("{edge_public}/media"), &[]);
    assert!(open_stream(&ws_url, Some(wrong), call_sid, &parameters).await.is_err());
    // Signed over the bridge's own URL, as Twilio does: the call runs and reaches the agent.
    let sig = pulsara_core::twilio::compute_signature(&Secret::new(TOKEN), &url, &[]);
    let mut ws = open_stream(&ws_url, Some(sig), call_sid, &parameters).await.unwrap();
    talk_and_hang_up(&mut ws, call_sid, 25).await;
    let dash = admin(&format!("http://127.0.0.1:{dash_port}"));
    let rec = record_at(&dash, call_sid, 60).await;
    assert_eq!(rec["restaurant_id"], "trattoria-roma");
    assert_eq!(rec["end_reason"], "caller_hung_up", "{rec}");
    assert_eq!(agent.logs().len(), 1, "the agent was connected once");
    assert_eq!(serve.metric("pulsara_prepare_claimed_total", &[]).await, Some(1.0), "the stream adopted the prepared session");
    // The embedded dashboard's agent sync job runs in this process: the seeded restaurants'
    // syncs are requested, and none can succeed against an agent with no agents API.
    assert_eq!(serve.metric("pulsara_agent_sync_pending", &[]).await, Some(3.0));
    assert_eq!(serve.metric("pulsara_agent_sync_succeeded_total", &[]).await, Some(0.0));

    // An admin edit reaches this process's bridge as from a remote dashboard: a signed webhook
    // to its own receiver drops the restaurant from its cache.
    let invalidated = serve.metric("pulsara_config_cache_invalidations_total", &[]).await.unwrap();
    let pulsara_dashboard::client::Fetched::Fresh { value: mut roma, .. } = dash.restaurant("trattoria-roma", None).await.unwrap() else {
        panic!("no restaurant");
    };
    roma.agent.first_message = "Pronto, Trattoria Roma!".into();
    dash.admin_put_restaurant(&roma).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while serve.metric("pulsara_config_cache_invalidations_total", &[]).await.unwrap() <= invalidated {
        assert!(tokio::time::Instant::now() < deadline, "the edit's webhook never reached the bridge:\n{}", serve.metrics().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    serve.stop().await;
}
