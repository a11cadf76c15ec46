//! The bridge: Twilio Media Streams ⇄ ElevenLabs Conversational AI, with tool policies and call
//! records.
//!
//! Modules:
//! - [`ports`]: the async traits the bridge depends on (configuration, tools, call-record sink).
//! - [`config`]: typed settings (file + env), validated at start-up.
//! - [`machine`]: the sans-IO per-call state machine (audio routing, barge-in, marks, transcript,
//!   DTMF, tool bookkeeping, the call record).
//! - [`metrics`]: Prometheus counters and histograms.
#![forbid(unsafe_code)]

pub mod config;
pub mod machine;
pub mod metrics;
pub mod ports;
