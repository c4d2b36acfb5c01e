//! Text-to-speech providers, both offline:
//!
//! - [`Flite`](flite::Flite): CMU Flite in process (BSD-style licence), the default.
//!   Streams audio within a sentence; synthesis on one voice runs
//!   concurrently from any number of threads.
//! - [`EspeakNg`](espeak::EspeakNg): the `espeak-ng` command as a child process (GPL, so
//!   never linked), streaming its WAV output from the pipe.
//!
//! Both normalize the text first ([`normalize_for_speech`](normalize::normalize_for_speech)), give no audio
//! and `Ok` for text with nothing to say, return `Ok` when the sink
//! cancels, and hand over mono PCM at the engine's own rate (flite: 16 kHz,
//! or 8 kHz for `kal`; espeak-ng: 22050 Hz), in chunks of varying length;
//! the pipeline resamples and frames it. Synthesis is synchronous and
//! CPU-bound: run it on a worker thread, never on a call's media task.

pub mod espeak;
pub mod flite;
pub mod normalize;
