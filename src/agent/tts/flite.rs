//! flite (CMU Flite 2.2, BSD-style licence), in process.
//!
//! Audio streams within a sentence: each utterance carries its own
//! `streaming_info` feature, so flite's waveform synthesis (the MLSA
//! vocoder of the clustergen voices slt/awb/rms, the LPC resynthesis of
//! the diphone voices kal/kal16) hands samples to a callback as it makes
//! them, ≥ 20 ms at a time. Text analysis and parameter generation happen
//! before the first sample, so the first audio of a sentence comes after
//! that front end, not after the whole waveform. Input is split into
//! sentences, each synthesized as its own utterance, so a second sentence
//! does not delay the first one's audio. Should a voice not stream (no
//! stock voice is like that), its waveform is handed over in 20 ms pieces
//! when the utterance is done.
//!
//! # Threads
//!
//! One voice object per voice serves every call, and synthesis on it runs
//! concurrently, without a lock. The reasoning, from flite 2.2's sources
//! and a helgrind run:
//!
//! - `flite_init` and voice registration are not thread-safe (flite.h says
//!   so; `register_cmu_us_*` and `cmu_lex_init` check-then-set statics).
//!   They run once, under the `REGISTRY` lock.
//! - A synthesis works on its own utterance. `utt_init` *links* the voice's
//!   features into the utterance (`feat_link_into`, a pointer, documented
//!   as "used to make things thread safe(r)") instead of copying them, so
//!   no shared value's (non-atomic) reference count is touched; the
//!   lexicon, letter-to-sound rules, phone sets, CART trees and the
//!   clustergen/diphone databases are only read; the regexes used by text
//!   analysis are precompiled constants.
//! - The per-call settings that flite's own examples put on the voice
//!   (`streaming_info`, `duration_stretch`) are set on the utterance
//!   instead, which the flite manual allows ("can be set in a voice or in
//!   an utterance"); the voice is never written after registration.
//! - valgrind's helgrind, run over threads synthesizing different
//!   sentences on one voice with per-utterance streaming (a C program for
//!   slt and kal, and this module's `concurrent_synthesis_on_one_voice`
//!   test), reports no race in flite's code; the only reports are in
//!   glibc's `rand()` (used for the clustergen vocoder's noise
//!   excitation; glibc serializes it with an internal lock that helgrind
//!   does not model). A consequence: unvoiced noise is drawn from the
//!   process-wide `rand()` sequence, so repeated syntheses of one text can
//!   differ in their noise, never in their length.
//!
//! # Errors
//!
//! flite reports internal errors with `cst_error()`, which calls `exit(-1)`
//! (no error return exists). Inputs that reach it are kept to printable
//! ASCII text (after [`normalize_for_speech`]), which the stock English
//! front end handles without errors (punctuation-only, empty, very long
//! digit strings, URLs and stray bytes were tried).

