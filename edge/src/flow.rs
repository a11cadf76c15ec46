//! The request flow shared by both shells: route → verify → (cache / dashboard) → decide →
//! reply. The I/O is behind [`Ports`] (KV or a map, fetch or reqwest, the random source), which
//! each shell implements in a few lines; the decisions are the pure functions of
//! [`crate::decide`] and [`crate::cache`]. So the Worker and the native server cannot drift apart,
//! and the whole flow is tested natively with a fake [`Ports`].

use std::future::Future;

use chrono::{DateTime, Utc};
use pulsara_core::config::RestaurantConfig;

use crate::cache::{self, CacheEntry, CachePolicy, ConfigLookup, Fetched, Freshness, Write};
use crate::decide::{self, Refusal, Route, VoiceOutcome};
use crate::http::{Inbound, Outbound, Reply, Upstream};
use crate::settings::{Settings, SettingsError};

/// A failure of a port (storage or network). The text is logged, never sent to callers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("request timed out after {0} ms")]
    Timeout(u64),
    #[error("network: {0}")]
    Network(String),
    #[error("storage: {0}")]
    Storage(String),
}

/// The I/O the flow needs, implemented by each shell.
pub trait Ports {
    /// Reads a cache key.
    fn cache_get(&self, key: &str) -> impl Future<Output = Result<Option<String>, PortError>>;
    /// Writes a cache key that storage may drop after `ttl_secs`.
    fn cache_put(&self, key: &str, value: String, ttl_secs: u64) -> impl Future<Output = Result<(), PortError>>;
    /// Sends a request to the dashboard, giving up after `timeout_ms` (the whole exchange, body
    /// included). Bodies over [`crate::http::MAX_UPSTREAM_BYTES`] are an error.
    fn send(&self, req: Outbound, timeout_ms: u64) -> impl Future<Output = Result<Upstream, PortError>>;
    /// A fresh unpredictable nonce for a signed dashboard request.
    fn nonce(&self) -> String;
}

/// What happened, for the shell's log line (never contains secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Voice(VoiceOutcome),
    Refused { route: Route, refusal: Refusal },
    StatusForwarded { ok: bool },
    Webhook { kind: String, restaurant_id: String, invalidated: bool },
    PostCallForwarded,
    Health,
}

/// Handles one request. `settings` is the result of parsing the shell's configuration: when it
/// failed, Twilio still gets fallback TwiML (and `/healthz` says what is wrong).
pub async fn handle<P: Ports>(
    settings: Result<&Settings, &SettingsError>,
    ports: &P,
    req: &Inbound,
    now: DateTime<Utc>,
) -> (Reply, Outcome) {
    let route = Route::of(&req.method, &req.path);
    let settings = match settings {
        Ok(s) => s,
        Err(e) => {
            if route == Route::Health {
                return (Reply::text(503, e.to_string()), Outcome::Health);
            }
            return refused(route, Refusal::Misconfigured, None);
        }
    };
    match route {
        Route::Health => (Reply::text(200, "ok"), Outcome::Health),
        Route::NotFound => refused(route, Refusal::NotFound, None),
        Route::MethodNotAllowed => refused(route, Refusal::MethodNotAllowed, None),
        Route::Voice => voice(settings, ports, req, now).await,
        Route::Status => status(settings, ports, req, now).await,
        Route::DashboardWebhook => dashboard_webhook(settings, ports, req, now).await,
        Route::ElevenLabsWebhook => elevenlabs_webhook(settings, ports, req, now).await,
    }
}

fn refused(route: Route, refusal: Refusal, config: Option<&RestaurantConfig>) -> (Reply, Outcome) {
    (decide::refuse(route, &refusal, config), Outcome::Refused { route, refusal })
}

async fn voice<P: Ports>(settings: &Settings, ports: &P, req: &Inbound, now: DateTime<Utc>) -> (Reply, Outcome) {
    let call = match decide::voice_call(settings, req) {
        Ok(c) => c,
        Err(refusal) => return refused(Route::Voice, refusal, None),
    };
    let lookup = lookup_config(settings, ports, &call.to, now.timestamp()).await;
    let hours_at = decide::hours_instant(settings, req, now);
    let (reply, outcome) = decide::answer_call(settings, &call, &lookup, now, hours_at);
    (reply, Outcome::Voice(outcome))
}

