//! The edge as it runs on Cloudflare: `pulsara-edge` compiled to WebAssembly by
//! `cargo xtask build-wasm`, served by workerd through `wrangler dev` (the harness in
//! `pulsara_tests::workerd`), against a dashboard stub in this process that serves the example
//! restaurants from `restaurants/` and checks every request's signature.
//!
//! One wrangler instance runs the steps in order, because later steps depend on the cache state
//! earlier ones leave behind (warm cache, invalidation, replay). The opening-hours decision is
//! pinned with the test-only `X-Pulsara-Test-Now` header (`ALLOW_TEST_CLOCK=1`, which the edge
//! refuses unless `PUBLIC_BASE_URL` is loopback).
//!
//! The artefacts must be built first; this test fails (it does not skip) when they are missing.
//! `tests/benches/edge_workerd.rs` reuses this harness to measure the worker.
#![allow(dead_code)] // Items used only by the benchmark that includes this file.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use pulsara_core::config::RestaurantConfig;
use pulsara_core::secret::Secret;
use pulsara_core::webhooks::ReplayGuard;
use pulsara_core::{request_auth, twilio, webhooks};
use pulsara_tests::process::repo_root;
use pulsara_tests::workerd::WorkerdEdge;

pub(crate) const TWILIO_AUTH_TOKEN: &str = "test-twilio-auth-token";
const HANDOFF_KEYS: &str = "k2:edge-test-handoff-key-0123456789";
const DASHBOARD_KEY_ID: &str = "edge-test";
const DASHBOARD_SIGNING_SECRET: &str = "edge-test-dashboard-signing-secret";
const WEBHOOK_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const ELEVENLABS_SECRET: &str = "edge-test-elevenlabs-secret";

/// Instants the opening-hours decision is pinned to (checked against `restaurants/`).
pub(crate) mod at {
    /// Tuesday 1 Dec 2026 13:00 in Rome: Trattoria Roma is serving lunch.
    pub const ROME_TUESDAY_LUNCH: i64 = 1_796_126_400;
    /// Monday 30 Nov 2026 10:00 in Rome: Trattoria Roma is closed on Mondays (voicemail).
    pub const ROME_MONDAY_MORNING: i64 = 1_796_029_200;
    /// Tuesday 1 Dec 2026 04:00 in New York: Brooklyn Smokehouse is closed (forward).
    pub const NEW_YORK_TUESDAY_4AM: i64 = 1_796_115_600;
    /// Tuesday 1 Dec 2026 04:00 in Tokyo: Sakura Sushi is closed (message).
    pub const TOKYO_TUESDAY_4AM: i64 = 1_796_065_200;
}

// ---------------------------------------------------------------------------------------------
// Dashboard stub
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
pub(crate) struct Dashboard {
    /// E.164 → config served for it.
    by_number: Mutex<HashMap<String, RestaurantConfig>>,
    /// When set, every request hangs for 10 s and then fails (slower than the edge's 2 s timeout).
    pub(crate) hang: AtomicBool,
    pub(crate) config_requests: AtomicUsize,
    /// Requests whose signature failed verification (path + reason).
    bad_signatures: Mutex<Vec<String>>,
    /// Forwarded events: (path, JSON body).
    events: Mutex<Vec<(String, serde_json::Value)>>,
    nonces: Mutex<Option<ReplayGuard>>,
}

impl Dashboard {
    pub(crate) fn load_restaurants() -> Self {
        let d = Dashboard::default();
        let dir = repo_root().join("restaurants");
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path().join("restaurant.json");
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let config: RestaurantConfig =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            d.set(config);
        }
        *d.nonces.lock().unwrap() = Some(ReplayGuard::new(10_000));
        d
    }

    fn set(&self, config: RestaurantConfig) {
        let mut map = self.by_number.lock().unwrap();
        for n in &config.phone_numbers {
            map.insert(n.clone(), config.clone());
        }
    }

    fn config(&self, number: &str) -> RestaurantConfig {
        self.by_number.lock().unwrap()[number].clone()
    }
}

