//! `POST /webhooks/dashboard` for the bridge: Standard Webhooks verification
//! (`pulsara_core::webhooks::verify`, several secrets for rotation, ±5 min), replayed ids refused
//! (bounded [`ReplayGuard`]), then each handler (e.g. [`crate::cache::ConfigCache::invalidate`],
//! the policy host's swap) is told about the event.

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
        let event: DashboardEvent =
            serde_json::from_slice(body).map_err(|e| ReceiveError::BadBody(e.to_string()))?;
        tracing::info!(kind = ?event.kind, restaurant_id = %event.data.restaurant_id, version = event.data.version, "dashboard webhook received");
        for handler in &self.handlers {
            handler(&event);
        }
        Ok(event)
    }
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
