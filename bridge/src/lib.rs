//! The bridge: Twilio Media Streams ⇄ ElevenLabs Conversational AI, with tool policies and call
//! records.
//!
//! Modules, in the order data flows through them:
//! - [`app`]: the shared state every call reads ([`App`]) and the call slots it hands out.
//! - [`server`]: the axum [`server::router`] (`/media`, `/healthz`, `/readyz`, `/metrics`,
//!   `/twilio/recording`) and [`server::run`] with graceful draining, on `pulsara-net`'s hardened
//!   listener; it starts a [`session`] per upgraded stream. [`overload`]: which new streams to
//!   refuse (503) before the upgrade when the process cannot serve them.
//! - [`session`]: one task per Media Stream — authenticate `start`, admit under the caps, connect
//!   the agent, pump frames, run tools, transfer / fall back, deliver the record.
//! - [`machine`]: the sans-IO per-call state machine (audio routing, barge-in, marks, transcript,
//!   DTMF, tool bookkeeping, the call record) the session drives.
//! - [`agent`]: ElevenLabs signed URL + ConvAI WebSocket set-up. Call updates go through
//!   [`pulsara_dashboard::twilio_rest`].
//! - [`voicemail`]: `POST /twilio/recording`, where the agent-down voicemail's `<Record>` reports.
//! - [`vars`]: dynamic variables and prompt overrides for the agent.
//! - [`replay`]: single use of handoff tokens. [`metrics`]: the bridge's Prometheus families, in the
//!   process's one registry (served at `/metrics` with the text encoder).
//! - [`ports`]: the async traits the bridge depends on (configuration, tools, call-record sink).
//! - [`tools`]: the wasm policy host as the bridge's tool runner.
//! - [`clock`]: the process clock (the demo shifts it to each scenario's instant).
//! - [`service`]: `pulsara serve`'s wiring (dashboard remote or embedded, policy host, outbox,
//!   optional native edge).
//! - [`config`]: typed settings (file + env), validated at start-up.
//!
//! This crate is what `pulsara serve` runs and nothing else: the local stack, the demo and the
//! load harness live in `pulsara-local`, the stand-ins in `pulsara-emulators`, the command line
//! in `pulsara-cli`.
#![forbid(unsafe_code)]

pub mod agent;
pub mod app;
pub mod clock;
pub mod config;
pub mod dashboard_link;
pub mod latency;
pub mod machine;
pub mod metrics;
pub mod overload;
pub mod ports;
pub mod prepare;
pub mod replay;
pub mod server;
pub mod service;
pub mod session;
pub mod tools;
pub mod vars;
pub mod voicemail;

pub use app::{App, AppError};
pub use server::{router, run, run_router};
