//! Sample-rate conversion for 16-bit mono PCM, on top of `rubato` 5.
//!
//! Calls run at 16 kHz internally while G.711 legs run at 8 kHz and
//! prompts arrive at whatever rate their WAV files were recorded, so we need
//! both a streaming converter ([`Resampler`]) for the real-time path and a
//! one-shot one ([`resample_all`]) for whole buffers.
//!
//! # Filter choice
//!
//! rubato's polynomial resampler is the cheapest, but it has no
//! anti-aliasing filter: going 16 kHz → 8 kHz it would fold everything
//! between 4 and 8 kHz (fricatives, sibilants) back into the telephone band.
//! We use its sinc resampler instead, kept short for latency: a
//! Blackman-windowed sinc 64 samples long at the lower of the two rates.
//! Its group delay, about half that, is the only latency the streaming path
//! adds, see [`Resampler::delay_samples`]. The passband reaches about 0.9 ×
//! the lower Nyquist frequency and the stopband is deep enough that a tone
//! above the output Nyquist frequency leaves nothing above one LSB.
//!
//! When the ratio is a fraction `p/q` with a small `q` (8↔16 kHz,
//! 48 → 16 kHz, 44.1 → 16 kHz, …) the filter is precomputed for exactly the
//! `q` phases that occur and used without interpolation, which makes the
//! conversion an exact polyphase FIR; other ratios interpolate between 256
//! precomputed phases.
//!
//! The exact 2:1 and 1:2 ratios of every narrowband call (8 kHz ↔ 16 kHz)
//! do not go through rubato: [`HalfBand`] does them with a 63-tap half-band
//! FIR at about a quarter of the CPU and a few hundred bytes of state (see
//! its module). rubato serves every other ratio and [`resample_all`].
//!
//! Input is handed to rubato as it arrives (rubato's chunk size is adjusted
//! to each piece), so the streaming path adds no buffering latency on top of
//! the filter's own delay.

mod halfband;

pub use halfband::{Direction as HalfBandDirection, HalfBand};
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{
    Async, FixedAsync, Resampler as _, Resizable as _, SincInterpolationParameters,
    SincInterpolationType, WindowFunction,
};

/// Lowest sample rate accepted.
pub const MIN_RATE: u32 = 4_000;
/// Highest sample rate accepted. Bounding the ratio bounds the filter length
/// and table size.
pub const MAX_RATE: u32 = 192_000;

/// Filter length, in samples at the lower of the two rates, for streaming.
const STREAM_TAPS: usize = 64;
/// Filter length for [`resample_all`], where latency is irrelevant and a
/// sharper filter keeps more of the top octave.
const OFFLINE_TAPS: usize = 128;
const WINDOW: WindowFunction = WindowFunction::Blackman;
/// Largest piece handed to rubato at once; 20 ms at 48 kHz fits in one.
const MAX_CHUNK: usize = 1024;
/// Up to this many distinct filter phases we tabulate every phase exactly.
const MAX_EXACT_PHASES: u32 = 512;
/// Phase table size when interpolating for awkward ratios.
const INTERPOLATED_PHASES: usize = 256;