use std::any::Any;
use std::ffi::{CString, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::ptr::NonNull;
use std::sync::{Mutex, Once};

use super::normalize::{has_speech, normalize_for_speech, split_sentences};
use crate::agent::provider::{AgentError, AudioChunk, TextToSpeech};

const PROVIDER: &str = "flite";

/// The hand-written part of flite's C API that this provider uses
/// (flite 2.2 headers, `/usr/include/flite`).
#[allow(non_camel_case_types)]
mod ffi {
    use std::ffi::{c_char, c_float, c_int, c_void};

    /// `cst_features` (opaque).
    #[repr(C)]
    pub struct cst_features {
        _private: [u8; 0],
    }

    /// `cst_val` (opaque).
    #[repr(C)]
    pub struct cst_val {
        _private: [u8; 0],
    }

    /// `struct cst_voice_struct` (cst_voice.h).
    #[repr(C)]
    pub struct cst_voice {
        pub name: *const c_char,
        pub features: *mut cst_features,
        pub ffunctions: *mut cst_features,
        pub utt_init: *mut c_void,
    }

    /// `struct cst_utterance_struct` (cst_utterance.h).
    #[repr(C)]
    pub struct cst_utterance {
        pub features: *mut cst_features,
        pub ffunctions: *mut cst_features,
        pub relations: *mut cst_features,
        pub ctx: *mut c_void,
    }

    /// `cst_wave` (cst_wave.h).
    #[repr(C)]
    pub struct cst_wave {
        pub type_: *const c_char,
        pub sample_rate: c_int,
        pub num_samples: c_int,
        pub num_channels: c_int,
        pub samples: *mut i16,
    }

    /// `cst_audio_stream_callback` (cst_audio.h).
    pub type cst_audio_stream_callback = unsafe extern "C" fn(
        w: *const cst_wave,
        start: c_int,
        size: c_int,
        last: c_int,
        asi: *mut cst_audio_streaming_info,
    ) -> c_int;

    /// `cst_audio_streaming_info` (cst_audio.h).
    #[repr(C)]
    pub struct cst_audio_streaming_info {
        pub min_buffsize: c_int,
        pub asc: Option<cst_audio_stream_callback>,
        pub utt: *const cst_utterance,
        pub item: *const c_void,
        pub userdata: *mut c_void,
    }

    pub const CST_AUDIO_STREAM_STOP: c_int = -1;
    pub const CST_AUDIO_STREAM_CONT: c_int = 0;

    /// `cst_uttfunc`.
    pub type cst_uttfunc = unsafe extern "C" fn(u: *mut cst_utterance) -> *mut cst_utterance;

    #[link(name = "flite")]
    unsafe extern "C" {
        pub fn flite_init() -> c_int;
        pub fn new_utterance() -> *mut cst_utterance;
        pub fn delete_utterance(u: *mut cst_utterance);
        pub fn utt_set_input_text(u: *mut cst_utterance, text: *const c_char) -> c_int;
        pub fn utt_synth(u: *mut cst_utterance) -> *mut cst_utterance;
        pub fn flite_do_synth(
            u: *mut cst_utterance,
            voice: *mut cst_voice,
            synth: cst_uttfunc,
        ) -> *mut cst_utterance;
        pub fn utt_wave(u: *mut cst_utterance) -> *mut cst_wave;
        pub fn new_audio_streaming_info() -> *mut cst_audio_streaming_info;
        pub fn audio_streaming_info_val(asi: *const cst_audio_streaming_info) -> *mut cst_val;
        /// Stores `name` (not a copy): it must be a static string.
        pub fn feat_set(f: *mut cst_features, name: *const c_char, v: *const cst_val);
        /// Stores `name` (not a copy): it must be a static string.
        pub fn feat_set_float(f: *mut cst_features, name: *const c_char, v: c_float);
        pub fn feat_present(f: *const cst_features, name: *const c_char) -> c_int;
        pub fn flite_get_param_int(
            f: *const cst_features,
            name: *const c_char,
            def: c_int,
        ) -> c_int;
    }

    #[link(name = "flite_cmu_us_slt")]
    unsafe extern "C" {
        pub fn register_cmu_us_slt(voxdir: *const c_char) -> *mut cst_voice;
    }
    #[link(name = "flite_cmu_us_kal")]
    unsafe extern "C" {
        pub fn register_cmu_us_kal(voxdir: *const c_char) -> *mut cst_voice;
    }
    #[link(name = "flite_cmu_us_kal16")]
    unsafe extern "C" {
        pub fn register_cmu_us_kal16(voxdir: *const c_char) -> *mut cst_voice;
    }
    #[link(name = "flite_cmu_us_awb")]
    unsafe extern "C" {
        pub fn register_cmu_us_awb(voxdir: *const c_char) -> *mut cst_voice;
    }
    #[link(name = "flite_cmu_us_rms")]
    unsafe extern "C" {
        pub fn register_cmu_us_rms(voxdir: *const c_char) -> *mut cst_voice;
    }
}

type Register = unsafe extern "C" fn(*const std::ffi::c_char) -> *mut ffi::cst_voice;

/// The compiled-in voices: name, register function.
const VOICES: [(&str, Register); 5] = [
    ("slt", ffi::register_cmu_us_slt),
    ("kal", ffi::register_cmu_us_kal),
    ("kal16", ffi::register_cmu_us_kal16),
    ("awb", ffi::register_cmu_us_awb),
    ("rms", ffi::register_cmu_us_rms),
];

/// Serializes `flite_init` and voice registration, which are not
/// thread-safe; also guards nothing else.
static REGISTRY: Mutex<()> = Mutex::new(());
static INIT: Once = Once::new();

/// A registered flite voice. Registration returns the same object every
/// time, and it lives for the rest of the process.
#[derive(Clone, Copy)]
struct VoicePtr(NonNull<ffi::cst_voice>);

// SAFETY: the voice is registered once (under REGISTRY) and never written
// afterwards; synthesis only reads it (module docs, "Threads").
unsafe impl Send for VoicePtr {}
// SAFETY: as above.
unsafe impl Sync for VoicePtr {}

/// flite settings.
#[derive(Debug, Clone, PartialEq)]
pub struct FliteConfig {
    /// Voice: `slt` (US female, 16 kHz), `kal` (US male diphone, 8 kHz),
    /// `kal16` (16 kHz), `awb` (Scottish male, 16 kHz), `rms` (US male,
    /// 16 kHz). A `cmu_us_` prefix is accepted.
    pub voice: String,
    /// Duration stretch: 1.0 is the voice's own pace, above 1 is slower
    /// (flite's `duration_stretch`). 0.5–2.0.
    pub rate_scale: f32,
}

impl Default for FliteConfig {
    fn default() -> Self {
        FliteConfig {
            voice: "slt".to_owned(),
            rate_scale: 1.0,
        }
    }
}

/// The flite text-to-speech provider; cheap to share between calls.
pub struct Flite {
    voice: VoicePtr,
    voice_name: &'static str,
    sample_rate: u32,
    rate_scale: f32,
}

impl std::fmt::Debug for Flite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flite")
            .field("voice", &self.voice_name)
            .field("sample_rate", &self.sample_rate)
            .field("rate_scale", &self.rate_scale)
            .finish()
    }
}

