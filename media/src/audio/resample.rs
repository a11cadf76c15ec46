//! Streaming rational resampler: a Kaiser-windowed sinc low-pass filter in polyphase form.
//!
//! For `in_rate → out_rate` with `L/M = out/in` in lowest terms, each output sample is the dot
//! product of the last `K` input samples with one of `L` filter phases (`K` taps per phase, grown
//! with the decimation factor so the anti-alias filter keeps its sharpness). The cut-off sits a
//! little below the lower of the two Nyquist frequencies, so 8 kHz telephony audio keeps its
//! full 300–3400 Hz band and anything that would alias is stopped (Kaiser β = 8.6, ≈ 85 dB).
//!
//! Filter banks are computed once per rate pair and shared (`Arc`) by every stream, so a call
//! holds only its history (`K` samples) and a position counter.
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Taps per phase when not decimating.
const BASE_TAPS: usize = 32;
const KAISER_BETA: f64 = 8.6;
/// Cut-off as a fraction of the lower Nyquist frequency.
const ROLLOFF: f64 = 0.92;

/// A polyphase filter bank for one rate pair.
#[derive(Debug)]
struct Bank {
    up: usize,
    down: usize,
    taps: usize,
    /// `coeffs[phase * taps + j]` multiplies input `x[i + 1 - taps + j]` (stored time-reversed
    /// so the dot product walks both slices forwards and vectorises).
    coeffs: Vec<f32>,
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Zeroth-order modified Bessel function of the first kind (series).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let y = x * x / 4.0;
    for k in 1..64 {
        term *= y / (k * k) as f64;
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum
}

impl Bank {
    fn design(in_rate: u32, out_rate: u32) -> Bank {
        let g = gcd(in_rate as usize, out_rate as usize);
        let up = out_rate as usize / g;
        let down = in_rate as usize / g;
        let taps = if down > up {
            (BASE_TAPS * down).div_ceil(up)
        } else {
            BASE_TAPS
        };
        let n = taps * up;
        // Cut-off in cycles per sample at the virtual rate in_rate * up.
        let fc = 0.5 / up.max(down) as f64 * ROLLOFF;
        let center = (n - 1) as f64 / 2.0;
        let i0b = bessel_i0(KAISER_BETA);
        let mut proto = vec![0f64; n];
        for (m, h) in proto.iter_mut().enumerate() {
            let t = m as f64 - center;
            let sinc = if t == 0.0 {
                2.0 * fc
            } else {
                (2.0 * std::f64::consts::PI * fc * t).sin() / (std::f64::consts::PI * t)
            };
            let r = t / (n as f64 / 2.0);
            let w = if r.abs() <= 1.0 {
                bessel_i0(KAISER_BETA * (1.0 - r * r).sqrt()) / i0b
            } else {
                0.0
            };
            *h = sinc * w;
        }
        // Polyphase split; normalise each phase to unit DC gain (exact DC, no phase ripple).
        let mut coeffs = vec![0f32; n];
        for p in 0..up {
            let sum: f64 = (0..taps).map(|k| proto[p + k * up]).sum();
            for k in 0..taps {
                coeffs[p * taps + (taps - 1 - k)] = (proto[p + k * up] / sum) as f32;
            }
        }
        Bank {
            up,
            down,
            taps,
            coeffs,
        }
    }

