//! A whole Pulsara on one machine, for the main job, the end-to-end tests and the load harness.
//! Nothing here runs in production: `pulsara serve` is `pulsara-bridge` alone.
//!
//! Modules:
//! - [`stack`]: the local stack in one process: the embedded dashboard, the edge's native
//!   shell and the bridge, wired as `pulsara serve` wires them, with the outside world emulated
//!   (ElevenLabs, Twilio REST, SMTP).
//! - [`frontdoor`]: placing a call as Twilio does: a signed voice webhook to the edge, its
//!   TwiML read, the Media Stream opened by the caller simulator.
//! - [`demo`]: `pulsara demo` (every scenario through the stack, with a report) and
//!   `pulsara call` (one scenario against a separately running edge and bridge).
//! - [`emulate`]: the emulators as standalone servers (`pulsara emulate`).
//! - [`bench`]: the load harness behind `pulsara bench` (and its `--soak`).
#![forbid(unsafe_code)]

pub mod bench;
pub mod demo;
pub mod emulate;
pub mod frontdoor;
pub mod latency_bench;
pub mod stack;
