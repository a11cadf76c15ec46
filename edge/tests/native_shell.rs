//! The native shell over real sockets: the axum router on 127.0.0.1:0, a dashboard stub serving
//! `restaurants/trattoria-roma`, and signed Twilio requests, as the in-process demo uses it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use pulsara_core::handoff::HandoffKeys;
use pulsara_core::secret::Secret;
use pulsara_core::twilio;
use pulsara_edge::native::{router, EdgeState};
use pulsara_edge::settings::Settings;

const TOKEN: &str = "native-test-auth-token";
const KEYS: &str = "k1:native-test-handoff-key-0123";

async fn start_dashboard(hits: Arc<AtomicUsize>) -> String {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../restaurants/trattoria-roma/restaurant.json"
    ))
    .unwrap();
    let app = axum::Router::new()
        .route(
            "/v1/restaurants/by-number/{number}",
            axum::routing::get(
                move |State(hits): State<Arc<AtomicUsize>>, Path(number): Path<String>| {
                    let text = text.clone();
                    async move {
                        hits.fetch_add(1, Ordering::SeqCst);
                        if number == "+390612345678" {
                            (axum::http::StatusCode::OK, text)
                        } else {
                            (axum::http::StatusCode::NOT_FOUND, String::new())
                        }
                    }
                },
            ),
        )
        .with_state(hits);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn native_router_answers_signed_calls() {
    let hits = Arc::new(AtomicUsize::new(0));
    let dashboard = start_dashboard(hits.clone()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let vars = HashMap::from([
        ("PUBLIC_BASE_URL", base.clone()),
        ("BRIDGE_URLS", "eu-west=wss://eu.bridge.test".into()),
        ("DEFAULT_REGION", "eu-west".into()),
        ("DASHBOARD_URL", dashboard),
        ("DASHBOARD_KEY_ID", "edge".into()),
        (
            "DASHBOARD_SIGNING_SECRET",
            "native-test-signing-secret".into(),
        ),
        ("TWILIO_AUTH_TOKEN", TOKEN.into()),
        ("HANDOFF_KEYS", KEYS.into()),
        (
            "DASHBOARD_WEBHOOK_SECRETS",
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".into(),
        ),
    ]);
    let settings = Settings::from_lookup(|k| vars.get(k).cloned()).unwrap();
    // Tuesday 1 Dec 2026 13:00 in Rome: open.
    let now = DateTime::<Utc>::from_timestamp(1_796_126_400, 0).unwrap();
    let state = EdgeState::new(settings)
        .unwrap()
        .with_clock(Arc::new(move || now));
    tokio::spawn(async move { axum::serve(listener, router(state)).await });

    let http = reqwest::Client::new();
    let post = |to: &'static str, sign: bool| {
        let params = vec![
            ("CallSid".to_owned(), "CAnative1".to_owned()),
            ("From".into(), "+14155550123".into()),
            ("To".into(), to.to_owned()),
        ];
        let url = format!("{base}/twilio/voice");
        let sig = if sign {
            twilio::compute_signature(&Secret::new(TOKEN), &url, &params)
        } else {
            "bogus".into()
        };
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&params)
            .finish();
        http.post(url)
            .header("x-twilio-signature", sig)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };

    let resp = post("+390612345678", true).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/xml"));
    let body = resp.text().await.unwrap();
    assert!(
        body.contains(r#"<Stream url="wss://eu.bridge.test/media">"#),
        "{body}"
    );
    let token = body
        .split(r#"<Parameter name="handoff" value=""#)
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let claims = HandoffKeys::parse(&Secret::new(KEYS))
        .unwrap()
        .verify(token, "CAnative1", Some("eu-west"), now.timestamp())
        .unwrap();
    assert_eq!(claims.restaurant_id, "trattoria-roma");

    // Cached: a second call does not hit the dashboard.
    let body = post("+390612345678", true)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("<Stream"));
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    assert_eq!(post("+390612345678", false).await.unwrap().status(), 403);
    let unknown = post("+15005550006", true)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(unknown.contains("not set up"), "{unknown}");
    assert_eq!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
