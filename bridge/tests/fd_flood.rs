//! A genuine Twilio stream gets through 600 silent sockets while the bridge runs with 512 file
//! descriptors (before `pulsara-net`, accept failed with "Too many open files" and the call was
//! refused).
//!
//! The descriptor limit is process-wide, so the bridge runs in a child: this binary re-runs its
//! own test under `sh -c 'ulimit -n 512; exec …'` with `PULSARA_FD_FLOOD_CHILD` set; the child
//! serves a loopback bridge and reports its address and the call's record on stdout, the parent
//! floods it and places the call. One test in its own binary, so nothing else shares either
//! process.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use pulsara_bridge::config::BridgeConfig;
use pulsara_bridge::ports::{
    CallSink, MemoryConfigSource, MemorySink, ToolContext, ToolError, ToolOutcome, ToolRunner,
};
use pulsara_emulators::twilio_rest;
use pulsara_emulators::scripted::{
    run_caller, AgentAction, AgentScript, CallerScript, FakeAgent, };
use pulsara_bridge::App;
use pulsara_core::handoff::{HandoffClaims, HandoffKeys};
use pulsara_core::secret::Secret;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;

const CHILD_ENV: &str = "PULSARA_FD_FLOOD_CHILD";
const FD_LIMIT: u32 = 512;
const SILENT: usize = 600;
const CALL_SID: &str = "CA7100";
const API_KEY: &str = "xi-test-key";
const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "twilio-test-token";
const KEYS: &str = "k1:handoff-test-key-0123456789";
const TEST_NAME: &str = "a_genuine_stream_gets_through_a_silent_flood_at_512_descriptors";

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

/// The child: a bridge with default listener limits, under the lowered descriptor limit.
async fn child() {
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
    let (_rest, rest_base) = twilio_rest::spawn_detached(SID, TOKEN).await.unwrap();
    let cfg = BridgeConfig {
        handoff_keys: Some(Secret::new(KEYS)),
        elevenlabs_api_key: Some(Secret::new(API_KEY)),
        elevenlabs_base_url: agent_base,
        twilio_account_sid: SID.into(),
        twilio_auth_token: Some(Secret::new(TOKEN)),
        twilio_api_base: rest_base,
        ..Default::default()
    };
    cfg.validate().unwrap();
    let configs = MemoryConfigSource::new();
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../restaurants/trattoria-roma");
    let (restaurant, kb) = pulsara_bridge::ports::load_one(&dir).unwrap();
    configs.insert(restaurant, kb);
    let sink = Arc::new(MemorySink::new(100));
    let app = App::new(
        cfg,
        Arc::new(configs),
        Arc::new(NoTools),
        sink.clone() as Arc<dyn CallSink>,
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!(
        "READY {} {}",
        listener.local_addr().unwrap(),
        app.cfg.limits.http().max_unserved
    );
    tokio::spawn(pulsara_bridge::run(listener, app, std::future::pending()));
    match sink.wait_for(CALL_SID, Duration::from_secs(60)).await {
        Some(rec) => println!("RECORD {}", rec.end_reason.as_str()),
        None => println!("NORECORD"),
    }
    std::future::pending::<()>().await;
}

type Reports = tokio::io::Lines<BufReader<tokio::process::ChildStdout>>;

/// The child's next `READY …`, `RECORD …` or `NORECORD` report (its test harness prints other
/// lines too).
async fn next_report(lines: &mut Reports) -> Option<String> {
    let fut = async {
        loop {
            match lines.next_line().await.ok()? {
                // The harness may print "test … ... " on the same line first.
                Some(l) => match ["READY ", "NORECORD", "RECORD "]
                    .iter()
                    .find_map(|k| l.find(k))
                {
                    Some(i) => return Some(l[i..].trim().to_owned()),
                    None => continue,
                },
                None => return None,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .ok()
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_genuine_stream_gets_through_a_silent_flood_at_512_descriptors() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return child().await;
    }
    let exe = std::env::current_exe().unwrap();
    let mut bridge = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {FD_LIMIT} && exec \"$0\" \"$@\""))
        .arg(exe)
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the bridge child");
    let mut lines = BufReader::new(bridge.stdout.take().unwrap()).lines();
    let ready = next_report(&mut lines)
        .await
        .expect("the child reports its address");
    let mut parts = ready.split_whitespace().skip(1);
    let addr: std::net::SocketAddr = parts.next().unwrap().parse().unwrap();
    let max_unserved: usize = parts.next().unwrap().parse().unwrap();
    assert_eq!(
        max_unserved,
        FD_LIMIT as usize / 4,
        "the default cap follows the descriptor limit"
    );

    // More silent sockets than the bridge has descriptors.
    let mut silent = Vec::with_capacity(SILENT);
    for _ in 0..SILENT {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    let keys = HandoffKeys::parse(&Secret::new(KEYS)).unwrap();
    let now = chrono::Utc::now().timestamp();
    let token = keys
        .issue(&HandoffClaims {
            call_sid: CALL_SID.into(),
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
    let call = run_caller(CallerScript {
        ws_url: format!("ws://{addr}/media"),
        call_sid: CALL_SID.into(),
        stream_sid: "MZ7100".into(),
        params,
        frames: 25,
        frame_interval: Duration::from_millis(20),
        fill: 0x5a,
        actions: Vec::new(),
        linger: Duration::from_millis(300),
    });
    let log = tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .expect("the genuine stream is answered during the flood")
        .expect("the genuine stream connects during the flood");
    assert!(!log.media.is_empty(), "the caller heard the agent");
    assert_eq!(
        next_report(&mut lines)
            .await
            .expect("the child reports the record"),
        "RECORD caller_hung_up"
    );
    drop(silent);
}
