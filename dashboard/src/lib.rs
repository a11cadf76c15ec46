//! Everything the phone agent exchanges with the restaurant dashboard (dashboard API v1, the
//! contract in `api/openapi.yaml`).
//!
//! Server side (the embedded dashboard `pulsara serve` runs when no `DASHBOARD_URL` is set):
//! - [`store`]: SQLite (WAL) storage of restaurants, knowledge bases, policy modules, calls,
//!   events, post-call data, API keys, nonces and webhook subscriptions.
//! - [`seed`]: loads `restaurants/<id>/{restaurant,knowledge_base}.json`, resolving
//!   `builtin:<name>` tool modules through the policy build manifest.
//! - [`auth`]: verifies signed requests (`pulsara_core::request_auth`) and API keys ([`keys`]),
//!   with scopes `edge`, `bridge`, `admin`.
//! - [`server`]: the axum router ([`server::router`], [`server::serve`]).
//! - [`webhook_out`]: Standard Webhooks to subscribers when an admin edit bumps a version.
//! - [`embedded`]: open + seed + serve in one call ([`embedded::EmbeddedDashboard::start`]).
//!
//! Client side (used by the bridge, whether the dashboard is embedded or remote):
//! - [`agents`]: the ElevenLabs agents and tools API client and one restaurant's agent sync
//!   (create, drift, repair), for `pulsara agents` and [`agent_sync`], the embedded dashboard's
//!   durable job that syncs a restaurant's agent after every edit.
//! - [`client`]: typed HTTP client that signs every request.
//! - [`cache`]: config/KB cache with ETag revalidation, TTL, stale-if-error and single-flight.
//! - [`webhook_in`]: `POST /webhooks/dashboard` handler that invalidates the cache.
//! - [`outbox`]: durable SQLite outbox delivering call records and notifications exactly once
//!   (idempotency keys) with backoff, per-restaurant order and parking of rejected entries.
//! - [`sentiment`], [`summary`], [`notify`]: call analysis and the notification messages, with
//!   [`smtp_sink`] as a loopback mail server for the demo and tests.
//! - [`twilio_rest`]: the one Twilio REST client (SMS here, call updates for the bridge).
//! - [`pipeline`]: finishing a call record (analysis + notifications) and queueing it.
//! - [`voicemail`]: a recording callback's voicemail, merged onto its call record.
//!
//! Data flow at call end: bridge → [`pipeline::finish_and_enqueue`] → [`outbox`] (one SQLite
//! transaction) → [`outbox::Dispatcher`] → `POST /v1/calls` (+ SMTP, Twilio) → [`store`].
#![forbid(unsafe_code)]

pub mod agent_sync;
pub mod agents;
pub mod auth;
pub mod cache;
pub mod client;
pub mod embedded;
pub mod events;
pub mod keys;
pub mod notify;
pub mod outbox;
pub mod pipeline;
pub mod seed;
pub mod sentiment;
pub mod server;
pub mod smtp_sink;
pub mod store;
pub mod summary;
pub mod twilio_rest;
pub mod voicemail;
pub mod webhook_in;
pub mod webhook_out;

use std::sync::Arc;

/// Unix seconds from an injectable clock; tests pin it.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The real wall clock.
pub fn system_clock() -> Clock {
    Arc::new(|| chrono::Utc::now().timestamp())
}

/// Whether an HTTP status is worth retrying: 5xx, 408 (timeout), 429 (rate limited). Every other
/// 4xx is a permanent rejection.
pub fn is_transient_status(code: u16) -> bool {
    code >= 500 || code == 408 || code == 429
}