    fn shared(in_rate: u32, out_rate: u32) -> Arc<Bank> {
        type Banks = Mutex<HashMap<(u32, u32), Arc<Bank>>>;
        static BANKS: OnceLock<Banks> = OnceLock::new();
        let banks = BANKS.get_or_init(Default::default);
        let mut map = banks.lock().unwrap_or_else(|p| p.into_inner());
        map.entry((in_rate, out_rate))
            .or_insert_with(|| Arc::new(Bank::design(in_rate, out_rate)))
            .clone()
    }
}

/// A streaming resampler for one mono stream. Feed consecutive chunks to [`Resampler::process`];
/// the filter state carries across chunks, so chunk boundaries are inaudible. The output lags
/// the input by about `K/2` input samples (2 ms at 8 kHz).
#[derive(Debug, Clone)]
pub struct Resampler {
    bank: Arc<Bank>,
    in_rate: u32,
    out_rate: u32,
    /// The last `taps - 1` input samples, then the current chunk while processing.
    buf: Vec<f32>,
    /// Position of the next output, in units of 1/up input samples, relative to `buf[0]`.
    pos: usize,
}

impl Resampler {
    /// A resampler from `in_rate` to `out_rate` Hz (any positive rates; telephony uses 8000 ⇄
    /// 16000/22050/24000/44100).
    ///
    /// # Panics
    /// Never for positive rates; a zero rate is treated as 8000 Hz.
    pub fn new(in_rate: u32, out_rate: u32) -> Self {
        let in_rate = if in_rate == 0 { 8000 } else { in_rate };
        let out_rate = if out_rate == 0 { 8000 } else { out_rate };
        let bank = Bank::shared(in_rate, out_rate);
        let hist = bank.taps - 1;
        Resampler {
            pos: hist * bank.up,
            buf: vec![0.0; hist],
            bank,
            in_rate,
            out_rate,
        }
    }

    /// Input rate in Hz.
    pub fn in_rate(&self) -> u32 {
        self.in_rate
    }

    /// Output rate in Hz.
    pub fn out_rate(&self) -> u32 {
        self.out_rate
    }

    /// Resample one chunk, appending to `out`.
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        let Bank {
            up,
            down,
            taps,
            ref coeffs,
        } = *self.bank;
        self.buf.extend(input.iter().map(|&s| s as f32));
        out.reserve(input.len() * up / down + 2);
        loop {
            let i = self.pos / up;
            if i >= self.buf.len() {
                break;
            }
            let phase = self.pos % up;
            let h = &coeffs[phase * taps..(phase + 1) * taps];
            let x = &self.buf[i + 1 - taps..=i];
            let acc = dot(h, x);
            out.push(acc.round().clamp(i16::MIN as f32, i16::MAX as f32) as i16);
            self.pos += down;
        }
        // Keep the last taps-1 samples as history.
        let drop = self.buf.len() - (taps - 1);
        self.buf.drain(..drop);
        self.pos -= drop * up;
    }

    /// Resample one chunk into a new vector.
    pub fn process_vec(&mut self, input: &[i16]) -> Vec<i16> {
        let mut v = Vec::new();
        self.process(input, &mut v);
        v
    }
}

