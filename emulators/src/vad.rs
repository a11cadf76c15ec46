//! Energy-based voice activity detection, sans-IO, on sample counts (not wall time), so the
//! emulator behaves the same at any simulation speed.
//!
//! Rule (deterministic): 20 ms frames; a frame is speech when its RMS exceeds
//! [`Vad::THRESHOLD_RMS`]. An utterance starts after 2 consecutive speech frames (40 ms) and ends
//! after [`Vad::END_SILENCE_MS`] of non-speech frames.

/// What the detector saw, with the stream position (ms since the first sample).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadEvent {
    SpeechStart { at_ms: u64 },
    SpeechEnd { at_ms: u64 },
}

/// Streaming detector for one mono stream.
#[derive(Debug, Clone)]
pub struct Vad {
    rate: u32,
    frame: usize,
    acc: f64,
    acc_n: usize,
    samples_seen: u64,
    speaking: bool,
    speech_run: u32,
    silence_run: u32,
}

impl Vad {
    pub const THRESHOLD_RMS: f64 = 500.0;
    pub const END_SILENCE_MS: u32 = 400;
    const START_FRAMES: u32 = 2;

    pub fn new(rate: u32) -> Self {
        let rate = rate.max(1000);
        Vad {
            rate,
            frame: rate as usize / 50,
            acc: 0.0,
            acc_n: 0,
            samples_seen: 0,
            speaking: false,
            speech_run: 0,
            silence_run: 0,
        }
    }

    /// Position of the stream in ms.
    pub fn now_ms(&self) -> u64 {
        self.samples_seen * 1000 / self.rate as u64
    }

    /// True between a start and an end.
    pub fn is_speaking(&self) -> bool {
        self.speaking
    }

    /// Feed samples; returns the events they caused, in order.
    pub fn push(&mut self, samples: &[i16]) -> Vec<VadEvent> {
        let mut events = Vec::new();
        for &s in samples {
            self.acc += (s as f64) * (s as f64);
            self.acc_n += 1;
            self.samples_seen += 1;
            if self.acc_n == self.frame {
                let rms = (self.acc / self.acc_n as f64).sqrt();
                self.acc = 0.0;
                self.acc_n = 0;
                self.frame_done(rms >= Self::THRESHOLD_RMS, &mut events);
            }
        }
        events
    }

    fn frame_done(&mut self, speech: bool, events: &mut Vec<VadEvent>) {
        let now = self.now_ms();
        if speech {
            self.speech_run += 1;
            self.silence_run = 0;
            if !self.speaking && self.speech_run >= Self::START_FRAMES {
                self.speaking = true;
                events.push(VadEvent::SpeechStart {
                    at_ms: now.saturating_sub(20 * Self::START_FRAMES as u64),
                });
            }
        } else {
            self.speech_run = 0;
            self.silence_run += 1;
            if self.speaking && self.silence_run * 20 >= Self::END_SILENCE_MS {
                self.speaking = false;
                events.push(VadEvent::SpeechEnd {
                    at_ms: now.saturating_sub(Self::END_SILENCE_MS as u64),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{synthesize, Voice};

    #[test]
    fn detects_one_utterance_with_word_gaps() {
        let speech = synthesize(
            "Hello, I would like to order a pizza. Thanks.",
            Voice::CALLER,
            8000,
        );
        let mut v = Vad::new(8000);
        let mut ev = v.push(&vec![0i16; 8000]);
        assert!(ev.is_empty());
        ev.extend(v.push(&speech));
        ev.extend(v.push(&vec![0i16; 8000]));
        assert_eq!(ev.len(), 2, "{ev:?}");
        let VadEvent::SpeechStart { at_ms: s } = ev[0] else {
            panic!()
        };
        let VadEvent::SpeechEnd { at_ms: e } = ev[1] else {
            panic!()
        };
        assert!((1000..1100).contains(&s), "start {s}");
        let expected_end = 1000 + speech.len() as u64 / 8;
        assert!(e.abs_diff(expected_end) < 100, "end {e} vs {expected_end}");
    }

    #[test]
    fn short_clicks_and_quiet_noise_are_not_speech() {
        let mut v = Vad::new(16000);
        let mut x = vec![0i16; 16000];
        for (i, s) in x.iter_mut().enumerate() {
            *s = if i % 7 == 0 { 300 } else { -200 };
        }
        x[5130..5230].iter_mut().for_each(|s| *s = 20000); // 6 ms click inside one frame
        assert!(v.push(&x).is_empty());
    }
}
