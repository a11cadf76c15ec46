//! The bridge-side config/KB cache and the dashboard webhooks that invalidate it: single-flight,
//! TTL revalidation with 304, stale-if-error when the dashboard is down, invalidation visible to
//! the next lookup and invisible to a held `Arc`, and forged/stale/replayed webhooks refused.

mod common;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use pulsara_core::config::{KnowledgeBase, RestaurantConfig};
use pulsara_core::secret::Secret;
use pulsara_dashboard::cache::{CacheConfig, CacheError, ConfigCache, Fetcher};
use pulsara_dashboard::client::{ClientError, Fetched};
use pulsara_dashboard::webhook_in::{self, WebhookReceiver};

/// A fetcher over a real dashboard client that counts calls and can be slowed down.
struct Counting {
    inner: pulsara_dashboard::client::DashboardClient,
    calls: Arc<AtomicUsize>,
    delay: Duration,
}

impl Fetcher for Counting {
    fn restaurant_by_number(
        &self,
        e164: &str,
        etag: Option<&str>,
    ) -> impl Future<Output = Result<Fetched<RestaurantConfig>, ClientError>> + Send {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let (c, d, e164, etag) = (
            self.inner.clone(),
            self.delay,
            e164.to_owned(),
            etag.map(str::to_owned),
        );
        async move {
            tokio::time::sleep(d).await;
            c.restaurant_by_number(&e164, etag.as_deref()).await
        }
    }
    fn restaurant(
        &self,
        id: &str,
        etag: Option<&str>,
    ) -> impl Future<Output = Result<Fetched<RestaurantConfig>, ClientError>> + Send {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let (c, d, id, etag) = (
            self.inner.clone(),
            self.delay,
            id.to_owned(),
            etag.map(str::to_owned),
        );
        async move {
            tokio::time::sleep(d).await;
            c.restaurant(&id, etag.as_deref()).await
        }
    }
    fn knowledge_base(
        &self,
        id: &str,
        etag: Option<&str>,
    ) -> impl Future<Output = Result<Fetched<KnowledgeBase>, ClientError>> + Send {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let (c, d, id, etag) = (
            self.inner.clone(),
            self.delay,
            id.to_owned(),
            etag.map(str::to_owned),
        );
        async move {
            tokio::time::sleep(d).await;
            c.knowledge_base(&id, etag.as_deref()).await
        }
    }
}

