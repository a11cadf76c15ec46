//! PCM16 little-endian bytes ⇄ `i16` samples (the wire form of ElevenLabs `pcm_*` audio).

/// Bytes → samples, appending to `out`. A trailing odd byte is ignored.
pub fn bytes_to_samples_into(bytes: &[u8], out: &mut Vec<i16>) {
    out.extend(
        bytes
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]])),
    );
}

/// Bytes → samples. A trailing odd byte is ignored.
pub fn bytes_to_samples(bytes: &[u8]) -> Vec<i16> {
    let mut v = Vec::with_capacity(bytes.len() / 2);
    bytes_to_samples_into(bytes, &mut v);
    v
}

/// Samples → bytes, appending to `out`.
pub fn samples_to_bytes_into(samples: &[i16], out: &mut Vec<u8>) {
    out.reserve(samples.len() * 2);
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
}

/// Samples → bytes.
pub fn samples_to_bytes(samples: &[i16]) -> Vec<u8> {
    let mut v = Vec::with_capacity(samples.len() * 2);
    samples_to_bytes_into(samples, &mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn little_endian_known_answer() {
        assert_eq!(
            samples_to_bytes(&[1, -2, 0x1234]),
            vec![0x01, 0x00, 0xFE, 0xFF, 0x34, 0x12]
        );
        assert_eq!(
            bytes_to_samples(&[0x01, 0x00, 0xFE, 0xFF, 0x34, 0x12, 0x99]),
            vec![1, -2, 0x1234]
        );
    }

    proptest::proptest! {
        #[test]
        fn round_trip(v in proptest::collection::vec(proptest::num::i16::ANY, 0..500)) {
            proptest::prop_assert_eq!(bytes_to_samples(&samples_to_bytes(&v)), v);
        }
    }
}
