//! Deterministic speech-like audio for the emulators: there is no TTS here, but the audio must be
//! real sound with the rhythm of speech, so the bridge's transcoding, the emulator's voice
//! activity detection and the recordings all see something speech-shaped.
//!
//! Each word becomes one voiced segment per syllable (vowel groups in the spelling): a glottal
//! pulse train at the voice's pitch, shaped by two formant resonances chosen from the vowel
//! letter, with a short noise burst for a leading consonant and smooth attack/release. Pauses
//! separate syllables, words and sentences, so duration follows the text's length (about
//! 4 syllables per second). Same text + voice + rate → same samples, every time.
//! Results are cached (bounded) because load tests speak the same lines thousands of times.
//!
//! Intelligible speech, opt-in: with `PULSARA_SYNTH=espeak-ng` and `espeak-ng` installed
//! (Debian package `espeak-ng`), lines are spoken by espeak-ng instead (resampled to the target
//! rate with the media crate's resampler, normalised to the same loudness). Any failure falls
//! back to the built-in synthesizer, so nothing depends on it.
use std::collections::HashMap;
use std::f32::consts::PI;
use std::sync::{Arc, Mutex, OnceLock};

/// A speaker: pitch and a formant scale (larger = smaller vocal tract).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Voice {
    pub f0_hz: f32,
    pub formant_scale: f32,
}

impl Voice {
    /// The agent's voice (higher pitch).
    pub const AGENT: Voice = Voice {
        f0_hz: 200.0,
        formant_scale: 1.12,
    };
    /// The caller's voice (lower pitch).
    pub const CALLER: Voice = Voice {
        f0_hz: 118.0,
        formant_scale: 1.0,
    };
}

const SYLLABLE_MS: f32 = 170.0;
const SYLLABLE_GAP_MS: f32 = 35.0;
const WORD_GAP_MS: f32 = 90.0;
const SENTENCE_GAP_MS: f32 = 280.0;
const PEAK: f32 = 9000.0;

fn formants(vowel: char) -> (f32, f32) {
    match vowel {
        'a' => (730.0, 1090.0),
        'e' => (530.0, 1840.0),
        'i' | 'y' => (300.0, 2250.0),
        'o' => (570.0, 840.0),
        'u' => (320.0, 900.0),
        _ => (500.0, 1500.0),
    }
}

fn is_vowel(c: char) -> bool {
    matches!(c, 'a' | 'e' | 'i' | 'o' | 'u' | 'y')
}

/// One syllable: its vowel and whether a consonant precedes it.
struct Syllable {
    vowel: char,
    onset: bool,
}

fn syllables(word: &str) -> Vec<Syllable> {
    let mut out = Vec::new();
    let mut prev_vowel = false;
    let mut consonant = false;
    for c in word.chars().flat_map(char::to_lowercase) {
        if is_vowel(c) {
            if !prev_vowel {
                out.push(Syllable {
                    vowel: c,
                    onset: consonant,
                });
            }
            prev_vowel = true;
            consonant = false;
        } else if c.is_alphanumeric() {
            prev_vowel = false;
            consonant = true;
        }
    }
    if out.is_empty() && word.chars().any(char::is_alphanumeric) {
        // Digits, acronyms: one neutral syllable per two characters.
        let n = word
            .chars()
            .filter(|c| c.is_alphanumeric())
            .count()
            .div_ceil(2);
        for _ in 0..n {
            out.push(Syllable {
                vowel: 'e',
                onset: true,
            });
        }
    }
    out
}

/// Estimated spoken duration of `text` in milliseconds (what [`synthesize`] produces).
pub fn duration_ms(text: &str) -> u64 {
    (synthesize(text, Voice::AGENT, 8000).len() as u64 * 1000) / 8000
}

