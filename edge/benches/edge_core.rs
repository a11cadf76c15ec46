//! The edge core's voice-webhook path, natively: signature check + form parse, the decision for
//! an open restaurant (hours, handoff token, Stream TwiML), and the whole flow with a warm cache
//! (what a Worker request costs in CPU, minus the JS/wasm boundary). Uses the example restaurant
//! `restaurants/trattoria-roma`. Run: `cargo bench -p pulsara-edge --bench edge_core`
//! (or `cargo xtask bench edge`, which adds the workerd measurements).

use std::cell::RefCell;
use std::collections::HashMap;
use std::hint::black_box;

use chrono::{DateTime, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use pulsara_core::config::RestaurantConfig;
use pulsara_core::twilio;
use pulsara_edge::cache::{ConfigLookup, Source};
use pulsara_edge::decide;
use pulsara_edge::flow::{self, PortError, Ports};
use pulsara_edge::http::{Inbound, Outbound, Upstream};
use pulsara_edge::settings::Settings;

fn settings() -> Settings {
    let vars = HashMap::from([
        ("PUBLIC_BASE_URL", "https://edge.example.com"),
        (
            "BRIDGE_URLS",
            "eu-west=wss://eu.bridge.example.com,us-east=wss://us.bridge.example.com",
        ),
        ("DEFAULT_REGION", "us-east"),
        ("DASHBOARD_URL", "https://dashboard.example.com"),
        ("DASHBOARD_KEY_ID", "edge"),
        ("DASHBOARD_SIGNING_SECRET", "dashboard-signing-secret-0123"),
        ("TWILIO_AUTH_TOKEN", "0123456789abcdef0123456789abcdef"),
        ("HANDOFF_KEYS", "k1:handoff-secret-0123456789abcdef"),
        (
            "DASHBOARD_WEBHOOK_SECRETS",
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
        ),
    ]);
    Settings::from_lookup(|k| vars.get(k).map(|v| v.to_string())).expect("bench settings are valid")
}

fn restaurant() -> RestaurantConfig {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../restaurants/trattoria-roma/restaurant.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("restaurants/trattoria-roma"))
        .expect("valid config")
}

/// A realistic voice webhook (Twilio sends about 20 parameters).
fn voice_request(s: &Settings) -> Inbound {
    let params: Vec<(String, String)> = [
        ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", "CA0123456789abcdef0123456789abcdef"),
        ("CallStatus", "ringing"),
        ("Called", "+390612345678"),
        ("CalledCity", ""),
        ("CalledCountry", "IT"),
        ("CalledState", ""),
        ("CalledZip", ""),
        ("Caller", "+14155550123"),
        ("CallerCity", "SAN FRANCISCO"),
        ("CallerCountry", "US"),
        ("CallerState", "CA"),
        ("CallerZip", "94105"),
        ("Direction", "inbound"),
        ("From", "+14155550123"),
        ("FromCity", "SAN FRANCISCO"),
        ("FromCountry", "US"),
        ("FromState", "CA"),
        ("FromZip", "94105"),
        ("To", "+390612345678"),
        ("ToCountry", "IT"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let sig = twilio::compute_signature(
        &s.twilio_auth_token,
        &s.public_url("/twilio/voice"),
        &params,
    );
    let body = params
        .iter()
        .map(|(k, v)| format!("{k}={}", v.replace('+', "%2B").replace(' ', "+")))
        .collect::<Vec<_>>()
        .join("&");
    Inbound {
        method: "POST".into(),
        path: "/twilio/voice".into(),
        query: String::new(),
        headers: vec![
            ("x-twilio-signature".into(), sig),
            (
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            ),
        ],
        body: body.into_bytes(),
    }
}

/// Ports with a warm cache and no dashboard.
struct Warm(RefCell<HashMap<String, String>>);

impl Ports for Warm {
    async fn cache_get(&self, key: &str) -> Result<Option<String>, PortError> {
        Ok(self.0.borrow().get(key).cloned())
    }
    async fn cache_put(&self, key: &str, value: String, _ttl: u64) -> Result<(), PortError> {
        self.0.borrow_mut().insert(key.to_owned(), value);
        Ok(())
    }
    async fn send(&self, _req: Outbound, timeout_ms: u64) -> Result<Upstream, PortError> {
        Err(PortError::Timeout(timeout_ms))
    }
    fn nonce(&self) -> String {
        "0123456789abcdef0123456789abcdef".into()
    }
}

fn bench(c: &mut Criterion) {
    let s = settings();
    let req = voice_request(&s);
    let config = restaurant();
    // Tuesday 1 Dec 2026 13:00 in Rome: open.
    let open_at = DateTime::<Utc>::from_timestamp(1_796_126_400, 0).unwrap();
    assert!(matches!(
        decide::answer_call(
            &s,
            &decide::voice_call(&s, &req).unwrap(),
            &ConfigLookup::Found {
                config: Box::new(config.clone()),
                source: Source::Cache
            },
            open_at,
            open_at
        )
        .1,
        decide::VoiceOutcome::Stream { .. }
    ));

    c.bench_function("voice: verify signature + parse form", |b| {
        b.iter(|| decide::voice_call(&s, black_box(&req)).unwrap())
    });

    let call = decide::voice_call(&s, &req).unwrap();
    let lookup = ConfigLookup::Found {
        config: Box::new(config.clone()),
        source: Source::Cache,
    };
    c.bench_function("voice: decide open (hours + token + TwiML)", |b| {
        b.iter(|| decide::answer_call(&s, black_box(&call), black_box(&lookup), open_at, open_at))
    });

    let entry = pulsara_edge::cache::CacheEntry {
        config: config.clone(),
        fetched_at: open_at.timestamp(),
        etag: None,
        invalidated: false,
    };
    let ports = Warm(RefCell::new(HashMap::from([
        ("num:+390612345678".to_owned(), config.id.clone()),
        (
            format!("cfg:{}", config.id),
            serde_json::to_string(&entry).unwrap(),
        ),
    ])));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    c.bench_function(
        "voice: whole flow, warm cache (settings parsed per request)",
        |b| {
            b.iter(|| {
                // The Worker parses its settings on every request; include that.
                let s = settings();
                rt.block_on(flow::handle(Ok(&s), &ports, black_box(&req), open_at))
            })
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
