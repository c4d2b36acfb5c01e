//! The few functions of libpocketsphinx and libsphinxbase (Debian's
//! `0.8+5prealpha`) that the recogniser calls, declared by hand from
//! `/usr/include/pocketsphinx/*.h` and
//! `/usr/include/x86_64-linux-gnu/sphinxbase/*.h`.
//!
//! Only raw declarations live here; [`super::pocketsphinx`] wraps them and
//! owns every pointer. Ownership rules taken from the headers:
//!
//! - `cmd_ln_init` returns a config with one reference; `ps_init` takes its
//!   own reference, so the caller releases its one with `cmd_ln_free_r`
//!   right after `ps_init`.
//! - `ps_free` releases a decoder and everything it loaded (searches,
//!   language models, dictionary, acoustic model, log-math tables).
//! - Strings returned by `ps_get_hyp` and `ps_seg_word` belong to the
//!   decoder and live until its next call; they are copied at once.
//! - `ps_lookup_word` returns a string the caller frees with `ckd_free`.
//! - A segment iterator is freed with `ps_seg_free` unless `ps_seg_next`
//!   ran off its end (which frees it and returns NULL).

use std::ffi::{c_char, c_double, c_int, c_void};
use std::marker::{PhantomData, PhantomPinned};

/// Declares an opaque C type: no fields, not constructible, `!Send`,
/// `!Sync` and `!Unpin`, only ever used behind a raw pointer.
macro_rules! opaque {
    ($($name:ident),* $(,)?) => {$(
        #[repr(C)]
        pub struct $name {
            _data: [u8; 0],
            _marker: PhantomData<(*mut u8, PhantomPinned)>,
        }
    )*};
}

opaque!(PsDecoder, CmdLn, Arg, LogMath, PsSeg, CFile);

/// `mfcc_t`: `float32` (Debian builds sphinxbase without `FIXED_POINT`,
/// see `sphinxbase/sphinx_config.h`).
pub type Mfcc = f32;

/// `cmn_t` from `sphinxbase/cmn.h`: the cepstral mean normalisation state
/// (a public struct).
#[repr(C)]
pub struct Cmn {
    /// Current means (`veclen` values), subtracted from every frame.
    pub cmn_mean: *mut Mfcc,
    /// Variances (unused in live mode).
    pub cmn_var: *mut Mfcc,
    /// Sum of the frames accumulated since the last window shift.
    pub sum: *mut Mfcc,
    /// Number of frames in `sum`.
    pub nframe: Int32,
    /// Length of a cepstral vector.
    pub veclen: Int32,
}

/// The leading fields of `feat_t` from `sphinxbase/feat.h` (a public
/// struct, accessed by the header's own macros), up to `cmn_struct`; we
/// only ever read through a pointer the library gives us, never create or
/// move one.
#[repr(C)]
pub struct Feat {
    pub refcount: c_int,
    pub name: *mut c_char,
    pub cepsize: Int32,
    pub n_stream: Int32,
    pub stream_len: *mut u32,
    pub window_size: Int32,
    pub n_sv: Int32,
    pub sv_len: *mut u32,
    pub subvecs: *mut *mut Int32,
    pub sv_buf: *mut Mfcc,
    pub sv_dim: Int32,
    /// `cmn_type_t` (an enum: int).
    pub cmn: c_int,
    pub varnorm: Int32,
    /// `agc_type_t` (an enum: int).
    pub agc: c_int,
    pub compute_feat: Option<unsafe extern "C" fn(*mut Feat, *mut *mut Mfcc, *mut *mut Mfcc)>,
    /// NULL when no CMN is configured.
    pub cmn_struct: *mut Cmn,
}

/// `int32` in sphinxbase's `prim_type.h`.
pub type Int32 = i32;
/// `int16` in sphinxbase's `prim_type.h`.
pub type Int16 = i16;