/// Why a resampler could not be built or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResampleError {
    /// A sample rate outside [`MIN_RATE`]..=[`MAX_RATE`].
    #[error("sample rate {rate} Hz is outside the supported {MIN_RATE}..={MAX_RATE} Hz")]
    UnsupportedRate {
        /// The rejected rate.
        rate: u32,
    },
    /// rubato refused the filter configuration.
    #[error("rubato rejected the resampler configuration")]
    Construction(#[from] rubato::ResamplerConstructionError),
    /// rubato failed while converting (an internal buffer-size mismatch;
    /// not expected to happen).
    #[error("rubato failed while resampling")]
    Process(#[from] rubato::ResampleError),
}

fn check_rate(rate: u32) -> Result<(), ResampleError> {
    if (MIN_RATE..=MAX_RATE).contains(&rate) {
        Ok(())
    } else {
        Err(ResampleError::UnsupportedRate { rate })
    }
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// How much alignment padding (see [`SincStage::new`]) a resampler accepts.
#[derive(Debug, Clone, Copy)]
enum MaxPad {
    /// Real-time use: at most half the filter length of extra delay.
    HalfFilter,
    /// Offline use: the delay is trimmed anyway, so always align.
    Unbounded,
}

/// The rubato state plus the scratch buffers it reads from and writes to.
struct SincStage {
    inner: Async<f32>,
    /// rubato's current (input) chunk size, changed only when a piece of a
    /// different length arrives.
    chunk: usize,
    input: Vec<f32>,
    output: Vec<f32>,
    /// Zeros fed in ahead of the stream; see [`SincStage::new`].
    pad: usize,
    /// Outputs those zeros produced, which we drop.
    pad_outputs: usize,
    /// Group delay in output samples (exact; integral for aligned ratios).
    delay: f64,
}

impl SincStage {
    /// `taps`: filter length at the lower rate. `max_pad`: how many input
    /// samples of extra delay we accept to align the output grid.
    fn new(
        from_rate: u32,
        to_rate: u32,
        taps: usize,
        max_pad: MaxPad,
    ) -> Result<Self, ResampleError> {
        let ratio = f64::from(to_rate) / f64::from(from_rate);
        // The filter is laid out in input samples; when decimating it must
        // span `taps` *output* samples to keep the same transition band.
        let decimation = from_rate.div_ceil(to_rate) as usize;
        let sinc_len = (taps * decimation).next_multiple_of(8);
        // rubato derives its automatic cutoff from the sinc length, which
        // for a decimating filter overstates the resolution we have; base it
        // on the length at the lower rate (rubato then scales it by `ratio`).
        let cutoff = rubato::calculate_cutoff::<f32>(taps, WINDOW);
        let g = gcd(from_rate, to_rate);
        // One output advances the input by p/q samples.
        let (p, q) = (u64::from(from_rate / g), u64::from(to_rate / g));
        let exact = q <= u64::from(MAX_EXACT_PHASES);
        let params = SincInterpolationParameters::new(sinc_len, WINDOW).f_cutoff(cutoff);
        let params = if exact {
            params
                .oversampling_factor(q as usize)
                .interpolation(SincInterpolationType::Nearest)
        } else {
            params
                .oversampling_factor(INTERPOLATED_PHASES)
                .interpolation(SincInterpolationType::Cubic)
        };
        // A fixed ratio: the "maximum relative ratio" of 1.0 disables the
        // adjustable-rate headroom rubato would otherwise allocate for.
        let inner = Async::<f32>::new_sinc(ratio, 1.0, &params, MAX_CHUNK, 1, FixedAsync::Input)?;

        // Where rubato's output grid falls on the input: output k is centred
        // on input time k·p/q − D, with D = L/2 − p/q − 1/q input samples
        // (from its initial position −(L−1), one step taken before the
        // first output, and the phase layout of its sinc table). rubato's
        // own `output_delay()` rounds this to L/2·ratio, 1–2 samples high.
        // D is generally not a whole number of output periods (30.5 samples
        // for 16 → 8 kHz), which would leave the output half a sample off
        // the input grid. Feeding `pad` zeros first shifts D by whole input
        // samples; with an exact phase table we pick the smallest pad that
        // makes D a multiple of p/q, so input and output samples coincide.
        // A solution below p always exists (p and q are coprime), but for
        // ratios like 44.1 → 16 kHz it can be hundreds of samples: the
        // streaming path only pads up to half the filter length and
        // otherwise lives with a fractional delay.
        let base = sinc_len as u64 * q / 2 - p - 1; // D in units of 1/q
        let limit = match max_pad {
            MaxPad::HalfFilter => sinc_len as u64 / 2,
            MaxPad::Unbounded => p,
        };
        let pad = if exact {
            (0..=limit)
                .find(|pad| (base + pad * q).is_multiple_of(p))
                .unwrap_or(0)
        } else {
            0
        };
        let output = vec![0.0; inner.output_frames_max()];
        let mut stage = Self {
            inner,
            chunk: MAX_CHUNK,
            input: vec![0.0; MAX_CHUNK],
            output,
            pad: pad as usize,
            pad_outputs: 0,
            delay: 0.0,
        };
        stage.prime()?;
        stage.delay = (base + pad * q) as f64 / p as f64 - stage.pad_outputs as f64;
        Ok(stage)
    }

    /// Feeds the alignment zeros, dropping (but counting) what they produce:
    /// it is silence from before the stream began.
    fn prime(&mut self) -> Result<(), ResampleError> {
        let zeros = vec![0i16; self.pad];
        let mut dropped = Vec::new();
        for piece in zeros.chunks(MAX_CHUNK) {
            self.run(piece, &mut dropped)?;
        }
        self.pad_outputs = dropped.len();
        Ok(())
    }

    /// Converts `piece` (at most [`MAX_CHUNK`] samples), appending to `out`.
    fn run(&mut self, piece: &[i16], out: &mut Vec<i16>) -> Result<(), ResampleError> {
        let n = piece.len();
        if n == 0 {
            return Ok(());
        }
        if n != self.chunk {
            self.inner.set_chunk_size(n)?;
            self.chunk = n;
        }
        for (dst, &src) in self.input.iter_mut().zip(piece) {
            *dst = f32::from(src);
        }
        let input = InterleavedSlice::new(&self.input[..n], 1, n).map_err(|_| {
            rubato::ResampleError::InsufficientInputBufferSize {
                expected: n,
                actual: self.input.len(),
            }
        })?;
        let capacity = self.output.len();
        let mut output =
            InterleavedSlice::new_mut(&mut self.output, 1, capacity).map_err(|_| {
                rubato::ResampleError::InsufficientOutputBufferSize {
                    expected: capacity,
                    actual: capacity,
                }
            })?;
        let (_, produced) = self.inner.process_into_buffer(&input, &mut output, None)?;
        // `as` saturates (and maps NaN to 0), which is the clipping we want
        // for filter overshoot near full scale.
        out.extend(self.output[..produced].iter().map(|&v| v.round() as i16));
        Ok(())
    }
}

/// Streaming fixed-ratio sample-rate converter for 16-bit mono PCM.
///
/// Feed it input of any length with [`process`](Self::process); it emits
/// whatever output the filter can compute so far. Output lags input by
/// [`delay_samples`](Self::delay_samples) output samples: 32 (2 ms) for
/// 8 → 16 kHz and 15 (1.9 ms) for 16 → 8 kHz (the half-band filter), 31
/// (1.9 ms) for 48 → 16 kHz (sinc).
/// The first that many output samples are the filter ringing in from
/// silence.
///
/// When both rates are equal it is a plain copy with no delay.
pub struct Resampler {
    from_rate: u32,
    to_rate: u32,
    stage: Stage,
}

/// How a [`Resampler`] converts.
enum Stage {
    /// Equal rates: a copy.
    PassThrough,
    /// Exactly 2:1 or 1:2: the half-band FIR (the hot path of every
    /// narrowband call).
    HalfBand(HalfBand),
    /// Any other ratio: rubato's sinc resampler (boxed: its state is large).
    Sinc(Box<SincStage>),
}

impl std::fmt::Debug for Resampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resampler")
            .field("from_rate", &self.from_rate)
            .field("to_rate", &self.to_rate)
            .field("delay_samples", &self.delay_samples())
            .finish()
    }
}

