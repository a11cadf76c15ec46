//! Stereo 16-bit WAV recordings of a call: caller on the left channel, agent on the right, both
//! on one timeline (the shorter channel is padded with silence).
use std::io::{Cursor, Seek, Write};
use std::path::Path;

/// Why a recording could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WavError {
    #[error("writing WAV: {0}")]
    Wav(#[from] hound::Error),
}

/// Write `left` and `right` (same rate) as an interleaved stereo WAV to any seekable writer.
///
/// # Errors
/// I/O errors of the writer.
pub fn write_stereo<W: Write + Seek>(
    writer: W,
    rate: u32,
    left: &[i16],
    right: &[i16],
) -> Result<(), WavError> {
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::new(writer, spec)?;
    let n = left.len().max(right.len());
    for i in 0..n {
        w.write_sample(left.get(i).copied().unwrap_or(0))?;
        w.write_sample(right.get(i).copied().unwrap_or(0))?;
    }
    w.finalize()?;
    Ok(())
}

/// [`write_stereo`] into a file (created or truncated).
///
/// # Errors
/// File creation and write errors.
pub fn write_stereo_file(
    path: &Path,
    rate: u32,
    left: &[i16],
    right: &[i16],
) -> Result<(), WavError> {
    let file = std::io::BufWriter::new(std::fs::File::create(path).map_err(hound::Error::IoError)?);
    write_stereo(file, rate, left, right)
}

/// [`write_stereo`] into memory.
///
/// # Errors
/// Never in practice (in-memory writer); kept for symmetry.
pub fn stereo_bytes(rate: u32, left: &[i16], right: &[i16]) -> Result<Vec<u8>, WavError> {
    let mut c = Cursor::new(Vec::new());
    write_stereo(&mut c, rate, left, right)?;
    Ok(c.into_inner())
}

/// Read a stereo 16-bit WAV back into (rate, left, right). Used by tests and the demo report.
///
/// # Errors
/// Malformed files, or files that are not 16-bit stereo.
pub fn read_stereo(bytes: &[u8]) -> Result<(u32, Vec<i16>, Vec<i16>), WavError> {
    let mut r = hound::WavReader::new(Cursor::new(bytes))?;
    let spec = r.spec();
    if spec.channels != 2 || spec.bits_per_sample != 16 {
        return Err(WavError::Wav(hound::Error::Unsupported));
    }
    let (mut l, mut rt) = (Vec::new(), Vec::new());
    for (i, s) in r.samples::<i16>().enumerate() {
        let s = s?;
        if i % 2 == 0 {
            l.push(s)
        } else {
            rt.push(s)
        }
    }
    Ok((spec.sample_rate, l, rt))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stereo_round_trip_and_header() {
        let left = [1i16, 2, 3];
        let right = [-1i16];
        let bytes = stereo_bytes(8000, &left, &right).unwrap();
        assert_eq!(&bytes[0..4], b"RIFF");
        assert_eq!(&bytes[8..12], b"WAVE");
        assert_eq!(bytes.len(), 44 + 3 * 4);
        let (rate, l, r) = read_stereo(&bytes).unwrap();
        assert_eq!(rate, 8000);
        assert_eq!(l, vec![1, 2, 3]);
        assert_eq!(r, vec![-1, 0, 0]);
        assert!(read_stereo(b"RIFFjunk").is_err());
    }
}