#[link(name = "pocketsphinx")]
unsafe extern "C" {
    /// `arg_t const *ps_args(void)`: the decoder's option definitions.
    pub fn ps_args() -> *const Arg;
    /// `ps_decoder_t *ps_init(cmd_ln_t *config)`: NULL on failure.
    pub fn ps_init(config: *mut CmdLn) -> *mut PsDecoder;
    /// `int ps_free(ps_decoder_t *ps)`: remaining reference count.
    pub fn ps_free(ps: *mut PsDecoder) -> c_int;
    /// `logmath_t *ps_get_logmath(ps_decoder_t *ps)`: owned by the decoder.
    pub fn ps_get_logmath(ps: *mut PsDecoder) -> *mut LogMath;
    /// `char *ps_lookup_word(ps_decoder_t *ps, const char *word)`: the
    /// phones of `word` (free with `ckd_free`) or NULL if it is unknown.
    pub fn ps_lookup_word(ps: *mut PsDecoder, word: *const c_char) -> *mut c_char;
    /// `feat_t *ps_get_feat(ps_decoder_t *ps)`: owned by the decoder.
    pub fn ps_get_feat(ps: *mut PsDecoder) -> *mut Feat;
    /// `int ps_set_lm_file(ps_decoder_t *, const char *name, const char *path)`:
    /// adds an n-gram search; 0 on success.
    pub fn ps_set_lm_file(ps: *mut PsDecoder, name: *const c_char, path: *const c_char) -> c_int;
    /// `int ps_set_search(ps_decoder_t *ps, const char *name)`: 0 on success.
    pub fn ps_set_search(ps: *mut PsDecoder, name: *const c_char) -> c_int;
    /// `int ps_start_utt(ps_decoder_t *ps)`: negative on error.
    pub fn ps_start_utt(ps: *mut PsDecoder) -> c_int;
    /// `int ps_process_raw(ps_decoder_t *, int16 const *data, size_t
    /// n_samples, int no_search, int full_utt)`: frames searched, negative
    /// on error.
    pub fn ps_process_raw(
        ps: *mut PsDecoder,
        data: *const Int16,
        n_samples: usize,
        no_search: c_int,
        full_utt: c_int,
    ) -> c_int;
    /// `int ps_end_utt(ps_decoder_t *ps)`: negative on error.
    pub fn ps_end_utt(ps: *mut PsDecoder) -> c_int;
    /// `char const *ps_get_hyp(ps_decoder_t *ps, int32 *out_best_score)`:
    /// NULL when there is no hypothesis.
    pub fn ps_get_hyp(ps: *mut PsDecoder, out_best_score: *mut Int32) -> *const c_char;
    /// `int32 ps_get_prob(ps_decoder_t *ps)`: log posterior of the best
    /// hypothesis (log base of the decoder's log-math), 0 when unknown.
    pub fn ps_get_prob(ps: *mut PsDecoder) -> Int32;
    /// `ps_seg_t *ps_seg_iter(ps_decoder_t *ps)`: NULL when empty.
    pub fn ps_seg_iter(ps: *mut PsDecoder) -> *mut PsSeg;
    /// `ps_seg_t *ps_seg_next(ps_seg_t *seg)`: NULL (and freed) at the end.
    pub fn ps_seg_next(seg: *mut PsSeg) -> *mut PsSeg;
    /// `char const *ps_seg_word(ps_seg_t *seg)`.
    pub fn ps_seg_word(seg: *mut PsSeg) -> *const c_char;
    /// `int32 ps_seg_prob(ps_seg_t *seg, int32 *out_ascr, int32 *out_lscr,
    /// int32 *out_lback)`: log posterior of the word.
    pub fn ps_seg_prob(
        seg: *mut PsSeg,
        out_ascr: *mut Int32,
        out_lscr: *mut Int32,
        out_lback: *mut Int32,
    ) -> Int32;
    /// `void ps_seg_free(ps_seg_t *seg)`.
    pub fn ps_seg_free(seg: *mut PsSeg);
}

#[link(name = "sphinxbase")]
unsafe extern "C" {
    /// `cmd_ln_t *cmd_ln_init(cmd_ln_t *inout_cmdln, arg_t const *defn,
    /// int32 strict, ...)`: name/value C strings, ended by a NULL pointer.
    /// NULL on failure.
    pub fn cmd_ln_init(inout_cmdln: *mut CmdLn, defn: *const Arg, strict: Int32, ...)
    -> *mut CmdLn;
    /// `int cmd_ln_free_r(cmd_ln_t *cmdln)`: remaining reference count.
    pub fn cmd_ln_free_r(cmdln: *mut CmdLn) -> c_int;
    /// `void err_set_logfp(FILE *stream)`: NULL disables logging (global).
    pub fn err_set_logfp(stream: *mut CFile);
    /// `float64 logmath_exp(logmath_t *lmath, int logb_p)`.
    pub fn logmath_exp(lmath: *mut LogMath, logb_p: c_int) -> c_double;
    /// `void cmn_live_update(cmn_t *cmn)`: means = sum / nframe, and the
    /// window decays once it holds more than 800 frames.
    pub fn cmn_live_update(cmn: *mut Cmn);
    /// `void ckd_free(void *ptr)`.
    pub fn ckd_free(ptr: *mut c_void);
}
