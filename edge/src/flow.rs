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
    fn cache_put(
        &self,
        key: &str,
        value: String,
        ttl_secs: u64,
    ) -> impl Future<Output = Result<(), PortError>>;
    /// Sends a request to the dashboard, giving up after `timeout_ms` (the whole exchange, body
    /// included). Bodies over [`crate::http::MAX_UPSTREAM_BYTES`] are an error.
    fn send(
        &self,
        req: Outbound,
        timeout_ms: u64,
    ) -> impl Future<Output = Result<Upstream, PortError>>;
    /// A fresh unpredictable nonce for a signed dashboard request.
    fn nonce(&self) -> String;
    /// Sends a request after the reply, without the reply waiting for it (the Worker's
    /// `waitUntil`, a spawned task natively); its outcome is only logged.
    fn background(&self, req: Outbound, timeout_ms: u64);
}

/// What happened, for the shell's log line (never contains secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Voice(VoiceOutcome),
    Refused {
        route: Route,
        refusal: Refusal,
    },
    StatusForwarded {
        ok: bool,
    },
    Webhook {
        kind: String,
        restaurant_id: String,
        invalidated: bool,
    },
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
    (
        decide::refuse(route, &refusal, config),
        Outcome::Refused { route, refusal },
    )
}

async fn voice<P: Ports>(
    settings: &Settings,
    ports: &P,
    req: &Inbound,
    now: DateTime<Utc>,
) -> (Reply, Outcome) {
    let call = match decide::voice_call(settings, req) {
        Ok(c) => c,
        Err(refusal) => return refused(Route::Voice, refusal, None),
    };
    let lookup = lookup_config(settings, ports, &call.to, now.timestamp()).await;
    let hours_at = decide::hours_instant(settings, req, now);
    let answer = decide::answer(settings, &call, &lookup, now, hours_at);
    // The bridge opens the agent session while Twilio sets up the stream.
    if let Some(prepare) = answer.prepare {
        ports.background(prepare, decide::PREPARE_TIMEOUT_MS);
    }
    (answer.reply, Outcome::Voice(answer.outcome))
}

/// Config for the number `e164` through the cache policy: fresh cache → use; otherwise ask the
/// dashboard (timeout from settings) and fall back to a stale entry on failure.
pub async fn lookup_config<P: Ports>(
    settings: &Settings,
    ports: &P,
    e164: &str,
    now: i64,
) -> ConfigLookup {
    let policy = CachePolicy {
        ttl_secs: settings.config_ttl_secs,
        stale_secs: settings.config_stale_secs,
    };
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
            Fetched::Failed(format!(
                "dashboard returned restaurant {:?}, which does not list the called number",
                config.id
            ))
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
    let id = ports
        .cache_get(&cache::number_key(e164))
        .await
        .ok()
        .flatten()?;
    let text = ports
        .cache_get(&cache::config_key(&id))
        .await
        .ok()
        .flatten()?;
    let entry: CacheEntry = serde_json::from_str(&text).ok()?;
    // The index may be older than the entry: the entry must still own the number.
    decide::owns_number(&entry.config, e164).then_some(entry)
}

async fn status<P: Ports>(
    settings: &Settings,
    ports: &P,
    req: &Inbound,
    now: DateTime<Utc>,
) -> (Reply, Outcome) {
    let forward = match decide::status_event(settings, req, now.timestamp(), &ports.nonce()) {
        Ok(f) => f,
        Err(refusal) => return refused(Route::Status, refusal, None),
    };
    let ok = matches!(ports.send(forward, settings.dashboard_timeout_ms).await, Ok(up) if (200..300).contains(&up.status));
    // Twilio does not retry status callbacks; a failed forward is logged by the shell.
    (
        Reply::twiml(decide::empty_twiml()),
        Outcome::StatusForwarded { ok },
    )
}

