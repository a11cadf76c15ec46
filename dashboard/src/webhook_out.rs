//! The dashboard's outgoing Standard Webhooks: when an admin edit bumps a restaurant's,
//! knowledge base's or tool set's version, every registered receiver (`POST /webhooks/dashboard`
//! on edges and bridges) is told, signed with its `whsec_` secret via
//! `pulsara_core::webhooks::sign`. Delivery is best-effort with a few retries: receivers also
//! expire their caches by TTL, so a lost webhook delays a change, it does not lose it.
//!
//! Receivers are the subscriptions stored with `POST /v1/admin/webhooks`, plus the ones a
//! process hosting the dashboard adds for its own bridge and edge ([`WebhookSender::subscribe_local`]):
//! those live as long as the process, so a restart on other ports leaves no dead subscription.
//! Each receiver is delivered to on its own, so one that is down delays no other.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::events::DashboardEvent;
use crate::store::{Store, WebhookSubscription};
use crate::Clock;

/// Delays between attempts (first attempt immediately).
pub const RETRY_DELAYS: [Duration; 3] = [
    Duration::from_millis(500),
    Duration::from_secs(2),
    Duration::from_secs(8),
];

#[derive(Clone)]
pub struct WebhookSender {
    http: reqwest::Client,
    store: Store,
    clock: Clock,
    local: Arc<Mutex<Vec<WebhookSubscription>>>,
}

/// Result of delivering one event to one receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub url: String,
    pub status: Option<u16>,
    pub attempts: u32,
}

impl WebhookSender {
    pub fn new(store: Store, clock: Clock) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self { http, store, clock, local: Arc::default() }
    }

    /// Adds a receiver of this process (not stored): same signing and retries as a stored one.
    /// A stored subscription of the same URL takes precedence.
    pub fn subscribe_local(&self, sub: WebhookSubscription) {
        let mut local = self.local.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        local.retain(|s| s.url != sub.url);
        local.push(sub);
    }

    /// Sends `event` to every subscriber in the background.
    pub fn publish(&self, event: DashboardEvent) {
        let this = self.clone();
        tokio::spawn(async move {
            let results = this.deliver(&event).await;
            for d in results {
                if d.status.is_some_and(|s| (200..300).contains(&s)) {
                    tracing::debug!(url = %d.url, attempts = d.attempts, "dashboard webhook delivered");
                } else {
                    tracing::warn!(url = %d.url, status = ?d.status, attempts = d.attempts, "dashboard webhook not delivered; receiver will see the change when its cache TTL expires");
                }
            }
        });
    }

    /// Sends `event` to every subscriber and waits for the outcome.
    pub async fn deliver(&self, event: &DashboardEvent) -> Vec<Delivery> {
        let store = self.store.clone();
        let mut subs = match tokio::task::spawn_blocking(move || store.webhooks()).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read webhook subscriptions");
                return Vec::new();
            }
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => return Vec::new(),
        };
        let body = match serde_json::to_vec(event) {
            Ok(b) => b,
            Err(_) => return Vec::new(),
        };
        {
            let local = self.local.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for sub in local.iter() {
                if subs.iter().all(|s| s.url != sub.url) {
                    subs.push(sub.clone());
                }
            }
        }
        let id: Arc<str> = format!("msg_{}", pulsara_core::random::hex_token(12)).into();
        let body: Arc<[u8]> = body.into();
        let mut deliveries = tokio::task::JoinSet::new();
        for (i, sub) in subs.into_iter().enumerate() {
            let (this, id, body) = (self.clone(), id.clone(), body.clone());
            deliveries.spawn(async move { (i, this.deliver_one(&sub, &id, &body).await) });
        }
        let mut out = Vec::new();
        while let Some(done) = deliveries.join_next().await {
            match done {
                Ok(d) => out.push(d),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => {}
            }
        }
        out.sort_by_key(|(i, _)| *i);
        out.into_iter().map(|(_, d)| d).collect()
    }

    async fn deliver_one(&self, sub: &WebhookSubscription, id: &str, body: &[u8]) -> Delivery {
        let mut attempts = 0;
        let mut status = None;
        for delay in std::iter::once(Duration::ZERO).chain(RETRY_DELAYS) {
            tokio::time::sleep(delay).await;
            attempts += 1;
            let ts = (self.clock)();
            let Ok(sig) = pulsara_core::webhooks::sign(&sub.secret, id, ts, body) else {
                tracing::warn!(url = %sub.url, "webhook subscription has an unusable secret; skipping");
                break;
            };
            let res = self
                .http
                .post(&sub.url)
                .header("content-type", "application/json")
                .header("webhook-id", id)
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", sig)
                .body(body.to_vec())
                .send()
                .await;
            match res {
                Ok(r) => {
                    let code = r.status().as_u16();
                    status = Some(code);
                    if (200..300).contains(&code) || !crate::is_transient_status(code) {
                        break;
                    }
                }
                Err(_) => status = None,
            }
        }
        Delivery {
            url: sub.url.clone(),
            status,
            attempts,
        }
    }
}
