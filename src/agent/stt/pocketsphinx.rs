//! CMU PocketSphinx (Debian's `0.8+5prealpha`) in process, through our own
//! FFI declarations ([`super::ffi`]).
//!
//! # Models and when each is used
//!
//! - The **domain model**, always when the agent has phrases: a trigram
//!   model generated from the phrases ([`super::lm`]) plus generic
//!   background words, over a dictionary holding just those words. Short,
//!   predictable domain sentences over a telephone line are recognised far
//!   better with it than with a general model (see the tests for
//!   measurements).
//! - The **general model** (`en-us.lm.bin` with the whole CMU dictionary),
//!   when [`PsConfig::fallback_lm`] is set:
//!   - as the only model when the agent has no phrases;
//!   - as a second pass at [`SttStream::finish`] when the domain result's
//!     confidence is below [`PsConfig::fallback_below`] — typically the
//!     caller said something the phrases do not cover, which the domain
//!     model can only map onto its own words. The utterance's audio is
//!     decoded again with the general model, and its transcript replaces
//!     the domain one if its confidence is higher by
//!     [`PsConfig::fallback_margin`]. This adds a decode of the whole
//!     utterance to the finish path (about 0.13 × its duration), only for
//!     those utterances, and only if a general decoder is free right away
//!     (the pass is skipped otherwise: the domain result stands).
//!
//! # Confidence
//!
//! The final transcript's confidence is the mean posterior probability of
//! its words, from the word lattice of the utterance (pocketsphinx's
//! forward-backward over the lattice, acoustic scores scaled by 1/20): for
//! each recognised word, the probability that this word spans this time
//! given the audio and the language model. It is near 1 when no other path
//! competes and falls as alternatives get close. It ranks utterances of
//! one model; the general model's values run lower (far more competitors),
//! hence the margin above. The whole sentence's posterior (`ps_get_prob`)
//! is a product over its words, so it shrinks with length and is only
//! logged. Partial transcripts carry confidence 0 (the engine scores only
//! finished utterances); an empty final transcript has confidence 0.
//!
//! # Decoder pools
//!
//! A decoder holds its own dictionary, search graph and language model; the
//! acoustic model files are memory-mapped, so their pages are shared. A
//! domain decoder takes about 5 MiB and 10 ms to build (the first one of a
//! recogniser about 10 MiB and 100 ms, with the dictionary scan and the
//! shared model pages), a general one about 80 MiB and 0.3 s: its 27 MB
//! language model and 134 000 dictionary words are loaded per decoder, as
//! pocketsphinx's model objects keep mutable caches and cannot be shared
//! between threads. So there are two bounded pools:
//! [`PsConfig::decoders`] decoders for the primary model and
//! [`PsConfig::fallback_decoders`] for the fallback pass, all built at
//! construction. [`SpeechToText::start`] takes a primary decoder for one
//! utterance; the stream gives it back when it finishes or is dropped
//! (barge-in, hang-up). When all are busy, `start` waits up to
//! [`PsConfig::acquire_timeout`] and then returns
//! [`AgentError::Unavailable`]. A decoder the engine failed on is freed and
//! replaced by a new one the next time one is needed.
//!
//! # Cepstral mean normalisation
//!
//! The engine normalises features by subtracting running cepstral means
//! that it updates only between utterances, so a pooled decoder would
//! start each utterance with the means of whichever call it served last —
//! and the means of a narrowband telephone line, a wideband one and the
//! model's defaults are far apart (a first utterance decoded with the wrong
//! means loses most of its words). We manage the means ourselves: an
//! utterance starts from a shared prior (the model's initial means, then a
//! moving average of recent utterances); once it has 0.5 s of speech (or
//! at `finish`, if shorter) the utterance's own means replace the prior and
//! the audio so far is decoded again (a few tens of ms); from then on the
//! means follow the utterance, updated after every frame. Results then
//! hardly depend on what the decoder heard before.
//!
//! # Engine log
//!
//! PocketSphinx logs to stderr by default. Its log is process-global and
//! can only be redirected to a C `FILE` (the callback is C-variadic, which
//! stable Rust cannot implement), so it is switched off once, before the
//! first decoder is built; every failure is reported through return codes
//! instead.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CStr, CString, c_char};
use std::fs;
use std::io::{self, BufWriter, Write as _};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::ffi;
use super::lexicon::{self, BACKGROUND_WORDS};
use super::lm::{self, LmParams};
use crate::agent::provider::{AgentError, SpeechToText, SttHints, SttStream, Transcript};

/// Provider name in errors, logs and telemetry.
pub const PROVIDER: &str = "pocketsphinx";
/// Sample rate of the audio the recogniser takes.
pub const SAMPLE_RATE: u32 = 16_000;
/// Samples in one 20 ms frame at [`SAMPLE_RATE`].
pub const FRAME_SAMPLES: usize = 320;
/// Where Debian's `pocketsphinx-en-us` package puts the en-US model.
pub const DEBIAN_MODEL_ROOT: &str = "/usr/share/pocketsphinx/model/en-us";
/// The Debian packages that provide the engine and its model.
pub const DEBIAN_PACKAGES: &str = "pocketsphinx-en-us libpocketsphinx3 libsphinxbase3";

const DOMAIN_SEARCH: &CStr = c"domain";
const GENERAL_SEARCH: &CStr = c"general";
/// Longest utterance audio kept for the CMN restart and the fallback pass
/// (60 s); beyond it neither happens.
const MAX_KEPT_SAMPLES: usize = 60 * SAMPLE_RATE as usize;
/// Longest cepstral vector we accept from the engine (13 for en-US).
const MAX_CEPSTRUM: usize = 64;
/// Speech frames (10 ms each) after which the utterance's own cepstral
/// means replace the prior and decoding restarts.
const CMN_RESTART_FRAMES: i32 = 50;
/// Fewest speech frames worth estimating means from (at finish).
const CMN_MIN_FRAMES: i32 = 10;
/// Weight, in frames, of the prior in the utterance's estimate.
const CMN_PRIOR_FRAMES: i32 = 3;
/// How far the shared prior moves toward each finished utterance's means.
const CMN_PRIOR_RATE: f32 = 0.3;