pub(crate) async fn dashboard(
    State(d): State<Arc<Dashboard>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path_and_query = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let verified = {
        let mut guard = d.nonces.lock().unwrap();
        request_auth::verify(
            |id| (id == DASHBOARD_KEY_ID).then(|| Secret::new(DASHBOARD_SIGNING_SECRET)),
            method.as_str(),
            &path_and_query,
            &header,
            &body,
            chrono::Utc::now().timestamp(),
            guard.as_mut().expect("guard initialised"),
        )
    };
    if let Err(e) = verified {
        d.bad_signatures
            .lock()
            .unwrap()
            .push(format!("{method} {path_and_query}: {e}"));
        return (StatusCode::UNAUTHORIZED, e.to_string()).into_response();
    }
    if d.hang.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_secs(10)).await;
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let path = uri.path();
    if let Some(number) = path.strip_prefix("/v1/restaurants/by-number/") {
        d.config_requests.fetch_add(1, Ordering::SeqCst);
        let Some(config) = d.by_number.lock().unwrap().get(number).cloned() else {
            return StatusCode::NOT_FOUND.into_response();
        };
        let etag = format!("\"{}\"", config.version);
        if header("if-none-match").as_deref() == Some(etag.as_str()) {
            return (StatusCode::NOT_MODIFIED, [("etag", etag)]).into_response();
        }
        return (
            StatusCode::OK,
            [("etag", etag), ("content-type", "application/json".into())],
            serde_json::to_string(&config).unwrap(),
        )
            .into_response();
    }
    if method == Method::POST && (path.starts_with("/v1/calls/") || path == "/v1/post-call") {
        let json: serde_json::Value =
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        d.events.lock().unwrap().push((path.to_owned(), json));
        return StatusCode::CREATED.into_response();
    }
    StatusCode::NOT_FOUND.into_response()
}

// ---------------------------------------------------------------------------------------------
// The edge in workerd
// ---------------------------------------------------------------------------------------------

/// The worker in workerd, configured for these steps (`edge.base`, `edge.http` and
/// `edge.wrangler` come from the shared harness).
pub(crate) struct Edge(WorkerdEdge);

impl std::ops::Deref for Edge {
    type Target = WorkerdEdge;
    fn deref(&self) -> &WorkerdEdge {
        &self.0
    }
}

impl Edge {
    pub(crate) async fn start(dashboard_url: &str) -> Edge {
        let vars = [
            (
                "BRIDGE_URLS",
                "eu-west=wss://eu.bridge.test,us-east=wss://us.bridge.test/stream",
            ),
            ("DEFAULT_REGION", "us-east"),
            ("DASHBOARD_URL", dashboard_url),
            ("DASHBOARD_KEY_ID", DASHBOARD_KEY_ID),
            ("CONFIG_TTL_SECS", "300"),
            ("DASHBOARD_TIMEOUT_MS", "2000"),
            ("ALLOW_TEST_CLOCK", "1"),
        ];
        let secrets = [
            ("TWILIO_AUTH_TOKEN", TWILIO_AUTH_TOKEN),
            ("HANDOFF_KEYS", HANDOFF_KEYS),
            ("DASHBOARD_SIGNING_SECRET", DASHBOARD_SIGNING_SECRET),
            ("DASHBOARD_WEBHOOK_SECRETS", WEBHOOK_SECRET),
            ("ELEVENLABS_WEBHOOK_SECRET", ELEVENLABS_SECRET),
        ];
        Edge(WorkerdEdge::start(&vars, &secrets).await)
    }