impl Resampler {
    /// Creates a converter from `from_rate` to `to_rate` (Hz).
    ///
    /// # Errors
    /// [`ResampleError::UnsupportedRate`] for a rate outside
    /// [`MIN_RATE`]..=[`MAX_RATE`]; [`ResampleError::Construction`] if
    /// rubato rejects the filter.
    pub fn new(from_rate: u32, to_rate: u32) -> Result<Self, ResampleError> {
        Self::with_filter(from_rate, to_rate, STREAM_TAPS, MaxPad::HalfFilter)
    }

    fn with_filter(
        from_rate: u32,
        to_rate: u32,
        taps: usize,
        max_pad: MaxPad,
    ) -> Result<Self, ResampleError> {
        check_rate(from_rate)?;
        check_rate(to_rate)?;
        let stage = if from_rate == to_rate {
            Stage::PassThrough
        } else if to_rate == 2 * from_rate {
            Stage::HalfBand(HalfBand::new(HalfBandDirection::Up))
        } else if from_rate == 2 * to_rate {
            Stage::HalfBand(HalfBand::new(HalfBandDirection::Down))
        } else {
            Stage::Sinc(Box::new(SincStage::new(from_rate, to_rate, taps, max_pad)?))
        };
        Ok(Self {
            from_rate,
            to_rate,
            stage,
        })
    }