/// Configuration of the recogniser.
#[derive(Debug, Clone)]
pub struct PsConfig {
    /// Acoustic model directory (with `mdef`, `means`, `feat.params`...).
    pub model_dir: PathBuf,
    /// Pronunciation dictionary (CMUdict format).
    pub dict: PathBuf,
    /// Example utterances of the agent's intents, place names, numbers
    /// spoken as words. Digits are spelt out (see [`super::lexicon`]).
    pub phrases: Vec<String>,
    /// The general language model, for phrase-less agents and the
    /// low-confidence second pass; `None` for the domain model only.
    pub fallback_lm: Option<PathBuf>,
    /// Domain results below this confidence are decoded again with the
    /// general model (0 never, above 1 always).
    pub fallback_below: f32,
    /// The general model's transcript replaces the domain one only if its
    /// confidence is higher by at least this much.
    pub fallback_margin: f32,
    /// Pronunciations (en-US phones, e.g. `"K R OW R"`) of words the
    /// dictionary lacks or says wrong; they win over the dictionary in the
    /// domain model (the general model keeps the dictionary's).
    pub pronunciations: BTreeMap<String, String>,
    /// Guess the pronunciation of phrase words that are neither in the
    /// dictionary nor in `pronunciations` (logged as a warning). When false
    /// such words make construction fail.
    pub guess_unknown: bool,
    /// Add generic conversational words to the domain model
    /// ([`super::lexicon::BACKGROUND_WORDS`]).
    pub background_words: bool,
    /// Parameters of the domain model's estimate.
    pub lm_params: LmParams,
    /// Decoders for the primary model: utterances recognised at once.
    pub decoders: usize,
    /// Decoders for the fallback pass (about 80 MiB each).
    pub fallback_decoders: usize,
    /// How long `start` waits for a free decoder.
    pub acquire_timeout: Duration,
    /// BCP 47 tag of the transcripts; by default taken from the model
    /// directory's name (`…/en-us/en-us` → `en-US`).
    pub language: Option<String>,
}

impl PsConfig {
    /// The Debian en-US model, the general model as fallback, four domain
    /// decoders and one fallback decoder, and the given phrases.
    pub fn debian(phrases: Vec<String>) -> Self {
        let root = Path::new(DEBIAN_MODEL_ROOT);
        Self {
            model_dir: root.join("en-us"),
            dict: root.join("cmudict-en-us.dict"),
            phrases,
            fallback_lm: Some(root.join("en-us.lm.bin")),
            fallback_below: 0.5,
            fallback_margin: 0.1,
            pronunciations: BTreeMap::new(),
            guess_unknown: true,
            background_words: true,
            lm_params: LmParams::default(),
            decoders: 4,
            fallback_decoders: 1,
            acquire_timeout: Duration::from_millis(500),
            language: None,
        }
    }

    /// Checks that the model files exist, naming the Debian packages that
    /// provide them if not.
    pub fn check_files(&self) -> Result<(), AgentError> {
        let mut required = vec![
            self.model_dir.join("mdef"),
            self.model_dir.join("means"),
            self.model_dir.join("variances"),
            self.model_dir.join("transition_matrices"),
            self.model_dir.join("feat.params"),
            self.dict.clone(),
        ];
        required.extend(self.fallback_lm.iter().cloned());
        let missing: Vec<String> = required
            .iter()
            .filter(|p| !p.is_file())
            .map(|p| p.display().to_string())
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(AgentError::config(
                PROVIDER,
                format!(
                    "model files missing: {} (on Debian/Ubuntu: apt-get install {DEBIAN_PACKAGES})",
                    missing.join(", ")
                ),
            ))
        }
    }
}

/// The language tag implied by a model directory such as `…/en-us/en-us`.
fn language_of(model_dir: &Path) -> Option<String> {
    model_dir.components().rev().find_map(|c| {
        let name = c.as_os_str().to_str()?;
        let (lang, region) = name.split_once('-')?;
        let ok = (2..=3).contains(&lang.len())
            && region.len() == 2
            && lang.chars().all(|c| c.is_ascii_alphabetic())
            && region.chars().all(|c| c.is_ascii_alphabetic());
        ok.then(|| {
            format!(
                "{}-{}",
                lang.to_ascii_lowercase(),
                region.to_ascii_uppercase()
            )
        })
    })
}

/// What was built from the phrases, for logs and `voxtrunk check`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DomainReport {
    /// Words of the domain model (phrases and background).
    pub vocabulary: usize,
    /// Sentences it was estimated from.
    pub sentences: usize,
    /// Phrase words missing from the dictionary, with the pronunciation
    /// used (configured or guessed).
    pub added_words: BTreeMap<String, String>,
    /// Those of `added_words` whose pronunciation was guessed.
    pub guessed: BTreeSet<String>,
}

// --- engine-wide state ---------------------------------------------------

static SILENCE_LOG: Once = Once::new();

/// Decoder construction and destruction are serialised: `fe_init` writes
/// process-global frequency-warping parameters (the same values for every
/// decoder, but still a data race if two ran at once).
static ENGINE_LOCK: Mutex<()> = Mutex::new(());

fn engine_lock() -> MutexGuard<'static, ()> {
    ENGINE_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn silence_engine_log() {
    SILENCE_LOG.call_once(|| {
        // SAFETY: sets sphinxbase's global log stream to "disabled" before
        // any decoder exists (call_once orders it before every use);
        // afterwards the library only reads it.
        unsafe { ffi::err_set_logfp(ptr::null_mut()) };
    });
}

