//! Pulsara's shared domain core: pure functions and types over bytes, strings and structs, with no
//! sockets, clocks or storage. It compiles both natively (bridge, native edge shell, tests) and to
//! `wasm32-unknown-unknown` (the Cloudflare Worker).
//!
//! Modules:
//! - [`call_record`]: the record of one finished call (bridge → outbox → dashboard).
//! - [`config`]: the restaurant configuration and knowledge-base model, as served by the dashboard
//!   API (`api/openapi.yaml`). Every restaurant-specific value lives here; nothing is hard-coded.
//! - [`handoff`]: the signed token the edge puts into the Stream TwiML and the bridge verifies.
//! - [`secret`]: a wrapper for secrets whose `Debug`/`Display` never print the value.
//!
//! Time is always passed in (`now`), never read here.
#![forbid(unsafe_code)]

pub mod call_record;
pub mod config;
pub mod handoff;
pub mod secret;
