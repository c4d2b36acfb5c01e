//! Speech-to-text engines.
//!
//! - [`pocketsphinx`]: CMU PocketSphinx in process (Debian packages
//!   `pocketsphinx-en-us`, `libpocketsphinx3`, `libsphinxbase3`), recognising
//!   with a language model generated from the agent's own phrases
//!   ([`lm`], [`lexicon`]) and the general en-US model as a fallback.
//! - [`transcribe_wav`]: a whole WAV file through any engine, for tests and
//!   operator tools.
//! - [`validate_phrases`]: the phrase words the pronunciation dictionary
//!   lacks, for `voxtrunk check`.
//!
//! # For the pipeline
//!
//! - One stream per utterance (as cut by the media session's turn
//!   detection), fed 20 ms frames of 16 kHz mono. `start` blocks while all
//!   decoders are busy (up to the configured wait) and `push`/`finish` are
//!   CPU work: call them from a worker thread, not a call's media task.
//! - Partial transcripts come from `push` whenever the text changed; they
//!   may be revised (also once, early, when the recogniser re-decodes the
//!   first half second with better normalisation) and carry confidence 0.
//! - The final transcript is lower-case words with no punctuation; numbers
//!   are words ("one point two crore"), as the caller said them. An empty
//!   text means nothing was recognised (confidence 0).
//! - `finish` runs the engine's second and third passes: 30–50 ms for a
//!   sentence. When the domain result is unsure it may decode the utterance
//!   again with the general model, about 0.13 × the utterance's duration
//!   more (0.4–0.6 s for a 3–4 s sentence).
//! - Dropping a stream (barge-in, hang-up) cancels it and frees its
//!   decoder.

mod ffi;
pub mod lexicon;
pub mod lm;
pub mod pocketsphinx;

use std::path::Path;

use voxtrunk_media::resample::resample_all;

use super::provider::{AgentError, SpeechToText, SttHints, Transcript};

/// Sample rate the engines take.
pub const STT_RATE: u32 = 16_000;
/// Samples of one 20 ms frame at [`STT_RATE`].
pub const STT_FRAME: usize = 320;

/// The words of `phrases` that the pronunciation dictionary `dict` lacks,
/// sorted; see [`lexicon::validate_phrases`]. For `voxtrunk check`: the
/// recogniser still accepts them when their pronunciation is configured
/// or guessed ([`pocketsphinx::PsConfig::guess_unknown`]).
pub fn validate_phrases(dict: &Path, phrases: &[String]) -> Result<(), Vec<String>> {
    lexicon::validate_phrases(dict, phrases)
}

/// Reads a WAV file (any rate, integer or float samples, channels
/// averaged), converts it to 16 kHz mono, feeds it to `stt` in 20 ms frames
/// (the last one padded with silence) and returns the final transcript.
///
/// # Errors
/// [`AgentError::Config`] if the file cannot be read or converted, and
/// whatever the engine returns.
pub fn transcribe_wav(stt: &dyn SpeechToText, path: &Path) -> Result<Transcript, AgentError> {
    let pcm = read_wav_16k(path).map_err(|reason| {
        AgentError::config(stt.name(), format!("{}: {reason}", path.display()))
    })?;
    let hints = SttHints::default();
    let mut stream = stt.start(&hints)?;
    for frame in pcm.chunks(STT_FRAME) {
        if frame.len() == STT_FRAME {
            stream.push(frame)?;
        } else {
            let mut padded = frame.to_vec();
            padded.resize(STT_FRAME, 0);
            stream.push(&padded)?;
        }
    }
    stream.finish()
}

/// A WAV file as 16 kHz mono PCM.
pub fn read_wav_16k(path: &Path) -> Result<Vec<i16>, String> {
    let reader = hound::WavReader::open(path).map_err(|e| e.to_string())?;
    let spec = reader.spec();
    let channels = usize::from(spec.channels.max(1));
    let samples: Vec<i32> = match spec.sample_format {
        hound::SampleFormat::Int => {
            let shift = i32::from(spec.bits_per_sample) - 16;
            reader
                .into_samples::<i32>()
                .map(|s| s.map(|v| if shift >= 0 { v >> shift } else { v << -shift }))
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?
        }
        hound::SampleFormat::Float => reader
            .into_samples::<f32>()
            .map(|s| s.map(|v| (v.clamp(-1.0, 1.0) * 32767.0) as i32))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?,
    };
    let mono: Vec<i16> = samples
        .chunks(channels)
        .map(|c| {
            let sum: i64 = c.iter().map(|&v| i64::from(v)).sum();
            (sum / c.len() as i64).clamp(i64::from(i16::MIN), i64::from(i16::MAX)) as i16
        })
        .collect();
    resample_all(&mono, spec.sample_rate, STT_RATE).map_err(|e| e.to_string())
}
