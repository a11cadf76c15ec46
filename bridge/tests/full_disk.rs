//! The outbox's disk fills up under live calls. SQLite's `max_page_count` makes every write that
//! needs a new page fail with SQLITE_FULL, exactly as a full disk does; raising it is freeing
//! space. Calls go through the real bridge (scripted caller and agent on loopback) with the real
//! dashboard link: embedded dashboard, outbox, SMTP sink.
//!
//! - fill → calls and a voicemail finish → nothing is lost, everything is held in memory and
//!   visible in `/metrics` → free → every record reaches the outbox and the dashboard, and every
//!   email the SMTP server, exactly once (a duplicate delivery included);
//! - the memory queue at its bound delivers the newest call straight to the dashboard;
//! - shutdown with the disk still full delivers what memory holds directly, and reports by call
//!   sid what it could not.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pulsara_bridge::config::BridgeConfig;
use pulsara_bridge::dashboard_link::{DashboardLink, DashboardLinkConfig};
use pulsara_bridge::ports::{CallSink, NoTools};
use pulsara_emulators::twilio_rest;
use pulsara_emulators::scripted::{
    run_caller, AgentAction, AgentScript, CallerScript, FakeAgent, };
use pulsara_bridge::App;
use pulsara_core::call_record::{CallRecord, Role, TranscriptLine};
use pulsara_core::handoff::{HandoffClaims, HandoffKeys};
use pulsara_core::secret::Secret;
use pulsara_dashboard::auth::SigningKeys;
use pulsara_dashboard::embedded::{EmbeddedDashboard, EmbeddedOptions};
use pulsara_dashboard::outbox::{MemoryLimits, RetryPolicy};
use pulsara_dashboard::seed::SeedOptions;
use pulsara_dashboard::smtp_sink::SmtpSink;

const API_KEY: &str = "xi-test-key";
const SID: &str = "AC0123456789";
const TOKEN: &str = "twilio-test-token";
const KEYS: &str = "k1:handoff-test-key-0123456789";
const RESTAURANT: &str = "trattoria-roma";

/// Polls `f` until it holds or `secs` pass.
async fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

struct World {
    dash: EmbeddedDashboard,
    smtp: SmtpSink,
    link: DashboardLink,
    stop_link: tokio::sync::oneshot::Sender<()>,
    _dir: TempDir,
}