    /// Input rate in Hz.
    pub fn from_rate(&self) -> u32 {
        self.from_rate
    }

    /// Output rate in Hz.
    pub fn to_rate(&self) -> u32 {
        self.to_rate
    }

    /// Delay added by the filter, in output samples: an event at input time
    /// `t` appears at output time `t + delay_samples() / to_rate`. Zero for
    /// pass-through.
    ///
    /// This is the filter's group delay, which is also the real-time latency
    /// it adds (the output for an input sample is emitted once the filter
    /// has seen half its length past it). It is exact for ratios with a
    /// small common denominator (all the rates telephony uses); for other
    /// ratios the true delay is fractional and this is the nearest integer.
    pub fn delay_samples(&self) -> usize {
        match &self.stage {
            Stage::PassThrough => 0,
            Stage::HalfBand(h) => h.delay_samples(),
            Stage::Sinc(s) => s.delay.round() as usize,
        }
    }

    /// Converts `input` (any length, including zero), appending the output
    /// that is ready to `out`; returns the number of samples appended.
    ///
    /// Over a stream, the total output tracks `input_total × to / from`
    /// minus the samples still held inside the filter, which are never more
    /// than [`delay_samples`](Self::delay_samples) + 2.
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) -> usize {
        let start = out.len();
        let result = self.try_process(input, out);
        // rubato only fails on buffer-size mismatches, and ours are sized
        // from rubato's own maxima; in release builds a failing piece is
        // dropped rather than taking the call down.
        debug_assert!(result.is_ok(), "resampler invariant broken: {result:?}");
        out.len() - start
    }

    fn try_process(&mut self, input: &[i16], out: &mut Vec<i16>) -> Result<(), ResampleError> {
        match &mut self.stage {
            Stage::PassThrough => out.extend_from_slice(input),
            Stage::HalfBand(h) => {
                h.process(input, out);
            }
            Stage::Sinc(stage) => {
                for piece in input.chunks(MAX_CHUNK) {
                    stage.run(piece, out)?;
                }
            }
        }
        Ok(())
    }

    /// Forgets all buffered input, as if newly created (for reuse on a new
    /// stream).
    pub fn reset(&mut self) {
        if let Stage::HalfBand(h) = &mut self.stage {
            h.reset();
        }
        if let Stage::Sinc(stage) = &mut self.stage {
            stage.inner.reset();
            stage.chunk = MAX_CHUNK;
            let result = stage.prime();
            debug_assert!(result.is_ok(), "resampler invariant broken: {result:?}");
        }
    }
}