async fn dashboard_webhook<P: Ports>(
    settings: &Settings,
    ports: &P,
    req: &Inbound,
    now: DateTime<Utc>,
) -> (Reply, Outcome) {
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
                let ttl = settings
                    .config_ttl_secs
                    .saturating_add(settings.config_stale_secs)
                    .max(cache::MIN_STORAGE_TTL_SECS);
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
    if let Err(e) = ports
        .cache_put(
            &key,
            now.timestamp().to_string(),
            cache::WEBHOOK_ID_TTL_SECS,
        )
        .await
    {
        return refused(route, Refusal::UpstreamFailed(e.to_string()), None);
    }
    // knowledge_base.updated and policy.updated concern the bridge; the edge acknowledges them.
    (
        Reply::no_content(),
        Outcome::Webhook {
            kind: event.kind,
            restaurant_id: event.restaurant_id,
            invalidated,
        },
    )
}

async fn elevenlabs_webhook<P: Ports>(
    settings: &Settings,
    ports: &P,
    req: &Inbound,
    now: DateTime<Utc>,
) -> (Reply, Outcome) {
    let route = Route::ElevenLabsWebhook;
    let forward = match decide::elevenlabs_forward(settings, req, now.timestamp(), &ports.nonce()) {
        Ok(f) => f,
        Err(refusal) => return refused(route, refusal, None),
    };
    match ports.send(forward, settings.dashboard_timeout_ms).await {
        Ok(up) if (200..300).contains(&up.status) => {
            (Reply::text(200, "forwarded"), Outcome::PostCallForwarded)
        }
        Ok(up) => refused(
            route,
            Refusal::UpstreamFailed(format!("dashboard answered HTTP {}", up.status)),
            None,
        ),
        Err(e) => refused(route, Refusal::UpstreamFailed(e.to_string()), None),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use pulsara_core::secret::Secret;
    use pulsara_core::{twilio, webhooks};

    use super::*;
    use crate::cache::Source;
    use crate::settings::tests::{settings_from, vars};
    use crate::testdata::{closed, config};

    /// In-memory ports with a scripted dashboard.
    struct Fake {
        cache: RefCell<HashMap<String, String>>,
        /// What the dashboard answers next (`None`: it is down).
        dashboard: RefCell<Option<Upstream>>,
        sent: RefCell<Vec<Outbound>>,
        background: RefCell<Vec<Outbound>>,
    }

    impl Fake {
        fn new() -> Self {
            Self {
                cache: RefCell::default(),
                dashboard: RefCell::new(None),
                sent: RefCell::default(),
                background: RefCell::default(),
            }
        }
        fn serve(&self, config: &RestaurantConfig) {
            let body = serde_json::to_vec(config).unwrap();
            *self.dashboard.borrow_mut() = Some(Upstream {
                status: 200,
                etag: Some(format!("\"{}\"", config.version)),
                body,
            });
        }
        fn answer(&self, status: u16) {
            *self.dashboard.borrow_mut() = Some(Upstream {
                status,
                etag: None,
                body: vec![],
            });
        }
        fn down(&self) {
            *self.dashboard.borrow_mut() = None;
        }
    }

    impl Ports for Fake {
        async fn cache_get(&self, key: &str) -> Result<Option<String>, PortError> {
            Ok(self.cache.borrow().get(key).cloned())
        }
        async fn cache_put(&self, key: &str, value: String, _ttl: u64) -> Result<(), PortError> {
            self.cache.borrow_mut().insert(key.to_owned(), value);
            Ok(())
        }
        async fn send(&self, req: Outbound, timeout_ms: u64) -> Result<Upstream, PortError> {
            self.sent.borrow_mut().push(req);
            self.dashboard
                .borrow()
                .clone()
                .ok_or(PortError::Timeout(timeout_ms))
        }
        fn nonce(&self) -> String {
            format!("nonce-{}", self.sent.borrow().len())
        }
        fn background(&self, req: Outbound, _timeout_ms: u64) {
            self.background.borrow_mut().push(req);
        }
    }

    const T0: i64 = 1_790_000_000;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn settings() -> Settings {
        settings_from(&vars()).unwrap()
    }

    fn call(s: &Settings, sid: &str) -> Inbound {
        let params: Vec<(String, String)> = [
            ("CallSid", sid),
            ("From", "+14155550100"),
            ("To", "+390600000001"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let sig = twilio::compute_signature(
            &s.twilio_auth_token,
            &s.public_url("/twilio/voice"),
            &params,
        );
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&params)
            .finish()
            .into_bytes();
        Inbound {
            method: "POST".into(),
            path: "/twilio/voice".into(),
            headers: vec![("x-twilio-signature".into(), sig)],
            body,
            ..Inbound::default()
        }
    }

    fn webhook(id: &str, ts: i64, kind: &str, restaurant: &str) -> Inbound {
        let body =
            format!(r#"{{"type":"{kind}","data":{{"restaurant_id":"{restaurant}","version":9}}}}"#);
        let sig = webhooks::sign(
            &Secret::new("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"),
            id,
            ts,
            body.as_bytes(),
        )
        .unwrap();
        Inbound {
            method: "POST".into(),
            path: "/webhooks/dashboard".into(),
            headers: vec![
                ("webhook-id".into(), id.into()),
                ("webhook-timestamp".into(), ts.to_string()),
                ("webhook-signature".into(), sig),
            ],
            body: body.into_bytes(),
            ..Inbound::default()
        }
    }

    fn source(outcome: &Outcome) -> Option<Source> {
        match outcome {
            Outcome::Voice(VoiceOutcome::Stream { source, .. }) => Some(*source),
            _ => None,
        }
    }

    #[tokio::test]
    async fn cold_then_warm_cache() {
        let (s, ports) = (settings(), Fake::new());
        ports.serve(&config("r1"));
        let (reply, outcome) = handle(Ok(&s), &ports, &call(&s, "CA1"), at(T0)).await;
        assert_eq!(reply.status, 200);
        assert_eq!(source(&outcome), Some(Source::Dashboard));
        assert_eq!(ports.sent.borrow().len(), 1);
        assert_eq!(
            ports.sent.borrow()[0].url,
            "http://127.0.0.1:9/v1/restaurants/by-number/+390600000001"
        );
        // The call's bridge is asked to prepare the agent session, after the reply.
        let prepares = ports.background.borrow();
        assert_eq!(prepares.len(), 1);
        let body: serde_json::Value = serde_json::from_slice(&prepares[0].body).unwrap();
        assert_eq!(body["call_sid"], "CA1");
        assert!(reply.body.contains(body["handoff"].as_str().unwrap()), "the TwiML's own token");
        drop(prepares);
        // Within the TTL the dashboard is not asked again.
        let (_, outcome) = handle(Ok(&s), &ports, &call(&s, "CA2"), at(T0 + 299)).await;
        assert_eq!(source(&outcome), Some(Source::Cache));
        assert_eq!(ports.sent.borrow().len(), 1);
        // After it, the dashboard is asked with the cached ETag.
        ports.answer(304);
        let (_, outcome) = handle(Ok(&s), &ports, &call(&s, "CA3"), at(T0 + 301)).await;
        assert_eq!(source(&outcome), Some(Source::Dashboard));
        let sent = ports.sent.borrow();
        assert!(
            sent[1]
                .headers
                .iter()
                .any(|(k, v)| k == "If-None-Match" && v == "\"3\""),
            "{:?}",
            sent[1].headers
        );
    }

    #[tokio::test]
    async fn dashboard_down_with_warm_and_cold_cache() {
        let (s, ports) = (settings(), Fake::new());
        ports.down();
        let (reply, outcome) = handle(Ok(&s), &ports, &call(&s, "CA1"), at(T0)).await;
        assert_eq!(reply.status, 200);
        assert!(
            reply.body.contains(crate::decide::GENERIC_APOLOGY),
            "{}",
            reply.body
        );
        assert!(
            matches!(outcome, Outcome::Voice(VoiceOutcome::Fallback { reason }) if reason.contains("timed out"))
        );
        ports.serve(&config("r1"));
        handle(Ok(&s), &ports, &call(&s, "CA2"), at(T0)).await;
        ports.down();
        let (reply, outcome) = handle(Ok(&s), &ports, &call(&s, "CA3"), at(T0 + 3_600)).await;
        assert!(reply.body.contains("<Stream"), "{}", reply.body);
        assert_eq!(source(&outcome), Some(Source::StaleCache));
        // Past TTL + stale window the cached config is no longer used.
        let (_, outcome) = handle(Ok(&s), &ports, &call(&s, "CA4"), at(T0 + 300 + 86_400)).await;
        assert!(matches!(
            outcome,
            Outcome::Voice(VoiceOutcome::Fallback { .. })
        ));
    }

    #[tokio::test]
    async fn webhook_invalidates_and_replays_are_refused() {
        let (s, ports) = (settings(), Fake::new());
        ports.serve(&config("r1"));
        handle(Ok(&s), &ports, &call(&s, "CA1"), at(T0)).await;
        // The restaurant changes: now closed, new version.
        let mut updated = closed(
            "r1",
            pulsara_core::config::AfterHours::Message {
                message: "Closed for works".into(),
            },
        );
        updated.version = 4;
        ports.serve(&updated);
        let (reply, outcome) = handle(
            Ok(&s),
            &ports,
            &webhook("msg_1", T0 + 5, "restaurant.updated", "r1"),
            at(T0 + 10),
        )
        .await;
        assert_eq!(reply.status, 204);
        assert_eq!(
            outcome,
            Outcome::Webhook {
                kind: "restaurant.updated".into(),
                restaurant_id: "r1".into(),
                invalidated: true
            }
        );
        let (reply, outcome) = handle(Ok(&s), &ports, &call(&s, "CA2"), at(T0 + 11)).await;
        assert!(reply.body.contains("Closed for works"), "{}", reply.body);
        assert!(matches!(
            outcome,
            Outcome::Voice(VoiceOutcome::AfterHours { .. })
        ));
        // The same delivery again is refused and changes nothing.
        let (reply, outcome) = handle(
            Ok(&s),
            &ports,
            &webhook("msg_1", T0 + 5, "restaurant.updated", "r1"),
            at(T0 + 12),
        )
        .await;
        assert_eq!(reply.status, 409);
        assert!(matches!(
            outcome,
            Outcome::Refused {
                refusal: Refusal::Replayed,
                ..
            }
        ));
        // Forged deliveries neither invalidate nor burn ids.
        let mut forged = webhook("msg_2", T0 + 5, "restaurant.updated", "r1");
        forged.body = br#"{"type":"restaurant.updated","data":{"restaurant_id":"r2"}}"#.to_vec();
        assert_eq!(
            handle(Ok(&s), &ports, &forged, at(T0 + 12)).await.0.status,
            403
        );
        assert!(!ports.cache.borrow().contains_key("wh:msg_2"));
    }

    #[tokio::test]
    async fn invalidated_entry_still_serves_when_dashboard_fails() {
        let (s, ports) = (settings(), Fake::new());
        ports.serve(&config("r1"));
        handle(Ok(&s), &ports, &call(&s, "CA1"), at(T0)).await;
        handle(
            Ok(&s),
            &ports,
            &webhook("msg_1", T0, "restaurant.updated", "r1"),
            at(T0 + 1),
        )
        .await;
        ports.down();
        let (_, outcome) = handle(Ok(&s), &ports, &call(&s, "CA2"), at(T0 + 2)).await;
        assert_eq!(source(&outcome), Some(Source::StaleCache));
        assert_eq!(
            ports.sent.borrow().len(),
            2,
            "the invalidated entry must trigger a refetch"
        );
    }

    #[tokio::test]
    async fn unknown_number_and_foreign_config() {
        let (s, ports) = (settings(), Fake::new());
        ports.answer(404);
        let (reply, outcome) = handle(Ok(&s), &ports, &call(&s, "CA1"), at(T0)).await;
        assert_eq!(outcome, Outcome::Voice(VoiceOutcome::UnknownNumber));
        assert!(reply.body.contains("not set up"));
        // A config that does not list the called number is not used for it.
        let mut other = config("r2");
        other.phone_numbers = vec!["+12125550100".into()];
        ports.serve(&other);
        let (_, outcome) = handle(Ok(&s), &ports, &call(&s, "CA2"), at(T0)).await;
        assert!(
            matches!(outcome, Outcome::Voice(VoiceOutcome::Fallback { reason }) if reason.contains("does not list"))
        );
    }

    #[tokio::test]
    async fn misconfigured_edge_still_answers_twilio_with_twiml() {
        let mut v = vars();
        v.remove("HANDOFF_KEYS");
        let err = settings_from(&v).unwrap_err();
        let ports = Fake::new();
        let s = settings();
        let (reply, _) = handle(Err(&err), &ports, &call(&s, "CA1"), at(T0)).await;
        assert_eq!(
            (reply.status, reply.content_type),
            (200, crate::http::TWIML)
        );
        let health = Inbound {
            method: "GET".into(),
            path: "/healthz".into(),
            ..Inbound::default()
        };
        let (reply, _) = handle(Err(&err), &ports, &health, at(T0)).await;
        assert_eq!(reply.status, 503);
        assert!(reply.body.contains("HANDOFF_KEYS"));
        let (reply, _) = handle(Ok(&s), &ports, &health, at(T0)).await;
        assert_eq!(reply.status, 200);
    }

    #[tokio::test]
    async fn status_and_post_call_are_forwarded() {
        let (s, ports) = (settings(), Fake::new());
        ports.answer(202);
        let params: Vec<(String, String)> = vec![
            ("CallSid".into(), "CA9".into()),
            ("CallStatus".into(), "completed".into()),
        ];
        let sig = twilio::compute_signature(
            &s.twilio_auth_token,
            &s.public_url("/twilio/status"),
            &params,
        );
        let req = Inbound {
            method: "POST".into(),
            path: "/twilio/status".into(),
            headers: vec![("x-twilio-signature".into(), sig)],
            body: b"CallSid=CA9&CallStatus=completed".to_vec(),
            ..Inbound::default()
        };
        let (reply, outcome) = handle(Ok(&s), &ports, &req, at(T0)).await;
        assert_eq!(
            (reply.status, outcome),
            (200, Outcome::StatusForwarded { ok: true })
        );
        ports.down();
        let (reply, outcome) = handle(Ok(&s), &ports, &req, at(T0)).await;
        assert_eq!(
            (reply.status, outcome),
            (200, Outcome::StatusForwarded { ok: false })
        );

        let body = br#"{"type":"post_call_transcription","data":{}}"#;
        let header = webhooks::sign_elevenlabs(&Secret::new("el-secret"), T0, body);
        let req = Inbound {
            method: "POST".into(),
            path: "/webhooks/elevenlabs".into(),
            headers: vec![("elevenlabs-signature".into(), header)],
            body: body.to_vec(),
            ..Inbound::default()
        };
        assert_eq!(handle(Ok(&s), &ports, &req, at(T0)).await.0.status, 502);
        ports.answer(200);
        assert_eq!(handle(Ok(&s), &ports, &req, at(T0)).await.0.status, 200);
        assert_eq!(
            ports.sent.borrow().last().unwrap().url,
            "http://127.0.0.1:9/v1/post-call"
        );
    }
}
