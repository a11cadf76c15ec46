//! The listener on loopback: deadlines close silent and idle sockets, the cap evicts the oldest
//! unserved connection for a newcomer, slow bodies get 408, WebSockets upgrade and stay, and
//! shutdown lets an in-flight request finish.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::routing::{get, post};
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use pulsara_net::{ServeConfig, Server, Stats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Generous bound for "the server closed it" (the deadlines under test are far shorter).
const CLOSE_WITHIN: Duration = Duration::from_secs(15);

fn app() -> Router {
    Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(400)).await;
                "slow"
            }),
        )
        .route("/echo-body", post(|body: String| async move { body }))
        .route(
            "/ws",
            get(|ws: WebSocketUpgrade| async move {
                ws.on_upgrade(|mut socket| async move {
                    while let Some(Ok(Message::Text(t))) = socket.recv().await {
                        if socket.send(Message::Text(t)).await.is_err() {
                            break;
                        }
                    }
                })
            }),
        )
}

struct Running {
    addr: std::net::SocketAddr,
    stats: Arc<Stats>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(cfg: ServeConfig) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::new(cfg);
    let stats = server.stats();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(listener, app(), async move {
        let _ = rx.await;
    }));
    Running {
        addr,
        stats,
        stop: Some(stop),
        task,
    }
}

fn cfg(f: impl FnOnce(&mut ServeConfig)) -> ServeConfig {
    let mut c = ServeConfig {
        max_unserved: 1_000,
        ..ServeConfig::default()
    };
    f(&mut c);
    c
}

/// Sends one request and reads until the response body `expect` (or the peer closes).
async fn request(stream: &mut TcpStream, raw: &str) -> String {
    stream.write_all(raw.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut out = String::new();
    loop {
        let n = tokio::time::timeout(CLOSE_WITHIN, stream.read(&mut buf))
            .await
            .expect("a response in time")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&String::from_utf8_lossy(&buf[..n]));
        if let Some(head_end) = out.find("\r\n\r\n") {
            let len = out[..head_end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if out.len() >= head_end + 4 + len {
                break;
            }
        }
    }
    out
}

async fn get_ok(addr: std::net::SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    request(&mut s, "GET /ok HTTP/1.1\r\nHost: t\r\n\r\n").await
}

/// True when the server closed the socket (EOF or reset) within [`CLOSE_WITHIN`].
async fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    matches!(
        tokio::time::timeout(CLOSE_WITHIN, s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = std::time::Instant::now();
    while !f() {
        assert!(t0.elapsed() < CLOSE_WITHIN, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_are_closed_after_the_header_deadline_while_requests_are_served() {
    let srv = start(cfg(|c| c.header_timeout = Duration::from_millis(300))).await;
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(TcpStream::connect(srv.addr).await.unwrap());
    }
    assert!(get_ok(srv.addr).await.starts_with("HTTP/1.1 200"));
    for s in &mut silent {
        assert!(closed_by_server(s).await, "a silent socket was held open");
    }
    let st = srv.stats.snapshot();
    assert!(st.header_timeouts >= 300, "{st:?}");
    assert_eq!(st.evicted, 0, "{st:?}");
    wait_for("no connection left", || srv.stats.snapshot().open == 0).await;
    assert_eq!(srv.stats.snapshot().unserved, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_is_closed_after_the_idle_timeout() {
    let srv = start(cfg(|c| c.idle_timeout = Duration::from_millis(300))).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let first = request(&mut s, "GET /ok HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    // The same connection serves a second request (keep-alive works) ...
    let second = request(&mut s, "GET /ok HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    // ... and is closed once it idles.
    assert!(closed_by_server(&mut s).await);
    let st = srv.stats.snapshot();
    assert_eq!((st.idle_timeouts, st.header_timeouts), (1, 0), "{st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_cap_evicts_the_oldest_silent_socket_and_serves_the_newcomer() {
    let srv = start(cfg(|c| c.max_unserved = 8)).await;
    let mut silent = Vec::new();
    for i in 0..8u64 {
        silent.push(TcpStream::connect(srv.addr).await.unwrap());
        // Accepted in this order, so the first is the oldest.
        wait_for("accept", || srv.stats.snapshot().accepted == i + 1).await;
    }
    assert!(get_ok(srv.addr).await.starts_with("HTTP/1.1 200"));
    assert!(
        closed_by_server(&mut silent[0]).await,
        "the oldest was evicted"
    );
    let st = srv.stats.snapshot();
    assert_eq!(st.evicted, 1, "{st:?}");
    assert!(st.unserved <= 8, "{st:?}");
    // A flood far over the cap: the newest genuine request still gets through.
    let mut flood = Vec::new();
    for _ in 0..200 {
        flood.push(TcpStream::connect(srv.addr).await.unwrap());
    }
    assert!(get_ok(srv.addr).await.starts_with("HTTP/1.1 200"));
    assert!(srv.stats.snapshot().unserved <= 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dripped_body_is_answered_408() {
    let srv = start(cfg(|c| c.request_timeout = Duration::from_millis(300))).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let resp = request(
        &mut s,
        "POST /echo-body HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nx",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    assert!(closed_by_server(&mut s).await);
    assert_eq!(srv.stats.snapshot().request_timeouts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_upgrade_and_outlive_the_deadlines_and_the_cap() {
    let srv = start(cfg(|c| {
        c.max_unserved = 4;
        c.header_timeout = Duration::from_millis(200);
        c.idle_timeout = Duration::from_millis(200);
    }))
    .await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", srv.addr))
        .await
        .unwrap();
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(srv.addr).await.unwrap());
    }
    // Past every deadline and after the cap evicted others, the socket still echoes.
    tokio::time::sleep(Duration::from_millis(600)).await;
    ws.send(tokio_tungstenite::tungstenite::Message::Text("hi".into()))
        .await
        .unwrap();
    let back = tokio::time::timeout(CLOSE_WITHIN, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(back.into_text().unwrap().as_str(), "hi");
    let st = srv.stats.snapshot();
    assert_eq!(st.upgraded, 1, "{st:?}");
    assert!(st.evicted >= 16, "{st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_an_in_flight_request_finish_then_stops_accepting() {
    let mut srv = start(cfg(|_| {})).await;
    let addr = srv.addr;
    let slow = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        request(&mut s, "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n").await
    });
    wait_for("the slow request", || {
        srv.stats.snapshot().unserved == 1 && srv.stats.snapshot().accepted == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _ = srv.stop.take().unwrap().send(());
    let resp = slow.await.unwrap();
    assert!(
        resp.starts_with("HTTP/1.1 200") && resp.ends_with("slow"),
        "{resp}"
    );
    tokio::time::timeout(CLOSE_WITHIN, srv.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_dropped_without_shutdown_closes_its_kept_alive_connections() {
    let srv = start(cfg(|_| {})).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let first = request(&mut s, "GET /ok HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    // Aborting the serve task (as a test or an embedding process stopping it) must not leave
    // the idle keep-alive connection answering for a server that is gone.
    srv.task.abort();
    assert!(closed_by_server(&mut s).await, "the connection outlived its server");
}
