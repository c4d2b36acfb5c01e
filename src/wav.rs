//! WAV prompts: any sample rate, 8–32-bit integer or float, mono or more
//! channels; converted once, at load time, to the 16 kHz mono PCM that the
//! media session plays.

use std::path::Path;
use std::sync::Arc;

use voxtrunk_media::resample::resample_all;
use voxtrunk_media::session::PCM_RATE;

/// Why a prompt could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WavError {
    /// Not a readable WAV file.
    #[error("not a usable WAV file: {0}")]
    Format(#[from] hound::Error),
    /// A rate the resampler does not take.
    #[error("cannot convert to 16 kHz: {0}")]
    Resample(#[from] voxtrunk_media::resample::ResampleError),
    /// No samples.
    #[error("the file holds no audio")]
    Empty,
}

/// Reads a WAV file and converts it to 16 kHz mono (channels are averaged).
pub fn load_16k_mono(path: &Path) -> Result<Arc<[i16]>, WavError> {
    let reader = hound::WavReader::open(path)?;
    let spec = reader.spec();
    let channels = usize::from(spec.channels.max(1));
    let interleaved: Vec<i32> = match spec.sample_format {
        hound::SampleFormat::Int => {
            let shift = i32::from(spec.bits_per_sample).saturating_sub(16);
            reader
                .into_samples::<i32>()
                .map(|s| s.map(|v| if shift >= 0 { v >> shift } else { v << -shift }))
                .collect::<Result<_, _>>()?
        }
        hound::SampleFormat::Float => reader
            .into_samples::<f32>()
            .map(|s| s.map(|v| (v.clamp(-1.0, 1.0) * 32767.0) as i32))
            .collect::<Result<_, _>>()?,
    };
    let mono: Vec<i16> = interleaved
        .chunks(channels)
        .map(|c| {
            (c.iter().sum::<i32>() / c.len() as i32).clamp(i16::MIN.into(), i16::MAX.into()) as i16
        })
        .collect();
    if mono.is_empty() {
        return Err(WavError::Empty);
    }
    Ok(resample_all(&mono, spec.sample_rate, PCM_RATE)?.into())
}

/// Writes one second of a 440 Hz tone (for tests).
#[cfg(test)]
pub fn write_test_tone(path: &Path, rate: u32) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..rate {
        let t = i as f32 / rate as f32;
        w.write_sample((8000.0 * (2.0 * std::f32::consts::PI * 440.0 * t).sin()) as i16)
            .unwrap();
    }
    w.finalize().unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stereo_48k_float_becomes_16k_mono() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 48_000,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        let mut w = hound::WavWriter::create(&p, spec).unwrap();
        for _ in 0..48_000 {
            w.write_sample(0.5f32).unwrap();
            w.write_sample(0.0f32).unwrap();
        }
        w.finalize().unwrap();
        let s = load_16k_mono(&p).unwrap();
        assert_eq!(s.len(), 16_000);
        assert!(
            (s[8000] - 8191).abs() < 50,
            "average of 0.5 and 0 at full scale: {}",
            s[8000]
        );
    }

    #[test]
    fn garbage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.wav");
        std::fs::write(&p, b"RIFF....not a wav").unwrap();
        assert!(matches!(load_16k_mono(&p), Err(WavError::Format(_))));
    }
}