/// Synthesize `text` as PCM16 mono at `rate` Hz (cached).
pub fn synthesize(text: &str, voice: Voice, rate: u32) -> Arc<[i16]> {
    type Key = (String, u32, u32, u32, bool);
    static CACHE: OnceLock<Mutex<HashMap<Key, Arc<[i16]>>>> = OnceLock::new();
    const CACHE_MAX: usize = 256;
    let use_espeak = std::env::var("PULSARA_SYNTH").is_ok_and(|v| v == "espeak-ng");
    let key = (
        text.to_owned(),
        voice.f0_hz.to_bits(),
        voice.formant_scale.to_bits(),
        rate,
        use_espeak,
    );
    let cache = CACHE.get_or_init(Default::default);
    if let Some(hit) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return hit.clone();
    }
    let rate = rate.max(8000);
    let rendered = if use_espeak {
        espeak(text, voice, rate)
    } else {
        None
    };
    let samples: Arc<[i16]> = rendered.unwrap_or_else(|| render(text, voice, rate)).into();
    let mut map = cache.lock().unwrap_or_else(|p| p.into_inner());
    if map.len() >= CACHE_MAX {
        map.clear();
    }
    map.insert(key, samples.clone());
    samples
}

/// Speak `text` with espeak-ng (female voice for the agent, male for the caller) at `rate` Hz.
/// `None` when espeak-ng is missing or fails.
pub fn espeak(text: &str, voice: Voice, rate: u32) -> Option<Vec<i16>> {
    if text.trim().is_empty() {
        return Some(Vec::new());
    }
    let v = if voice.f0_hz > 150.0 {
        "en-us+f3"
    } else {
        "en-us+m3"
    };
    let out = std::process::Command::new("espeak-ng")
        .args(["-v", v, "-s", "165", "--stdout", "--", text])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let (src_rate, pcm) = parse_streamed_wav(&out.stdout)?;
    let samples = if src_rate == rate {
        pcm
    } else {
        pulsara_media::audio::Resampler::new(src_rate, rate).process_vec(&pcm)
    };
    let mut samples = compress_pauses(&samples, rate, 280);
    let peak = samples
        .iter()
        .map(|s| s.unsigned_abs())
        .max()
        .unwrap_or(0)
        .max(1) as f32;
    for s in &mut samples {
        *s = (*s as f32 / peak * PEAK).round() as i16;
    }
    Some(samples)
}

/// Trim leading/trailing silence and shorten every internal pause to at most `max_ms`, so a
/// sentence break inside one utterance never looks like the end of a turn (the VAD ends a turn
/// after 400 ms of silence). Silence = 10 ms windows with peak below 1/50 of the line's peak.
fn compress_pauses(x: &[i16], rate: u32, max_ms: u32) -> Vec<i16> {
    let win = (rate / 100).max(1) as usize;
    let peak = x.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
    let floor = (peak / 50).max(1);
    let loud: Vec<bool> = x
        .chunks(win)
        .map(|c| c.iter().any(|s| s.unsigned_abs() > floor))
        .collect();
    let (Some(first), Some(last)) = (loud.iter().position(|&l| l), loud.iter().rposition(|&l| l))
    else {
        return Vec::new();
    };
    let max_quiet = (max_ms as usize * rate as usize / 1000) / win;
    let mut out = Vec::with_capacity(x.len());
    let mut quiet_run = 0;
    for (i, chunk) in x.chunks(win).enumerate().take(last + 1).skip(first) {
        if loud[i] {
            quiet_run = 0;
        } else {
            quiet_run += 1;
            if quiet_run > max_quiet {
                continue;
            }
        }
        out.extend_from_slice(chunk);
    }
    out
}

/// espeak-ng writes a WAV to a pipe with placeholder sizes; read the format and take every
/// byte after the `data` tag.
fn parse_streamed_wav(b: &[u8]) -> Option<(u32, Vec<i16>)> {
    if b.len() < 44 || &b[0..4] != b"RIFF" || &b[8..12] != b"WAVE" || &b[12..16] != b"fmt " {
        return None;
    }
    let channels = u16::from_le_bytes([b[22], b[23]]);
    let rate = u32::from_le_bytes([b[24], b[25], b[26], b[27]]);
    let bits = u16::from_le_bytes([b[34], b[35]]);
    if channels != 1 || bits != 16 || rate == 0 {
        return None;
    }
    let data = b.windows(4).position(|w| w == b"data")? + 8;
    Some((
        rate,
        pulsara_media::audio::pcm::bytes_to_samples(b.get(data..)?),
    ))
}

