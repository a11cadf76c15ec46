//! The durable outbox against real loopback services: the dashboard down and coming back later
//! (records delivered once each, in order per restaurant), permanent rejections parked and
//! visible, notification emails through a real SMTP conversation (with a temporary SMTP failure
//! retried and a permanent one parked) and caller SMS through a Twilio Messages API stand-in.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use common::*;
use pulsara_core::config::RestaurantConfig;
use pulsara_core::secret::Secret;
use pulsara_dashboard::notify::{SmtpSender, TwilioSms};
use pulsara_dashboard::outbox::{self, Dispatcher, EntryKind, NewEntry, Outbox, RetryPolicy};
use pulsara_dashboard::pipeline::finish_and_enqueue;
use pulsara_dashboard::smtp_sink::SmtpSink;
use serde_json::json;

fn fast() -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_millis(20),
        cap: Duration::from_millis(200),
        concurrency: 8,
        poll: Duration::from_millis(50),
    }
}

fn stop_signal() -> (
    tokio::sync::oneshot::Sender<()>,
    impl std::future::Future<Output = ()>,
) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    (tx, async move {
        let _ = rx.await;
    })
}

#[tokio::test]
async fn dashboard_down_then_back_delivers_each_record_once_in_order() {
    // Reserve a port, leave it closed: the dashboard is down.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let dir = tempfile::tempdir().unwrap();
    let ob = Outbox::open(&dir.path().join("outbox.db")).unwrap();
    let clock = TestClock::new();
    let dispatcher = Arc::new(Dispatcher {
        dashboard: Some(client(
            &format!("http://{addr}"),
            "bridge1",
            BRIDGE_SECRET,
            &clock,
        )),
        ..Default::default()
    });
    let calls = [
        ("CA-r1", "trattoria-roma"),
        ("CA-b1", "brooklyn-smokehouse"),
        ("CA-r2", "trattoria-roma"),
        ("CA-r3", "trattoria-roma"),
    ];
    for (sid, rid) in calls {
        finish_and_enqueue(
            &ob,
            record(sid, rid, "Pickup order please"),
            None,
            outbox::now_ms(),
        )
        .unwrap();
    }
    let (stop, shutdown) = stop_signal();
    let task = tokio::spawn(outbox::run(ob.clone(), dispatcher, fast(), shutdown));
    // Every entry has been tried (and failed) at least once, and the oldest has waited a while.
    assert!(
        eventually(10, || ob
            .stats(outbox::now_ms())
            .is_ok_and(
                |st| st.failed_attempts_total >= 4 && st.oldest_age_secs > 0.5
            ))
        .await,
        "{:?}",
        ob.stats(outbox::now_ms())
    );
    let st = ob.stats(outbox::now_ms()).unwrap();
    assert_eq!(st.depth, 4);
    assert!(st.failed_attempts_total >= 4, "kept retrying: {st:?}");
    assert!(st.oldest_age_secs > 0.5, "{st:?}");
    let last_error = ob.list(Some("pending")).unwrap()[0]
        .last_error
        .clone()
        .unwrap();
    assert!(last_error.contains("unreachable"), "{last_error}");

    // The dashboard comes back on the same address.
    let d = start_dashboard_on(tokio::net::TcpListener::bind(addr).await.unwrap(), None).await;
    assert!(
        eventually(10, || ob.stats(outbox::now_ms()).unwrap().depth == 0).await,
        "delivered after recovery"
    );
    let _ = stop.send(());
    task.await.unwrap();
    assert_eq!(d.dash.store.call_count().unwrap(), 4);
    let roma: Vec<String> = d
        .dash
        .store
        .calls(Some("trattoria-roma"), 10)
        .unwrap()
        .iter()
        .map(|c| c["call_sid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        roma,
        vec!["CA-r1", "CA-r2", "CA-r3"],
        "in order per restaurant"
    );
    let stored = d.dash.store.call("CA-b1").unwrap().unwrap();
    assert_eq!(stored["summary"]["intents"][0], "place an order");
    assert!(stored["sentiment"]["label"].is_string());
}

#[tokio::test]
async fn permanent_rejection_is_parked_and_visible_while_the_lane_moves_on() {
    let d = start_dashboard().await;
    let dir = tempfile::tempdir().unwrap();
    let ob = Outbox::open(&dir.path().join("outbox.db")).unwrap();
    let dispatcher = Arc::new(Dispatcher {
        dashboard: Some(d.client("bridge1", BRIDGE_SECRET)),
        ..Default::default()
    });
    // Not a CallRecord: the dashboard answers 400.
    ob.enqueue(
        &[
            NewEntry {
                kind: EntryKind::CallRecord,
                lane: "sakura-sushi".into(),
                idempotency_key: "CA-bad".into(),
                payload: "{\"nope\":1}".into(),
            },
            NewEntry {
                kind: EntryKind::CallRecord,
                lane: "sakura-sushi".into(),
                idempotency_key: "CA-good".into(),
                payload: serde_json::to_string(&record("CA-good", "sakura-sushi", "hello"))
                    .unwrap(),
            },
        ],
        outbox::now_ms(),
    )
    .unwrap();
    let left = ob
        .flush(&dispatcher, &fast(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(left, 0);
    let parked = ob.list(Some("parked")).unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].idempotency_key, "CA-bad");
    let err = parked[0].last_error.as_deref().unwrap();
    assert!(
        err.contains("400") && err.contains("not a CallRecord"),
        "{err}"
    );
    assert_eq!(ob.stats(outbox::now_ms()).unwrap().parked, 1);
    assert!(d.dash.store.call("CA-good").unwrap().is_some());
    // A wrong signing key is also permanent (401), not retried forever.
    let bad = Arc::new(Dispatcher {
        dashboard: Some(d.client("bridge1", "wrong-secret")),
        ..Default::default()
    });
    finish_and_enqueue(
        &ob,
        record("CA-unauth", "sakura-sushi", "hi"),
        None,
        outbox::now_ms(),
    )
    .unwrap();
    ob.flush(&bad, &fast(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(ob.list(Some("parked")).unwrap().len(), 2);
    // Re-queue after fixing the key: delivered.
    let id = ob.list(Some("parked")).unwrap()[1].id;
    ob.requeue(id, outbox::now_ms()).unwrap();
    ob.flush(&dispatcher, &fast(), Duration::from_secs(5))
        .await
        .unwrap();
    assert!(d.dash.store.call("CA-unauth").unwrap().is_some());
}

#[derive(Clone, Default)]
struct TwilioMock {
    seen: Arc<Mutex<Vec<(String, Vec<(String, String)>)>>>,
}

async fn twilio_messages(
    State(m): State<TwilioMock>,
    headers: HeaderMap,
    body: String,
) -> (axum::http::StatusCode, String) {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let form: Vec<(String, String)> = serde_urlencoded::from_str(&body).unwrap_or_default();
    m.seen.lock().unwrap().push((auth.clone(), form));
    use base64::Engine;
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("AC123:twilio-token")
    );
    if auth != want {
        return (
            axum::http::StatusCode::UNAUTHORIZED,
            "{\"code\":20003,\"message\":\"Authenticate\"}".into(),
        );
    }
    (
        axum::http::StatusCode::CREATED,
        "{\"sid\":\"SM1\",\"status\":\"queued\"}".into(),
    )
}

fn restaurant_with_notifications(d: &Dash) -> RestaurantConfig {
    let mut cfg = d
        .dash
        .store
        .restaurant("brooklyn-smokehouse")
        .unwrap()
        .unwrap();
    cfg.notifications.email = vec!["manager@smokehouse.test".into()];
    cfg.notifications.sms_confirmations = true;
    cfg.notifications.sms_from = Some("+17185550177".into());
    cfg
}

#[tokio::test]
async fn order_call_sends_email_over_smtp_and_sms_via_twilio_through_the_outbox() {
    let d = start_dashboard().await;
    let smtp_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let smtp_addr = smtp_listener.local_addr().unwrap();
    let (sink, _smtp_task) = SmtpSink::start(smtp_listener);
    sink.fail_next(451, 1); // first attempt: temporary failure, retried

    let mock = TwilioMock::default();
    let tw_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tw_addr = tw_listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route(
            "/2010-04-01/Accounts/{sid}/Messages.json",
            post(twilio_messages),
        )
        .with_state(mock.clone());
    tokio::spawn(async move { axum::serve(tw_listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let ob = Outbox::open(&dir.path().join("outbox.db")).unwrap();
    let dispatcher = Arc::new(Dispatcher {
        dashboard: Some(d.client("bridge1", BRIDGE_SECRET)),
        smtp: Some(
            SmtpSender::new(
                &Secret::new(format!("smtp://{smtp_addr}")),
                "Pulsara <calls@pulsara.test>",
            )
            .unwrap(),
        ),
        sms: Some(TwilioSms::new(
            &format!("http://{tw_addr}"),
            "AC123",
            Secret::new("twilio-token"),
        )),
    });
    let cfg = restaurant_with_notifications(&d);
    let mut rec = record(
        "CA-order",
        "brooklyn-smokehouse",
        "I'd like a brisket plate for pickup at seven",
    );
    rec.orders = vec![
        json!({"type":"record_order","items":[{"item_id":"brisket","name":"Sliced Brisket Plate","quantity":1,
        "modifiers":[{"group":"Sides","option":"Mac and cheese"},{"group":"Sides","option":"Coleslaw"}],"unit_price_minor":2400,"line_total_minor":2400}],
        "subtotal_minor":2400,"tax_minor":213,"total_minor":2613,"currency":"USD","fulfillment":"pickup","pickup_time":"2026-11-28T19:00:00-05:00"}),
    ];
    let finished = finish_and_enqueue(&ob, rec, Some(&cfg), outbox::now_ms()).unwrap();
    assert_eq!(
        finished.queued, 3,
        "record + email + sms in one transaction"
    );

    let (stop, shutdown) = stop_signal();
    let task = tokio::spawn(outbox::run(ob.clone(), dispatcher, fast(), shutdown));
    let mails = sink.wait_for(1, Duration::from_secs(10)).await;
    assert!(eventually(10, || ob.stats(outbox::now_ms()).unwrap().depth == 0).await);
    let _ = stop.send(());
    task.await.unwrap();

    assert_eq!(mails.len(), 1, "exactly one email");
    let m = &mails[0];
    assert_eq!(m.rcpt_to, vec!["manager@smokehouse.test"]);
    assert_eq!(m.mail_from, "calls@pulsara.test");
    let subject = m.header("Subject").unwrap();
    assert!(
        subject.contains("Brooklyn Smokehouse") && subject.contains("order"),
        "{subject}"
    );
    let body = m.body();
    assert!(
        body.contains("1 x Sliced Brisket Plate (Mac and cheese, Coleslaw)"),
        "{body}"
    );
    assert!(body.contains("USD 26.13"), "{body}");
    assert!(
        ob.stats(outbox::now_ms()).unwrap().failed_attempts_total >= 1,
        "the 451 was retried"
    );

    let seen = mock.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let form: std::collections::HashMap<_, _> = seen[0].1.iter().cloned().collect();
    assert_eq!(form["To"], "+15550001111");
    assert_eq!(form["From"], "+17185550177");
    assert!(
        form["Body"].starts_with("Brooklyn Smokehouse: confirmed order: 1 x Sliced Brisket Plate"),
        "{}",
        form["Body"]
    );
    let stored = d.dash.store.call("CA-order").unwrap().unwrap();
    let channels: Vec<&str> = stored["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["channel"].as_str().unwrap())
        .collect();
    assert_eq!(channels, vec!["email", "sms"]);
}

#[tokio::test]
async fn smtp_permanent_failure_parks_the_email_without_blocking_records() {
    let d = start_dashboard().await;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let smtp_addr = l.local_addr().unwrap();
    let (sink, _t) = SmtpSink::start(l);
    sink.fail_next(550, 1);
    let dir = tempfile::tempdir().unwrap();
    let ob = Outbox::open(&dir.path().join("outbox.db")).unwrap();
    let dispatcher = Arc::new(Dispatcher {
        dashboard: Some(d.client("bridge1", BRIDGE_SECRET)),
        smtp: Some(
            SmtpSender::new(
                &Secret::new(format!("smtp://{smtp_addr}")),
                "calls@pulsara.test",
            )
            .unwrap(),
        ),
        sms: None,
    });
    let mut cfg = restaurant_with_notifications(&d);
    cfg.notifications.sms_confirmations = false;
    let rec = record(
        "CA-complaint",
        "brooklyn-smokehouse",
        "The ribs were cold and the staff was rude, I want a refund.",
    );
    let f = finish_and_enqueue(&ob, rec, Some(&cfg), outbox::now_ms()).unwrap();
    assert!(f
        .email
        .as_ref()
        .unwrap()
        .reasons
        .contains(&"complaint".to_owned()));
    ob.flush(&dispatcher, &fast(), Duration::from_secs(5))
        .await
        .unwrap();
    let parked = ob.list(Some("parked")).unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].kind, EntryKind::Email);
    assert!(
        parked[0].last_error.as_deref().unwrap().contains("550"),
        "{:?}",
        parked[0].last_error
    );
    assert!(
        d.dash.store.call("CA-complaint").unwrap().is_some(),
        "record delivered regardless"
    );
    assert!(sink.messages().is_empty());
}