    /// POSTs a Twilio-style form, signed over `PUBLIC_BASE_URL + path` unless `signature` is given.
    async fn twilio(
        &self,
        path: &str,
        params: &[(&str, &str)],
        test_now: Option<i64>,
        signature: Option<&str>,
    ) -> (u16, String, Duration) {
        let owned: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let url = format!("{}{path}", self.base);
        let sig = match signature {
            Some(s) => s.to_owned(),
            None => twilio::compute_signature(&Secret::new(TWILIO_AUTH_TOKEN), &url, &owned),
        };
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        let mut req = self
            .http
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", sig)
            .body(body);
        if let Some(t) = test_now {
            req = req.header("x-pulsara-test-now", t.to_string());
        }
        let started = Instant::now();
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}\n{}", self.wrangler.log_tail(40)));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, text, started.elapsed())
    }

    pub(crate) async fn call(&self, sid: &str, to: &str, test_now: i64) -> (u16, String, Duration) {
        let params = [
            ("CallSid", sid),
            ("AccountSid", "ACtest"),
            ("From", "+14155550123"),
            ("To", to),
            ("CallStatus", "ringing"),
        ];
        self.twilio("/twilio/voice", &params, Some(test_now), None)
            .await
    }

    async fn dashboard_webhook(&self, id: &str, restaurant_id: &str, version: u64) -> u16 {
        let body = format!(
            r#"{{"type":"restaurant.updated","data":{{"restaurant_id":"{restaurant_id}","version":{version}}}}}"#
        );
        let ts = chrono::Utc::now().timestamp();
        let sig = webhooks::sign(&Secret::new(WEBHOOK_SECRET), id, ts, body.as_bytes()).unwrap();
        let resp = self
            .http
            .post(format!("{}/webhooks/dashboard", self.base))
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(body)
            .send()
            .await
            .unwrap();
        resp.status().as_u16()
    }
}

