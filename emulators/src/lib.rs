//! Loopback emulators of Pulsara's outside world, used by tests, benchmarks and the demo.
//!
//! Modules:
//! - [`elevenlabs`]: the ElevenLabs Conversational AI server (signed URL + conversation
//!   WebSocket) driven by scenario scripts; records everything it receives.
//! - [`caller`]: a Twilio caller simulator: connects to a bridge's Media Streams endpoint as
//!   Twilio does, speaks a caller script, plays received audio in (virtual) real time.
//! - [`twilio_rest`]: the Twilio REST API subset the bridge uses (call update, SMS).
//! - [`scenario`]: the TOML scenario format shared by all three and the demo.
//! - [`synth`]: deterministic speech-like audio; [`vad`]: energy voice-activity detection.
//!
//! Each server has `run(listener, config, …, shutdown)` for in-process use on `127.0.0.1:0`
//! and a one-line `serve(addr, …)` for the command line.
#![forbid(unsafe_code)]

pub mod caller;
pub mod elevenlabs;
pub mod scenario;
pub mod synth;
pub mod twilio_rest;
pub mod vad;
