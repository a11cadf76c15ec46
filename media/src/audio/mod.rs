//! Audio primitives for telephony: G.711 μ-law, PCM16 little-endian, a streaming resampler,
//! ElevenLabs audio format names, a format-to-format converter and a stereo WAV writer.
//!
//! - [`mulaw`]: exact G.711 μ-law encode/decode (the Sun reference algorithm).
//! - [`pcm`]: PCM16 LE bytes ⇄ `i16` samples.
//! - [`resample`]: windowed-sinc (Kaiser) polyphase rational resampler, streaming, with filter
//!   banks shared between instances.
//! - [`Format`]: `ulaw_8000`, `pcm_16000`, … as ElevenLabs names them.
//! - [`Converter`]: bytes in one format → bytes in another, streaming (decode → resample → encode).
//! - [`wav`]: stereo 16-bit WAV (caller left, agent right).
use std::fmt;
use std::str::FromStr;

use crate::CodecError;

pub mod mulaw;
pub mod pcm;
pub mod resample;
pub mod wav;

pub use resample::Resampler;

/// An audio encoding + sample rate as ElevenLabs names it (`ulaw_8000`, `pcm_16000`, …). Always mono.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// G.711 μ-law at 8 kHz: what Twilio Media Streams carry.
    Ulaw8000,
    /// Signed 16-bit little-endian PCM at the given rate.
    Pcm(u32),
}

/// The PCM rates ElevenLabs documents for agent output and user input (`pcm_8000` …
/// `pcm_48000`: the ConvAI AsyncAPI enums and the official SDK's `tts_output_format` /
/// `asr_input_format`).
pub const PCM_RATES: [u32; 6] = [8000, 16000, 22050, 24000, 44100, 48000];

/// Every format name an ElevenLabs agent may use, both ways: the list restaurant configurations
/// are checked against, each of which parses to a [`Format`].
pub use pulsara_core::agent::AUDIO_FORMATS as FORMAT_NAMES;

impl Format {
    /// The default ElevenLabs agent format.
    pub const PCM_16000: Format = Format::Pcm(16000);

    /// Samples per second.
    pub fn sample_rate(self) -> u32 {
        match self {
            Format::Ulaw8000 => 8000,
            Format::Pcm(r) => r,
        }
    }

    /// Bytes per sample (1 for μ-law, 2 for PCM16).
    pub fn bytes_per_sample(self) -> usize {
        match self {
            Format::Ulaw8000 => 1,
            Format::Pcm(_) => 2,
        }
    }

    /// Bytes of audio per second.
    pub fn bytes_per_second(self) -> usize {
        self.sample_rate() as usize * self.bytes_per_sample()
    }

    /// Duration in milliseconds of `bytes` bytes of audio in this format.
    pub fn duration_ms(self, bytes: usize) -> u64 {
        (bytes as u64 * 1000) / self.bytes_per_second() as u64
    }

    /// Decode bytes in this format to PCM16 samples at [`Format::sample_rate`].
    /// A trailing odd byte of PCM is ignored.
    pub fn decode(self, bytes: &[u8], out: &mut Vec<i16>) {
        match self {
            Format::Ulaw8000 => out.extend(bytes.iter().map(|&b| mulaw::decode(b))),
            Format::Pcm(_) => pcm::bytes_to_samples_into(bytes, out),
        }
    }

    /// Encode PCM16 samples (already at this format's rate) to bytes.
    pub fn encode(self, samples: &[i16], out: &mut Vec<u8>) {
        match self {
            Format::Ulaw8000 => out.extend(samples.iter().map(|&s| mulaw::encode(s))),
            Format::Pcm(_) => pcm::samples_to_bytes_into(samples, out),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Format::Ulaw8000 => f.write_str("ulaw_8000"),
            Format::Pcm(r) => write!(f, "pcm_{r}"),
        }
    }
}

impl FromStr for Format {
    type Err = CodecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "ulaw_8000" {
            return Ok(Format::Ulaw8000);
        }
        if let Some(rate) = s.strip_prefix("pcm_") {
            if let Ok(r) = rate.parse::<u32>() {
                if PCM_RATES.contains(&r) {
                    return Ok(Format::Pcm(r));
                }
            }
        }
        Err(CodecError::UnknownFormat(s.chars().take(32).collect()))
    }
}

impl serde::Serialize for Format {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Format {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Streaming converter from one [`Format`] to another: decode → resample (if the rates differ) →
/// encode. Keeps resampler state between calls, so feed it consecutive chunks of one stream.
/// Identity conversions copy bytes (callers that can should pass base64 through instead).
pub struct Converter {
    from: Format,
    to: Format,
    resampler: Option<Resampler>,
    // Scratch buffers reused between calls; they grow to the largest chunk seen.
    decoded: Vec<i16>,
    resampled: Vec<i16>,
    // A dangling odd PCM byte carried to the next chunk.
    carry: Option<u8>,
}

impl Converter {
    /// A converter for one stream.
    pub fn new(from: Format, to: Format) -> Self {
        let resampler = (from.sample_rate() != to.sample_rate())
            .then(|| Resampler::new(from.sample_rate(), to.sample_rate()));
        Converter {
            from,
            to,
            resampler,
            decoded: Vec::new(),
            resampled: Vec::new(),
            carry: None,
        }
    }

