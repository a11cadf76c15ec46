//! `POST /webhooks/dashboard` for the bridge: Standard Webhooks verification
//! (`pulsara_core::webhooks::verify`, several secrets for rotation, ±5 min), the body parsed and
//! checked, and only then the id remembered so replays are refused (bounded [`ReplayGuard`]): a
//! refused delivery never burns its id, so the sender's corrected retry goes through. Then each
//! handler (e.g. [`crate::cache::ConfigCache::invalidate`], the policy host's swap) is told
//! about the event.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use pulsara_core::secret::Secret;
use pulsara_core::webhooks::{self, ReplayError, ReplayGuard, WebhookError, TOLERANCE_SECS};
use serde_json::json;

use crate::events::DashboardEvent;
use crate::Clock;

/// Largest webhook body accepted.
pub const MAX_BODY: usize = 64 * 1024;
/// Webhook ids remembered.
pub const REPLAY_MEMORY: usize = 100_000;

pub type EventHandler = Arc<dyn Fn(&DashboardEvent) + Send + Sync>;

/// Verifies and dispatches dashboard webhooks.
pub struct WebhookReceiver {
    secrets: Vec<Secret>,
    seen: Mutex<ReplayGuard>,
    clock: Clock,
    handlers: Vec<EventHandler>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error("{0}")]
    Verify(#[from] WebhookError),
    #[error("webhook id was already processed; refusing the replay")]
    Replayed,
    #[error("webhook body is not a dashboard event: {0}")]
    BadBody(String),
}

impl ReceiveError {
    fn status_code(&self) -> (StatusCode, &'static str) {
        match self {
            ReceiveError::Verify(WebhookError::NoSecret | WebhookError::BadSecret) => {
                (StatusCode::SERVICE_UNAVAILABLE, "webhooks_not_configured")
            }
            ReceiveError::Verify(WebhookError::Stale(_) | WebhookError::Future(_)) => {
                (StatusCode::UNAUTHORIZED, "stale_webhook")
            }
            ReceiveError::Verify(_) => (StatusCode::UNAUTHORIZED, "bad_webhook_signature"),
            ReceiveError::Replayed => (StatusCode::CONFLICT, "replayed_webhook"),
            ReceiveError::BadBody(_) => (StatusCode::BAD_REQUEST, "bad_webhook_body"),
        }
    }
}

impl WebhookReceiver {
    /// `secrets`: every `whsec_` secret currently valid (several during rotation).
    pub fn new(secrets: Vec<Secret>, clock: Clock) -> Self {
        Self {
            secrets,
            seen: Mutex::new(ReplayGuard::new(REPLAY_MEMORY)),
            clock,
            handlers: Vec::new(),
        }
    }

    pub fn on_event(mut self, handler: EventHandler) -> Self {
        self.handlers.push(handler);
        self
    }

    /// Verifies one delivery and runs the handlers.
    ///
    /// # Errors
    /// See [`ReceiveError`].
    pub fn receive(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<DashboardEvent, ReceiveError> {
        let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        let now = (self.clock)();
        webhooks::verify(
            &self.secrets,
            h("webhook-id"),
            h("webhook-timestamp"),
            h("webhook-signature"),
            body,
            now,
        )?;
        // Parse and check the body before remembering the id: a delivery we refuse must not
        // burn its id, or the sender's corrected retry (same id) would be taken for a replay.
        let event = parse_event(body)?;
        let id = h("webhook-id").unwrap_or_default();
        let ts: i64 = h("webhook-timestamp")
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(now);
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            match seen.check_and_insert(id, ts + TOLERANCE_SECS + 1, now) {
                Ok(()) => {}
                Err(ReplayError::Replayed) => return Err(ReceiveError::Replayed),
                Err(ReplayError::BadId) => return Err(ReceiveError::Verify(WebhookError::BadId)),
            }
        }
        tracing::info!(kind = ?event.kind, restaurant_id = %event.data.restaurant_id, version = event.data.version, "dashboard webhook received");
        for handler in &self.handlers {
            handler(&event);
        }
        Ok(event)
    }
}

