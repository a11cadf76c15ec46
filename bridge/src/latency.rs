//! What the caller waits for, measured on one call, sans-IO: the first agent audio, each agent
//! response after the caller spoke (the turn), each barge-in, and the caller audio held while the
//! agent connected. The machine feeds it call times (ms since the stream started); the I/O shell
//! adds the bridge's own share of each wait (µs spent between reading a message and writing what
//! it caused), which only it can see.
//!
//! The end of the caller's speech is the last caller frame whose energy is above
//! [`VOICED_RMS`]: the bridge does not wait for ElevenLabs' transcript to know when the caller
//! stopped, so a turn measures what the caller felt, including the agent's recognition and
//! thinking.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use pulsara_core::call_record::{CallLatency, MAX_LATENCY_SAMPLES};
use pulsara_media::audio::mulaw;

/// A caller frame (μ-law, 8 kHz) is speech when its RMS is above this (about -37 dBFS: well over
/// telephone line noise, well under any voice).
pub const VOICED_RMS: i64 = 450;

/// Frame length of Twilio's caller audio, ms.
const FRAME_MS: u64 = 20;

/// Which wait the next bridge share belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Share {
    FirstAudio,
    Turn,
}

/// One call's waits, as they happen.
#[derive(Debug, Default)]
pub struct Latency {
    rec: CallLatency,
    /// The bridge's time from `start` to asking for the agent session, µs.
    start_us: Option<u64>,
    /// End (ms) of the last voiced caller frame.
    last_voiced_end_ms: Option<u64>,
    /// The caller spoke since the agent's last response began.
    spoke: bool,
    /// The first audio or a turn just measured, waiting for the shell's share.
    pending_share: Option<Share>,
    early_first_ms: Option<u64>,
    last_caller_ms: u64,
}

impl Latency {
    /// A caller frame (base64 μ-law) at `now_ms`: notes whether the caller is speaking.
    pub fn on_caller_frame(&mut self, payload_b64: &str, now_ms: u64) {
        self.last_caller_ms = now_ms;
        if voiced(payload_b64) {
            self.last_voiced_end_ms = Some(now_ms + FRAME_MS);
            self.spoke = true;
        }
    }

    /// A caller frame held because the agent is not ready yet.
    pub fn on_early_frame(&mut self, now_ms: u64) {
        self.rec.early_frames += 1;
        self.early_first_ms.get_or_insert(now_ms);
    }

    /// The agent became ready and the held frames were delivered.
    pub fn on_early_flushed(&mut self) {
        if let Some(first) = self.early_first_ms.take() {
            self.rec.early_wait_ms = self.rec.early_wait_ms.max(self.last_caller_ms.saturating_sub(first));
        }
    }

    /// The first audio frame of an agent response is being sent to Twilio at `now_ms`.
    pub fn on_response_audio(&mut self, now_ms: u64) {
        if self.rec.first_audio_ms.is_none() {
            self.rec.first_audio_ms = Some(now_ms);
            self.pending_share = Some(Share::FirstAudio);
        } else if let (true, Some(end)) = (self.spoke, self.last_voiced_end_ms) {
            if self.rec.turn_ms.len() < MAX_LATENCY_SAMPLES {
                self.rec.turn_ms.push(now_ms.saturating_sub(end));
                self.pending_share = Some(Share::Turn);
            }
        }
        self.spoke = false;
    }

    /// The shell's time from reading `start` to asking ElevenLabs for the session.
    pub fn note_start_share(&mut self, us: u64) {
        self.start_us = Some(us);
    }

    /// The shell's time for the agent message just handled (read to written). Counted only when
    /// that message began a measured wait.
    pub fn note_frame_share(&mut self, us: u64) {
        match self.pending_share.take() {
            Some(Share::FirstAudio) => {
                self.rec.first_audio_bridge_us = Some(self.start_us.unwrap_or(0) + us);
            }
            Some(Share::Turn) => self.rec.turn_bridge_us.push(us),
            None => {}
        }
    }

    /// Whether the agent message just handled began a measured wait (the shell then times it).
    pub fn wants_share(&self) -> bool {
        self.pending_share.is_some()
    }