fn c_path(path: &Path) -> Result<CString, AgentError> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| AgentError::config(PROVIDER, format!("path {} contains NUL", path.display())))
}

// --- one decoder ---------------------------------------------------------

/// The files the decoders of one pool are built from. The generated ones
/// stay on disk while the recogniser lives, so that a decoder the engine
/// failed on can be rebuilt.
#[derive(Debug)]
struct ModelFiles {
    hmm: CString,
    dict: CString,
    lm: CString,
    search: &'static CStr,
    /// Our private directory (generated dictionary and model), removed on
    /// drop.
    dir: Option<PathBuf>,
}

impl Drop for ModelFiles {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir
            && let Err(err) = fs::remove_dir_all(dir)
        {
            debug!(dir = %dir.display(), %err, "pocketsphinx: cannot remove model directory");
        }
    }
}

/// The result of one decoded utterance.
#[derive(Debug, Clone, PartialEq)]
struct Decoded {
    text: String,
    /// Mean word posterior, 0–1 (see the module documentation).
    confidence: f32,
    /// Posterior of the whole sentence, 0–1.
    sentence_posterior: f64,
    /// The words with their posteriors.
    words: Vec<(String, f32)>,
}

/// One `ps_decoder_t` with one n-gram search.
struct Decoder {
    ps: NonNull<ffi::PsDecoder>,
    /// An utterance is started and not yet ended.
    in_utterance: bool,
}

// SAFETY: a decoder owns everything reachable from its pointer (config,
// acoustic model, dictionary, search and language model are all loaded per
// decoder, never shared with another one; model files are mapped
// read-only). Nothing in it is tied to the thread that created it, so it
// may move to another thread. It is not `Sync`: every call takes
// `&mut self`, so one thread at a time uses it. The library's process-wide
// state is the log stream (set once before any decoder exists, then only
// read) and the frequency-warping parameters written by decoder
// construction, which `ENGINE_LOCK` serialises.
unsafe impl Send for Decoder {}

impl Decoder {
    fn engine_err(what: &str, rc: i32) -> AgentError {
        AgentError::engine(PROVIDER, format!("{what} failed ({rc})"))
    }

    fn new(files: &ModelFiles) -> Result<Self, AgentError> {
        silence_engine_log();
        let _guard = engine_lock();
        // SAFETY: ps_args() returns a static table; every variadic argument
        // is a NUL-terminated string that outlives the call, and the list
        // ends with a NULL pointer as cmd_ln_init requires.
        let config = unsafe {
            ffi::cmd_ln_init(
                ptr::null_mut(),
                ffi::ps_args(),
                1,
                c"-hmm".as_ptr(),
                files.hmm.as_ptr(),
                c"-dict".as_ptr(),
                files.dict.as_ptr(),
                c"-samprate".as_ptr(),
                c"16000".as_ptr(),
                c"-bestpath".as_ptr(),
                c"yes".as_ptr(),
                c"-mmap".as_ptr(),
                c"yes".as_ptr(),
                ptr::null::<c_char>(),
            )
        };
        if config.is_null() {
            return Err(AgentError::config(PROVIDER, "rejected the decoder options"));
        }
        // SAFETY: `config` is a valid config; ps_init takes its own
        // reference, so ours is released right after either way.
        let ps = unsafe {
            let ps = ffi::ps_init(config);
            ffi::cmd_ln_free_r(config);
            ps
        };
        let Some(ps) = NonNull::new(ps) else {
            return Err(AgentError::config(
                PROVIDER,
                format!(
                    "cannot load the acoustic model {} or dictionary {}",
                    files.hmm.to_string_lossy(),
                    files.dict.to_string_lossy()
                ),
            ));
        };
        // From here `decoder` frees the engine on every error path.
        let decoder = Decoder {
            ps,
            in_utterance: false,
        };
        // SAFETY: valid decoder and NUL-terminated strings; the decoder
        // copies the name and reads the file before returning.
        let rc = unsafe {
            ffi::ps_set_lm_file(
                decoder.ps.as_ptr(),
                files.search.as_ptr(),
                files.lm.as_ptr(),
            )
        };
        if rc != 0 {
            return Err(AgentError::config(
                PROVIDER,
                format!("cannot load language model {}", files.lm.to_string_lossy()),
            ));
        }
        // SAFETY: valid decoder, no utterance in progress.
        let rc = unsafe { ffi::ps_set_search(decoder.ps.as_ptr(), files.search.as_ptr()) };
        if rc != 0 {
            return Err(Self::engine_err("ps_set_search", rc));
        }
        Ok(decoder)
    }