/// Longest `restaurant_id` an event may name (as the edge's receiver).
pub const MAX_RESTAURANT_ID: usize = 128;

/// A verified body as a [`DashboardEvent`], refused when it is not one or names no usable
/// restaurant.
fn parse_event(body: &[u8]) -> Result<DashboardEvent, ReceiveError> {
    let event: DashboardEvent =
        serde_json::from_slice(body).map_err(|e| ReceiveError::BadBody(e.to_string()))?;
    let rid = &event.data.restaurant_id;
    if rid.trim().is_empty() || rid.len() > MAX_RESTAURANT_ID {
        return Err(ReceiveError::BadBody(format!(
            "data.restaurant_id must be 1 to {MAX_RESTAURANT_ID} characters"
        )));
    }
    Ok(event)
}

async fn handle(
    State(rx): State<Arc<WebhookReceiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if body.len() > MAX_BODY {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            Json(json!({"error": {"code": "too_large", "message": "webhook body too large"}})),
        )
            .into_response();
    }
    match rx.receive(&headers, &body) {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => {
            let (status, code) = e.status_code();
            tracing::warn!(code, reason = %e, "dashboard webhook refused");
            (
                status,
                Json(json!({"error": {"code": code, "message": e.to_string()}})),
            )
                .into_response()
        }
    }
}

/// The `POST /webhooks/dashboard` route, ready to merge into the bridge's router.
pub fn router(receiver: Arc<WebhookReceiver>) -> Router {
    Router::new()
        .route("/webhooks/dashboard", post(handle))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(receiver)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const NOW: i64 = 1_700_000_000;

    fn delivery(id: &str, body: &[u8]) -> HeaderMap {
        let sig = webhooks::sign(&Secret::new(SECRET), id, NOW, body).unwrap();
        let mut h = HeaderMap::new();
        h.insert("webhook-id", id.parse().unwrap());
        h.insert("webhook-timestamp", NOW.to_string().parse().unwrap());
        h.insert("webhook-signature", sig.parse().unwrap());
        h
    }

    #[test]
    fn a_refused_body_does_not_burn_its_id_but_an_accepted_one_does() {
        let ran = Arc::new(AtomicUsize::new(0));
        let r2 = ran.clone();
        let rx = WebhookReceiver::new(vec![Secret::new(SECRET)], Arc::new(|| NOW)).on_event(
            Arc::new(move |_| {
                r2.fetch_add(1, Ordering::SeqCst);
            }),
        );
        let id = "msg_fix_and_retry";
        // Correctly signed, but not a dashboard event / no restaurant: refused with a 400.
        for bad in [
            &br#"{"type":"restaurant.updated","data":{"restaurant_idd":"x","version":2}}"#[..],
            br#"{"type":"restaurant.updated","data":{"restaurant_id":"","version":2}}"#,
            b"not json",
        ] {
            let err = rx.receive(&delivery(id, bad), bad).unwrap_err();
            assert!(matches!(err, ReceiveError::BadBody(_)), "{err:?}");
            assert_eq!(err.status_code().0, StatusCode::BAD_REQUEST);
        }
        // The sender's corrected retry, same id: accepted and handled.
        let good =
            br#"{"type":"restaurant.updated","data":{"restaurant_id":"sakura-sushi","version":2}}"#;
        let ev = rx.receive(&delivery(id, good), good).unwrap();
        assert_eq!(ev.data.restaurant_id, "sakura-sushi");
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        // The accepted id again: a replay, refused and not handled twice.
        let err = rx.receive(&delivery(id, good), good).unwrap_err();
        assert!(matches!(err, ReceiveError::Replayed), "{err:?}");
        assert_eq!(err.status_code().0, StatusCode::CONFLICT);
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        // A forged delivery with a fresh id burns nothing either.
        let mut forged = delivery("msg_forged", good);
        forged.insert("webhook-signature", "v1,AAAA".parse().unwrap());
        assert!(matches!(
            rx.receive(&forged, good),
            Err(ReceiveError::Verify(_))
        ));
        assert!(rx.receive(&delivery("msg_forged", good), good).is_ok());
    }
}
