//! Numbers for the dashboard integration, printed as a table (a bench binary, not timed tests):
//!
//! - signed `GET /v1/restaurants/{id}` round trip to the embedded dashboard over loopback
//!   (sign + HTTP + verify + nonce store + SQLite read);
//! - config cache hit;
//! - outbox: `finish_and_enqueue` (sentiment + summary + one fsync'd SQLite transaction) and
//!   end-to-end delivery throughput to the embedded dashboard;
//! - sentiment per utterance.
//!
//! Run: `cargo bench -p pulsara-dashboard --bench dashboard`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pulsara_core::call_record::{CallRecord, Role, TranscriptLine};
use pulsara_core::secret::Secret;
use pulsara_dashboard::auth::SigningKeys;
use pulsara_dashboard::cache::{CacheConfig, ConfigCache};
use pulsara_dashboard::client::{ClientConfig, DashboardClient};
use pulsara_dashboard::embedded::{EmbeddedDashboard, EmbeddedOptions};
use pulsara_dashboard::outbox::{self, Dispatcher, Outbox, RetryPolicy};
use pulsara_dashboard::seed::SeedOptions;

fn pct(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    let at = |p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
    (at(0.5), at(0.99), *v.last().unwrap())
}

fn line(name: &str, n: usize, v: Vec<Duration>) {
    let (p50, p99, max) = pct(v);
    println!(
        "{name:<44} n={n:<6} p50={:>9.1} µs  p99={:>9.1} µs  max={:>9.1} µs",
        us(p50),
        us(p99),
        us(max)
    );
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn record(i: usize) -> CallRecord {
    let t = |role, text: &str, at_ms| TranscriptLine {
        role,
        text: text.into(),
        at_ms,
        heard: true,
        cut: false,
        full_text: None,
    };
    CallRecord {
        call_sid: format!("CA{i:032}"),
        restaurant_id: ["trattoria-roma", "brooklyn-smokehouse", "sakura-sushi"][i % 3].into(),
        caller: "+15550001111".into(),
        started_at: "2026-11-28T18:00:00Z".into(),
        ended_at: "2026-11-28T18:01:00Z".into(),
        duration_ms: 60_000,
        transcript: (0..20)
            .map(|k| {
                if k % 2 == 0 {
                    t(
                        Role::Agent,
                        "Sure, what would you like to order today?",
                        k * 1000,
                    )
                } else {
                    t(
                        Role::Caller,
                        "Two margheritas for pickup at seven please, thanks a lot!",
                        k * 1000,
                    )
                }
            })
            .collect(),
        orders: vec![
            serde_json::json!({"items":[{"name":"Margherita","quantity":2}],"total_minor":1800,"currency":"EUR","fulfillment":"pickup","pickup_time":"19:00"}),
        ],
        ..Default::default()
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let tmp = std::env::temp_dir().join(format!("pulsara-dash-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let keys = SigningKeys::parse(&Secret::new("bridge1:bridge:bench-secret")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dash = EmbeddedDashboard::start(
        listener,
        EmbeddedOptions {
            db_path: Some(tmp.join("dashboard.db")),
            restaurants_dir: Some(root.join("restaurants")),
            seed: SeedOptions {
                manifest: None,
                strict: false,
            },
            signing_keys: keys,
        },
        pulsara_dashboard::system_clock(),
    )
    .await
    .unwrap();
    let client = DashboardClient::new(
        ClientConfig::new(dash.url()).signing_key("bridge1", Secret::new("bench-secret")),
        pulsara_dashboard::system_clock(),
    )
    .unwrap();

    // Signed round trip.
    let n = 2000;
    let mut v = Vec::with_capacity(n);
    for _ in 0..100 {
        client.restaurant("trattoria-roma", None).await.unwrap();
    }
    for _ in 0..n {
        let t = Instant::now();
        client.restaurant("trattoria-roma", None).await.unwrap();
        v.push(t.elapsed());
    }
    line("signed GET restaurant (loopback round trip)", n, v);

    // Cache hit.
    let cache = ConfigCache::new(
        client.clone(),
        CacheConfig {
            ttl: Duration::from_secs(3600),
            ..Default::default()
        },
    );
    cache.restaurant("sakura-sushi").await.unwrap();
    let n = 100_000;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let c = cache.restaurant("sakura-sushi").await.unwrap();
        v.push(t.elapsed());
        std::hint::black_box(c);
    }
    line("config cache hit", n, v);

    // Sentiment.
    let n = 5000;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        std::hint::black_box(pulsara_dashboard::sentiment::score_text(
            "The pasta was not bad at all, but the wait was very long!",
        ));
        v.push(t.elapsed());
    }
    line("sentiment, one utterance", n, v);

    // Enqueue (analysis + fsync'd transaction).
    let ob = Outbox::open(&tmp.join("outbox.db")).unwrap();
    let cfg = dash.store.restaurant("trattoria-roma").unwrap().unwrap();
    let n = 500;
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let r = record(i);
        let t = Instant::now();
        pulsara_dashboard::pipeline::finish_and_enqueue(&ob, r, Some(&cfg), outbox::now_ms())
            .unwrap();
        v.push(t.elapsed());
    }
    line("finish_and_enqueue (20-line call, fsync)", n, v);

    // Delivery throughput to the embedded dashboard (3 lanes, emails have no SMTP: skip them).
    let disp = Arc::new(Dispatcher {
        dashboard: Some(client.clone()),
        ..Default::default()
    });
    let policy = RetryPolicy {
        concurrency: 8,
        ..Default::default()
    };
    let t = Instant::now();
    let mut delivered = 0;
    while delivered < n {
        ob.deliver_due(&disp, &policy).await.unwrap();
        delivered = dash.store.call_count().unwrap() as usize;
        if t.elapsed() > Duration::from_secs(120) {
            break;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{:<44} n={delivered:<6} {:.0} records/s ({:.2} s)",
        "outbox delivery to embedded dashboard",
        delivered as f64 / secs,
        secs
    );
    let st = ob.stats(outbox::now_ms()).unwrap();
    println!(
        "{:<44} depth={} (email entries wait for SMTP)",
        "outbox after delivery", st.depth
    );
    dash.stop().await;
    let _ = std::fs::remove_dir_all(&tmp);
}
