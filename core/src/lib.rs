//! Pulsara's shared domain core: pure functions and types over bytes, strings and structs, with no
//! sockets, clocks or storage. It compiles both natively (bridge, native edge shell, tests) and to
//! `wasm32-unknown-unknown` (the Cloudflare Worker).
//!
//! Modules:
//! - [`addr`]: is an address loopback (the guard on every test-only switch).
//! - [`agent`]: the ElevenLabs agent and client tools a restaurant needs, and their drift.
//! - [`call_record`]: the record of one finished call (bridge → outbox → dashboard).
//! - [`config`]: the restaurant configuration and knowledge-base model, as served by the dashboard
//!   API (`api/openapi.yaml`). Every restaurant-specific value lives here; nothing is hard-coded.
//! - [`freshness`]: the TTL + stale-if-error rule of the config caches (edge and bridge).
//! - [`handoff`]: the signed token the edge puts into the Stream TwiML and the bridge verifies.
//! - [`secret`]: a wrapper for secrets whose `Debug`/`Display` never print the value.
//! - [`twilio`]: `X-Twilio-Signature` validation (form and JSON bodies) and bounded form parsing.
//! - [`phone`]: E.164 normalisation, so the dialled number finds its restaurant.
//! - [`hours`]: open/closed at an instant (spans, closures, last call, DST) and the next opening.
//! - [`twiml`]: escaped TwiML documents: stream to the bridge, after-hours modes, fallbacks.
//! - [`webhooks`]: Standard Webhooks and ElevenLabs webhook signatures, plus [`webhooks::ReplayGuard`].
//! - [`request_auth`]: signing and verifying edge/bridge → dashboard requests.
//! - [`crypto`]: hex SHA-256 digests and constant-time comparison, for every crate.
//! - `random` (feature `random`): random ids, nonces and secrets from the OS random source.
//!
//! Data flow for a voice webhook at the edge: [`twilio::parse_form`] → [`twilio::validate`] →
//! [`phone::normalize_e164`] (find the restaurant's [`config::RestaurantConfig`]) →
//! [`hours::status`] → [`twiml::stream`] with a [`handoff`] token, or
//! [`twiml::SayVoice::after_hours`] in the restaurant's [`config::RestaurantConfig::say_voice`].
//!
//! Time is always passed in (`now`), never read here.
#![forbid(unsafe_code)]

pub mod addr;
pub mod agent;
pub mod call_record;
pub mod config;
pub mod crypto;
pub mod freshness;
pub mod handoff;
pub mod hours;
pub mod phone;
#[cfg(feature = "random")]
pub mod random;
pub mod request_auth;
pub mod secret;
pub mod twilio;
pub mod twiml;
pub mod webhooks;
