//! SIGKILL during delivery, then restart: every record reaches the dashboard exactly once.
//!
//! How: the outbox runs in a *child process* (this test binary re-run with a filter and an
//! environment variable). The dashboard in the parent stores each record but holds its answer
//! back for a while, which is the worst moment to die: the record is stored, the outbox has not
//! heard so and has not removed it. The parent waits until the dashboard has stored a record,
//! kills the child with SIGKILL (`Child::kill`), then restarts the outbox on the same file
//! in-process. The restarted outbox sends the stored record again with the same
//! `Idempotency-Key`; the dashboard answers "duplicate", and the store holds each record once.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use common::*;
use pulsara_dashboard::outbox::{self, Dispatcher, Outbox, RetryPolicy};
use pulsara_dashboard::pipeline::finish_and_enqueue;

const CHILD_ENV: &str = "PULSARA_OUTBOX_CHILD_DB";

fn policy() -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_millis(20),
        cap: Duration::from_millis(200),
        concurrency: 4,
        poll: Duration::from_millis(50),
    }
}

/// The child's body: deliver the outbox at `$PULSARA_OUTBOX_CHILD_DB` to `$PULSARA_OUTBOX_CHILD_URL`
/// until killed. Without the variable (a normal test run) it does nothing.
#[tokio::test]
async fn outbox_child_process() {
    let Ok(db) = std::env::var(CHILD_ENV) else {
        return;
    };
    let url = std::env::var("PULSARA_OUTBOX_CHILD_URL").unwrap();
    let clock = TestClock::new();
    let ob = Outbox::open(std::path::Path::new(&db)).unwrap();
    let d = Arc::new(Dispatcher {
        dashboard: Some(client(&url, "bridge1", BRIDGE_SECRET, &clock)),
        ..Default::default()
    });
    outbox::run(ob, d, policy(), std::future::pending()).await;
}

#[tokio::test]
async fn sigkill_mid_delivery_then_restart_delivers_each_record_exactly_once() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let d = start_dashboard().await;
    // Re-serve the same state behind a layer that counts POST /v1/calls and, while `slow` is
    // set, holds every answer back after the record has been stored.
    let posts = Arc::new(AtomicUsize::new(0));
    let slow = Arc::new(AtomicBool::new(true));
    let (p2, s2) = (posts.clone(), slow.clone());
    let app = pulsara_dashboard::server::router(d.dash.state.clone()).layer(
        axum::middleware::from_fn(move |req: Request, next: Next| {
            let (posts, slow) = (p2.clone(), s2.clone());
            async move {
                let is_post =
                    req.method() == axum::http::Method::POST && req.uri().path() == "/v1/calls";
                let resp = next.run(req).await;
                if is_post {
                    posts.fetch_add(1, Ordering::SeqCst);
                    if slow.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                }
                resp
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("outbox.db");
    let ob = Outbox::open(&db).unwrap();
    let sids: Vec<String> = (0..5).map(|i| format!("CA-kill-{i}")).collect();
    for sid in &sids {
        finish_and_enqueue(
            &ob,
            record(sid, "sakura-sushi", "Table for two please"),
            None,
            outbox::now_ms(),
        )
        .unwrap();
    }

    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "outbox_child_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &db)
        .env("PULSARA_OUTBOX_CHILD_URL", &url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let store = d.dash.store.clone();
    assert!(
        eventually(30, || store.call_count().unwrap() >= 1).await,
        "child delivered the first record"
    );
    // Stored at the dashboard, not yet acknowledged: kill -9 now.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "child was killed, not finished: {status:?}"
    );
    assert_eq!(store.call_count().unwrap(), 1);
    assert_eq!(
        ob.stats(outbox::now_ms()).unwrap().depth,
        5,
        "nothing was removed from the outbox"
    );

    // Restart: a fresh outbox handle on the same file, dashboard answering promptly.
    slow.store(false, Ordering::SeqCst);
    drop(ob);
    let ob = Outbox::open(&db).unwrap();
    let clock = TestClock::new();
    let disp = Arc::new(Dispatcher {
        dashboard: Some(client(&url, "bridge1", BRIDGE_SECRET, &clock)),
        ..Default::default()
    });
    let left = ob
        .flush(&disp, &policy(), Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(left, 0);
    assert_eq!(
        store.call_count().unwrap(),
        5,
        "each record stored exactly once"
    );
    for sid in &sids {
        assert!(store.call(sid).unwrap().is_some(), "{sid}");
    }
    assert_eq!(
        posts.load(Ordering::SeqCst),
        6,
        "the killed delivery was resent once and deduplicated"
    );
    let ordered: Vec<String> = store
        .calls(Some("sakura-sushi"), 10)
        .unwrap()
        .iter()
        .map(|c| c["call_sid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ordered, sids, "in order");
}