/// The value of `<Parameter name="{name}" value="…"/>`.
pub(crate) fn parameter(twiml: &str, name: &str) -> String {
    let marker = format!("<Parameter name=\"{name}\" value=\"");
    let start = twiml
        .find(&marker)
        .unwrap_or_else(|| panic!("no parameter {name} in {twiml}"))
        + marker.len();
    twiml[start..].split('"').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_worker_in_workerd() {
    let stub = Arc::new(Dashboard::load_restaurants());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dashboard_url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .fallback(dashboard)
        .with_state(stub.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let edge = Edge::start(&dashboard_url).await;
    let keys = pulsara_core::handoff::HandoffKeys::parse(&Secret::new(HANDOFF_KEYS)).unwrap();

    const ROMA: &str = "+390612345678";
    const ROMA_2: &str = "+390612345679";
    const BROOKLYN: &str = "+17185550100";
    const SAKURA: &str = "+81312345678";

    // 1. A correctly signed call to an open restaurant: Stream TwiML with a token the bridge accepts.
    let (status, body, _) = edge
        .call(
            "CA00000000000000000000000000000001",
            ROMA,
            at::ROME_TUESDAY_LUNCH,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(r#"<Stream url="wss://eu.bridge.test/media">"#),
        "{body}"
    );
    let token = parameter(&body, "handoff");
    let claims = keys
        .verify(
            &token,
            "CA00000000000000000000000000000001",
            Some("eu-west"),
            chrono::Utc::now().timestamp(),
        )
        .unwrap_or_else(|e| panic!("handoff token rejected: {e}\n{body}"));
    assert_eq!(claims.restaurant_id, "trattoria-roma");
    assert_eq!(
        claims.config_version.to_string(),
        parameter(&body, "config_version")
    );
    assert_eq!(parameter(&body, "restaurant_id"), "trattoria-roma");
    assert_eq!(parameter(&body, "caller"), "+14155550123");
    assert_eq!(parameter(&body, "called"), ROMA);
    // When the Worker answered, in ms on its clock (the wall clock, not the test instant).
    let answered: i64 = parameter(&body, "answered_at_ms").parse().unwrap();
    assert!((chrono::Utc::now().timestamp_millis() - answered).abs() < 60_000, "{answered}");
    assert!(keys
        .verify(
            &token,
            "CA-some-other-call",
            None,
            chrono::Utc::now().timestamp()
        )
        .is_err());
    assert_eq!(stub.config_requests.load(Ordering::SeqCst), 1);

    // 2. The next call is answered from KV without asking the dashboard.
    let (_, body, _) = edge
        .call(
            "CA00000000000000000000000000000002",
            ROMA,
            at::ROME_TUESDAY_LUNCH,
        )
        .await;
    assert!(body.contains("<Stream"), "{body}");
    assert_eq!(
        stub.config_requests.load(Ordering::SeqCst),
        1,
        "a fresh cached config must not be refetched"
    );

    // 3. Forged and unsigned requests get 403 and no TwiML.
    let forged = edge
        .twilio(
            "/twilio/voice",
            &[
                ("CallSid", "CAforged"),
                ("To", ROMA),
                ("From", "+15550000000"),
            ],
            None,
            Some("0/KCTR6DLpKmkAf8muzZqo1nDgQ="),
        )
        .await;
    assert_eq!(forged.0, 403, "{}", forged.1);
    let unsigned = edge
        .twilio(
            "/twilio/voice",
            &[("CallSid", "CAx"), ("To", ROMA)],
            None,
            Some(""),
        )
        .await;
    assert_eq!(unsigned.0, 403, "{}", unsigned.1);
    assert!(!unsigned.1.contains("<Response"));

    // 4. Unknown number: a polite generic message.
    let (status, body, _) = edge
        .call(
            "CA00000000000000000000000000000003",
            "+15005550006",
            at::ROME_TUESDAY_LUNCH,
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        body.contains("not set up") && body.contains("<Hangup/>") && !body.contains("<Stream"),
        "{body}"
    );

    // 5. Closed restaurants, one per after-hours mode.
    let (status, body, _) = edge
        .call(
            "CA00000000000000000000000000000004",
            ROMA,
            at::ROME_MONDAY_MORNING,
        )
        .await;
    assert_eq!(status, 200);
    let roma = stub.config(ROMA);
    let pulsara_core::config::AfterHours::Voicemail {
        message,
        max_length_secs,
    } = &roma.after_hours
    else {
        panic!("trattoria-roma is expected to use voicemail after hours")
    };
    assert!(
        body.contains("<Record") && body.contains(&format!("maxLength=\"{max_length_secs}\"")),
        "{body}"
    );
    assert!(
        body.contains(&format!("{}/twilio/status?kind=recording", edge.base)),
        "{body}"
    );
    assert!(body.contains(&message[..20]), "{body}");

    let (_, body, _) = edge
        .call(
            "CA00000000000000000000000000000005",
            BROOKLYN,
            at::NEW_YORK_TUESDAY_4AM,
        )
        .await;
    let pulsara_core::config::AfterHours::Forward { number, .. } =
        &stub.config(BROOKLYN).after_hours
    else {
        panic!("brooklyn-smokehouse is expected to forward after hours")
    };
    assert!(
        body.contains("<Dial") && body.contains(number.as_str()) && !body.contains("<Stream"),
        "{body}"
    );

    let (_, body, _) = edge
        .call(
            "CA00000000000000000000000000000006",
            SAKURA,
            at::TOKYO_TUESDAY_4AM,
        )
        .await;
    assert!(matches!(
        stub.config(SAKURA).after_hours,
        pulsara_core::config::AfterHours::Message { .. }
    ));
    assert!(
        body.contains("<Say")
            && body.contains("<Hangup/>")
            && !body.contains("<Record")
            && !body.contains("<Dial"),
        "{body}"
    );

    // 6. Webhook invalidation takes effect on the next call; a replay is refused.
    let mut updated = stub.config(ROMA);
    updated.version += 1;
    let new_version = updated.version;
    stub.set(updated);
    let before = stub.config_requests.load(Ordering::SeqCst);
    assert_eq!(
        edge.dashboard_webhook("msg_edge_1", "trattoria-roma", new_version)
            .await,
        204
    );
    let (_, body, _) = edge
        .call(
            "CA00000000000000000000000000000007",
            ROMA,
            at::ROME_TUESDAY_LUNCH,
        )
        .await;
    assert_eq!(
        parameter(&body, "config_version"),
        new_version.to_string(),
        "{body}"
    );
    assert_eq!(stub.config_requests.load(Ordering::SeqCst), before + 1);
    assert_eq!(
        edge.dashboard_webhook("msg_edge_1", "trattoria-roma", new_version)
            .await,
        409,
        "replayed webhook id"
    );

    // 7. Dashboard down (hangs past the 2 s timeout) with a warm, invalidated cache: the stale
    //    config still serves the call.
    assert_eq!(
        edge.dashboard_webhook("msg_edge_2", "trattoria-roma", new_version)
            .await,
        204
    );
    stub.hang.store(true, Ordering::SeqCst);
    let (status, body, took) = edge
        .call(
            "CA00000000000000000000000000000008",
            ROMA,
            at::ROME_TUESDAY_LUNCH,
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        body.contains("<Stream"),
        "stale-if-error must serve the cached config: {body}"
    );
    assert_eq!(parameter(&body, "config_version"), new_version.to_string());
    assert!(took < Duration::from_secs(8), "answered in {took:?}");

    // 8. Dashboard down with a cold cache (a number never looked up): fallback TwiML, quickly.
    let (status, body, took) = edge
        .call(
            "CA00000000000000000000000000000009",
            ROMA_2,
            at::ROME_TUESDAY_LUNCH,
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        body.contains("<Say") && body.contains("<Hangup/>") && !body.contains("<Stream"),
        "{body}"
    );
    assert!(
        took < Duration::from_secs(8),
        "fallback took {took:?}; Twilio gives up after 15 s"
    );
    stub.hang.store(false, Ordering::SeqCst);

    // 9. Status callback and ElevenLabs post-call webhook are forwarded, signed.
    let (status, body, _) = edge
        .twilio(
            "/twilio/status",
            &[
                ("CallSid", "CA00000000000000000000000000000001"),
                ("CallStatus", "completed"),
                ("CallDuration", "42"),
            ],
            None,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let post_call = br#"{"type":"post_call_transcription","event_timestamp":1,"data":{"conversation_id":"conv_1"}}"#;
    let header = webhooks::sign_elevenlabs(
        &Secret::new(ELEVENLABS_SECRET),
        chrono::Utc::now().timestamp(),
        post_call,
    );
    let resp = edge
        .http
        .post(format!("{}/webhooks/elevenlabs", edge.base))
        .header("elevenlabs-signature", header)
        .body(post_call.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let bad = edge
        .http
        .post(format!("{}/webhooks/elevenlabs", edge.base))
        .header("elevenlabs-signature", "t=1,v0=00")
        .body(post_call.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 403);
    {
        let events = stub.events.lock().unwrap();
        let status_event = events
            .iter()
            .find(|(p, _)| p == "/v1/calls/CA00000000000000000000000000000001/events");
        let (_, ev) =
            status_event.unwrap_or_else(|| panic!("status event not forwarded: {events:?}"));
        assert_eq!(
            (ev["CallStatus"].as_str(), ev["CallDuration"].as_str()),
            (Some("completed"), Some("42"))
        );
        let (_, pc) = events
            .iter()
            .find(|(p, _)| p == "/v1/post-call")
            .expect("post-call forwarded");
        assert_eq!(pc["data"]["conversation_id"], "conv_1");
    }

    // 10. Oversized bodies are refused.
    let big = "a".repeat(70 * 1024);
    let resp = edge
        .http
        .post(format!("{}/twilio/voice", edge.base))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);

    // Every request the edge made to the dashboard was correctly signed.
    let bad = stub.bad_signatures.lock().unwrap().clone();
    assert!(
        bad.is_empty(),
        "unsigned or badly signed dashboard requests: {bad:?}"
    );
}
