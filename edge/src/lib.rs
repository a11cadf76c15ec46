//! The edge: Twilio's voice webhook → which restaurant → open or not → TwiML, plus the status
//! callback and the dashboard / ElevenLabs webhooks. One core, two shells:
//!
//! - [`settings`]: typed, validated configuration (vars and secrets).
//! - [`http`]: plain request/reply values the core works on.
//! - [`decide`]: pure decisions (signature checks, call answer, events to forward) and the one
//!   mapping from refusals to responses (Twilio always gets TwiML after verification).
//! - [`cache`]: the config cache policy (TTL, stale-if-error, invalidation) over timestamped
//!   entries.
//! - [`flow`]: the request flow over abstract [`flow::Ports`] (cache, dashboard, nonce).
//! - `worker_shell` (wasm32 only): the Cloudflare Worker, `#[event(fetch)]` over KV and `fetch`.
//! - [`native`] (not wasm32): an axum router over an in-memory cache and reqwest.
//!
//! Data flow for a call: shell → [`http::Inbound`] → [`flow::handle`] →
//! [`decide::voice_call`] (verify) → [`flow::lookup_config`] (cache → dashboard) →
//! [`decide::answer_call`] (hours, handoff token, TwiML) → [`http::Reply`] → shell.
#![forbid(unsafe_code)]

pub mod cache;
pub mod decide;
pub mod flow;
pub mod http;
pub mod settings;

#[cfg(not(target_arch = "wasm32"))]
pub mod native;
#[cfg(target_arch = "wasm32")]
mod worker_shell;

#[cfg(test)]
mod testdata;