/// Config for the number `e164` through the cache policy: fresh cache → use; otherwise ask the
/// dashboard (timeout from settings) and fall back to a stale entry on failure.
pub async fn lookup_config<P: Ports>(settings: &Settings, ports: &P, e164: &str, now: i64) -> ConfigLookup {
    let policy = CachePolicy { ttl_secs: settings.config_ttl_secs, stale_secs: settings.config_stale_secs };
    let cached = cached_entry(ports, e164).await;
    if let Some(entry) = &cached {
        if policy.freshness(entry, now) == Freshness::Fresh {
            return cache::resolve(policy, cached, None, now).0;
        }
    }
    let etag = cached.as_ref().and_then(|e| e.etag.clone());
    let req = decide::config_request(settings, e164, etag.as_deref(), now, &ports.nonce());
    let fetched = match ports.send(req, settings.dashboard_timeout_ms).await {
        Ok(up) => cache::classify(&up),
        Err(e) => Fetched::Failed(e.to_string()),
    };
    // A config that does not list the number it was fetched for is not trusted for it.
    let fetched = match fetched {
        Fetched::Config { config, .. } if !decide::owns_number(&config, e164) => {
            Fetched::Failed(format!("dashboard returned restaurant {:?}, which does not list the called number", config.id))
        }
        other => other,
    };
    let (lookup, write) = cache::resolve(policy, cached, Some(fetched), now);
    if let Write::Store(entry) = write {
        let ttl = policy.storage_ttl();
        let id = entry.config.id.clone();
        if let Ok(text) = serde_json::to_string(&entry) {
            // Cache failures never fail a call; the next call simply asks the dashboard again.
            let _ = ports.cache_put(&cache::config_key(&id), text, ttl).await;
            let _ = ports.cache_put(&cache::number_key(e164), id, ttl).await;
        }
    }
    lookup
}

async fn cached_entry<P: Ports>(ports: &P, e164: &str) -> Option<CacheEntry> {
    let id = ports.cache_get(&cache::number_key(e164)).await.ok().flatten()?;
    let text = ports.cache_get(&cache::config_key(&id)).await.ok().flatten()?;
    let entry: CacheEntry = serde_json::from_str(&text).ok()?;
    // The index may be older than the entry: the entry must still own the number.
    decide::owns_number(&entry.config, e164).then_some(entry)
}

async fn status<P: Ports>(settings: &Settings, ports: &P, req: &Inbound, now: DateTime<Utc>) -> (Reply, Outcome) {
    let forward = match decide::status_event(settings, req, now.timestamp(), &ports.nonce()) {
        Ok(f) => f,
        Err(refusal) => return refused(Route::Status, refusal, None),
    };
    let ok = matches!(ports.send(forward, settings.dashboard_timeout_ms).await, Ok(up) if (200..300).contains(&up.status));
    // Twilio does not retry status callbacks; a failed forward is logged by the shell.
    (Reply::twiml(decide::empty_twiml()), Outcome::StatusForwarded { ok })
}

async fn dashboard_webhook<P: Ports>(settings: &Settings, ports: &P, req: &Inbound, now: DateTime<Utc>) -> (Reply, Outcome) {
    let route = Route::DashboardWebhook;
    let event = match decide::dashboard_event(settings, req, now.timestamp()) {
        Ok(e) => e,
        Err(refusal) => return refused(route, refusal, None),
    };
    let key = cache::webhook_key(&event.webhook_id);
    match ports.cache_get(&key).await {
        Ok(Some(_)) => return refused(route, Refusal::Replayed, None),
        Ok(None) => {}
        // Without the replay memory we cannot tell a replay apart: refuse, the sender retries.
        Err(e) => return refused(route, Refusal::UpstreamFailed(e.to_string()), None),
    }
    // Act first, then remember the id: invalidation is idempotent, so a retry after a failure
    // here is harmless, while remembering first would turn that retry into a "replay".
    let mut invalidated = false;
    if event.kind == "restaurant.updated" {
        let cfg_key = cache::config_key(&event.restaurant_id);
        match ports.cache_get(&cfg_key).await {
            Ok(Some(text)) => {
                let ttl = settings.config_ttl_secs.saturating_add(settings.config_stale_secs).max(cache::MIN_STORAGE_TTL_SECS);
                // An unreadable entry is replaced by a marker that parses as nothing (a miss).
                let marked = cache::invalidate(&text).unwrap_or_default();
                if let Err(e) = ports.cache_put(&cfg_key, marked, ttl).await {
                    return refused(route, Refusal::UpstreamFailed(e.to_string()), None);
                }
                invalidated = true;
            }
            Ok(None) => {}
            Err(e) => return refused(route, Refusal::UpstreamFailed(e.to_string()), None),
        }
    }
    if let Err(e) = ports.cache_put(&key, now.timestamp().to_string(), cache::WEBHOOK_ID_TTL_SECS).await {
        return refused(route, Refusal::UpstreamFailed(e.to_string()), None);
    }
    // knowledge_base.updated and policy.updated concern the bridge; the edge acknowledges them.
    (Reply::no_content(), Outcome::Webhook { kind: event.kind, restaurant_id: event.restaurant_id, invalidated })
}

async fn elevenlabs_webhook<P: Ports>(settings: &Settings, ports: &P, req: &Inbound, now: DateTime<Utc>) -> (Reply, Outcome) {
    let route = Route::ElevenLabsWebhook;
    let forward = match decide::elevenlabs_forward(settings, req, now.timestamp(), &ports.nonce()) {
        Ok(f) => f,
        Err(refusal) => return refused(route, refusal, None),
    };
    match ports.send(forward, settings.dashboard_timeout_ms).await {
        Ok(up) if (200..300).contains(&up.status) => (Reply::text(200, "forwarded"), Outcome::PostCallForwarded),
        Ok(up) => refused(route, Refusal::UpstreamFailed(format!("dashboard answered HTTP {}", up.status)), None),
        Err(e) => refused(route, Refusal::UpstreamFailed(e.to_string()), None),
    }
}