impl Flite {
    /// Voice names accepted in [`FliteConfig::voice`].
    pub const VOICES: [&'static str; 5] = ["slt", "kal", "kal16", "awb", "rms"];

    /// Loads (registers) the voice. Errors: unknown voice or a rate scale
    /// out of range (`Config`), a voice that fails to register (`Engine`).
    pub fn new(config: FliteConfig) -> Result<Self, AgentError> {
        let wanted = config.voice.trim().to_ascii_lowercase();
        let wanted = wanted.strip_prefix("cmu_us_").unwrap_or(&wanted);
        let Some(&(voice_name, register)) = VOICES.iter().find(|(name, _)| *name == wanted) else {
            return Err(AgentError::config(
                PROVIDER,
                format!(
                    "unknown voice {:?} (have {})",
                    config.voice,
                    Self::VOICES.join(", ")
                ),
            ));
        };
        if !(config.rate_scale.is_finite() && (0.5..=2.0).contains(&config.rate_scale)) {
            return Err(AgentError::config(
                PROVIDER,
                format!("rate_scale {} is outside 0.5–2.0", config.rate_scale),
            ));
        }
        let voice = {
            let _guard = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
            INIT.call_once(|| {
                // SAFETY: once, before any synthesis, under REGISTRY.
                unsafe { ffi::flite_init() };
            });
            // SAFETY: registration is serialized by REGISTRY; a null voice
            // directory means the compiled-in voice data.
            NonNull::new(unsafe { register(std::ptr::null()) })
        };
        let Some(voice) = voice else {
            return Err(AgentError::engine(
                PROVIDER,
                format!("voice {voice_name} failed to register"),
            ));
        };
        // SAFETY: a registered voice has a valid feature set; reading it
        // is what every synthesis does.
        let rate = unsafe {
            ffi::flite_get_param_int(voice.as_ref().features, c"sample_rate".as_ptr(), 0)
        };
        Ok(Flite {
            voice: VoicePtr(voice),
            voice_name,
            sample_rate: u32::try_from(rate).unwrap_or(0),
            rate_scale: config.rate_scale,
        })
    }

    /// The voice in use.
    pub fn voice(&self) -> &'static str {
        self.voice_name
    }