    /// Input format.
    pub fn from(&self) -> Format {
        self.from
    }

    /// Output format.
    pub fn to(&self) -> Format {
        self.to
    }

    /// True when input and output are the same format.
    pub fn is_identity(&self) -> bool {
        self.from == self.to
    }

    /// Convert one chunk, appending to `out`.
    pub fn process(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if self.is_identity() {
            out.extend_from_slice(input);
            return;
        }
        self.decoded.clear();
        match (self.from, self.carry.take()) {
            (Format::Pcm(_), Some(b)) if !input.is_empty() => {
                self.decoded.push(i16::from_le_bytes([b, input[0]]));
                self.decode_tail(&input[1..]);
            }
            (_, carry) => {
                self.carry = carry;
                self.decode_tail(input);
            }
        }
        match &mut self.resampler {
            Some(r) => {
                self.resampled.clear();
                r.process(&self.decoded, &mut self.resampled);
                self.to.encode(&self.resampled, out);
            }
            None => self.to.encode(&self.decoded, out),
        }
    }

    fn decode_tail(&mut self, input: &[u8]) {
        if let Format::Pcm(_) = self.from {
            if input.len() % 2 == 1 {
                self.carry = input.last().copied();
                self.from
                    .decode(&input[..input.len() - 1], &mut self.decoded);
                return;
            }
        }
        self.from.decode(input, &mut self.decoded);
    }

    /// Convert one chunk into a new vector.
    pub fn convert(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len() * 6);
        self.process(input, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names() {
        for (s, f) in [
            ("ulaw_8000", Format::Ulaw8000),
            ("pcm_8000", Format::Pcm(8000)),
            ("pcm_16000", Format::Pcm(16000)),
            ("pcm_22050", Format::Pcm(22050)),
            ("pcm_24000", Format::Pcm(24000)),
            ("pcm_44100", Format::Pcm(44100)),
            ("pcm_48000", Format::Pcm(48000)),
        ] {
            assert_eq!(s.parse::<Format>().unwrap(), f);
            assert_eq!(f.to_string(), s);
            assert_eq!(serde_json::to_string(&f).unwrap(), format!("\"{s}\""));
            assert_eq!(
                serde_json::from_str::<Format>(&format!("\"{s}\"")).unwrap(),
                f
            );
        }
        for &name in FORMAT_NAMES {
            assert_eq!(name.parse::<Format>().unwrap().to_string(), name);
        }
        for bad in [
            "ulaw_16000",
            "pcm_32000",
            "alaw_8000",
            "pcm_16001",
            "pcm_",
            "mp3_44100_128",
            "",
            "PCM_16000",
        ] {
            assert!(
                matches!(bad.parse::<Format>(), Err(CodecError::UnknownFormat(_))),
                "{bad}"
            );
        }
        assert_eq!(Format::Ulaw8000.duration_ms(160), 20);
        assert_eq!(Format::Pcm(16000).duration_ms(640), 20);
    }

    #[test]
    fn converter_ulaw_to_pcm16k_and_back_preserves_length_and_signal() {
        let tone: Vec<i16> = (0..8000)
            .map(|i| {
                ((i as f64 * 2.0 * std::f64::consts::PI * 440.0 / 8000.0).sin() * 8000.0) as i16
            })
            .collect();
        let mut ulaw = Vec::new();
        Format::Ulaw8000.encode(&tone, &mut ulaw);
        let mut up = Converter::new(Format::Ulaw8000, Format::Pcm(16000));
        let mut down = Converter::new(Format::Pcm(16000), Format::Ulaw8000);
        let mut pcm = Vec::new();
        let mut back = Vec::new();
        // Feed in 160-byte frames with odd splits on the PCM side to exercise the carry.
        for frame in ulaw.chunks(160) {
            let p = up.convert(frame);
            let (a, b) = p.split_at(p.len() / 2 + 1);
            down.process(a, &mut back);
            down.process(b, &mut back);
            pcm.extend_from_slice(&p);
        }
        assert_eq!(pcm.len(), 8000 * 2 * 2);
        assert!((back.len() as i64 - 8000).abs() <= 2, "{}", back.len());
        // Energy survives both ways.
        let mut s = Vec::new();
        Format::Ulaw8000.decode(&back[200..7800], &mut s);
        let rms = (s.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / s.len() as f64).sqrt();
        assert!((rms - 8000.0 / 2f64.sqrt()).abs() < 400.0, "rms {rms}");
        let id = Converter::new(Format::Ulaw8000, Format::Ulaw8000);
        assert!(id.is_identity());
    }
}
