//! Sans-IO media layer shared by the bridge and the emulators.
//!
//! Modules:
//! - [`twilio`]: Twilio Media Streams JSON messages in both directions (`Inbound` = Twilio → server,
//!   `Outbound` = server → Twilio). Media payloads stay base64 text borrowed from the frame, so the
//!   bridge can pass μ-law audio through without decoding.
//! - [`convai`]: ElevenLabs Conversational AI WebSocket messages in both directions
//!   (`ClientMessage` = us → ElevenLabs, `ServerMessage` = ElevenLabs → us).
//! - [`audio`]: G.711 μ-law, PCM16 little-endian, a streaming windowed-sinc polyphase resampler,
//!   the ElevenLabs audio `Format` names, a format-to-format [`audio::Converter`], and a stereo WAV writer.
//!
//! Data flow in the bridge: a Twilio text frame → [`twilio::parse_inbound`] → (pass-through or
//! [`audio::Converter`]) → [`convai::user_audio_chunk_json`]; the reverse way
//! [`convai::parse_server`] → [`twilio::media_json`] + [`twilio::mark_json`].
//!
//! Nothing here touches sockets or clocks; every parser bounds its input size and returns a typed
//! [`CodecError`] instead of panicking.
#![forbid(unsafe_code)]

pub mod audio;
pub mod convai;
pub mod twilio;

mod json;

/// Why a message could not be parsed or built.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The frame is larger than the codec accepts; the peer is misbehaving or hostile.
    #[error("message of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    /// Not valid JSON, or JSON of the wrong shape.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A message type that requires a field arrived without it.
    #[error("`{event}` message is missing `{field}`")]
    MissingField {
        event: &'static str,
        field: &'static str,
    },
    /// A message type this direction of the protocol does not allow.
    #[error("unknown or unexpected message type `{0}`")]
    UnknownType(String),
    /// A payload that must be base64 is not.
    #[error("payload is not valid base64")]
    InvalidBase64,
    /// An audio format name that is not one of the documented ones.
    #[error("unknown audio format `{0}` (expected ulaw_8000, pcm_8000, pcm_16000, pcm_22050, pcm_24000, pcm_44100 or pcm_48000)")]
    UnknownFormat(String),
}

impl CodecError {
    fn malformed(e: serde_json::Error) -> Self {
        CodecError::Malformed(e.to_string())
    }
}

/// Standard base64 alphabet check (with `=` padding) without decoding: the pass-through path only
/// needs to know the text is safe to splice into JSON and plausible audio.
pub fn is_valid_base64(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() & 3 != 0 {
        return false;
    }
    let pad = b.iter().rev().take_while(|&&c| c == b'=').count();
    if pad > 2 {
        return false;
    }
    b[..b.len() - pad]
        .iter()
        .all(|&c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_check() {
        assert!(is_valid_base64(""));
        assert!(is_valid_base64("AAAA"));
        assert!(is_valid_base64("//+A"));
        assert!(is_valid_base64("AA=="));
        assert!(is_valid_base64("AAA="));
        assert!(!is_valid_base64("AAA"));
        assert!(!is_valid_base64("A==="));
        assert!(!is_valid_base64("AA\"}"));
        assert!(!is_valid_base64("A=AA"));
    }
}
