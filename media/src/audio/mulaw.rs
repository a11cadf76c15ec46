//! G.711 μ-law companding, bit-exact with the ITU-T G.711 / Sun reference implementation
//! (bias 0x84, clip 32635, inverted output bits). Decoding uses a 256-entry table built at
//! compile time; encoding is a few integer operations per sample.

const BIAS: i32 = 0x84;
const CLIP: i32 = 32635;

const fn decode_slow(byte: u8) -> i16 {
    let u = !byte;
    let mut t = (((u & 0x0F) as i32) << 3) + BIAS;
    t <<= ((u & 0x70) >> 4) as i32;
    (if u & 0x80 != 0 { BIAS - t } else { t - BIAS }) as i16
}

const fn build_table() -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = decode_slow(i as u8);
        i += 1;
    }
    t
}

static DECODE: [i16; 256] = build_table();

/// μ-law byte → linear PCM16 sample.
#[inline]
pub fn decode(byte: u8) -> i16 {
    DECODE[byte as usize]
}

/// Linear PCM16 sample → μ-law byte.
#[inline]
pub fn encode(sample: i16) -> u8 {
    let mut pcm = sample as i32;
    let mask: u8 = if pcm < 0 {
        pcm = -pcm;
        0x7F
    } else {
        0xFF
    };
    pcm = pcm.min(CLIP) + BIAS;
    // Segment = position of the highest set bit above bit 7 (0..=7).
    let seg = (31 - (pcm as u32 | 0xFF).leading_zeros()) as i32 - 7;
    let uval = ((seg << 4) | ((pcm >> (seg + 3)) & 0x0F)) as u8;
    uval ^ mask
}

/// Decode a μ-law buffer, appending to `out`.
pub fn decode_into(bytes: &[u8], out: &mut Vec<i16>) {
    out.extend(bytes.iter().map(|&b| decode(b)));
}

/// Encode PCM16 samples, appending to `out`.
pub fn encode_into(samples: &[i16], out: &mut Vec<u8>) {
    out.extend(samples.iter().map(|&s| encode(s)));
}

/// The μ-law byte for digital silence.
pub const SILENCE: u8 = 0xFF;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers_decode() {
        // Values from the G.711 μ-law table.
        assert_eq!(decode(0xFF), 0);
        assert_eq!(decode(0x7F), 0);
        assert_eq!(decode(0x00), -32124);
        assert_eq!(decode(0x80), 32124);
        assert_eq!(decode(0x0F), -16764);
        assert_eq!(decode(0x8F), 16764);
        assert_eq!(decode(0xF0), 120);
        assert_eq!(decode(0x70), -120);
        assert_eq!(decode(0xFE), 8);
        assert_eq!(decode(0xEF), 132);
        assert_eq!(decode(0xDF), 396);
    }

    #[test]
    fn known_answers_encode() {
        assert_eq!(encode(0), 0xFF);
        assert_eq!(encode(-1), 0x7F);
        assert_eq!(encode(32767), 0x80);
        assert_eq!(encode(-32768), 0x00);
        assert_eq!(encode(8), 0xFE);
        assert_eq!(encode(120), 0xF0);
        assert_eq!(encode(-120), 0x70);
        assert_eq!(encode(16764), 0x8F);
        assert_eq!(encode(1000), 0xCE);
    }

    #[test]
    fn every_code_round_trips() {
        for b in 0..=255u8 {
            let s = decode(b);
            let again = encode(s);
            // 0x7F (negative zero) encodes back as 0xFF (positive zero).
            if b == 0x7F {
                assert_eq!(again, 0xFF);
            } else {
                assert_eq!(again, b, "byte {b:#04x} → {s}");
            }
        }
    }

    #[test]
    fn encode_is_monotonic_and_error_bounded() {
        let mut last = decode(encode(i16::MIN));
        for s in (i16::MIN as i32..=i16::MAX as i32).step_by(7) {
            let d = decode(encode(s as i16));
            assert!(d >= last, "not monotonic at {s}");
            last = d;
            // Quantisation error is bounded by half a step of the segment (≤ 1/32 of the value + bias).
            let err = (d as i32 - s).abs();
            assert!(err <= (s.abs() / 16).max(8) + 2, "error {err} at {s}");
        }
    }
}
