//! The embedded dashboard over loopback HTTP: three seeded restaurants, ETags, policy bytes,
//! signed-request rejections (unsigned, forged, stale, future, replayed, tampered body/path,
//! unknown key), scopes, API keys with rotation, idempotent call records and post-call merging.

mod common;

use common::*;
use pulsara_core::request_auth;
use pulsara_core::secret::Secret;
use pulsara_dashboard::client::{ClientError, Fetched, PostOutcome};
use pulsara_dashboard::keys::Scope;
use serde_json::{json, Value};

const NUMBERS: [(&str, &str); 3] = [
    ("+390612345678", "trattoria-roma"),
    ("+17185550100", "brooklyn-smokehouse"),
    ("+81312345678", "sakura-sushi"),
];

#[tokio::test]
async fn three_restaurants_served_with_etags_kb_and_policies() {
    let d = start_dashboard().await;
    assert_eq!(
        d.dash.seed_report.seeded.len(),
        3,
        "{:?}",
        d.dash.seed_report
    );
    let c = d.client("edge1", EDGE_SECRET);
    let bridge = d.client("bridge1", BRIDGE_SECRET);
    let ids = d.dash.store.restaurant_ids().unwrap();
    for id in &ids {
        let cfg = d.dash.store.restaurant(id).unwrap().unwrap();
        let number = &cfg.phone_numbers[0];
        let Fetched::Fresh { value, etag } = c.restaurant_by_number(number, None).await.unwrap()
        else {
            panic!()
        };
        assert_eq!(&value.id, id);
        assert_eq!(
            etag.as_deref(),
            Some(format!("\"{}\"", value.version).as_str())
        );
        assert_eq!(
            c.restaurant_by_number(number, etag.as_deref())
                .await
                .unwrap(),
            Fetched::NotModified
        );
        let Fetched::Fresh { value: kb, .. } = bridge.knowledge_base(id, None).await.unwrap()
        else {
            panic!()
        };
        assert_eq!(&kb.restaurant_id, id);
        assert!(!kb.menu.is_empty());
        // Tools were resolved from builtin:<name> to hashes whose bytes are served.
        assert!(!value.tools.is_empty());
        for t in &value.tools {
            assert_eq!(t.module_sha256.len(), 64, "{}", t.module_sha256);
            let bytes = bridge.policy(&t.module_sha256).await.unwrap();
            assert!(bytes.starts_with(b"\0asm"));
        }
    }
    assert_eq!(ids.len(), 3);
    for (number, id) in NUMBERS {
        let Fetched::Fresh { value, .. } = c.restaurant_by_number(number, None).await.unwrap()
        else {
            panic!()
        };
        assert_eq!(value.id, id, "{number}");
    }
    assert!(matches!(
        c.restaurant_by_number("+19999999999", None).await,
        Err(ClientError::NotFound(_))
    ));
    // Edge scope may not fetch policy modules.
    assert!(matches!(
        c.policy(&"0".repeat(64)).await,
        Err(ClientError::Status { status: 403, .. })
    ));
}