/// A tiny deterministic noise source (xorshift32).
struct Noise(u32);
impl Noise {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        (self.0 as f32 / u32::MAX as f32) * 2.0 - 1.0
    }
}

fn silence(out: &mut Vec<f32>, rate: u32, ms: f32) {
    out.extend(std::iter::repeat_n(
        0.0,
        (rate as f32 * ms / 1000.0) as usize,
    ));
}

fn render(text: &str, voice: Voice, rate: u32) -> Vec<i16> {
    let mut out: Vec<f32> = Vec::new();
    let mut noise = Noise(0x9E37_79B9);
    let nyquist_cap = (rate as f32 / 2.0 * 0.85).min(3600.0);
    let words: Vec<&str> = text.split_whitespace().collect();
    let total_words = words.len().max(1) as f32;
    let mut phase = 0f32;
    for (wi, word) in words.iter().enumerate() {
        let syl = syllables(word);
        for (si, s) in syl.iter().enumerate() {
            if s.onset {
                // Consonant: 25 ms of shaped noise.
                let n = (rate as f32 * 0.025) as usize;
                for i in 0..n {
                    let env = (i as f32 / n as f32 * PI).sin();
                    out.push(noise.next() * 0.25 * env);
                }
            }
            // Pitch falls slowly across the utterance and rises a little on stressed syllables.
            let decl = 1.0 - 0.15 * (wi as f32 / total_words);
            let stress = if si == 0 { 1.06 } else { 0.98 };
            let f0 = voice.f0_hz * decl * stress;
            let (f1, f2) = formants(s.vowel);
            let (f1, f2) = (f1 * voice.formant_scale, f2 * voice.formant_scale);
            let n = (rate as f32 * SYLLABLE_MS / 1000.0) as usize;
            let harmonics = ((nyquist_cap / f0) as usize).max(1);
            // Harmonic amplitudes from two resonance curves.
            let amps: Vec<f32> = (1..=harmonics)
                .map(|k| {
                    let f = k as f32 * f0;
                    let r1 = 1.0 / (1.0 + ((f - f1) / 90.0).powi(2));
                    let r2 = 0.6 / (1.0 + ((f - f2) / 120.0).powi(2));
                    (r1 + r2 + 0.02) / (k as f32).sqrt()
                })
                .collect();
            let norm: f32 = amps.iter().sum::<f32>().max(1e-3);
            let step = 2.0 * PI * f0 / rate as f32;
            for i in 0..n {
                let t = i as f32 / n as f32;
                let env = (t * 8.0).min(1.0) * ((1.0 - t) * 6.0).min(1.0);
                let mut v = 0.0;
                for (k, a) in amps.iter().enumerate() {
                    v += a * ((k + 1) as f32 * phase).sin();
                }
                out.push(v / norm * env * 1.6);
                phase = (phase + step) % (2.0 * PI * 64.0);
            }
            if si + 1 < syl.len() {
                silence(&mut out, rate, SYLLABLE_GAP_MS);
            }
        }
        let ends_sentence = word.ends_with(['.', '!', '?']);
        let ends_clause = word.ends_with([',', ';', ':']);
        if wi + 1 < words.len() {
            silence(
                &mut out,
                rate,
                if ends_sentence {
                    SENTENCE_GAP_MS
                } else if ends_clause {
                    SENTENCE_GAP_MS * 0.6
                } else {
                    WORD_GAP_MS
                },
            );
        }
    }
    // Normalise to a fixed peak so every line has the same loudness.
    let peak = out.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    out.iter()
        .map(|v| (v / peak * PEAK).round() as i16)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rms(x: &[i16]) -> f64 {
        (x.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / x.len().max(1) as f64).sqrt()
    }

    #[test]
    fn deterministic_and_sized_by_text() {
        let a = synthesize("Two margheritas, please.", Voice::CALLER, 8000);
        let b = render("Two margheritas, please.", Voice::CALLER, 8000);
        assert_eq!(&a[..], &b[..]);
        let short = synthesize("Yes.", Voice::CALLER, 8000).len();
        let long = synthesize(
            "I would like to book a table for four people on Saturday evening.",
            Voice::CALLER,
            8000,
        )
        .len();
        assert!(long > short * 6, "{short} vs {long}");
        // About 4 syllables a second.
        let ms = duration_ms("I would like to book a table for four people on Saturday evening.");
        assert!((2500..6000).contains(&ms), "{ms} ms");
        assert!(synthesize("", Voice::AGENT, 8000).is_empty());
    }

    #[test]
    fn voices_differ_and_audio_is_loud_enough() {
        let a = synthesize("Hello there", Voice::AGENT, 8000);
        let c = synthesize("Hello there", Voice::CALLER, 8000);
        assert_ne!(&a[..], &c[..]);
        assert!(rms(&a) > 1500.0, "rms {}", rms(&a));
        assert!(a.iter().any(|&s| s.unsigned_abs() >= 8900));
    }

    #[test]
    fn pitch_is_the_voice_pitch() {
        let x = render(
            "aaaa",
            Voice {
                f0_hz: 125.0,
                formant_scale: 1.0,
            },
            8000,
        );
        let seg = &x[200..1200];
        // Autocorrelation peak between 40 and 100 samples (80–200 Hz) should sit at the period of
        // the stressed first syllable's pitch: 8000 / (125 × 1.06) ≈ 60.4 samples.
        let best = (40..100)
            .max_by_key(|&lag| {
                seg[..seg.len() - lag]
                    .iter()
                    .zip(&seg[lag..])
                    .map(|(a, b)| *a as i64 * *b as i64)
                    .sum::<i64>()
            })
            .unwrap();
        assert!((59..=62).contains(&best), "lag {best}");
    }

    #[test]
    fn espeak_ng_when_installed() {
        let installed = std::process::Command::new("espeak-ng")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !installed {
            eprintln!("espeak-ng not installed; the built-in synthesizer is the only engine here");
            assert!(espeak("hello", Voice::AGENT, 8000).is_none());
            return;
        }
        let x = espeak(
            "Buongiorno, Trattoria Roma, how can I help you?",
            Voice::AGENT,
            16000,
        )
        .unwrap();
        let secs = x.len() as f64 / 16000.0;
        assert!((1.5..5.0).contains(&secs), "{secs} s");
        assert!(x.iter().any(|&s| s.unsigned_abs() >= 8900));
        let mut vad = crate::vad::Vad::new(16000);
        let mut ev = vad.push(&x);
        ev.extend(vad.push(&vec![0; 16000]));
        assert!(ev.len() >= 2, "{ev:?}");
    }

    #[test]
    fn long_pauses_are_shortened() {
        let mut x = vec![0i16; 800];
        x.extend(std::iter::repeat_n(5000i16, 800));
        x.extend(vec![0i16; 8000]); // 1 s pause
        x.extend(std::iter::repeat_n(-5000i16, 800));
        x.extend(vec![0i16; 800]);
        let y = compress_pauses(&x, 8000, 280);
        // Leading/trailing silence gone; the pause is 280 ms (+ <10 ms rounding).
        assert_eq!(y.len(), 800 + 2240 + 800);
        assert_eq!(y[0], 5000);
        assert_eq!(*y.last().unwrap(), -5000);
    }

    #[test]
    fn streamed_wav_header_parsing() {
        let mut b = b"RIFF\xff\xff\xff\x7fWAVEfmt ".to_vec();
        b.extend_from_slice(&[
            16, 0, 0, 0, 1, 0, 1, 0, 0x22, 0x56, 0, 0, 0x44, 0xac, 0, 0, 2, 0, 16, 0,
        ]);
        b.extend_from_slice(b"data\x00\xf0\xff\x7f");
        b.extend_from_slice(&[1, 0, 0xff, 0xff]);
        assert_eq!(parse_streamed_wav(&b), Some((22050, vec![1, -1])));
        assert_eq!(parse_streamed_wav(b"RIFF"), None);
    }

    #[test]
    fn other_rates() {
        let x = synthesize("Table for two", Voice::AGENT, 16000);
        let y = synthesize("Table for two", Voice::AGENT, 8000);
        assert!((x.len() as i64 - 2 * y.len() as i64).abs() < 40);
    }
}