/// A directory of its own, removed afterwards.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p =
            std::env::temp_dir().join(format!("pulsara-full-disk-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn world(tag: &str, memory: MemoryLimits) -> World {
    let dir = TempDir::new(tag);
    let dash = EmbeddedDashboard::start(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        EmbeddedOptions {
            db_path: None,
            restaurants_dir: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../restaurants")),
            seed: SeedOptions {
                manifest: None,
                strict: false,
            },
            signing_keys: SigningKeys::parse(&Secret::new("bridge1:bridge:disk-secret")).unwrap(),
        },
        pulsara_dashboard::system_clock(),
    )
    .await
    .unwrap();
    let smtp_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let smtp_addr = smtp_listener.local_addr().unwrap();
    let (smtp, _task) = SmtpSink::start(smtp_listener);
    let outbox = dir.path().join("outbox.db");
    let mut settings = BridgeConfig::default();
    settings.dashboard.key_id = Some("bridge1".to_owned());
    settings.dashboard.signing_secret = Some(Secret::new("disk-secret"));
    settings.outbox.path = outbox.clone();
    settings.smtp.url = Some(Secret::new(format!("smtp://{smtp_addr}")));
    settings.smtp.from = Some("calls@pulsara.test".to_owned());
    let mut cfg = DashboardLinkConfig::from_config(&settings, Some(&dash.url())).unwrap();
    cfg.retry = RetryPolicy {
        base: Duration::from_millis(20),
        cap: Duration::from_millis(200),
        concurrency: 8,
        poll: Duration::from_millis(50),
    };
    cfg.memory = memory;
    cfg.flush_deadline = Duration::from_millis(1_500);
    let (stop_link, rx) = tokio::sync::oneshot::channel::<()>();
    let link = DashboardLink::start(cfg, pulsara_dashboard::system_clock(), async move {
        let _ = rx.await;
    })
    .unwrap();
    World {
        dash,
        smtp,
        link,
        stop_link,
        _dir: dir,
    }
}

fn fast_retry() -> MemoryLimits {
    MemoryLimits {
        retry_min: Duration::from_millis(20),
        retry_max: Duration::from_millis(100),
        ..MemoryLimits::default()
    }
}

/// The caller complains at length: the restaurant gets an email, and the record is large enough
/// to need new pages in the outbox file.
fn complaint() -> String {
    format!(
        "I want to make a complaint, the pizza was cold and late. {}",
        "It was really not good at all. ".repeat(200)
    )
}

fn caller(ws_url: &str, call_sid: &str) -> CallerScript {
    let keys = HandoffKeys::parse(&Secret::new(KEYS)).unwrap();
    let iat = chrono::Utc::now().timestamp();
    let token = keys
        .issue(&HandoffClaims {
            call_sid: call_sid.into(),
            restaurant_id: RESTAURANT.into(),
            config_version: 1,
            region: "eu-west".into(),
            iat,
            exp: iat + 60,
        })
        .unwrap();
    let params: BTreeMap<String, String> = [
        ("handoff".to_owned(), token),
        ("restaurant_id".to_owned(), RESTAURANT.to_owned()),
        ("caller".to_owned(), "+15550001234".to_owned()),
        ("called".to_owned(), "+390612345678".to_owned()),
    ]
    .into();
    CallerScript {
        ws_url: ws_url.to_owned(),
        call_sid: call_sid.into(),
        stream_sid: format!("MZ{call_sid}"),
        params,
        frames: 30,
        frame_interval: Duration::from_millis(20),
        fill: 0x5a,
        actions: Vec::new(),
        linger: Duration::from_millis(200),
    }
}

/// An unlabelled sample of `/metrics` text.
fn metric(text: &str, name: &str) -> Option<f64> {
    pulsara_emulators::exposition::parse(text).unwrap().value(name, &[])
}

fn record(call_sid: &str, caller_says: &str) -> CallRecord {
    CallRecord {
        call_sid: call_sid.into(),
        restaurant_id: RESTAURANT.into(),
        caller: "+15550009999".into(),
        started_at: "2026-11-28T18:00:00Z".into(),
        ended_at: "2026-11-28T18:01:00Z".into(),
        duration_ms: 60_000,
        transcript: vec![TranscriptLine {
            role: Role::Caller,
            text: caller_says.into(),
            at_ms: 1_000,
            heard: true,
            cut: false,
            full_text: None,
        }],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_loses_nothing_and_freeing_space_delivers_everything_once() {
    let w = world("calls", fast_retry()).await;
    let sink = w.link.sink.clone();
    let agent = FakeAgent::new(
        API_KEY,
        AgentScript {
            on_start: vec![AgentAction::Say {
                text: "Buongiorno, Trattoria Roma!".into(),
                chunks: 5,
                event_id: 1,
                fill: 0x11,
            }],
            on_chunk: vec![(5, AgentAction::UserTranscript(complaint()))],
            ..Default::default()
        },
    );
    let (_rest, rest_base) = twilio_rest::spawn_detached(SID, TOKEN).await.unwrap();
    let cfg = BridgeConfig {
        handoff_keys: Some(Secret::new(KEYS)),
        elevenlabs_api_key: Some(Secret::new(API_KEY)),
        elevenlabs_base_url: agent.spawn().await.unwrap(),
        twilio_account_sid: SID.into(),
        twilio_auth_token: Some(Secret::new(TOKEN)),
        twilio_api_base: rest_base,
        ..Default::default()
    };
    let app = App::new(
        cfg,
        w.link.configs.clone(),
        Arc::new(NoTools),
        sink.clone() as Arc<dyn CallSink>,
    )
    .unwrap();
    pulsara_bridge::service::register_link_metrics(&app, &w.link).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_bridge, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(pulsara_bridge::run(listener, app.clone(), async move {
        let _ = rx.await;
    }));
    let ws_url = format!("ws://{addr}/media");
    let metrics_url = format!("http://{addr}/metrics");
    let http = reqwest::Client::new();

    // The disk is full.
    w.link.sink.outbox().set_max_pages(1).unwrap();

    // Calls are still answered, and finish.
    let calls = ["CA7001", "CA7002", "CA7003"];
    for sid in calls {
        let log = run_caller(caller(&ws_url, sid)).await.unwrap();
        assert!(!log.media.is_empty(), "{sid}: the caller heard the agent");
    }
    // A voicemail's recording and the same record delivered twice while the disk is full.
    let event = pulsara_dashboard::voicemail::event(
        &[
            ("CallSid".into(), "CA7002".into()),
            ("RecordingSid".into(), "RE7002".into()),
            (
                "RecordingUrl".into(),
                "https://api.twilio.com/rec/RE7002".into(),
            ),
            ("RecordingStatus".into(), "completed".into()),
            ("RecordingDuration".into(), "12".into()),
        ],
        Some("+15550001234"),
    );
    sink.voicemail("CA7002", RESTAURANT, event).await.unwrap();
    let dup = record(
        "CA7099",
        &format!("Are you open on Sunday? {}", "Thanks. ".repeat(800)),
    );
    sink.deliver(dup.clone()).await.unwrap();
    sink.deliver(dup).await.unwrap();
    assert!(
        eventually(10, || sink.held().len() == 6).await,
        "three calls, a voicemail and a record twice are held: {:?}",
        sink.held().labels()
    );

    // Nothing reached the outbox or the dashboard, and /metrics says so.
    let text = http
        .get(&metrics_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric(&text, "pulsara_outbox_memory_held"),
        Some(6.0),
        "{text}"
    );
    assert_eq!(metric(&text, "pulsara_outbox_depth"), Some(0.0), "{text}");
    assert!(
        metric(&text, "pulsara_outbox_enqueue_errors_total").unwrap() >= 6.0,
        "{text}"
    );
    assert!(
        metric(&text, "pulsara_outbox_memory_oldest_age_seconds").unwrap() > 0.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "pulsara_outbox_lost_total"),
        Some(0.0),
        "{text}"
    );
    // The outbox's and the config cache's families say what they are, like the bridge's.
    let parsed = pulsara_emulators::exposition::parse(&text).unwrap();
    assert_eq!(parsed.families_missing_help_or_type(), Vec::<String>::new(), "{text}");
    assert_eq!(parsed.types.get("pulsara_outbox_lost_total").map(String::as_str), Some("counter"));
    assert_eq!(parsed.types.get("pulsara_outbox_depth").map(String::as_str), Some("gauge"));
    assert!(parsed.types.contains_key("pulsara_config_cache_fetches_total"), "{text}");
    assert_eq!(w.dash.store.call_count().unwrap(), 0);
    assert!(w.smtp.messages().is_empty());

    // Space is freed: the background retry commits everything, in order, and it is delivered.
    w.link.sink.outbox().set_max_pages(1 << 30).unwrap();
    assert!(
        eventually(20, || {
            let st = sink.stats().unwrap();
            st.memory.held == 0 && st.depth == 0 && w.smtp.messages().len() == 4
        })
        .await,
        "delivered after space was freed: {:?}",
        sink.stats()
    );
    let st = sink.stats().unwrap();
    assert_eq!(
        (
            st.memory.held_total,
            st.memory.persisted_total,
            st.memory.lost_total
        ),
        (6, 6, 0),
        "{st:?}"
    );
    // Four records, three complaint emails, one recording event, one voicemail email: each
    // delivered once (a resend would count twice here).
    assert_eq!(st.delivered_total, 9, "{st:?}");
    assert_eq!(st.parked, 0, "{st:?}");
    assert_eq!(w.dash.store.call_count().unwrap(), 4);
    for sid in calls {
        let stored = w
            .dash
            .store
            .call(sid)
            .unwrap()
            .unwrap_or_else(|| panic!("{sid} at the dashboard"));
        assert!(stored["summary"]["paragraph"].is_string(), "{stored}");
    }
    assert_eq!(
        w.dash.store.call("CA7002").unwrap().unwrap()["voicemail"]["recording_sid"],
        "RE7002"
    );
    assert!(w.dash.store.call("CA7099").unwrap().is_some());
    let subjects: Vec<String> = w
        .smtp
        .messages()
        .iter()
        .map(|m| m.header("Subject").unwrap_or_default())
        .collect();
    assert_eq!(
        subjects.iter().filter(|s| s.contains("complaint")).count(),
        3,
        "{subjects:?}"
    );
    assert_eq!(
        subjects.iter().filter(|s| s.contains("voicemail")).count(),
        1,
        "{subjects:?}"
    );

    let _ = stop_bridge.send(());
    let _ = tokio::time::timeout(Duration::from_secs(15), server).await;
    let _ = w.stop_link.send(());
    let _ = w.link.outbox_task.await;
    w.dash.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_bound_the_newest_call_goes_straight_to_the_dashboard_and_shutdown_reports_what_is_lost(
) {
    let w = world(
        "bound",
        MemoryLimits {
            max_units: 1,
            ..fast_retry()
        },
    )
    .await;
    let sink = w.link.sink.clone();
    w.link.sink.outbox().set_max_pages(1).unwrap();
    let big = |sid: &str| {
        record(
            sid,
            &format!("I'd like to book a table. {}", "Thank you. ".repeat(600)),
        )
    };

    // The first refused call is held; the second finds the queue full and is delivered directly.
    sink.deliver(big("CA8001")).await.unwrap();
    sink.deliver(big("CA8002")).await.unwrap();
    assert_eq!(
        sink.held().labels(),
        ["call record CA8001"],
        "the oldest is kept"
    );
    assert!(
        w.dash.store.call("CA8002").unwrap().is_some(),
        "delivered directly"
    );
    assert!(w.dash.store.call("CA8001").unwrap().is_none());
    let st = sink.stats().unwrap();
    assert_eq!(
        (
            st.memory.full_total,
            st.memory.direct_total,
            st.memory.lost_total
        ),
        (1, 1, 0),
        "{st:?}"
    );

    // Shutdown with the disk still full: what memory holds goes to the dashboard directly.
    sink.flush().await.unwrap();
    assert!(
        w.dash.store.call("CA8001").unwrap().is_some(),
        "delivered at shutdown"
    );
    assert!(sink.held().is_empty());
    assert_eq!(sink.stats().unwrap().memory.direct_total, 2);

    // With the dashboard gone as well, shutdown names what it could not save.
    sink.deliver(big("CA8003")).await.unwrap();
    assert_eq!(sink.held().len(), 1);
    let _ = w.stop_link.send(());
    let _ = w.link.outbox_task.await;
    w.dash.stop().await;
    let err = sink.flush().await.unwrap_err().to_string();
    assert!(
        err.contains("1 finished call") && err.contains("call record CA8003"),
        "{err}"
    );
    let st = sink.stats().unwrap();
    assert_eq!((st.memory.held, st.memory.lost_total), (0, 1), "{st:?}");
    // The bound is reached again, and the dashboard is unreachable: the call is refused loudly.
    sink.deliver(big("CA8004")).await.unwrap();
    let err = sink.deliver(big("CA8005")).await.unwrap_err().to_string();
    assert!(
        err.contains("call record CA8005 is lost") && err.contains("memory queue is full"),
        "{err}"
    );
    assert_eq!(sink.held().labels(), ["call record CA8004"]);
}
