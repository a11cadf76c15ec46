//! No secret appears in logs or error messages: every component that holds one (signing keys,
//! API keys, webhook secrets, the SMTP password, the Twilio auth token) is driven through its
//! success and failure paths with all logs captured at DEBUG, and each secret value is then
//! searched for in the captured log text, in every error message and in `Debug` output.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use pulsara_core::secret::Secret;
use pulsara_dashboard::auth::SigningKeys;
use pulsara_dashboard::client::{ClientConfig, DashboardClient};
use pulsara_dashboard::keys::Scope;
use pulsara_dashboard::notify::{EmailJob, SmsJob, SmtpSender, TwilioSms};
use pulsara_dashboard::outbox::{self, Dispatcher, Outbox, RetryPolicy};
use pulsara_dashboard::smtp_sink::SmtpSink;
use pulsara_dashboard::webhook_in::WebhookReceiver;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn secrets_never_reach_logs_or_errors() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    const SMTP_PASSWORD: &str = "smtp-pass-Zq81xx";
    const TWILIO_TOKEN: &str = "twilio-token-Pw93yy";
    const WEBHOOK_SECRET: &str = "whsec_c2VjcmV0LXdlYmhvb2sta2V5LTc3Nzc=";
    let mut errors: Vec<String> = Vec::new();
    let mut debug: Vec<String> = Vec::new();

    let d = start_dashboard().await;
    let api_key = d
        .dash
        .store
        .create_api_key(Scope::Bridge, "bridge", d.clock.now())
        .unwrap();
    let api_secret = api_key.key.expose().to_owned();
    debug.push(format!("{api_key:?}"));
    debug.push(format!("{:?}", signing_keys()));
    debug.push(format!(
        "{:?}",
        SigningKeys::parse(&Secret::new(format!("k:edge:{BRIDGE_SECRET}")))
    ));

    // Signed requests: good, forged secret, revoked API key.
    let good = d.client("bridge1", BRIDGE_SECRET);
    good.restaurant("trattoria-roma", None).await.unwrap();
    let forged = d.client("bridge1", "forged-secret-Kk55");
    errors.push(
        forged
            .restaurant("trattoria-roma", None)
            .await
            .unwrap_err()
            .to_string(),
    );
    let with_key = DashboardClient::new(
        ClientConfig::new(d.url()).api_key(api_key.key.clone()),
        d.clock.clock(),
    )
    .unwrap();
    with_key.restaurant("trattoria-roma", None).await.unwrap();
    debug.push(format!("{with_key:?}"));
    d.dash
        .store
        .revoke_api_key(&api_key.id, d.clock.now())
        .unwrap();
    errors.push(
        with_key
            .restaurant("trattoria-roma", None)
            .await
            .unwrap_err()
            .to_string(),
    );
    // Malformed key ring entries.
    errors.push(
        SigningKeys::parse(&Secret::new(format!("k:root:{BRIDGE_SECRET}")))
            .unwrap_err()
            .to_string(),
    );

    // SMTP with credentials in the URL, against a server that offers no AUTH.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let smtp_addr = l.local_addr().unwrap();
    let (_sink, _t) = SmtpSink::start(l);
    let smtp = SmtpSender::new(
        &Secret::new(format!("smtp://ops:{SMTP_PASSWORD}@{smtp_addr}")),
        "calls@pulsara.test",
    )
    .unwrap();
    debug.push(format!("{smtp:?}"));
    let job = EmailJob {
        to: vec!["a@b.test".into()],
        subject: "s".into(),
        body: "b".into(),
        reasons: vec![],
    };
    if let Err(e) = smtp.send(&job).await {
        errors.push(e.to_string());
    }
    match SmtpSender::new(
        &Secret::new(format!("bogus://ops:{SMTP_PASSWORD}@host")),
        "calls@pulsara.test",
    ) {
        Err(e) => errors.push(e.to_string()),
        Ok(_) => panic!("bogus scheme accepted"),
    }

    // Twilio with a wrong token (the stand-in refuses everything with 401) and unreachable.
    let tw = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tw_addr = tw.local_addr().unwrap();
    let app = axum::Router::new().fallback(|| async {
        (
            axum::http::StatusCode::UNAUTHORIZED,
            "{\"message\":\"Authenticate\"}",
        )
    });
    tokio::spawn(async move { axum::serve(tw, app).await });
    let sms = TwilioSms::new(
        &format!("http://{tw_addr}"),
        "AC1",
        Secret::new(TWILIO_TOKEN),
    );
    debug.push(format!("{sms:?}"));
    let sjob = SmsJob {
        to: "+15550001111".into(),
        from: "+15550002222".into(),
        body: "hi".into(),
    };
    errors.push(sms.send(&sjob).await.unwrap_err().to_string());
    let down = TwilioSms::new("http://127.0.0.1:1", "AC1", Secret::new(TWILIO_TOKEN));
    errors.push(down.send(&sjob).await.unwrap_err().to_string());

    // The outbox logs its failures (transient and permanent): drive both.
    let dir = tempfile::tempdir().unwrap();
    let ob = Outbox::open(&dir.path().join("o.db")).unwrap();
    let disp = Arc::new(Dispatcher {
        dashboard: Some(forged),
        smtp: Some(smtp),
        sms: Some(sms),
    });
    let mut cfg = d
        .dash
        .store
        .restaurant("brooklyn-smokehouse")
        .unwrap()
        .unwrap();
    cfg.notifications.email = vec!["m@x.test".into()];
    cfg.notifications.sms_confirmations = true;
    cfg.notifications.sms_from = Some("+17185550177".into());
    let mut rec = record("CA-sec", "brooklyn-smokehouse", "order please");
    rec.orders = vec![
        serde_json::json!({"items":[{"name":"Ribs","quantity":1}],"total_minor":100,"currency":"USD"}),
    ];
    pulsara_dashboard::pipeline::finish_and_enqueue(&ob, rec, Some(&cfg), outbox::now_ms())
        .unwrap();
    let policy = RetryPolicy {
        base: Duration::from_millis(10),
        cap: Duration::from_millis(20),
        ..Default::default()
    };
    ob.flush(&disp, &policy, Duration::from_secs(3))
        .await
        .unwrap();
    for e in ob.list(None).unwrap() {
        errors.extend(e.last_error);
    }

    // Webhooks: a forged delivery and a receiver with a malformed secret.
    let rx = WebhookReceiver::new(vec![Secret::new(WEBHOOK_SECRET)], d.clock.clock());
    let mut h = axum::http::HeaderMap::new();
    h.insert("webhook-id", "msg_x".parse().unwrap());
    h.insert(
        "webhook-timestamp",
        d.clock.now().to_string().parse().unwrap(),
    );
    h.insert("webhook-signature", "v1,AAAA".parse().unwrap());
    errors.push(rx.receive(&h, b"{}").unwrap_err().to_string());
    let bad_rx = WebhookReceiver::new(vec![Secret::new("whsec_!!not-base64!!")], d.clock.clock());
    errors.push(bad_rx.receive(&h, b"{}").unwrap_err().to_string());
    let admin = d.client("admin1", ADMIN_SECRET);
    admin
        .admin_add_webhook(
            "http://127.0.0.1:1/webhooks/dashboard",
            Some(&Secret::new(WEBHOOK_SECRET)),
        )
        .await
        .unwrap();
    let mut edited = d.dash.store.restaurant("sakura-sushi").unwrap().unwrap();
    edited.name = "Sakura".into();
    admin.admin_put_restaurant(&edited).await.unwrap();
    debug.push(format!("{:?}", d.dash.store.webhooks().unwrap()));
    tokio::time::sleep(Duration::from_millis(700)).await; // first webhook retry has logged

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("dashboard request refused"),
        "logs were captured:\n{logs}"
    );
    assert!(logs.contains("outbox"), "outbox failures were logged");
    assert!(errors.len() >= 8, "{errors:#?}");
    let secrets = [
        EDGE_SECRET,
        BRIDGE_SECRET,
        ADMIN_SECRET,
        SMTP_PASSWORD,
        TWILIO_TOKEN,
        WEBHOOK_SECRET,
        "c2VjcmV0LXdlYmhvb2sta2V5LTc3Nzc",
        &api_secret,
        "forged-secret-Kk55",
    ];
    for s in secrets {
        assert!(!logs.contains(s), "secret {s:?} found in logs:\n{logs}");
        for e in &errors {
            assert!(!e.contains(s), "secret {s:?} found in error {e:?}");
        }
        for dbg in &debug {
            assert!(
                !dbg.contains(s),
                "secret {s:?} found in Debug output {dbg:?}"
            );
        }
    }
}