    /// An interruption read to `clear` written, µs.
    pub fn note_barge_in(&mut self, us: u64) {
        if self.rec.barge_in_us.len() < MAX_LATENCY_SAMPLES {
            self.rec.barge_in_us.push(us);
        }
    }

    /// The call adopted a session prepared ahead of its stream.
    pub fn note_prepared(&mut self) {
        self.rec.prepared = true;
    }

    /// The figures, or `None` when the agent never spoke and nothing was held.
    pub fn finish(self) -> Option<CallLatency> {
        let r = self.rec;
        (r.first_audio_ms.is_some() || r.early_frames > 0 || !r.barge_in_us.is_empty()).then_some(r)
    }
}

/// From the edge answering the voice webhook at `answered_ms` (unix ms, the edge's clock) to the
/// first audio sent at `first_audio_unix_ms` (the bridge's clock); `None` when the two clocks
/// disagree (negative, or over a minute).
pub fn from_webhook(answered_ms: i64, first_audio_unix_ms: i64) -> Option<u64> {
    let d = first_audio_unix_ms.checked_sub(answered_ms)?;
    (0..=60_000).contains(&d).then_some(d as u64)
}

/// Whether a base64 μ-law frame carries speech. Frames larger than Twilio's are not examined.
fn voiced(payload_b64: &str) -> bool {
    let mut buf = [0u8; 480];
    let Ok(n) = B64.decode_slice(payload_b64, &mut buf) else {
        return false;
    };
    if n == 0 {
        return false;
    }
    let energy: i64 = buf[..n].iter().map(|&b| i64::from(mulaw::decode(b)).pow(2)).sum();
    energy > VOICED_RMS * VOICED_RMS * n as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(level: i16) -> String {
        let bytes: Vec<u8> = (0..160).map(|i| mulaw::encode(if i % 2 == 0 { level } else { -level })).collect();
        B64.encode(bytes)
    }

    #[test]
    fn silence_and_line_noise_are_not_speech_a_voice_is() {
        assert!(!voiced(&frame(0)));
        assert!(!voiced(&frame(120)));
        assert!(voiced(&frame(3000)));
        assert!(!voiced("not base64!"));
        assert!(!voiced(&B64.encode(vec![0u8; 2000])), "oversized frames are not examined");
    }

    #[test]
    fn first_audio_then_turns_measured_from_the_end_of_speech() {
        let mut l = Latency::default();
        l.note_start_share(300);
        // Greeting at 900 ms; its frame took 40 µs in the bridge.
        l.on_response_audio(900);
        assert!(l.wants_share());
        l.note_frame_share(40);
        // The caller speaks 2000–2980 ms, then is silent.
        for t in (2000..3000).step_by(20) {
            l.on_caller_frame(&frame(4000), t);
        }
        for t in (3000..3600).step_by(20) {
            l.on_caller_frame(&frame(0), t);
        }
        l.on_response_audio(3700);
        l.note_frame_share(25);
        // More audio of the same response without the caller speaking again: no new turn.
        l.on_response_audio(3900);
        assert!(!l.wants_share());
        l.note_frame_share(99);
        l.note_barge_in(80);
        let r = l.finish().unwrap();
        assert_eq!(r.first_audio_ms, Some(900));
        assert_eq!(r.first_audio_bridge_us, Some(340));
        assert_eq!(r.turn_ms, [700]);
        assert_eq!(r.turn_bridge_us, [25]);
        assert_eq!(r.barge_in_us, [80]);
    }

    #[test]
    fn early_audio_wait_and_webhook_clock_disagreement() {
        let mut l = Latency::default();
        for t in (0..400).step_by(20) {
            l.on_caller_frame(&frame(0), t);
            l.on_early_frame(t);
        }
        l.on_early_flushed();
        let r = l.finish().unwrap();
        assert_eq!((r.early_frames, r.early_wait_ms), (20, 380));
        assert_eq!(from_webhook(1_000_000, 1_001_250), Some(1250));
        assert_eq!(from_webhook(2_000_000, 1_999_000), None, "the bridge's clock is behind");
        assert_eq!(from_webhook(0, 90_000), None, "over a minute: clocks disagree");
        assert_eq!(from_webhook(i64::MIN, i64::MAX), None);
        assert_eq!(Latency::default().finish(), None, "a call the agent never spoke on");
    }
}
