//! Loopback emulators of Pulsara's outside world, used by tests, benchmarks and the demo.
//!
//! Modules:
//! - [`elevenlabs`]: the ElevenLabs Conversational AI server (signed URL + conversation
//!   WebSocket) driven by scenario scripts; records everything it receives.
//! - [`caller`]: a Twilio caller simulator: connects to a bridge's Media Streams endpoint as
//!   Twilio does, speaks a caller script, plays received audio in (virtual) real time.
//! - [`workspace`]: the ElevenLabs agents and tools API (agents, client tools, injected faults,
//!   request log), served by the [`elevenlabs`] emulator next to its conversation routes.
//! - [`twilio_rest`]: the Twilio REST API subset the bridge uses (call update, SMS).
//! - [`scenario`]: the TOML scenario format shared by all three and the demo.
//! - [`scripted`]: an agent and a caller scripted by frame count, for the bridge's tests and
//!   its load harness.
//! - [`twiml`]: the one TwiML reader of the Twilio side (stream, say, dial, record).
//! - [`synth`]: deterministic speech-like audio; [`vad`]: energy voice-activity detection.
//! - [`exposition`]: the reader of a bridge's `/metrics` (Prometheus text format) for the tests,
//!   the load harness and the demo.
//!
//! Entry points:
//! - in-process: [`elevenlabs::spawn`]`(ElevenLabsConfig)` / [`twilio_rest::spawn`]`(RestConfig)`
//!   bind `127.0.0.1:0` and return a handle with `addr`, `base_url()`, the shared recorder and
//!   `shutdown()`; `run(listener, config, …, shutdown)` when the caller owns the listener;
//! - command line: [`elevenlabs::serve`]`(addr, scenarios_dir, api_key, shutdown)` and
//!   [`twilio_rest::serve`]`(addr, RestConfig, shutdown)`;
//! - a call: [`caller::run_call`]`(ws_url, CallParams, &scenario.caller, CallerOptions)` →
//!   [`caller::CallResult`] (use [`caller::stream_from_twiml`] to take the URL and parameters
//!   from the edge's TwiML, and `RestRecorder::wait_call_update` as the stop signal).
#![forbid(unsafe_code)]

pub mod caller;
pub mod elevenlabs;
pub mod exposition;
pub mod scenario;
pub mod scripted;
pub mod stored_agent;
pub mod synth;
pub mod twilio_rest;
pub mod twiml;
pub mod vad;
pub mod workspace;