/// Dot product with 8 independent accumulators (lets the compiler use SIMD lanes).
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    fn tone(freq: f64, rate: u32, secs: f64, amp: f64) -> Vec<i16> {
        let n = (rate as f64 * secs) as usize;
        (0..n)
            .map(|i| (amp * (2.0 * PI * freq * i as f64 / rate as f64).sin()).round() as i16)
            .collect()
    }

    fn run_chunked(r: &mut Resampler, x: &[i16], chunk: usize) -> Vec<i16> {
        let mut out = Vec::new();
        for c in x.chunks(chunk) {
            r.process(c, &mut out);
        }
        out
    }

    fn rms(x: &[i16]) -> f64 {
        (x.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
    }

    /// SNR of `y` against the best-fitting sinusoid of `freq` (least squares on sin/cos).
    fn snr_db(y: &[i16], freq: f64, rate: u32) -> f64 {
        let (mut ss, mut sc, mut cc, mut ys, mut yc) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for (i, &v) in y.iter().enumerate() {
            let w = 2.0 * PI * freq * i as f64 / rate as f64;
            let (s, c) = (w.sin(), w.cos());
            ss += s * s;
            sc += s * c;
            cc += c * c;
            ys += v as f64 * s;
            yc += v as f64 * c;
        }
        let det = ss * cc - sc * sc;
        let a = (ys * cc - yc * sc) / det;
        let b = (yc * ss - ys * sc) / det;
        let (mut sig, mut noise) = (0.0, 0.0);
        for (i, &v) in y.iter().enumerate() {
            let w = 2.0 * PI * freq * i as f64 / rate as f64;
            let fit = a * w.sin() + b * w.cos();
            sig += fit * fit;
            noise += (v as f64 - fit).powi(2);
        }
        10.0 * (sig / noise).log10()
    }

    #[test]
    fn tone_survives_8k_16k_8k_with_high_snr() {
        let x = tone(1000.0, 8000, 1.0, 12000.0);
        let mut up = Resampler::new(8000, 16000);
        let mut down = Resampler::new(16000, 8000);
        let y16 = run_chunked(&mut up, &x, 160);
        assert_eq!(y16.len(), 16000);
        let y8 = run_chunked(&mut down, &y16, 320);
        assert_eq!(y8.len(), 8000);
        // Skip the filter start-up.
        let snr16 = snr_db(&y16[400..15600], 1000.0, 16000);
        let snr8 = snr_db(&y8[200..7800], 1000.0, 8000);
        assert!(snr16 > 60.0, "8k→16k SNR {snr16:.1} dB");
        assert!(snr8 > 55.0, "8k→16k→8k SNR {snr8:.1} dB");
        let gain = rms(&y8[200..7800]) / rms(&x[200..7800]);
        assert!((gain - 1.0).abs() < 0.01, "gain {gain}");
    }

    #[test]
    fn out_of_band_tone_is_attenuated_when_downsampling() {
        // 6 kHz at 16 kHz is above the 4 kHz Nyquist of 8 kHz: it must not alias down to 2 kHz.
        let x = tone(6000.0, 16000, 0.5, 12000.0);
        let y = Resampler::new(16000, 8000).process_vec(&x);
        let atten = 20.0 * (rms(&y[200..]) / rms(&x)).log10();
        assert!(atten < -60.0, "6 kHz only attenuated by {atten:.1} dB");
        // Same for 44.1 kHz → 8 kHz with a 10 kHz tone.
        let x = tone(10000.0, 44100, 0.5, 12000.0);
        let y = Resampler::new(44100, 8000).process_vec(&x);
        let atten = 20.0 * (rms(&y[200..]) / rms(&x)).log10();
        assert!(
            atten < -60.0,
            "10 kHz at 44.1k only attenuated by {atten:.1} dB"
        );
    }

    #[test]
    fn all_telephony_rates_preserve_an_in_band_tone_and_length() {
        for rate in crate::audio::PCM_RATES.into_iter().filter(|&r| r != 8000) {
            let x = tone(700.0, 8000, 1.0, 10000.0);
            let mut up = Resampler::new(8000, rate);
            let y = run_chunked(&mut up, &x, 160);
            assert!(
                (y.len() as i64 - rate as i64).abs() <= 1,
                "{rate}: {}",
                y.len()
            );
            let snr = snr_db(&y[rate as usize / 20..rate as usize * 19 / 20], 700.0, rate);
            assert!(snr > 50.0, "8k→{rate} SNR {snr:.1}");
            let mut down = Resampler::new(rate, 8000);
            let z = run_chunked(&mut down, &y, 441);
            assert!((z.len() as i64 - 8000).abs() <= 1, "{rate}→8k: {}", z.len());
            let snr = snr_db(&z[400..7600], 700.0, 8000);
            assert!(snr > 45.0, "{rate}→8k SNR {snr:.1}");
        }
    }

    #[test]
    fn chunking_does_not_change_output() {
        let x = tone(440.0, 8000, 0.3, 9000.0);
        let a = run_chunked(&mut Resampler::new(8000, 22050), &x, 7);
        let b = run_chunked(&mut Resampler::new(8000, 22050), &x, 160);
        let c = Resampler::new(8000, 22050).process_vec(&x);
        assert_eq!(a, b);
        assert_eq!(b, c);
    }

    #[test]
    fn extreme_input_saturates_without_panic() {
        let x: Vec<i16> = (0..1000)
            .map(|i| if i % 2 == 0 { i16::MAX } else { i16::MIN })
            .collect();
        let y = Resampler::new(8000, 16000).process_vec(&x);
        assert_eq!(y.len(), 2000);
        let _ = Resampler::new(0, 0).process_vec(&[]);
    }
}