/// Converts a whole buffer from `from_rate` to `to_rate`.
///
/// The output is aligned with the input (the filter delay is trimmed) and
/// has `round(input.len() × to / from)` samples, the tail flushed out of the
/// filter. Uses a longer filter than [`Resampler`] since latency does not
/// matter here.
///
/// # Errors
/// As [`Resampler::new`].
pub fn resample_all(
    input: &[i16],
    from_rate: u32,
    to_rate: u32,
) -> Result<Vec<i16>, ResampleError> {
    check_rate(from_rate)?;
    check_rate(to_rate)?;
    if from_rate == to_rate {
        return Ok(input.to_vec());
    }
    let (from, to) = (u64::from(from_rate), u64::from(to_rate));
    let expected = ((input.len() as u64 * to + from / 2) / from) as usize;
    let mut resampler =
        Resampler::with_filter(from_rate, to_rate, OFFLINE_TAPS, MaxPad::Unbounded)?;
    let delay = resampler.delay_samples();
    let wanted = delay + expected;
    let mut out = Vec::with_capacity(wanted + MAX_CHUNK);
    resampler.try_process(input, &mut out)?;
    // Push silence through until the delayed tail has come out. Each round
    // feeds enough zeros for the shortfall plus the filter's reach, so one
    // round normally suffices; the bound only guards against a stall.
    let zeros = [0i16; MAX_CHUNK];
    for _ in 0..8 {
        if out.len() >= wanted {
            break;
        }
        let missing = (wanted - out.len()) as u64;
        let needed =
            (missing * from).div_ceil(to) as usize + 2 * OFFLINE_TAPS * from.div_ceil(to) as usize;
        let mut left = needed;
        while left > 0 {
            let n = left.min(MAX_CHUNK);
            resampler.try_process(&zeros[..n], &mut out)?;
            left -= n;
        }
    }
    out.drain(..delay.min(out.len()));
    out.resize(expected, 0);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    fn sine(rate: u32, freq: f64, amplitude: f64, samples: usize) -> Vec<i16> {
        (0..samples)
            .map(|n| {
                (amplitude * (2.0 * PI * freq * n as f64 / f64::from(rate)).sin()).round() as i16
            })
            .collect()
    }

    /// Amplitude of the `freq` component of `x` (single-bin DFT / Goertzel
    /// without the recursion), assuming a whole number of periods or a long
    /// enough window that leakage is negligible.
    fn tone_amplitude(x: &[i16], rate: u32, freq: f64) -> f64 {
        let w = 2.0 * PI * freq / f64::from(rate);
        let (mut re, mut im) = (0.0, 0.0);
        for (n, &s) in x.iter().enumerate() {
            re += f64::from(s) * (w * n as f64).cos();
            im -= f64::from(s) * (w * n as f64).sin();
        }
        2.0 * (re * re + im * im).sqrt() / x.len() as f64
    }

    fn rms(x: &[i16]) -> f64 {
        (x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
    }

    fn stream(from: u32, to: u32, input: &[i16]) -> (Vec<i16>, usize) {
        let mut r = Resampler::new(from, to).unwrap();
        let mut out = Vec::new();
        r.process(input, &mut out);
        (out, r.delay_samples())
    }

    /// Power of `x[offset..]` minus `reference` (over the overlap), in dB
    /// below the power of `reference`.
    fn snr_db(reference: &[i16], x: &[i16], offset: usize) -> f64 {
        let n = reference.len().min(x.len().saturating_sub(offset));
        let (mut sig, mut err) = (0.0, 0.0);
        for i in 0..n {
            let r = f64::from(reference[i]);
            sig += r * r;
            err += (r - f64::from(x[i + offset])).powi(2);
        }
        10.0 * (sig / err.max(1e-9)).log10()
    }

    /// Sum of tones below 3 kHz, with a slow envelope: inside the passband
    /// of every conversion in the telephone path.
    fn narrowband(rate: u32, samples: usize) -> Vec<i16> {
        let tones = [
            (220.0, 0.3),
            (470.0, 0.25),
            (1130.0, 0.2),
            (1790.0, 0.15),
            (2450.0, 0.1),
        ];
        (0..samples)
            .map(|n| {
                let t = n as f64 / f64::from(rate);
                let env = 0.6 - 0.4 * (2.0 * PI * 3.0 * t).cos();
                let v: f64 = tones
                    .iter()
                    .map(|(f, a)| a * (2.0 * PI * f * t).sin())
                    .sum();
                (12000.0 * env * v).round() as i16
            })
            .collect()
    }

    #[test]
    fn upsampled_tone_keeps_frequency_and_amplitude() {
        // 1 s of 1 kHz at 8 kHz → 16 kHz.
        let input = sine(8000, 1000.0, 10000.0, 8000);
        let (out, delay) = stream(8000, 16000, &input);
        // Score 0.5 s well clear of the start-up and the held-back tail.
        let window = &out[delay + 1600..delay + 1600 + 8000];
        // Frequency: 1 kHz crosses zero 2000 times a second; 8000 samples
        // at 16 kHz is 0.5 s → 1000 crossings (±1 for where the window cuts).
        let crossings = window
            .windows(2)
            .filter(|w| (w[0] < 0) != (w[1] < 0))
            .count();
        assert!(
            (999..=1001).contains(&crossings),
            "{crossings} zero crossings"
        );
        // Amplitude within 0.1 dB (passband ripple of the filter is far
        // smaller; this leaves room for rounding).
        let amp = tone_amplitude(window, 16000, 1000.0);
        assert!((amp / 10000.0 - 1.0).abs() < 0.012, "amplitude {amp:.1}");
        // The output is the ideal 16 kHz sine, delayed by exactly `delay`.
        let ideal = sine(16000, 1000.0, 10000.0, 16000);
        let snr = snr_db(&ideal[1600..1600 + 8000], &out, delay + 1600);
        assert!(snr > 60.0, "SNR vs ideal sine {snr:.1} dB");
    }

    #[test]
    fn round_trip_16k_8k_16k() {
        let input = narrowband(16000, 16000);
        let (down, d1) = stream(16000, 8000, &input);
        let (up, d2) = stream(8000, 16000, &down);
        assert_eq!((d1, d2), (15, 32));
        // Both delays are whole samples, so the round trip is aligned
        // exactly: 15 samples at 8 kHz are 30 at 16 kHz.
        let total = 2 * d1 + d2;
        let snr = snr_db(&input[800..15000], &up, total + 800);
        assert!(snr > 45.0, "round-trip SNR {snr:.1} dB");
    }

    #[test]
    fn downsampling_rejects_aliases() {
        // Tones above the output Nyquist frequency must not fold back into
        // the band; tones below it must pass.
        for (from, to, alias, pass) in [
            (16000, 8000, 5000.0, 3000.0),
            (48000, 16000, 10000.0, 6000.0),
        ] {
            let n = from as usize; // 1 s
            let (out, _) = stream(from, to, &sine(from, alias, 10000.0, n));
            let leak = rms(&out[200..]);
            // Blackman stopband is ~−74 dB; −50 dB leaves margin for the
            // transition band edge.
            assert!(
                leak < 10000.0 / 2f64.sqrt() * 0.003,
                "{from}->{to}: {alias} Hz leaks at rms {leak:.1}"
            );
            let (out, d) = stream(from, to, &sine(from, pass, 10000.0, n));
            let amp = tone_amplitude(&out[d + 200..d + 200 + to as usize / 2], to, pass);
            assert!(
                (amp / 10000.0 - 1.0).abs() < 0.03,
                "{from}->{to}: {pass} Hz at {amp:.0}"
            );
        }
    }

    #[test]
    fn odd_sized_pieces_match_one_call() {
        let mut rng = fastrand::Rng::with_seed(7);
        for (from, to) in [
            (8000, 16000),
            (16000, 8000),
            (48000, 16000),
            (44100, 16000),
            (22050, 16000),
            (16000, 48000),
        ] {
            let input = narrowband(from, from as usize / 2 + 333);
            let (whole, _) = stream(from, to, &input);
            let mut r = Resampler::new(from, to).unwrap();
            let mut pieces = Vec::new();
            let mut rest = &input[..];
            while !rest.is_empty() {
                let n = match rng.u8(0..4) {
                    0 => 0,
                    1 => rng.usize(1..8),
                    2 => rng.usize(1..400),
                    _ => rng.usize(1..3000),
                }
                .min(rest.len());
                let appended = r.process(&rest[..n], &mut pieces);
                assert!(appended <= n * to as usize / from as usize + 2);
                rest = &rest[n..];
            }
            assert_eq!(pieces.len(), whole.len(), "{from}->{to}");
            let worst = whole
                .iter()
                .zip(&pieces)
                .map(|(&a, &b)| (i32::from(a) - i32::from(b)).abs())
                .max()
                .unwrap_or(0);
            assert!(worst <= 1, "{from}->{to}: pieces differ by {worst}");
        }
    }

    #[test]
    fn streaming_output_length_tracks_ratio() {
        for (from, to) in [
            (8000, 16000),
            (16000, 8000),
            (48000, 16000),
            (44100, 16000),
            (22050, 16000),
            (16000, 16000),
        ] {
            let mut r = Resampler::new(from, to).unwrap();
            let frame = vec![100i16; from as usize / 50];
            let (mut fed, mut got) = (0usize, 0usize);
            let mut out = Vec::new();
            for _ in 0..100 {
                got += r.process(&frame, &mut out);
                fed += frame.len();
                let ideal = (fed * to as usize) as f64 / f64::from(from);
                let held = ideal - got as f64;
                assert!(
                    held >= -1.0 && held <= r.delay_samples() as f64 + 2.0,
                    "{from}->{to}: after {fed} in, {got} out (ideal {ideal})"
                );
            }
            assert_eq!(out.len(), got);
        }
    }

    #[test]
    fn impulse_lands_at_reported_delay() {
        // For ratios with a small common denominator input sample i maps
        // exactly onto output sample i·to/from + delay.
        for (from, to, expect) in [
            (8000, 16000, 32),
            (16000, 8000, 15),
            (48000, 16000, 31),
            (16000, 48000, 94),
        ] {
            let mut imp = vec![0i16; 4000];
            imp[1200] = 20000;
            let (out, delay) = stream(from, to, &imp);
            assert_eq!(delay, expect, "{from}->{to}");
            let peak = out
                .iter()
                .enumerate()
                .max_by_key(|(_, s)| s.abs())
                .unwrap()
                .0;
            assert_eq!(
                peak,
                1200 * to as usize / from as usize + delay,
                "{from}->{to}"
            );
            // Linear phase: the response is symmetric about the peak.
            for k in 1..20 {
                let diff = (i32::from(out[peak - k]) - i32::from(out[peak + k])).abs();
                assert!(diff <= 2, "{from}->{to}: asymmetric at ±{k}: {diff}");
            }
        }
        // The documented figures for the telephone path.
        assert_eq!(Resampler::new(8000, 16000).unwrap().delay_samples(), 32);
        assert_eq!(Resampler::new(16000, 8000).unwrap().delay_samples(), 15);
    }

    #[test]
    fn pass_through_is_identity() {
        let input = narrowband(16000, 1234);
        let mut r = Resampler::new(16000, 16000).unwrap();
        assert_eq!(r.delay_samples(), 0);
        let mut out = vec![5];
        assert_eq!(r.process(&input, &mut out), input.len());
        assert_eq!(&out[1..], &input[..]);
        assert_eq!(resample_all(&input, 16000, 16000).unwrap(), input);
    }

    #[test]
    fn resample_all_lengths_and_alignment() {
        for (from, to) in [
            (8000, 16000),
            (16000, 8000),
            (48000, 16000),
            (44100, 16000),
            (22050, 16000),
            (16000, 44100),
            (11025, 8000),
        ] {
            for len in [0usize, 1, 2, 3, 159, 160, 441, 1000, 4410, 44100] {
                let out = resample_all(&vec![1000; len], from, to).unwrap();
                let expected =
                    ((len as u64 * u64::from(to) + u64::from(from) / 2) / u64::from(from)) as usize;
                assert_eq!(out.len(), expected, "{from}->{to} len {len}");
            }
            // A 1 kHz tone comes out as the same tone, in place (no delay).
            let input = sine(from, 1000.0, 8000.0, from as usize);
            let out = resample_all(&input, from, to).unwrap();
            let ideal = sine(to, 1000.0, 8000.0, to as usize);
            let skip = to as usize / 50;
            let snr = snr_db(&ideal[skip..to as usize - skip], &out[skip..], 0);
            // Every ratio here has an exact phase table, so the trimmed
            // output sits exactly on the ideal grid.
            assert!(snr > 60.0, "{from}->{to}: SNR {snr:.1} dB");
            let amp = tone_amplitude(&out[skip..to as usize - skip], to, 1000.0);
            assert!(
                (amp / 8000.0 - 1.0).abs() < 0.01,
                "{from}->{to}: amplitude {amp:.0}"
            );
        }
    }

    #[test]
    fn reset_restarts_the_stream() {
        let input = narrowband(8000, 3000);
        let (fresh, _) = stream(8000, 16000, &input);
        let mut r = Resampler::new(8000, 16000).unwrap();
        let mut junk = Vec::new();
        r.process(&sine(8000, 700.0, 9000.0, 777), &mut junk);
        r.reset();
        let mut again = Vec::new();
        r.process(&input, &mut again);
        assert_eq!(again, fresh);
    }

    #[test]
    fn resampler_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Resampler>();
        assert_send::<ResampleError>();
    }

    #[test]
    fn rejects_unsupported_rates() {
        for (from, to) in [
            (0, 16000),
            (16000, 0),
            (3999, 8000),
            (8000, 192_001),
            (u32::MAX, 8000),
        ] {
            assert!(matches!(
                Resampler::new(from, to),
                Err(ResampleError::UnsupportedRate { .. })
            ));
            assert!(matches!(
                resample_all(&[1, 2, 3], from, to),
                Err(ResampleError::UnsupportedRate { .. })
            ));
        }
        // The extremes that are allowed do work.
        let out = resample_all(&vec![0; 1000], MAX_RATE, MIN_RATE).unwrap();
        assert_eq!(out.len(), 21);
        let out = resample_all(&vec![0; 1000], MIN_RATE, MAX_RATE).unwrap();
        assert_eq!(out.len(), 48000);
    }

    #[test]
    fn full_scale_input_saturates_instead_of_wrapping() {
        // A full-scale square wave makes the filter overshoot past i16.
        let input: Vec<i16> = (0..4000)
            .map(|n| {
                if (n / 20) % 2 == 0 {
                    i16::MAX
                } else {
                    i16::MIN
                }
            })
            .collect();
        for (from, to) in [(8000, 16000), (16000, 8000)] {
            let (out, _) = stream(from, to, &input);
            // Wrapping would put large values of the wrong sign next to
            // each other; saturation keeps neighbours close.
            let jump = out
                .windows(2)
                .map(|w| (i32::from(w[0]) - i32::from(w[1])).abs())
                .max()
                .unwrap();
            assert!(jump < 65535, "{from}->{to}: wrapped ({jump})");
            assert!(out.contains(&i16::MAX), "{from}->{to}: no clipping seen");
        }
    }
}