    /// The rate of the audio this voice produces (16000 or 8000); every
    /// chunk carries its rate too.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Normalizes, splits into sentences and synthesizes them in turn.
    fn run(
        &self,
        text: &str,
        sink: &mut dyn FnMut(AudioChunk) -> bool,
    ) -> Result<Handover, AgentError> {
        let text = flite_text(&normalize_for_speech(text));
        let mut state = StreamState {
            sink,
            delivered: 0,
            cancelled: false,
            error: None,
            panic: None,
            handover: Handover::default(),
        };
        for sentence in split_sentences(&text) {
            if !has_speech(sentence) {
                continue;
            }
            if !self.synthesize_sentence(sentence, &mut state)? {
                break;
            }
        }
        Ok(state.handover)
    }

    /// Synthesizes one sentence (already normalized, printable ASCII).
    /// Returns false when the sink cancelled.
    fn synthesize_sentence(
        &self,
        text: &str,
        state: &mut StreamState<'_>,
    ) -> Result<bool, AgentError> {
        let text = CString::new(text)
            .map_err(|_| AgentError::engine(PROVIDER, "text contains a NUL byte"))?;
        // SAFETY: plain constructor.
        let utt = unsafe { ffi::new_utterance() };
        let Some(utt) = NonNull::new(utt) else {
            return Err(AgentError::engine(PROVIDER, "cannot allocate an utterance"));
        };
        let mut utt = Utterance(utt);
        // SAFETY: `utt` is a fresh utterance owned here. The streaming
        // info is owned by the utterance's features from `feat_set` on
        // (freed with the utterance); its userdata points at `state`,
        // which outlives the synthesis below. Feature names are static.
        unsafe {
            ffi::utt_set_input_text(utt.0.as_ptr(), text.as_ptr());
            let asi = ffi::new_audio_streaming_info();
            if asi.is_null() {
                return Err(AgentError::engine(
                    PROVIDER,
                    "cannot allocate streaming info",
                ));
            }
            (*asi).min_buffsize = (self.sample_rate / 50).max(80) as i32;
            (*asi).asc = Some(on_audio);
            (*asi).userdata = (state as *mut StreamState<'_>).cast::<c_void>();
            let features = (*utt.0.as_ptr()).features;
            ffi::feat_set(
                features,
                c"streaming_info".as_ptr(),
                ffi::audio_streaming_info_val(asi),
            );
            ffi::feat_set_float(features, c"duration_stretch".as_ptr(), self.rate_scale);
        }
        state.delivered = 0;
        // SAFETY: the voice is registered and only read (module docs); on
        // failure flite deletes the utterance and returns null.
        let done =
            unsafe { ffi::flite_do_synth(utt.0.as_ptr(), self.voice.0.as_ptr(), ffi::utt_synth) };
        let Some(done) = NonNull::new(done) else {
            std::mem::forget(utt);
            if let Some(payload) = state.panic.take() {
                resume_unwind(payload);
            }
            return Err(AgentError::engine(PROVIDER, "synthesis failed"));
        };
        utt.0 = done;
        if let Some(payload) = state.panic.take() {
            drop(utt);
            resume_unwind(payload);
        }
        if let Some(reason) = state.error.take() {
            return Err(AgentError::engine(PROVIDER, reason));
        }
        if state.cancelled {
            return Ok(false);
        }
        // Hand over what was not streamed (a voice without streaming
        // support), in 20 ms pieces.
        // SAFETY: the utterance is alive; its wave (if any) belongs to it
        // and is not touched by anyone else.
        let rest = unsafe {
            let features = (*utt.0.as_ptr()).features;
            if ffi::feat_present(features, c"wave".as_ptr()) == 0 {
                return Err(AgentError::engine(
                    PROVIDER,
                    "synthesis produced no waveform",
                ));
            }
            let wave = ffi::utt_wave(utt.0.as_ptr());
            if wave.is_null() || (*wave).num_samples <= 0 || (*wave).samples.is_null() {
                None
            } else {
                let w = &*wave;
                if w.num_channels != 1 {
                    return Err(AgentError::engine(
                        PROVIDER,
                        format!("voice produced {} channels", w.num_channels),
                    ));
                }
                let all = std::slice::from_raw_parts(w.samples, w.num_samples as usize);
                (all.len() > state.delivered).then(|| {
                    (
                        u32::try_from(w.sample_rate).unwrap_or(0),
                        all[state.delivered..].to_vec(),
                    )
                })
            }
        };
        drop(utt);
        if let Some((rate, rest)) = rest {
            let piece = (rate as usize / 50).max(1);
            for samples in rest.chunks(piece) {
                state.handover.after_synthesis += samples.len();
                let chunk = AudioChunk {
                    rate,
                    samples: samples.to_vec(),
                };
                if !(state.sink)(chunk) {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }
}

/// Owns an utterance; deletes it when dropped.
struct Utterance(NonNull<ffi::cst_utterance>);

impl Drop for Utterance {
    fn drop(&mut self) {
        // SAFETY: the utterance is owned here and deleted once.
        unsafe { ffi::delete_utterance(self.0.as_ptr()) }
    }
}

/// How the audio of one call reached the sink.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Handover {
    /// Samples handed over by flite's streaming callback, while the
    /// waveform was being made.
    streamed: usize,
    /// Samples handed over after an utterance was done (voices that do
    /// not stream).
    after_synthesis: usize,
}

/// What the streaming callback works with, for one synthesis call.
struct StreamState<'a> {
    sink: &'a mut dyn FnMut(AudioChunk) -> bool,
    /// Samples of the current utterance handed to the sink.
    delivered: usize,
    cancelled: bool,
    error: Option<String>,
    panic: Option<Box<dyn Any + Send + 'static>>,
    handover: Handover,
}

/// flite's streaming callback: new samples `start..start + size` of `w`.
unsafe extern "C" fn on_audio(
    w: *const ffi::cst_wave,
    start: i32,
    size: i32,
    _last: i32,
    asi: *mut ffi::cst_audio_streaming_info,
) -> i32 {
    // SAFETY: flite passes the streaming info we installed, whose userdata
    // is the live `StreamState` of the synthesis running on this thread.
    let state = unsafe { &mut *(*asi).userdata.cast::<StreamState<'_>>() };
    if state.cancelled || state.panic.is_some() || state.error.is_some() {
        return ffi::CST_AUDIO_STREAM_STOP;
    }
    if size <= 0 || w.is_null() {
        return ffi::CST_AUDIO_STREAM_CONT;
    }
    // SAFETY: flite guarantees `start..start + size` are written samples
    // of the wave it is building.
    let (rate, samples) = unsafe {
        let w = &*w;
        if w.num_channels != 1 {
            state.error = Some(format!("voice produced {} channels", w.num_channels));
            return ffi::CST_AUDIO_STREAM_STOP;
        }
        let samples = std::slice::from_raw_parts(w.samples.add(start as usize), size as usize);
        (u32::try_from(w.sample_rate).unwrap_or(0), samples.to_vec())
    };
    // A panic must not unwind into C: keep it and re-raise it afterwards.
    match catch_unwind(AssertUnwindSafe(|| {
        (state.sink)(AudioChunk { rate, samples })
    })) {
        Ok(true) => {
            state.delivered += size as usize;
            state.handover.streamed += size as usize;
            ffi::CST_AUDIO_STREAM_CONT
        }
        Ok(false) => {
            state.cancelled = true;
            ffi::CST_AUDIO_STREAM_STOP
        }
        Err(payload) => {
            state.panic = Some(payload);
            ffi::CST_AUDIO_STREAM_STOP
        }
    }
}

/// Keeps what flite's English front end reads: printable ASCII, with
/// common accented Latin letters folded to their base letter.
fn flite_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let c = match c {
            'à'..='å' => 'a',
            'À'..='Å' => 'A',
            'ç' => 'c',
            'Ç' => 'C',
            'è'..='ë' => 'e',
            'È'..='Ë' => 'E',
            'ì'..='ï' => 'i',
            'Ì'..='Ï' => 'I',
            'ñ' => 'n',
            'Ñ' => 'N',
            'ò'..='ö' => 'o',
            'Ò'..='Ö' => 'O',
            'ù'..='ü' => 'u',
            'Ù'..='Ü' => 'U',
            'ý' | 'ÿ' => 'y',
            c if c.is_ascii_graphic() || c == ' ' => c,
            _ => ' ',
        };
        out.push(c);
    }
    out
}

impl TextToSpeech for Flite {
    fn name(&self) -> &str {
        PROVIDER
    }