    /// The phones of `word` in this decoder's dictionary.
    fn lookup(&mut self, word: &str) -> Option<String> {
        let word = CString::new(word).ok()?;
        // SAFETY: valid decoder and string; the result is ours to free.
        let phones = unsafe { ffi::ps_lookup_word(self.ps.as_ptr(), word.as_ptr()) };
        if phones.is_null() {
            return None;
        }
        // SAFETY: non-NULL, NUL-terminated, allocated by sphinxbase.
        let text = unsafe { CStr::from_ptr(phones) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: allocated with ckd_calloc by ps_lookup_word.
        unsafe { ffi::ckd_free(phones.cast()) };
        Some(text)
    }

    /// The decoder's CMN state, if it has one of a sane size.
    fn cmn(&mut self) -> Option<(NonNull<ffi::Cmn>, usize)> {
        // SAFETY: valid decoder; the feature object belongs to it and
        // starts with the fields `ffi::Feat` declares.
        let feat = unsafe { ffi::ps_get_feat(self.ps.as_ptr()) };
        if feat.is_null() {
            return None;
        }
        // SAFETY: non-NULL feature object of this decoder.
        let cmn = NonNull::new(unsafe { (*feat).cmn_struct })?;
        // SAFETY: non-NULL CMN object of this decoder.
        let (len, ok) = unsafe {
            let c = cmn.as_ref();
            (c.veclen, !c.cmn_mean.is_null() && !c.sum.is_null())
        };
        let len = usize::try_from(len)
            .ok()
            .filter(|l| (1..=MAX_CEPSTRUM).contains(l))?;
        ok.then_some((cmn, len))
    }

    /// The means subtracted from every cepstral frame now.
    fn cmn_mean(&mut self) -> Option<Vec<f32>> {
        let (cmn, len) = self.cmn()?;
        // SAFETY: `cmn_mean` holds `veclen` values.
        Some(unsafe { std::slice::from_raw_parts(cmn.as_ref().cmn_mean, len) }.to_vec())
    }

    /// The frame sum and count accumulated since the means were set.
    fn cmn_totals(&mut self) -> Option<(Vec<f32>, i32)> {
        let (cmn, len) = self.cmn()?;
        // SAFETY: `sum` holds `veclen` values.
        unsafe {
            let c = cmn.as_ref();
            Some((std::slice::from_raw_parts(c.sum, len).to_vec(), c.nframe))
        }
    }

    /// Sets the means, as if `weight` frames of them had been seen.
    fn set_cmn(&mut self, mean: &[f32], weight: i32) {
        let Some((mut cmn, len)) = self.cmn() else {
            return;
        };
        if mean.len() != len {
            return;
        }
        // SAFETY: both arrays hold `veclen` values; one thread uses the
        // decoder at a time and no engine call runs meanwhile.
        unsafe {
            let c = cmn.as_mut();
            let means = std::slice::from_raw_parts_mut(c.cmn_mean, len);
            let sums = std::slice::from_raw_parts_mut(c.sum, len);
            for ((m, s), &v) in means.iter_mut().zip(sums.iter_mut()).zip(mean) {
                *m = v;
                *s = v * weight as f32;
            }
            c.nframe = weight;
        }
    }

    /// Means = running average of everything accumulated.
    fn update_cmn(&mut self) {
        if let Some((cmn, _)) = self.cmn() {
            // SAFETY: valid CMN object of this decoder.
            unsafe { ffi::cmn_live_update(cmn.as_ptr()) };
        }
    }

    fn start(&mut self) -> Result<(), AgentError> {
        self.end()?;
        // SAFETY: valid decoder, no utterance in progress.
        let rc = unsafe { ffi::ps_start_utt(self.ps.as_ptr()) };
        if rc < 0 {
            return Err(Self::engine_err("ps_start_utt", rc));
        }
        self.in_utterance = true;
        Ok(())
    }

    fn process(&mut self, pcm: &[i16]) -> Result<(), AgentError> {
        if pcm.is_empty() {
            return Ok(());
        }
        // SAFETY: valid decoder in an utterance; `pcm` is readable for
        // `pcm.len()` samples during the call and is not kept.
        let rc = unsafe { ffi::ps_process_raw(self.ps.as_ptr(), pcm.as_ptr(), pcm.len(), 0, 0) };
        if rc < 0 {
            return Err(Self::engine_err("ps_process_raw", rc));
        }
        Ok(())
    }

    /// The current best hypothesis (partial during an utterance, final
    /// after it), empty when there is none.
    fn hypothesis(&mut self) -> String {
        let mut score = 0;
        // SAFETY: valid decoder; the string belongs to the decoder and is
        // copied before any other call.
        let hyp = unsafe { ffi::ps_get_hyp(self.ps.as_ptr(), &mut score) };
        if hyp.is_null() {
            return String::new();
        }
        // SAFETY: non-NULL and NUL-terminated.
        let text = unsafe { CStr::from_ptr(hyp) }.to_string_lossy();
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// Ends the utterance in progress, if any.
    fn end(&mut self) -> Result<(), AgentError> {
        if !self.in_utterance {
            return Ok(());
        }
        self.in_utterance = false;
        // SAFETY: valid decoder in an utterance.
        let rc = unsafe { ffi::ps_end_utt(self.ps.as_ptr()) };
        if rc < 0 {
            return Err(Self::engine_err("ps_end_utt", rc));
        }
        Ok(())
    }

    /// The final result of the ended utterance.
    fn result(&mut self) -> Decoded {
        let text = self.hypothesis();
        // SAFETY: valid decoder; the log-math object belongs to it.
        let lmath = unsafe { ffi::ps_get_logmath(self.ps.as_ptr()) };
        let to_prob = |logp: i32| -> f64 {
            if lmath.is_null() {
                return 0.0;
            }
            // SAFETY: valid log-math object of this decoder.
            let p = unsafe { ffi::logmath_exp(lmath, logp) };
            if p.is_finite() {
                p.clamp(0.0, 1.0)
            } else {
                0.0
            }
        };
        // SAFETY: valid decoder after ps_end_utt.
        let sentence_posterior = to_prob(unsafe { ffi::ps_get_prob(self.ps.as_ptr()) });
        let words = self.word_posteriors(&to_prob);
        let confidence = if text.is_empty() || words.is_empty() {
            0.0
        } else {
            (words.iter().map(|w| f64::from(w.1)).sum::<f64>() / words.len() as f64) as f32
        };
        Decoded {
            text,
            confidence,
            sentence_posterior,
            words,
        }
    }

    /// The recognised words with their posterior probabilities (fillers and
    /// sentence markers left out).
    fn word_posteriors(&mut self, to_prob: &dyn Fn(i32) -> f64) -> Vec<(String, f32)> {
        let mut words = Vec::new();
        // SAFETY: valid decoder after ps_end_utt; the iterator is walked to
        // its end (which frees it) or freed explicitly; each word string is
        // copied before the iterator moves.
        unsafe {
            let mut seg = ffi::ps_seg_iter(self.ps.as_ptr());
            while !seg.is_null() {
                let word = ffi::ps_seg_word(seg);
                if !word.is_null() {
                    let word = CStr::from_ptr(word).to_string_lossy();
                    if !word.is_empty() && !word.starts_with(['<', '[']) {
                        let (mut ascr, mut lscr, mut lback) = (0, 0, 0);
                        let post = ffi::ps_seg_prob(seg, &mut ascr, &mut lscr, &mut lback);
                        words.push((word.into_owned(), to_prob(post) as f32));
                    }
                }
                if words.len() > 10_000 {
                    ffi::ps_seg_free(seg);
                    break;
                }
                seg = ffi::ps_seg_next(seg);
            }
        }
        words
    }

    /// Decodes a whole utterance at once, normalised with the cepstral
    /// means `cmn`.
    fn decode_all(&mut self, pcm: &[i16], cmn: Option<&[f32]>) -> Result<Decoded, AgentError> {
        self.start()?;
        if let Some(mean) = cmn {
            self.set_cmn(mean, CMN_PRIOR_FRAMES);
        }
        for chunk in pcm.chunks(FRAME_SAMPLES * 50) {
            self.process(chunk)?;
        }
        self.end()?;
        Ok(self.result())
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        let _guard = engine_lock();
        // SAFETY: we own the only reference; nothing uses it afterwards.
        unsafe { ffi::ps_free(self.ps.as_ptr()) };
    }
}

// --- the pools -----------------------------------------------------------

struct PoolState {
    idle: Vec<Decoder>,
    /// Decoders that exist (idle or lent out) or are being built.
    live: usize,
}

/// A bounded set of decoders built from the same files.
struct Pool {
    files: ModelFiles,
    size: usize,
    state: Mutex<PoolState>,
    returned: Condvar,
}

impl Pool {
    /// Builds `size` decoders; `check` runs on the first one.
    fn new(
        files: ModelFiles,
        size: usize,
        check: impl FnOnce(&mut Decoder) -> Result<(), AgentError>,
    ) -> Result<Self, AgentError> {
        let size = size.max(1);
        let mut idle = Vec::with_capacity(size);
        let mut first = Decoder::new(&files)?;
        check(&mut first)?;
        idle.push(first);
        while idle.len() < size {
            idle.push(Decoder::new(&files)?);
        }
        Ok(Self {
            files,
            size,
            state: Mutex::new(PoolState { idle, live: size }),
            returned: Condvar::new(),
        })
    }

    fn state(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes an idle decoder, builds a replacement for a discarded one, or
    /// waits up to `wait` for one to come back.
    fn acquire(&self, wait: Duration) -> Result<Decoder, AgentError> {
        // No deadline if `wait` is too long to represent: wait for ever.
        let deadline = Instant::now().checked_add(wait);
        let mut state = self.state();
        loop {
            if let Some(decoder) = state.idle.pop() {
                return Ok(decoder);
            }
            if state.live < self.size {
                state.live += 1;
                drop(state);
                return Decoder::new(&self.files).inspect_err(|_| {
                    self.state().live -= 1;
                    self.returned.notify_one();
                });
            }
            let now = Instant::now();
            let left = deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(now));
            if left.is_zero() {
                return Err(AgentError::unavailable(
                    PROVIDER,
                    format!(
                        "all {} {} decoders busy for {} ms",
                        self.size,
                        self.files.search.to_string_lossy(),
                        wait.as_millis()
                    ),
                ));
            }
            state = self
                .returned
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Gives a decoder back after ending any utterance in progress, or
    /// frees it if the engine fails on that.
    fn release(&self, mut decoder: Decoder) {
        match decoder.end() {
            Ok(()) => self.state().idle.push(decoder),
            Err(err) => {
                warn!(%err, "pocketsphinx: discarding a decoder");
                drop(decoder);
                self.state().live -= 1;
            }
        }
        self.returned.notify_one();
    }

    /// Frees a decoder the engine failed on.
    fn discard(&self, decoder: Decoder) {
        warn!("pocketsphinx: discarding a decoder after an engine failure");
        drop(decoder);
        self.state().live -= 1;
        self.returned.notify_one();
    }
}

/// Everything the recogniser and its streams share.
struct Shared {
    /// The domain model's decoders, if the agent has phrases.
    domain: Option<Pool>,
    /// The general model's decoders, if configured.
    general: Option<Pool>,
    acquire_timeout: Duration,
    fallback_below: f32,
    fallback_margin: f32,
    language: String,
    /// Cepstral means every utterance starts from: the model's initial
    /// means, then a moving average of recent utterances' means.
    cmn_prior: Mutex<Option<Vec<f32>>>,
}

/// Which pool a decoder came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Model {
    Domain,
    General,
}

impl Shared {
    fn pool(&self, model: Model) -> Option<&Pool> {
        match model {
            Model::Domain => self.domain.as_ref(),
            Model::General => self.general.as_ref(),
        }
    }

    fn cmn_prior(&self) -> Option<Vec<f32>> {
        self.cmn_prior
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Moves the prior toward a finished utterance's means.
    fn learn_cmn(&self, means: &[f32]) {
        if !means.iter().all(|m| m.is_finite()) {
            return;
        }
        let mut prior = self.cmn_prior.lock().unwrap_or_else(|e| e.into_inner());
        match prior.as_mut() {
            Some(p) if p.len() == means.len() => {
                for (p, m) in p.iter_mut().zip(means) {
                    *p += CMN_PRIOR_RATE * (m - *p);
                }
            }
            _ => *prior = Some(means.to_vec()),
        }
    }
}

// --- the recogniser ------------------------------------------------------

/// PocketSphinx speech-to-text with a domain model built from the agent's
/// phrases, the general model as fallback and bounded pools of decoders
/// (see the module documentation).
pub struct PocketSphinx {
    shared: Arc<Shared>,
    report: DomainReport,
}

impl std::fmt::Debug for PocketSphinx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PocketSphinx")
            .field(
                "domain_decoders",
                &self.shared.domain.as_ref().map(|p| p.size),
            )
            .field(
                "general_decoders",
                &self.shared.general.as_ref().map(|p| p.size),
            )
            .field("language", &self.shared.language)
            .field("report", &self.report)
            .finish()
    }
}

static DIR_COUNTER: AtomicU64 = AtomicU64::new(0);

fn private_dir() -> io::Result<PathBuf> {
    let base = std::env::temp_dir();
    loop {
        let n = DIR_COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("voxtrunk-pocketsphinx-{}-{n}", std::process::id()));
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

impl PocketSphinx {
    /// Builds the domain model and its dictionary from `config`, loads the
    /// decoders of both pools and checks that every word of the domain
    /// model made it into the engine's dictionary.
    ///
    /// # Errors
    /// [`AgentError::Config`] for missing model files (naming the Debian
    /// packages), no phrases and no fallback model, phrase words without a
    /// pronunciation when guessing is off, bad configured pronunciations,
    /// or an engine that refuses the files.
    pub fn new(config: PsConfig) -> Result<Self, AgentError> {
        config.check_files()?;
        let started = Instant::now();
        let language = match &config.language {
            Some(lang) => lang.clone(),
            None => language_of(&config.model_dir).unwrap_or_else(|| "und".to_owned()),
        };
        let sentences: Vec<Vec<String>> = config
            .phrases
            .iter()
            .map(|p| lexicon::normalize(p))
            .filter(|s| !s.is_empty())
            .collect();
        if sentences.is_empty() && config.fallback_lm.is_none() {
            return Err(AgentError::config(
                PROVIDER,
                "no phrases to build a domain model from and no fallback language model",
            ));
        }
        let hmm = c_path(&config.model_dir)?;

        let mut report = DomainReport::default();
        let domain = if sentences.is_empty() {
            None
        } else {
            let dir = private_dir().map_err(|e| {
                AgentError::config(PROVIDER, format!("cannot create a model directory: {e}"))
            })?;
            // `files` removes the directory if anything below fails.
            let mut files = ModelFiles {
                hmm: hmm.clone(),
                dict: CString::default(),
                lm: CString::default(),
                search: DOMAIN_SEARCH,
                dir: Some(dir.clone()),
            };
            files.dict = c_path(&dir.join("domain.dict"))?;
            files.lm = c_path(&dir.join("domain.arpa"))?;
            let (built, vocabulary) = write_domain_files(&config, &sentences, &dir)?;
            report = built;
            log_guesses(&report);
            let pool = Pool::new(files, config.decoders, |decoder| {
                let lost: Vec<&str> = vocabulary
                    .iter()
                    .filter(|w| decoder.lookup(w).is_none())
                    .map(String::as_str)
                    .collect();
                if lost.is_empty() {
                    Ok(())
                } else {
                    Err(AgentError::config(
                        PROVIDER,
                        format!(
                            "the engine rejected the pronunciation of: {}",
                            lost.join(", ")
                        ),
                    ))
                }
            })?;
            Some(pool)
        };
        let general = match &config.fallback_lm {
            Some(lm) => {
                let files = ModelFiles {
                    hmm,
                    dict: c_path(&config.dict)?,
                    lm: c_path(lm)?,
                    search: GENERAL_SEARCH,
                    dir: None,
                };
                let size = if domain.is_some() {
                    config.fallback_decoders
                } else {
                    config.decoders
                };
                Some(Pool::new(files, size, |_| Ok(()))?)
            }
            None => None,
        };
        let cmn_prior = domain
            .as_ref()
            .or(general.as_ref())
            .and_then(|pool| pool.state().idle.first_mut().and_then(Decoder::cmn_mean));
        debug!(
            domain_decoders = domain.as_ref().map_or(0, |p| p.size),
            general_decoders = general.as_ref().map_or(0, |p| p.size),
            vocabulary = report.vocabulary,
            sentences = report.sentences,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "pocketsphinx: decoders ready"
        );
        let shared = Shared {
            domain,
            general,
            acquire_timeout: config.acquire_timeout,
            fallback_below: config.fallback_below,
            fallback_margin: config.fallback_margin,
            language,
            cmn_prior: Mutex::new(cmn_prior),
        };
        Ok(Self {
            shared: Arc::new(shared),
            report,
        })
    }

    /// What was built from the phrases.
    pub fn report(&self) -> &DomainReport {
        &self.report
    }

    /// The language of the transcripts.
    pub fn language(&self) -> &str {
        &self.shared.language
    }

    /// Decoders of the primary model.
    #[cfg(test)]
    pub fn pool_size(&self) -> usize {
        self.primary().map_or(0, |(_, pool)| pool.size)
    }

    /// Decoders of the primary model idle right now.
    #[cfg(test)]
    pub fn idle_decoders(&self) -> usize {
        self.primary()
            .map_or(0, |(_, pool)| pool.state().idle.len())
    }

    fn primary(&self) -> Option<(Model, &Pool)> {
        match (&self.shared.domain, &self.shared.general) {
            (Some(pool), _) => Some((Model::Domain, pool)),
            (None, Some(pool)) => Some((Model::General, pool)),
            (None, None) => None,
        }
    }

    fn start_stream(&self, model: Model) -> Result<PsStream, AgentError> {
        let pool = self
            .shared
            .pool(model)
            .ok_or_else(|| AgentError::config(PROVIDER, "that language model is not configured"))?;
        let mut decoder = pool.acquire(self.shared.acquire_timeout)?;
        if let Err(err) = decoder.start() {
            pool.discard(decoder);
            return Err(err);
        }
        let prior = self.shared.cmn_prior();
        if let Some(prior) = &prior {
            decoder.set_cmn(prior, 0);
        }
        Ok(PsStream {
            shared: Arc::clone(&self.shared),
            model,
            decoder: Some(decoder),
            audio: Vec::new(),
            keep_audio: true,
            second_pass: model == Model::Domain && self.shared.general.is_some(),
            prior,
            restarted: false,
            last_partial: String::new(),
        })
    }

    /// Recognises one utterance with the general model only (no domain
    /// model, no second pass); for measurements and operator tools.
    #[cfg(test)]
    pub fn start_general(&self) -> Result<Box<dyn SttStream>, AgentError> {
        Ok(Box::new(self.start_stream(Model::General)?))
    }
}

fn log_guesses(report: &DomainReport) {
    if report.guessed.is_empty() {
        return;
    }
    let guesses: Vec<String> = report
        .added_words
        .iter()
        .filter(|(w, _)| report.guessed.contains(*w))
        .map(|(w, phones)| format!("{w} [{phones}]"))
        .collect();
    warn!(
        words = %guesses.join(", "),
        "pocketsphinx: guessed the pronunciation of words not in the dictionary; \
         configure real ones if they are misrecognised"
    );
}

/// Writes the domain dictionary and model into `dir`; returns the report
/// and the domain vocabulary.
fn write_domain_files(
    config: &PsConfig,
    sentences: &[Vec<String>],
    dir: &Path,
) -> Result<(DomainReport, BTreeSet<String>), AgentError> {
    let io_err = |what: &str, e: io::Error| AgentError::config(PROVIDER, format!("{what}: {e}"));
    let mut overrides = BTreeMap::new();
    for (word, phones) in &config.pronunciations {
        let word = word.trim().to_lowercase();
        let phones = lexicon::check_phones(phones)
            .map_err(|e| AgentError::config(PROVIDER, format!("pronunciation of {word:?}: {e}")))?;
        overrides.insert(word, phones);
    }
    let corpus_words: BTreeSet<String> = sentences.iter().flatten().cloned().collect();
    let mut wanted = corpus_words.clone();
    if config.background_words {
        wanted.extend(BACKGROUND_WORDS.iter().map(|w| (*w).to_owned()));
    }
    let entries = lexicon::dictionary_entries(&config.dict, &wanted).map_err(|e| {
        io_err(
            &format!("cannot read dictionary {}", config.dict.display()),
            e,
        )
    })?;

    let mut report = DomainReport {
        sentences: sentences.len(),
        ..DomainReport::default()
    };
    let mut missing = Vec::new();
    for word in &corpus_words {
        if let Some(phones) = overrides.get(word) {
            if !entries.contains_key(word) {
                report.added_words.insert(word.clone(), phones.clone());
            }
            continue;
        }
        if entries.contains_key(word) {
            continue;
        }
        match lexicon::guess_phones(word).filter(|_| config.guess_unknown) {
            Some(phones) => {
                report.added_words.insert(word.clone(), phones);
                report.guessed.insert(word.clone());
            }
            None => missing.push(word.clone()),
        }
    }
    if !missing.is_empty() {
        return Err(AgentError::config(
            PROVIDER,
            format!(
                "words not in the dictionary and without a pronunciation: {}",
                missing.join(", ")
            ),
        ));
    }
    // Background words only if we can pronounce them.
    let background: Vec<String> = if config.background_words {
        BACKGROUND_WORDS
            .iter()
            .map(|w| (*w).to_owned())
            .filter(|w| entries.contains_key(w) || overrides.contains_key(w))
            .collect()
    } else {
        Vec::new()
    };

    let model = lm::build(sentences, &background, config.lm_params);
    report.vocabulary = model.vocabulary.len();
    fs::write(dir.join("domain.arpa"), &model.arpa)
        .map_err(|e| io_err("cannot write the domain model", e))?;

    // The dictionary: every pronunciation of the domain words, configured
    // ones instead of the dictionary's, guesses for the rest.
    let file = fs::File::create(dir.join("domain.dict"))
        .map_err(|e| io_err("cannot write the dictionary", e))?;
    let mut out = BufWriter::new(file);
    let mut written = Ok(());
    for word in &model.vocabulary {
        let lines: Vec<String> = match (overrides.get(word), report.added_words.get(word)) {
            (Some(phones), _) | (None, Some(phones)) => vec![format!("{word} {phones}")],
            (None, None) => entries.get(word).cloned().unwrap_or_default(),
        };
        for line in lines {
            if written.is_ok() {
                written = writeln!(out, "{line}");
            }
        }
    }
    written
        .and_then(|()| out.flush())
        .map_err(|e| io_err("cannot write the dictionary", e))?;
    Ok((report, model.vocabulary))
}

impl SpeechToText for PocketSphinx {
    fn name(&self) -> &str {
        PROVIDER
    }

    fn start(&self, hints: &SttHints) -> Result<Box<dyn SttStream>, AgentError> {
        let wanted = hints.language.split(['-', '_']).next().unwrap_or("");
        let ours = self.shared.language.split('-').next().unwrap_or("");
        if !wanted.is_empty() && !wanted.eq_ignore_ascii_case(ours) {
            return Err(AgentError::config(
                PROVIDER,
                format!(
                    "the model recognises {}, the agent speaks {}",
                    self.shared.language, hints.language
                ),
            ));
        }
        let (model, _) = self
            .primary()
            .ok_or_else(|| AgentError::config(PROVIDER, "no language model"))?;
        Ok(Box::new(self.start_stream(model)?))
    }
}

// --- one utterance -------------------------------------------------------

/// Recognition of one utterance on a pooled decoder (see "Cepstral mean
/// normalisation" in the module documentation).
struct PsStream {
    shared: Arc<Shared>,
    /// The pool `decoder` belongs to.
    model: Model,
    /// `None` once given back.
    decoder: Option<Decoder>,
    /// The utterance so far, for the CMN restart and the fallback pass.
    audio: Vec<i16>,
    /// False once `audio` outgrew [`MAX_KEPT_SAMPLES`].
    keep_audio: bool,
    /// Decode again with the general model when confidence is low.
    second_pass: bool,
    /// The means the utterance started with.
    prior: Option<Vec<f32>>,
    /// The utterance's own means are in use.
    restarted: bool,
    last_partial: String,
}

impl PsStream {
    /// Frees the decoder after an engine failure.
    fn fail(&mut self, err: AgentError) -> AgentError {
        if let Some(decoder) = self.decoder.take()
            && let Some(pool) = self.shared.pool(self.model)
        {
            pool.discard(decoder);
        }
        err
    }

    /// After new audio: switch to the utterance's own means once there is
    /// enough speech (with `at_finish`, any usable amount) and decode the
    /// audio so far again; after that, keep the running means current.
    fn track_cmn(&mut self, at_finish: bool) -> Result<(), AgentError> {
        let Some(decoder) = self.decoder.as_mut() else {
            return Ok(());
        };
        if self.restarted {
            decoder.update_cmn();
            return Ok(());
        }
        let (Some(prior), true) = (&self.prior, self.keep_audio) else {
            return Ok(());
        };
        let Some((sum, frames)) = decoder.cmn_totals() else {
            return Ok(());
        };
        let needed = if at_finish {
            CMN_MIN_FRAMES
        } else {
            CMN_RESTART_FRAMES
        };
        if frames < needed || sum.len() != prior.len() {
            return Ok(());
        }
        // The utterance's own means, steadied by a little of the prior.
        let weight = frames + CMN_PRIOR_FRAMES;
        let own: Vec<f32> = sum
            .iter()
            .zip(prior)
            .map(|(s, p)| (s + p * CMN_PRIOR_FRAMES as f32) / weight as f32)
            .collect();
        decoder.start()?;
        decoder.set_cmn(&own, weight);
        self.restarted = true;
        decoder.process(&self.audio)?;
        decoder.update_cmn();
        Ok(())
    }

    /// Decodes the utterance again with a general decoder, if one is free
    /// right away.
    fn general_pass(&self, means: Option<&[f32]>) -> Option<Decoded> {
        let pool = self.shared.general.as_ref()?;
        let mut decoder = match pool.acquire(Duration::ZERO) {
            Ok(decoder) => decoder,
            Err(err) => {
                debug!(%err, "pocketsphinx: no general decoder free, fallback skipped");
                return None;
            }
        };
        match decoder.decode_all(&self.audio, means) {
            Ok(decoded) => {
                pool.release(decoder);
                Some(decoded)
            }
            Err(err) => {
                warn!(%err, "pocketsphinx: fallback pass failed");
                pool.discard(decoder);
                None
            }
        }
    }
}

impl SttStream for PsStream {
    fn push(&mut self, frame: &[i16]) -> Result<Option<Transcript>, AgentError> {
        if self.decoder.is_none() {
            return Err(AgentError::engine(PROVIDER, "the utterance already failed"));
        }
        if self.keep_audio {
            if self.audio.len() + frame.len() <= MAX_KEPT_SAMPLES {
                self.audio.extend_from_slice(frame);
            } else {
                self.keep_audio = false;
                self.audio = Vec::new();
            }
        }
        let fed = match self.decoder.as_mut() {
            Some(decoder) => decoder.process(frame),
            None => Ok(()),
        }
        .and_then(|()| self.track_cmn(false));
        if let Err(err) = fed {
            return Err(self.fail(err));
        }
        let Some(decoder) = self.decoder.as_mut() else {
            return Ok(None);
        };
        let text = decoder.hypothesis();
        if text == self.last_partial {
            return Ok(None);
        }
        self.last_partial.clone_from(&text);
        Ok(Some(Transcript {
            text,
            confidence: 0.0,
            language: self.shared.language.clone(),
            is_final: false,
        }))
    }

    fn finish(mut self: Box<Self>) -> Result<Transcript, AgentError> {
        let ended = self
            .track_cmn(true)
            .and_then(|()| match self.decoder.as_mut() {
                Some(decoder) => decoder.end(),
                None => Err(AgentError::engine(PROVIDER, "the utterance already failed")),
            });
        if let Err(err) = ended {
            return Err(self.fail(err));
        }
        let Some(mut decoder) = self.decoder.take() else {
            return Err(AgentError::engine(PROVIDER, "the utterance already failed"));
        };
        let mut best = decoder.result();
        let means = decoder.cmn_mean();
        if let Some(pool) = self.shared.pool(self.model) {
            pool.release(decoder);
        }
        if self.restarted
            && let Some(means) = &means
        {
            self.shared.learn_cmn(means);
        }
        let second_pass = self.second_pass
            && self.keep_audio
            && !self.audio.is_empty()
            && best.confidence < self.shared.fallback_below;
        if second_pass && let Some(general) = self.general_pass(means.as_deref()) {
            let replace = general.confidence >= best.confidence + self.shared.fallback_margin;
            debug!(
                domain = %best.text,
                domain_confidence = best.confidence,
                domain_words = ?best.words,
                general = %general.text,
                general_confidence = general.confidence,
                general_words = ?general.words,
                replace,
                "pocketsphinx: low-confidence domain result decoded again"
            );
            if replace {
                best = general;
            }
        }
        debug!(
            text = %best.text,
            confidence = best.confidence,
            sentence_posterior = best.sentence_posterior,
            words = ?best.words,
            "pocketsphinx: final"
        );
        Ok(Transcript {
            text: best.text,
            confidence: best.confidence,
            language: self.shared.language.clone(),
            is_final: true,
        })
    }
}

impl Drop for PsStream {
    fn drop(&mut self) {
        if let Some(decoder) = self.decoder.take()
            && let Some(pool) = self.shared.pool(self.model)
        {
            pool.release(decoder);
        }
    }
}

#[cfg(test)]
mod tests;
