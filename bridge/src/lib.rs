//! The bridge: Twilio Media Streams ⇄ ElevenLabs Conversational AI, with tool policies and call
//! records.
//!
//! Modules, in the order data flows through them:
//! - [`server`]: shared state ([`server::App`]), the axum [`server::router`] (`/media`, `/healthz`,
//!   `/readyz`, `/metrics`, `/twilio/recording`) and [`server::run`] with graceful draining, on
//!   `pulsara-net`'s hardened listener. [`overload`]: which new streams to refuse (503) before
//!   the upgrade when the process cannot serve them.
//! - [`session`]: one task per Media Stream — authenticate `start`, admit under the caps, connect
//!   the agent, pump frames, run tools, transfer / fall back, deliver the record.
//! - [`machine`]: the sans-IO per-call state machine (audio routing, barge-in, marks, transcript,
//!   DTMF, tool bookkeeping, the call record) the session drives.
//! - [`agent`]: ElevenLabs signed URL + ConvAI WebSocket set-up. [`twilio_rest`]: call updates.
//! - [`voicemail`]: `POST /twilio/recording`, where the agent-down voicemail's `<Record>` reports.
//! - [`vars`]: dynamic variables and prompt overrides for the agent.
//! - [`replay`]: single use of handoff tokens. [`metrics`]: Prometheus text exposition.
//! - [`ports`]: the async traits the bridge depends on (configuration, tools, call-record sink).
//! - [`tools`]: the wasm policy host as the bridge's tool runner; [`policy_cli`]: `pulsara policy
//!   run|replay`.
//! - [`clock`]: the process clock (the demo shifts it to each scenario's instant).
//! - [`stack`]: a whole local Pulsara in one process (dashboard, edge, bridge, emulators);
//!   [`frontdoor`]: placing a call as Twilio does; [`demo`]: `pulsara demo` and `pulsara call`;
//!   [`emulate`]: the emulators as standalone servers.
//! - [`service`]: `pulsara serve`'s wiring (dashboard remote or embedded, policy host, outbox,
//!   optional native edge).
//! - [`config`]: typed settings (file + env), validated at start-up.
//! - [`bench`]: the load harness behind `pulsara bench`; [`testkit`]: tiny loopback fakes of the
//!   agent, the Twilio caller and Twilio REST for the bridge's tests and the bench.
#![forbid(unsafe_code)]

pub mod agent;
pub mod bench;
pub mod clock;
pub mod config;
pub mod dashboard_link;
pub mod demo;
pub mod emulate;
pub mod frontdoor;
pub mod keys_cli;
pub mod machine;
pub mod metrics;
pub mod overload;
pub mod policy_cli;
pub mod ports;
pub mod replay;
pub mod server;
pub mod service;
pub mod session;
pub mod stack;
pub mod testkit;
pub mod tools;
pub mod twilio_rest;
pub mod vars;
pub mod voicemail;

pub use server::{router, run, run_router, App};
