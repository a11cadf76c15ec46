//! The native shell's listener: sockets that never send a request are closed after the header
//! deadline (they used to be held for ever), and a genuine request is answered during the flood.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use pulsara_edge::native::{serve_with, EdgeState};
use pulsara_edge::settings::Settings;
use tokio::net::TcpStream;

/// Generous bound for "eventually" (the deadline under test is far shorter).
const WITHIN: Duration = Duration::from_secs(20);

/// True when the server closed the socket (EOF or reset) within [`WITHIN`].
async fn closed_by_server(s: &TcpStream) -> bool {
    let t0 = Instant::now();
    let mut buf = [0u8; 64];
    while t0.elapsed() < WITHIN {
        if tokio::time::timeout(Duration::from_secs(1), s.readable()).await.is_err() {
            continue;
        }
        match s.try_read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return true,
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_are_closed_and_requests_still_answered() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let vars = HashMap::from([
        ("PUBLIC_BASE_URL", format!("http://{addr}")),
        ("BRIDGE_URLS", "eu-west=wss://eu.bridge.test".to_owned()),
        ("DEFAULT_REGION", "eu-west".into()),
        ("DASHBOARD_URL", "http://127.0.0.1:9".into()),
        ("DASHBOARD_KEY_ID", "edge".into()),
        ("DASHBOARD_SIGNING_SECRET", "native-test-signing-secret".into()),
        ("TWILIO_AUTH_TOKEN", "native-test-auth-token".into()),
        ("HANDOFF_KEYS", "k1:native-test-handoff-key-0123".into()),
        ("DASHBOARD_WEBHOOK_SECRETS", "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".into()),
    ]);
    let settings = Settings::from_lookup(|k| vars.get(k).cloned()).unwrap();
    let net = pulsara_net::ServeConfig {
        header_timeout: Duration::from_millis(300),
        max_unserved: 1_000,
        ..Default::default()
    };
    tokio::spawn(serve_with(listener, EdgeState::new(settings).unwrap(), net, std::future::pending()));
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    let resp = reqwest::get(format!("http://{addr}/healthz")).await.unwrap();
    assert_eq!(resp.status(), 200);
    for s in &silent {
        assert!(closed_by_server(s).await, "a silent socket was held open");
    }
}