    /// Normalizes the text, splits it into sentences and streams each
    /// sentence's audio (mono, [`Flite::sample_rate`]) in chunks of at
    /// least 20 ms. Returns `Ok` when the sink cancels.
    fn synthesize(
        &self,
        text: &str,
        sink: &mut dyn FnMut(AudioChunk) -> bool,
    ) -> Result<(), AgentError> {
        self.run(text, sink).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;

    fn slt() -> Flite {
        Flite::new(FliteConfig::default()).expect("slt voice")
    }

    /// Runs a synthesis, collecting the audio and the time of the first
    /// chunk.
    fn collect(tts: &Flite, text: &str) -> (Vec<AudioChunk>, Option<Duration>, Duration) {
        let start = Instant::now();
        let mut first = None;
        let mut chunks = Vec::new();
        tts.synthesize(text, &mut |chunk| {
            first.get_or_insert_with(|| start.elapsed());
            chunks.push(chunk);
            true
        })
        .expect("synthesis");
        (chunks, first, start.elapsed())
    }

    fn samples(chunks: &[AudioChunk]) -> Vec<i16> {
        chunks
            .iter()
            .flat_map(|c| c.samples.iter().copied())
            .collect()
    }

    fn rms(samples: &[i16]) -> f64 {
        let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
        (sum / samples.len().max(1) as f64).sqrt()
    }

    const SENTENCE: &str = "Your site visit is booked for tomorrow morning at the new tower.";

    #[test]
    fn sentence_has_plausible_audio() {
        for (voice, rate) in [
            ("slt", 16_000),
            ("kal", 8_000),
            ("kal16", 16_000),
            ("awb", 16_000),
            ("rms", 16_000),
        ] {
            let tts = Flite::new(FliteConfig {
                voice: voice.to_owned(),
                ..FliteConfig::default()
            })
            .expect("voice");
            assert_eq!(tts.sample_rate(), rate, "{voice}");
            let (chunks, first, total) = collect(&tts, SENTENCE);
            assert!(chunks.iter().all(|c| c.rate == rate), "{voice}");
            let audio = samples(&chunks);
            let seconds = audio.len() as f64 / f64::from(rate);
            assert!((1.5..6.0).contains(&seconds), "{voice}: {seconds} s");
            assert!(rms(&audio) > 300.0, "{voice}: silent ({})", rms(&audio));
            // Streaming: many chunks, each at least 20 ms but the last.
            assert!(chunks.len() > 10, "{voice}: {} chunks", chunks.len());
            let min = rate as usize / 50;
            assert!(
                chunks[..chunks.len() - 1]
                    .iter()
                    .all(|c| c.samples.len() >= min)
            );
            let first = first.expect("audio");
            println!(
                "flite {voice}: {seconds:.2} s of audio in {} chunks; first chunk after {:.1} ms, \
                 all after {:.1} ms ({:.0}x real time)",
                chunks.len(),
                first.as_secs_f64() * 1e3,
                total.as_secs_f64() * 1e3,
                seconds / total.as_secs_f64()
            );
        }
    }

    #[test]
    fn first_chunk_arrives_before_synthesis_ends() {
        // Every sample came through flite's streaming callback, which the
        // vocoder calls while it makes the waveform, none after the
        // utterance was done; and the first chunk is a small part of the
        // sentence.
        for voice in Flite::VOICES {
            let tts = Flite::new(FliteConfig {
                voice: voice.to_owned(),
                ..FliteConfig::default()
            })
            .unwrap();
            let mut total = 0usize;
            let mut chunk_ends = Vec::new();
            let handover = tts
                .run(SENTENCE, &mut |chunk| {
                    total += chunk.samples.len();
                    chunk_ends.push(total);
                    true
                })
                .unwrap();
            assert_eq!(
                handover,
                Handover {
                    streamed: total,
                    after_synthesis: 0
                },
                "{voice}"
            );
            assert!(chunk_ends.len() > 10, "{voice}");
            assert!(
                chunk_ends[0] < total / 10,
                "{voice}: first chunk {} of {total}",
                chunk_ends[0]
            );
        }
        let tts = slt();
        let mut chunk_ends = Vec::new();
        let mut total = 0usize;
        let start = Instant::now();
        let mut first_at = None;
        tts.synthesize(SENTENCE, &mut |chunk| {
            first_at.get_or_insert_with(|| start.elapsed());
            total += chunk.samples.len();
            chunk_ends.push(total);
            true
        })
        .unwrap();
        let elapsed = start.elapsed();
        println!(
            "flite slt streaming: first chunk ({} samples) after {:.1} ms of {:.1} ms",
            chunk_ends[0],
            first_at.unwrap().as_secs_f64() * 1e3,
            elapsed.as_secs_f64() * 1e3
        );
    }

    #[test]
    fn sentences_stream_one_after_another() {
        let tts = slt();
        let (one, _, _) = collect(&tts, "Hello there.");
        let (two, _, _) = collect(&tts, "Hello there. Goodbye now.");
        assert!(samples(&two).len() > samples(&one).len() * 3 / 2);
    }

    #[test]
    fn concurrent_synthesis_on_one_voice() {
        let tts = Arc::new(slt());
        let texts = [
            "Book a site visit for tomorrow at 10:30.",
            "The three bedroom flat costs ₹1.2 crore.",
            "Dr. Rao will meet you at the site office on 2026-11-25.",
            "Please keep your booking number handy.",
        ];
        let serial: Vec<usize> = texts
            .iter()
            .map(|t| samples(&collect(&tts, t).0).len())
            .collect();
        let handles: Vec<_> = texts
            .iter()
            .map(|&text| {
                let tts = Arc::clone(&tts);
                std::thread::spawn(move || {
                    let mut lengths = Vec::new();
                    for _ in 0..5 {
                        lengths.push(samples(&collect(&tts, text).0).len());
                    }
                    lengths
                })
            })
            .collect();
        for (handle, expected) in handles.into_iter().zip(serial) {
            let lengths = handle.join().expect("thread");
            assert!(
                lengths.iter().all(|&n| n == expected),
                "{lengths:?} vs {expected}"
            );
        }
    }

    #[test]
    fn cancellation_stops_synthesis() {
        let tts = slt();
        let mut calls = 0;
        tts.synthesize(
            "This is the first sentence. And here is a second one.",
            &mut |_| {
                calls += 1;
                calls < 3
            },
        )
        .unwrap();
        assert_eq!(calls, 3);
    }

    #[test]
    fn empty_text_gives_no_audio() {
        let tts = slt();
        for text in ["", "   \n\t", " ... !", "\u{0900}\u{0915}"] {
            let mut calls = 0;
            tts.synthesize(text, &mut |_| {
                calls += 1;
                true
            })
            .unwrap();
            assert_eq!(calls, 0, "{text:?}");
        }
    }

    #[test]
    fn bad_config() {
        let err = Flite::new(FliteConfig {
            voice: "nobody".to_owned(),
            ..FliteConfig::default()
        })
        .unwrap_err();
        assert!(matches!(err, AgentError::Config { .. }), "{err}");
        let err = Flite::new(FliteConfig {
            rate_scale: 0.0,
            ..FliteConfig::default()
        })
        .unwrap_err();
        assert!(matches!(err, AgentError::Config { .. }), "{err}");
        assert_eq!(
            Flite::new(FliteConfig {
                voice: "cmu_us_kal".to_owned(),
                ..FliteConfig::default()
            })
            .unwrap()
            .voice(),
            "kal"
        );
    }

    #[test]
    fn rate_scale_stretches() {
        let normal = samples(&collect(&slt(), SENTENCE).0).len();
        let slow = Flite::new(FliteConfig {
            rate_scale: 1.5,
            ..FliteConfig::default()
        })
        .unwrap();
        let stretched = samples(&collect(&slow, SENTENCE).0).len();
        assert!(stretched > normal * 13 / 10, "{stretched} vs {normal}");
    }

    #[test]
    fn sink_panic_propagates() {
        let tts = slt();
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let _ = tts.synthesize(SENTENCE, &mut |_| panic!("sink failed"));
        }));
        assert!(result.is_err());
        // The provider still works afterwards.
        assert!(!collect(&tts, "Still here.").0.is_empty());
    }

    #[test]
    fn quality_not_clipped_and_speech_like() {
        let tts = slt();
        let (chunks, _, _) = collect(&tts, "book a site visit for tomorrow");
        let audio = samples(&chunks);
        let peak = audio.iter().map(|&s| i32::from(s).abs()).max().unwrap();
        assert!(peak < 32767, "clipped: peak {peak}");
        assert!(peak > 3000, "too quiet: peak {peak}");
        // Energy envelope over 20 ms frames: speech has loud frames and
        // quiet ones (pauses, closures), not a flat level.
        let frame = tts.sample_rate() as usize / 50;
        let energies: Vec<f64> = audio.chunks(frame).map(rms).collect();
        let loudest = energies.iter().cloned().fold(0.0, f64::max);
        let loud = energies.iter().filter(|&&e| e > loudest * 0.3).count();
        let quiet = energies.iter().filter(|&&e| e < loudest * 0.05).count();
        let n = energies.len();
        assert!(loud * 5 >= n, "{loud} loud frames of {n}");
        assert!(quiet * 20 >= n, "{quiet} quiet frames of {n}");
        assert!(loud + quiet < n, "no frames in between");
        // Leading and trailing silence stay short (< 0.5 s).
        let first_loud = energies.iter().position(|&e| e > loudest * 0.05).unwrap();
        let last_loud = n
            - 1
            - energies
                .iter()
                .rev()
                .position(|&e| e > loudest * 0.05)
                .unwrap();
        assert!(
            first_loud < 25 && n - 1 - last_loud < 25,
            "{first_loud} {last_loud} {n}"
        );
    }

    #[test]
    fn ascii_folding() {
        assert_eq!(flite_text("café ₹ naïve\u{0007}"), "cafe   naive ");
    }
}