/// Sends a hand-signed request and returns (status, error code).
async fn raw(
    url: &str,
    method: &str,
    path: &str,
    headers: Vec<(&'static str, String)>,
    body: &[u8],
) -> (u16, String) {
    let http = reqwest::Client::new();
    let mut req = http
        .request(method.parse().unwrap(), format!("{url}{path}"))
        .body(body.to_vec());
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    (
        status,
        v.pointer("/error/code")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
    )
}

#[tokio::test]
async fn forged_stale_replayed_and_tampered_requests_are_rejected() {
    let d = start_dashboard().await;
    let url = d.url();
    let now = d.clock.now();
    let secret = Secret::new(EDGE_SECRET);
    let path = "/v1/restaurants/trattoria-roma";
    let sign = |p: &str, ts: i64, nonce: &str, body: &[u8], s: &Secret, kid: &str| {
        request_auth::sign(
            kid,
            s,
            if body.is_empty() { "GET" } else { "POST" },
            p,
            ts,
            nonce,
            body,
        )
    };

    assert_eq!(
        raw(&url, "GET", path, vec![], b"").await,
        (401, "unauthenticated".into())
    );
    let ok = sign(path, now, "n-ok", b"", &secret, "edge1");
    assert_eq!(raw(&url, "GET", path, ok.clone(), b"").await.0, 200);
    assert_eq!(
        raw(&url, "GET", path, ok, b"").await,
        (401, "replayed_nonce".into())
    );
    let forged = sign(
        path,
        now,
        "n-forged",
        b"",
        &Secret::new("not-the-secret"),
        "edge1",
    );
    assert_eq!(
        raw(&url, "GET", path, forged, b"").await,
        (401, "bad_signature".into())
    );
    let stale = sign(path, now - 301, "n-stale", b"", &secret, "edge1");
    assert_eq!(
        raw(&url, "GET", path, stale, b"").await,
        (401, "stale_timestamp".into())
    );
    let future = sign(path, now + 301, "n-future", b"", &secret, "edge1");
    assert_eq!(
        raw(&url, "GET", path, future, b"").await,
        (401, "future_timestamp".into())
    );
    let other_path = sign(
        "/v1/restaurants/sakura-sushi",
        now,
        "n-path",
        b"",
        &secret,
        "edge1",
    );
    assert_eq!(
        raw(&url, "GET", path, other_path, b"").await,
        (401, "bad_signature".into())
    );
    let unknown = sign(path, now, "n-unknown", b"", &secret, "nobody");
    assert_eq!(
        raw(&url, "GET", path, unknown, b"").await,
        (401, "unknown_key".into())
    );
    let mut missing = sign(path, now, "n-missing", b"", &secret, "edge1");
    missing.retain(|(k, _)| *k != request_auth::HEADER_NONCE);
    assert_eq!(
        raw(&url, "GET", path, missing, b"").await,
        (401, "missing_signature_header".into())
    );
    // Tampered body on a POST (events accept the edge scope).
    let ev_path = "/v1/calls/CA1/events";
    let body = br#"{"CallSid":"CA1","CallStatus":"completed"}"#;
    let signed = sign(ev_path, now, "n-body", body, &secret, "edge1");
    let tampered = br#"{"CallSid":"CA1","CallStatus":"failed"}"#;
    assert_eq!(
        raw(&url, "POST", ev_path, signed.clone(), tampered).await,
        (401, "bad_signature".into())
    );
    assert_eq!(raw(&url, "POST", ev_path, signed, body).await.0, 202);
    assert_eq!(
        d.dash.store.call_events("CA1").unwrap().len(),
        1,
        "only the genuine event stored"
    );
    // Edge scope may not post call records.
    let rec = serde_json::to_vec(&record("CA2", "trattoria-roma", "hi")).unwrap();
    let mut h = sign("/v1/calls", now, "n-scope", &rec, &secret, "edge1");
    h.push(("idempotency-key", "CA2".into()));
    assert_eq!(
        raw(&url, "POST", "/v1/calls", h, &rec).await,
        (403, "forbidden_scope".into())
    );
}

#[tokio::test]
async fn replay_is_refused_after_a_restart_too() {
    // Nonces persist in SQLite: a request captured before a restart cannot be replayed after it.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("persist.db");
    let d = start_dashboard_on(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        Some(db.clone()),
    )
    .await;
    let path = "/v1/restaurants/trattoria-roma";
    let h = request_auth::sign(
        "edge1",
        &Secret::new(EDGE_SECRET),
        "GET",
        path,
        d.clock.now(),
        "n-persist",
        b"",
    );
    assert_eq!(raw(&d.url(), "GET", path, h.clone(), b"").await.0, 200);
    d.dash.stop().await;
    let d2 = start_dashboard_on(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        Some(db),
    )
    .await;
    assert_eq!(
        d2.dash.seed_report.kept.len(),
        3,
        "restart keeps stored restaurants"
    );
    assert_eq!(
        raw(&d2.url(), "GET", path, h, b"").await,
        (401, "replayed_nonce".into())
    );
}

#[tokio::test]
async fn api_keys_scopes_and_rotation_over_http() {
    let d = start_dashboard().await;
    let store = &d.dash.store;
    let url = d.url();
    let bearer = |k: &str| vec![("authorization", format!("Bearer {k}"))];
    let path = "/v1/restaurants/sakura-sushi";
    let edge = store
        .create_api_key(Scope::Edge, "edge", d.clock.now())
        .unwrap();
    assert_eq!(
        raw(&url, "GET", path, bearer(edge.key.expose()), b"")
            .await
            .0,
        200
    );
    assert_eq!(
        raw(&url, "GET", "/v1/calls", bearer(edge.key.expose()), b"").await,
        (403, "forbidden_scope".into())
    );
    assert_eq!(
        raw(
            &url,
            "GET",
            path,
            bearer("pk_000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            b""
        )
        .await,
        (401, "unknown_api_key".into())
    );
    assert_eq!(
        raw(
            &url,
            "GET",
            path,
            vec![("authorization", "Basic abc".into())],
            b""
        )
        .await,
        (401, "bad_authorization_header".into())
    );

    // Rotation: both keys work during the grace period, then only the new one.
    let new = store.rotate_api_key(&edge.id, 600, d.clock.now()).unwrap();
    assert_eq!(
        raw(&url, "GET", path, bearer(edge.key.expose()), b"")
            .await
            .0,
        200
    );
    assert_eq!(
        raw(&url, "GET", path, bearer(new.key.expose()), b"")
            .await
            .0,
        200
    );
    d.clock.advance(601);
    assert_eq!(
        raw(&url, "GET", path, bearer(edge.key.expose()), b"").await,
        (401, "expired_api_key".into())
    );
    assert_eq!(
        raw(&url, "GET", path, bearer(new.key.expose()), b"")
            .await
            .0,
        200
    );
    store.revoke_api_key(&new.id, d.clock.now()).unwrap();
    assert_eq!(
        raw(&url, "GET", path, bearer(new.key.expose()), b"").await,
        (401, "revoked_api_key".into())
    );

    // A valid signature does not rescue an invalid API key presented alongside it.
    let mut h = request_auth::sign(
        "bridge1",
        &Secret::new(BRIDGE_SECRET),
        "GET",
        path,
        d.clock.now(),
        "n-both",
        b"",
    );
    h.push(("authorization", format!("Bearer {}", new.key.expose())));
    assert_eq!(
        raw(&url, "GET", path, h, b"").await,
        (401, "revoked_api_key".into())
    );

    // Admin key through the typed client: edit a restaurant, version bumps, old ETag misses.
    let admin = store
        .create_api_key(Scope::Admin, "ops", d.clock.now())
        .unwrap();
    let ac = pulsara_dashboard::client::DashboardClient::new(
        pulsara_dashboard::client::ClientConfig::new(&url).api_key(admin.key.clone()),
        d.clock.clock(),
    )
    .unwrap();
    let Fetched::Fresh {
        value: mut cfg,
        etag,
    } = ac.restaurant("sakura-sushi", None).await.unwrap()
    else {
        panic!()
    };
    cfg.name = "Sakura Sushi Ginza".into();
    let stored = ac.admin_put_restaurant(&cfg).await.unwrap();
    assert_eq!(stored.version, cfg.version + 1);
    let Fetched::Fresh { value, .. } = ac
        .restaurant("sakura-sushi", etag.as_deref())
        .await
        .unwrap()
    else {
        panic!("old etag must miss")
    };
    assert_eq!(value.name, "Sakura Sushi Ginza");
}

#[tokio::test]
async fn call_records_are_idempotent_enriched_and_merged_with_post_call_in_any_order() {
    let d = start_dashboard().await;
    let bridge = d.client("bridge1", BRIDGE_SECRET);
    let edge = d.client("edge1", EDGE_SECRET);
    let admin = d.client("admin1", ADMIN_SECRET);

    // Record first, then post-call.
    let mut rec = record(
        "CA-A",
        "trattoria-roma",
        "This is terrible, my order was cold.",
    );
    rec.elevenlabs_conversation_id = Some("conv-A".into());
    let body = serde_json::to_vec(&rec).unwrap();
    assert_eq!(
        bridge.post_call_record(&body, "CA-A").await.unwrap(),
        PostOutcome::Created
    );
    assert_eq!(
        bridge.post_call_record(&body, "CA-A").await.unwrap(),
        PostOutcome::Duplicate
    );
    assert!(matches!(
        bridge.post_call_record(&body, "CA-other").await,
        Err(ClientError::Status { status: 400, .. })
    ));
    let merged = edge
        .post_post_call(&json!({"type":"post_call_transcription","data":{"conversation_id":"conv-A",
            "analysis":{"transcript_summary":"Caller complained about a cold order.","call_successful":"success"}}}))
        .await
        .unwrap();
    assert_eq!(merged.as_deref(), Some("CA-A"));
    let stored = admin.call("CA-A").await.unwrap();
    assert_eq!(
        stored["summary"]["elevenlabs_summary"],
        "Caller complained about a cold order."
    );
    assert_eq!(stored["sentiment"]["label"], "negative");
    assert_eq!(stored["summary"]["complaint"], true);

    // Post-call first (matched by call sid metadata), record later.
    let early = edge
        .post_post_call(&json!({"type":"post_call_transcription","data":{"conversation_id":"conv-B",
            "metadata":{"phone_call":{"call_sid":"CA-B"}},"analysis":{"transcript_summary":"Booked a table."}}}))
        .await
        .unwrap();
    assert_eq!(early, None);
    let rec_b = record("CA-B", "sakura-sushi", "A table for two at eight, thanks!");
    assert_eq!(
        bridge
            .post_call_record(&serde_json::to_vec(&rec_b).unwrap(), "CA-B")
            .await
            .unwrap(),
        PostOutcome::Created
    );
    let stored = admin.call("CA-B").await.unwrap();
    assert_eq!(stored["summary"]["elevenlabs_summary"], "Booked a table.");
    assert_eq!(stored["elevenlabs_conversation_id"], "conv-B");
    assert_eq!(d.dash.store.call_count().unwrap(), 2);

    // Lifecycle events attach to the call.
    edge.post_event("CA-B", &json!({"CallSid":"CA-B","CallStatus":"completed"}))
        .await
        .unwrap();
    assert_eq!(
        admin.call("CA-B").await.unwrap()["events"][0]["CallStatus"],
        "completed"
    );
    // Garbage is a clear 400, not a crash.
    assert!(matches!(
        edge.post_post_call(&json!({"data":{}})).await,
        Err(ClientError::Status { status: 400, .. })
    ));

    // A voicemail's recording event lands on its call record, whichever arrives first.
    let recording = |sid: &str| {
        pulsara_dashboard::voicemail::event(
            &[
                ("CallSid".to_owned(), sid.to_owned()),
                ("RecordingSid".to_owned(), format!("RE{sid}")),
                (
                    "RecordingUrl".to_owned(),
                    format!("https://api.twilio.com/rec/RE{sid}"),
                ),
                ("RecordingStatus".to_owned(), "completed".to_owned()),
                ("RecordingDuration".to_owned(), "12".to_owned()),
            ],
            Some("+393331110009"),
        )
    };
    bridge.post_event("CA-B", &recording("CA-B")).await.unwrap();
    let vm = admin.call("CA-B").await.unwrap()["voicemail"].clone();
    assert_eq!(vm["recording_sid"], "RECA-B");
    assert_eq!(vm["duration_secs"], 12);
    assert_eq!(vm["caller"], "+393331110009");
    bridge.post_event("CA-C", &recording("CA-C")).await.unwrap();
    let rec_c = record("CA-C", "trattoria-roma", "Hello?");
    bridge
        .post_call_record(&serde_json::to_vec(&rec_c).unwrap(), "CA-C")
        .await
        .unwrap();
    let vm = admin.call("CA-C").await.unwrap()["voicemail"].clone();
    assert_eq!(vm["recording_url"], "https://api.twilio.com/rec/RECA-C");
}

#[tokio::test]
async fn policy_upload_and_tool_swap_bump_version_and_send_policy_updated() {
    use pulsara_dashboard::events::{DashboardEvent, EventType};
    use pulsara_dashboard::webhook_in::{self, WebhookReceiver};
    use std::sync::{Arc, Mutex};

    let d = start_dashboard().await;
    let got: Arc<Mutex<Vec<DashboardEvent>>> = Arc::default();
    let g2 = got.clone();
    let secret = Secret::new(pulsara_dashboard::server::new_webhook_secret());
    let rx = WebhookReceiver::new(vec![secret.clone()], d.clock.clock())
        .on_event(Arc::new(move |ev| g2.lock().unwrap().push(ev.clone())));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!(
        "http://{}/webhooks/dashboard",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, webhook_in::router(Arc::new(rx))).await });
    let admin = d.client("admin1", ADMIN_SECRET);
    admin.admin_add_webhook(&hook, Some(&secret)).await.unwrap();

    // Upload a module over HTTP (signed by the admin key).
    let module = b"\0asm\x01\0\0\0custom-policy".to_vec();
    let path = "/v1/admin/policies?name=custom";
    let h = request_auth::sign(
        "admin1",
        &Secret::new(ADMIN_SECRET),
        "POST",
        path,
        d.clock.now(),
        "n-upload",
        &module,
    );
    assert_eq!(raw(&d.url(), "POST", path, h, &module).await.0, 201);
    let sha = pulsara_core::crypto::sha256_hex(&module);
    let h = request_auth::sign(
        "admin1",
        &Secret::new(ADMIN_SECRET),
        "POST",
        path,
        d.clock.now(),
        "n-notwasm",
        b"MZ",
    );
    assert_eq!(
        raw(&d.url(), "POST", path, h, b"MZ").await,
        (400, "invalid_request".into())
    );

    let before = d.dash.store.restaurant("sakura-sushi").unwrap().unwrap();
    let mut tools = before.tools.clone();
    tools.push(pulsara_core::config::ToolBinding {
        name: "custom".into(),
        module_sha256: sha.clone(),
        grants: Default::default(),
        limits: Default::default(),
    });
    let stored = admin.admin_put_tools("sakura-sushi", &tools).await.unwrap();
    assert_eq!(stored.version, before.version + 1);
    assert_eq!(stored.tools.last().unwrap().module_sha256, sha);
    assert_eq!(
        d.client("bridge1", BRIDGE_SECRET)
            .policy(&sha)
            .await
            .unwrap(),
        module
    );
    assert!(
        eventually(5, || !got.lock().unwrap().is_empty()).await,
        "webhook sent"
    );
    let ev = got.lock().unwrap()[0].clone();
    assert_eq!(
        (ev.kind, ev.data.restaurant_id.as_str(), ev.data.version),
        (EventType::PolicyUpdated, "sakura-sushi", stored.version)
    );

    // A tool pointing at a module that was never uploaded is refused.
    tools.last_mut().unwrap().module_sha256 = "ab".repeat(32);
    assert!(
        matches!(admin.admin_put_tools("sakura-sushi", &tools).await, Err(ClientError::Status { status: 422, ref code, .. }) if code == "unknown_module")
    );
    // So is a whole restaurant with one, and a `builtin:` reference (resolved only by seeding)
    // is named with what to do instead; nothing is stored.
    let mut edit = d.dash.store.restaurant("sakura-sushi").unwrap().unwrap();
    edit.tools[0].module_sha256 = "builtin:book_table".into();
    let err = admin.admin_put_restaurant(&edit).await.unwrap_err();
    let ClientError::Status { status: 422, ref code, ref message, .. } = err else { panic!("{err:?}") };
    assert_eq!(code, "unknown_module");
    assert!(message.contains("builtin:book_table") && message.contains("sha256"), "{message}");
    let kept = d.dash.store.restaurant("sakura-sushi").unwrap().unwrap();
    assert_eq!((kept.version, &kept.tools), (stored.version, &stored.tools));

    // A restaurant edit that changes its tools also sends policy.updated (bridges load the new
    // modules on it), to the process's own receivers too; a receiver that is down (first in
    // line, retried for seconds) delays no other.
    let local: Arc<Mutex<Vec<DashboardEvent>>> = Arc::default();
    let l2 = local.clone();
    let rx = WebhookReceiver::new(vec![secret.clone()], d.clock.clock())
        .on_event(Arc::new(move |ev| l2.lock().unwrap().push(ev.clone())));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local_hook = format!("http://{}/webhooks/dashboard", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, webhook_in::router(Arc::new(rx))).await });
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    for url in [format!("http://{dead}/webhooks/dashboard"), local_hook] {
        d.dash.state.webhooks().subscribe_local(pulsara_dashboard::store::WebhookSubscription { url, secret: secret.clone() });
    }
    got.lock().unwrap().clear();
    let mut edit = kept.clone();
    edit.tools.pop();
    let stored = admin.admin_put_restaurant(&edit).await.unwrap();
    let both = |evs: &[DashboardEvent]| {
        [EventType::RestaurantUpdated, EventType::PolicyUpdated]
            .iter()
            .all(|k| evs.iter().any(|e| e.kind == *k && e.data.version == stored.version))
    };
    assert!(eventually(5, || both(&got.lock().unwrap())).await, "{:?}", got.lock().unwrap());
    assert!(eventually(5, || both(&local.lock().unwrap())).await, "{:?}", local.lock().unwrap());
}