#[tokio::test]
async fn one_fetch_for_many_concurrent_callers_and_304_revalidation() {
    let d = start_dashboard().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let fetcher = Counting {
        inner: d.client("bridge1", BRIDGE_SECRET),
        calls: calls.clone(),
        delay: Duration::from_millis(100),
    };
    let cache = Arc::new(ConfigCache::new(
        fetcher,
        CacheConfig {
            ttl: Duration::from_secs(2),
            ..Default::default()
        },
    ));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let c = cache.clone();
        tasks.push(tokio::spawn(async move {
            c.restaurant("trattoria-roma").await.unwrap()
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "single flight");
    assert!(
        results.iter().all(|r| Arc::ptr_eq(r, &results[0])),
        "all callers share one Arc"
    );
    assert_eq!(cache.stats.hits.load(Ordering::SeqCst), 49);

    // After the TTL: one conditional request, answered 304, same Arc kept.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let again = cache.restaurant("trattoria-roma").await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(cache.stats.not_modified.load(Ordering::SeqCst), 1);
    assert!(Arc::ptr_eq(&again, &results[0]));
}

#[tokio::test]
async fn dashboard_down_serves_cached_config_and_fails_cold_keys_fast() {
    let d = start_dashboard().await;
    let client = d.client("bridge1", BRIDGE_SECRET);
    let cache = ConfigCache::new(
        client,
        CacheConfig {
            ttl: Duration::from_millis(50),
            fetch_timeout: Duration::from_millis(500),
            ..Default::default()
        },
    );
    let warm = cache.restaurant_by_number("+17185550100").await.unwrap();
    let kb = cache.knowledge_base("brooklyn-smokehouse").await.unwrap();
    d.dash.abort();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let served = cache
        .restaurant_by_number("+17185550100")
        .await
        .expect("stale-if-error");
    assert!(Arc::ptr_eq(&served, &warm));
    assert!(Arc::ptr_eq(
        &cache.knowledge_base("brooklyn-smokehouse").await.unwrap(),
        &kb
    ));
    assert!(cache.stats.stale_served.load(Ordering::SeqCst) >= 2);
    let started = std::time::Instant::now();
    let cold = cache.restaurant("sakura-sushi").await;
    assert!(matches!(cold, Err(CacheError::Unavailable(_))), "{cold:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn webhook_invalidation_reaches_the_next_lookup_but_not_a_held_arc() {
    let d = start_dashboard().await;
    let cache = Arc::new(ConfigCache::new(
        d.client("bridge1", BRIDGE_SECRET),
        CacheConfig {
            ttl: Duration::from_secs(3600),
            ..Default::default()
        },
    ));
    // The bridge's webhook endpoint on loopback.
    let secret = Secret::new(pulsara_dashboard::server::new_webhook_secret());
    let inval = cache.clone();
    let rx = WebhookReceiver::new(vec![secret.clone()], d.clock.clock())
        .on_event(Arc::new(move |ev| inval.invalidate(ev)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!(
        "http://{}/webhooks/dashboard",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, webhook_in::router(Arc::new(rx))).await });
    let admin = d.client("admin1", ADMIN_SECRET);
    admin
        .admin_add_webhook(&hook_url, Some(&secret))
        .await
        .unwrap();

    // A call starts and holds its configuration and knowledge base.
    let held = cache.restaurant("trattoria-roma").await.unwrap();
    let held_kb = cache.knowledge_base("trattoria-roma").await.unwrap();
    let mut edited = (*held).clone();
    edited.name = "Trattoria Roma (nuova gestione)".into();
    let stored = admin.admin_put_restaurant(&edited).await.unwrap();
    assert!(
        eventually(5, || cache.stats.invalidations.load(Ordering::SeqCst) >= 1).await,
        "webhook delivered"
    );

    let next = cache.restaurant("trattoria-roma").await.unwrap();
    assert_eq!(next.name, "Trattoria Roma (nuova gestione)");
    assert_eq!(next.version, stored.version);
    assert_eq!(
        held.name, "Trattoria Roma",
        "the call in progress keeps its configuration"
    );
    assert_eq!(held.version + 1, next.version);
    // The KB was not touched by restaurant.updated.
    assert!(Arc::ptr_eq(
        &cache.knowledge_base("trattoria-roma").await.unwrap(),
        &held_kb
    ));

    // knowledge_base.updated invalidates only the KB.
    let mut kb = (*held_kb).clone();
    kb.specials = vec!["Carciofi alla romana".into()];
    admin.admin_put_knowledge_base(&kb).await.unwrap();
    assert!(eventually(5, || cache.stats.invalidations.load(Ordering::SeqCst) >= 2).await);
    let new_kb = cache.knowledge_base("trattoria-roma").await.unwrap();
    assert_eq!(new_kb.specials, vec!["Carciofi alla romana".to_owned()]);
    assert_ne!(
        held_kb.specials, new_kb.specials,
        "the held knowledge base is unchanged"
    );
    assert!(Arc::ptr_eq(
        &cache.restaurant("trattoria-roma").await.unwrap(),
        &next
    ));
}

#[tokio::test]
async fn forged_stale_and_replayed_webhooks_are_refused() {
    let clock = TestClock::new();
    let secret = Secret::new("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD");
    let seen = Arc::new(AtomicUsize::new(0));
    let s2 = seen.clone();
    let rx = WebhookReceiver::new(
        vec![
            Secret::new("whsec_b2xkLXNlY3JldC1yb3RhdGVkLWF3YXk="),
            secret.clone(),
        ],
        clock.clock(),
    )
    .on_event(Arc::new(move |_| {
        s2.fetch_add(1, Ordering::SeqCst);
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/webhooks/dashboard",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, webhook_in::router(Arc::new(rx))).await });
    let body =
        br#"{"type":"restaurant.updated","data":{"restaurant_id":"sakura-sushi","version":2}}"#;
    let http = reqwest::Client::new();
    let send = |id: &str, ts: i64, sig: String, body: &'static [u8]| {
        http.post(&url)
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(body)
            .send()
    };
    let now = clock.now();
    let good = pulsara_core::webhooks::sign(&secret, "msg_1", now, body).unwrap();
    assert_eq!(
        send("msg_1", now, good.clone(), body)
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        send("msg_1", now, good, body).await.unwrap().status(),
        409,
        "replay"
    );
    let forged = pulsara_core::webhooks::sign(
        &Secret::new("whsec_Zm9yZ2VkLXNlY3JldA=="),
        "msg_2",
        now,
        body,
    )
    .unwrap();
    assert_eq!(
        send("msg_2", now, forged, body).await.unwrap().status(),
        401
    );
    assert_eq!(
        send("msg_3", now, "v1,".into(), body)
            .await
            .unwrap()
            .status(),
        401,
        "empty signature"
    );
    let stale = pulsara_core::webhooks::sign(&secret, "msg_4", now - 301, body).unwrap();
    let r = send("msg_4", now - 301, stale, body).await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("stale_webhook"));
    let tampered_body: &'static [u8] =
        br#"{"type":"restaurant.updated","data":{"restaurant_id":"trattoria-roma","version":2}}"#;
    let sig = pulsara_core::webhooks::sign(&secret, "msg_5", now, body).unwrap();
    assert_eq!(
        send("msg_5", now, sig, tampered_body)
            .await
            .unwrap()
            .status(),
        401
    );
    // Signed but not a dashboard event.
    let junk: &'static [u8] = br#"{"type":"menu.eaten"}"#;
    let sig = pulsara_core::webhooks::sign(&secret, "msg_6", now, junk).unwrap();
    assert_eq!(send("msg_6", now, sig, junk).await.unwrap().status(), 400);
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "only the genuine delivery reached the handlers"
    );
}
