//! The embedded dashboard's listener: sockets that never send a request are closed after the
//! header deadline (they used to be held for ever), and a genuine request is answered during the
//! flood.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pulsara_core::secret::Secret;
use pulsara_dashboard::auth::SigningKeys;
use pulsara_dashboard::server::{serve_with, AppState};
use pulsara_dashboard::store::Store;
use tokio::net::TcpStream;

/// Generous bound for "eventually" (the deadline under test is far shorter).
const WITHIN: Duration = Duration::from_secs(20);

/// True when the server closed the socket (EOF or reset) within [`WITHIN`].
async fn closed_by_server(s: &TcpStream) -> bool {
    let t0 = Instant::now();
    let mut buf = [0u8; 64];
    while t0.elapsed() < WITHIN {
        if tokio::time::timeout(Duration::from_secs(1), s.readable())
            .await
            .is_err()
        {
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
    let store = Store::open_in_memory().unwrap();
    let keys =
        SigningKeys::parse(&Secret::new("edge1:edge:edge-signing-secret-0123456789")).unwrap();
    let state = AppState::new(store, keys, Arc::new(|| chrono::Utc::now().timestamp()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let net = pulsara_net::ServeConfig {
        header_timeout: Duration::from_millis(300),
        max_unserved: 1_000,
        ..Default::default()
    };
    tokio::spawn(serve_with(listener, state, net, std::future::pending()));
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    // Unsigned, so refused: but answered.
    let resp = reqwest::get(format!(
        "http://{addr}/v1/restaurants/by-number/+390612345678"
    ))
    .await
    .unwrap();
    assert_eq!(resp.status(), 401);
    for s in &silent {
        assert!(closed_by_server(s).await, "a silent socket was held open");
    }
}