#[tokio::test]
async fn tool_specifications_and_agent_sync_requests() {
    let d = start_dashboard().await;
    let admin = d.client("admin1", ADMIN_SECRET);
    let bridge = d.client("bridge1", BRIDGE_SECRET);
    // Seeding requested a sync of every restaurant.
    let state = admin.admin_agent_sync().await.unwrap();
    let rows = state["restaurants"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{state}");
    assert!(
        rows.iter()
            .all(|r| r["state"] == "pending" && r["requested"] == 1 && r["done"] == 0),
        "{state}"
    );

    let cfg = d.dash.store.restaurant("sakura-sushi").unwrap().unwrap();
    let sha = cfg.tools[0].module_sha256.clone();
    // The seed stored the specification the policy manifest carries.
    assert_eq!(
        bridge.policy_tool(&sha).await.unwrap().description,
        format!("The {} tool.", cfg.tools[0].name)
    );
    let spec = pulsara_core::agent::ToolSpec::from_json(
        r#"{"description": "Book a table.", "parameters": {"type": "object",
            "properties": {"party_size": {"type": "integer", "description": "People"}}, "required": ["party_size"]},
            "response_timeout_secs": 20}"#,
    )
    .unwrap();
    assert_eq!(
        admin.admin_put_policy_tool(&sha, &spec).await.unwrap(),
        spec
    );
    assert_eq!(bridge.policy_tool(&sha).await.unwrap(), spec);
    // Every restaurant offering the module gets a new sync generation.
    let state = admin.admin_agent_sync().await.unwrap();
    let sakura = state["restaurants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["restaurant_id"] == "sakura-sushi")
        .unwrap()
        .clone();
    assert_eq!(sakura["requested"], 2, "{state}");

    // A specification ElevenLabs would refuse is a 422 naming the field; unknown modules 404.
    let mut bad = spec.clone();
    bad.response_timeout_secs = Some(500);
    assert!(matches!(admin.admin_put_policy_tool(&sha, &bad).await,
        Err(ClientError::Status { status: 422, ref code, ref message }) if code == "invalid_tool" && message.contains("response_timeout_secs")));
    assert!(matches!(
        admin.admin_put_policy_tool(&"cd".repeat(32), &spec).await,
        Err(ClientError::NotFound(_))
    ));
    assert!(matches!(
        bridge.policy_tool(&"cd".repeat(32)).await,
        Err(ClientError::NotFound(_))
    ));
    // Only admins write specifications.
    assert!(matches!(
        bridge.admin_put_policy_tool(&sha, &spec).await,
        Err(ClientError::Status { status: 403, .. })
    ));

    // An edit that leaves out the agent id keeps the one the sync stored, and requests a sync.
    let mut synced = cfg.clone();
    synced.agent.elevenlabs_agent_id = "agent_123".into();
    let synced = d
        .dash
        .store
        .record_agent_synced(&synced, cfg.version, d.clock.now())
        .unwrap()
        .unwrap();
    assert_eq!(synced.version, cfg.version + 1);
    assert!(
        d.dash
            .store
            .record_agent_synced(&synced, cfg.version, d.clock.now())
            .unwrap()
            .is_none(),
        "a stale write-back loses"
    );
    let mut edit = synced.clone();
    edit.agent.elevenlabs_agent_id.clear();
    edit.agent.first_message = "Hello from Sakura.".into();
    let stored = admin.admin_put_restaurant(&edit).await.unwrap();
    assert_eq!(stored.agent.elevenlabs_agent_id, "agent_123");
    assert_eq!(stored.agent.first_message, "Hello from Sakura.");
    let state = admin.admin_agent_sync().await.unwrap();
    let sakura = state["restaurants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["restaurant_id"] == "sakura-sushi")
        .unwrap()
        .clone();
    assert_eq!(
        (sakura["requested"].as_i64(), sakura["agent_id"].as_str()),
        (Some(3), Some("agent_123")),
        "{state}"
    );
}
