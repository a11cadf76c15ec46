//! The bridge: Twilio Media Streams ⇄ ElevenLabs Conversational AI, with tool policies and call
//! records.
//!
//! Modules:
//! - [`ports`]: the async traits the bridge depends on (configuration, tools, call-record sink).
#![forbid(unsafe_code)]

pub mod ports;
