//! Packet loss concealment by pitch waveform substitution, in the style of
//! ITU-T G.711 Appendix I (09/99), for the codecs that have no concealment
//! of their own (G.711 at 8 kHz and G.722 at 16 kHz; the 16 kHz one works
//! on the decoder's output and leaves the ADPCM state alone).
//!
//! Every constant is defined at 8 kHz, as in the Appendix, and scaled by
//! `rate / 8000`:
//!
//! | what                                       | 8 kHz  | 16 kHz |
//! |--------------------------------------------|-------:|-------:|
//! | history kept (48.75 ms)                    | 390    | 780    |
//! | pitch search: correlation window (20 ms)   | 160    | 320    |
//! | pitch search: lags (5–15 ms, 200–66.7 Hz)  | 40–120 | 80–240 |
//! | coarse search: decimation to 4 kHz         | 2:1    | 4:1    |
//! | overlap-add at a joint (¼ pitch period)    | 10–30  | 20–60  |
//! | full level, then −20 % per 10 ms           | 80     | 160    |
//! | silent from (60 ms)                        | 480    | 960    |
//!
//! Processing, with `t` the time since the erasure began:
//!
//! 1. **Pitch.** At the start of an erasure the period `P` is the lag that
//!    maximises the normalised cross-correlation `Σ x(n)·x(n−P) / √Σ x(n−P)²`
//!    of the last 20 ms with the history: first over every 4 kHz-grid lag
//!    on the decimated signal, then at every lag within one decimation step
//!    of the winner and of half the winner (an octave error on the coarse
//!    grid) at full rate. The period is a whole number of samples. Sums
//!    are exact integers in i32, the samples shifted right only as far as
//!    a loud signal needs to keep them from overflowing.
//! 2. **Synthesis.** The output cycles through the last `k` periods of the
//!    history, `k` = 1 for `t` < 10 ms, 2 until 20 ms, 3 after that (one
//!    repeated period sounds buzzy). Each cycle's last ¼ period is
//!    overlap-added with the ¼ period before the cycle's start, so the wrap
//!    back to the start is seamless; when `k` grows, the old and new cycles
//!    (which are in phase) are overlap-added over ¼ period.
//! 3. **Joint with the real signal.** Appendix I delays the decoder's output
//!    by 3.75 ms so it can overlap-add the last ¼ period *before* the loss.
//!    Our decoders add no delay (the rest of the crate relies on that), so
//!    the joint's overlap-add moves to the first ¼ period *after* it: that
//!    stretch is cross-faded from the periodic continuation shifted to
//!    start at the last real sample's level (offset `x(−1) − x(−1−P)`) to
//!    the unshifted one. The level is continuous and the offset ramps out
//!    linearly.
//! 4. **Fade.** Full level for 10 ms, then a linear ramp down by 20 % per
//!    10 ms, reaching zero at 60 ms; from 60 ms on the output is exact
//!    silence.
//! 5. **Recovery.** On the first good samples after an erasure the
//!    synthesis runs on (at the gain it had when the erasure ended) and is
//!    overlap-added with the real signal over ¼ period + 1 ms, lengthened by
//!    4 ms for each 10 ms the erasure lasted beyond its first 10 ms, at most
//!    10 ms (a 20 ms loss at 140 Hz, `P` = 57 at 8 kHz, cross-fades over
//!    14 + 40 = 54 samples).
//!
//! Concealed output goes into the history like decoded output, so a second
//! loss soon after a recovery continues from what was actually played.
//! Nothing here allocates after [`Plc::new`], and every input is valid.

/// Milliseconds of history kept, times 4 (48.75 ms, 390 samples at 8 kHz:
/// enough for three periods of the longest pitch plus a quarter period).
const HISTORY_MS_X4: usize = 195;
/// Shortest pitch period searched, ms (200 Hz).
const PITCH_MIN_MS: usize = 5;
/// Longest pitch period searched, ms (66.7 Hz).
const PITCH_MAX_MS: usize = 15;
/// Length of the correlation window, ms.
const CORR_MS: usize = 20;
/// Rate of the decimated signal for the coarse pitch search, Hz.
const COARSE_RATE: u32 = 4_000;
/// Longest run of periods the synthesis cycles through.
const MAX_PERIODS: usize = 3;
/// Gain lost per 10 ms after the first 10 ms of an erasure.
const FADE_PER_10MS: f32 = 0.2;
/// The erasure is silent from this many 10 ms units on (1 + 1/0.2).
const SILENT_AFTER_10MS: usize = 6;
/// Recovery overlap-add: extra length beyond a quarter period, ms.
const RECOVERY_EXTRA_MS: usize = 1;
/// Recovery overlap-add: lengthening per further 10 ms of erasure, ms.
const RECOVERY_STEP_MS: usize = 4;

/// G.711 Appendix I style concealment state for one stream.
pub(super) struct Plc {
    /// Samples in one concealed frame.
    frame: usize,
    /// Samples per millisecond.
    ms: usize,
    /// Samples in 10 ms.
    ten_ms: usize,
    /// Gain lost per sample while fading.
    fade_step: f32,
    /// Pitch search bounds, samples.
    pitch_min: usize,
    pitch_max: usize,
    /// Correlation window, samples.
    corr_len: usize,
    /// Decimation factor of the coarse search.
    decim: usize,
    /// The last output samples (decoded or concealed), oldest first; zeros
    /// before the stream started.
    hist: Vec<i16>,
    /// Whether anything has been decoded yet. Until then concealment is
    /// silence.
    primed: bool,
    /// Copy of `hist` taken when the erasure began: the synthesis reads
    /// from it while `hist` goes on recording the concealed output.
    pbuf: Vec<i16>,
    /// Scratch for the decimated history of the coarse pitch search
    /// (capacity for all of `pbuf`, so it never reallocates).
    dec: Vec<i16>,
    /// Samples concealed in the current erasure; 0 when not in one.
    erased: usize,
    /// Pitch period of the current erasure, samples (≥ 1).
    pitch: usize,
    /// Overlap-add length at joints: a quarter period (≥ 1).
    overlap: usize,
    /// How many periods the current cycle spans (1..=3).
    periods: usize,
    /// Read position in the current cycle.
    pos: usize,
    /// Read position in the previous cycle while fading from it.
    prev_pos: usize,
    /// Samples left of the fade from the previous cycle.
    fade_left: usize,
    /// Last real sample minus the sample one period before it: the level
    /// step the periodic continuation would make at the joint.
    offset: f32,
}

impl Plc {
    /// Concealment for PCM at `rate` Hz, producing `frame` samples per
    /// [`conceal`](Self::conceal).
    pub(super) fn new(rate: u32, frame: usize) -> Self {
        let scaled = |ms_x4: usize| (ms_x4 * rate as usize / 4000).max(1);
        let ms = scaled(4);
        let pitch_min = scaled(PITCH_MIN_MS * 4);
        let pitch_max = scaled(PITCH_MAX_MS * 4).max(pitch_min);
        let corr_len = scaled(CORR_MS * 4);
        // The synthesis reads three periods plus the quarter period before
        // them, the search a window plus the longest lag: 390 covers both
        // at 8 kHz; the max() only matters for odd rates.
        let hist_len = scaled(HISTORY_MS_X4)
            .max(MAX_PERIODS * pitch_max + (pitch_max / 4).max(1))
            .max(corr_len + pitch_max);
        Self {
            frame,
            ms,
            ten_ms: 10 * ms,
            fade_step: FADE_PER_10MS / (10 * ms) as f32,
            pitch_min,
            pitch_max,
            corr_len,
            decim: (rate / COARSE_RATE).max(1) as usize,
            hist: vec![0; hist_len],
            primed: false,
            pbuf: vec![0; hist_len],
            dec: Vec::with_capacity(hist_len),
            erased: 0,
            pitch: pitch_max,
            overlap: (pitch_max / 4).max(1),
            periods: 1,
            pos: 0,
            prev_pos: 0,
            fade_left: 0,
            offset: 0.0,
        }
    }

    /// Takes freshly decoded PCM: if it ends an erasure, overlap-adds the
    /// synthetic continuation into its start (in place), then records it.
    pub(super) fn decoded(&mut self, pcm: &mut [i16]) {
        if pcm.is_empty() {
            return;
        }
        if self.erased > 0 {
            self.recover(pcm);
        }
        record_into(&mut self.hist, pcm);
        self.primed = true;
    }

    /// Appends one frame of concealment to `out`; returns its length.
    pub(super) fn conceal(&mut self, out: &mut Vec<i16>) -> usize {
        let n = self.frame;
        let start = out.len();
        let silent_from = SILENT_AFTER_10MS * self.ten_ms;
        if !self.primed || self.erased >= silent_from {
            out.resize(start + n, 0);
        } else {
            if self.erased == 0 {
                self.start_erasure();
            }
            out.resize(start + n, 0);
            let first = self.erased;
            let live = n.min(silent_from - first);
            for (t, s) in (first..).zip(&mut out[start..start + live]) {
                *s = to_i16(self.next_raw(t) * self.gain(t));
            }
        }
        if self.primed {
            self.erased = self.erased.saturating_add(n);
            record_into(&mut self.hist, &out[start..]);
        }
        n
    }

    /// Freezes the history for synthesis and finds the pitch.
    fn start_erasure(&mut self) {
        self.pbuf.copy_from_slice(&self.hist);
        let p = self.estimate_pitch().clamp(1, self.pitch_max);
        self.pitch = p;
        self.overlap = (p / 4).max(1);
        self.periods = 1;
        self.pos = 0;
        self.prev_pos = 0;
        self.fade_left = 0;
        let n = self.pbuf.len();
        let last = self.pbuf.get(n.wrapping_sub(1)).copied().unwrap_or(0);
        let before = self.pbuf.get(n.wrapping_sub(1 + p)).copied().unwrap_or(0);
        self.offset = f32::from(last) - f32::from(before);
    }

    /// Gain of the concealed signal `t` samples into the erasure.
    fn gain(&self, t: usize) -> f32 {
        if t < self.ten_ms {
            1.0
        } else {
            (1.0 - (t - self.ten_ms) as f32 * self.fade_step).max(0.0)
        }
    }

    /// The synthetic signal (before the fade) `t` samples into the
    /// erasure. Must be called for consecutive `t` from 0.
    fn next_raw(&mut self, t: usize) -> f32 {
        // Lengthen the cycle at 10 ms and 20 ms, fading from the old one.
        if self.periods < MAX_PERIODS && t >= self.periods * self.ten_ms {
            self.prev_pos = self.pos;
            self.periods += 1;
            self.pos = t % (self.periods * self.pitch);
            self.fade_left = self.overlap;
        }
        let mut x = self.cycle_sample(self.periods, self.pos);
        self.pos += 1;
        if self.pos >= self.periods * self.pitch {
            self.pos = 0;
        }
        if self.fade_left > 0 {
            let old_periods = self.periods - 1;
            let old = self.cycle_sample(old_periods, self.prev_pos);
            self.prev_pos += 1;
            if self.prev_pos >= old_periods * self.pitch {
                self.prev_pos = 0;
            }
            let w = ramp(self.overlap - self.fade_left, self.overlap);
            x = old + w * (x - old);
            self.fade_left -= 1;
        }
        if t < self.overlap {
            x += self.offset * (1.0 - ramp(t, self.overlap));
        }
        x
    }

    /// Sample `i` of the cycle through the last `periods` pitch periods of
    /// the frozen history; its last quarter period is cross-faded into the
    /// samples just before the cycle's start, so wrapping is seamless.
    fn cycle_sample(&self, periods: usize, i: usize) -> f32 {
        let n = self.pbuf.len();
        let len = periods * self.pitch;
        // `new` sizes the history for 3 periods + ¼ of the longest pitch.
        let at = |k: usize| f32::from(self.pbuf.get(k).copied().unwrap_or(0));
        let here = n.wrapping_sub(len).wrapping_add(i);
        if i + self.overlap < len {
            at(here)
        } else {
            let j = i + self.overlap - len;
            let w = ramp(j, self.overlap);
            let a = at(here);
            a + w * (at(here.wrapping_sub(len)) - a)
        }
    }

    /// Ends an erasure: overlap-adds the continued synthesis into `pcm`.
    fn recover(&mut self, pcm: &mut [i16]) {
        let t_end = self.erased;
        self.erased = 0;
        // Three steps of 4 ms already pass the 10 ms cap; capping the count
        // keeps an endless erasure from overflowing the product.
        let extra_units = t_end.div_ceil(self.ten_ms).saturating_sub(1).min(3);
        let len =
            (self.overlap + RECOVERY_EXTRA_MS * self.ms + RECOVERY_STEP_MS * self.ms * extra_units)
                .min(self.ten_ms)
                .min(pcm.len());
        let g = if t_end < SILENT_AFTER_10MS * self.ten_ms {
            self.gain(t_end)
        } else {
            0.0
        };
        for (j, s) in pcm.iter_mut().take(len).enumerate() {
            let syn = if g > 0.0 {
                self.next_raw(t_end + j) * g
            } else {
                0.0
            };
            let w = ramp(j, len);
            *s = to_i16(syn + w * (f32::from(*s) - syn));
        }
    }

    /// The pitch period of the end of `pbuf`, in samples.
    fn estimate_pitch(&mut self) -> usize {
        let x = &self.pbuf[..];
        let w = self.corr_len;
        let d = self.decim;
        // `new` makes the history at least this long.
        let Some(target) = x.len().checked_sub(w).filter(|&t| t >= self.pitch_max) else {
            return self.pitch_max;
        };

        // Coarse: every d-th sample, lags on the d grid. Samples are
        // scaled down just enough that a window's sums of products fit an
        // i32 (exact for quiet signals, 11+ bits for loud ones), which
        // keeps the loops narrow and vectorisable.
        let count = (w / d).max(1);
        let peak = x.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
        let shift = headroom_shift(peak, count);
        let phase = target % d;
        self.dec.clear();
        self.dec
            .extend(x[phase..].iter().step_by(d).map(|&s| s >> shift));
        let t = target / d;
        let mut best = (f64::NEG_INFINITY, self.pitch_max);
        for lag in self.pitch_min.div_ceil(d)..=self.pitch_max / d {
            let (corr, energy) = correlate(&self.dec[t..t + count], &self.dec[t - lag..]);
            consider(&mut best, corr, energy, lag * d);
        }

        // Fine: every lag within one decimation step of the winner, at full
        // rate, and likewise around half of it. A period that is not on
        // the coarse grid (57.1 samples for 140 Hz: 56 and 58 are a whole
        // sample off) can lose there to twice itself (114 is 0.3 off);
        // at full rate the true period wins.
        let shift = headroom_shift(peak, w);
        self.dec.clear();
        self.dec.extend(x.iter().map(|&s| s >> shift));
        let mut fine = (f64::NEG_INFINITY, best.1);
        for centre in [best.1, best.1 / 2] {
            let lo = centre.saturating_sub(d - 1).max(self.pitch_min);
            let hi = (centre + d - 1).min(self.pitch_max);
            for lag in lo..=hi {
                let (corr, energy) = correlate(&self.dec[target..], &self.dec[target - lag..]);
                consider(&mut fine, corr, energy, lag);
            }
        }
        fine.1
    }
}

/// Right shift that keeps sums of `count` products of samples up to `peak`
/// in magnitude within an i32.
fn headroom_shift(peak: u16, count: usize) -> u32 {
    let bits = u16::BITS - peak.leading_zeros();
    // count < 2^log, so count · (2^room)² < 2^31.
    let log = usize::BITS - count.leading_zeros();
    bits.saturating_sub(31u32.saturating_sub(log) / 2)
}

/// Cross-correlation of `recent` with the start of `past`, and the energy
/// of that part of `past`; the samples are pre-scaled by
/// [`headroom_shift`].
fn correlate(recent: &[i16], past: &[i16]) -> (i64, i64) {
    let (corr, energy) = recent
        .iter()
        .zip(past)
        .fold((0i32, 0i32), |(c, e), (&a, &b)| {
            let b = i32::from(b);
            (c + i32::from(a) * b, e + b * b)
        });
    (corr.into(), energy.into())
}

/// Keeps `lag` if its normalised correlation beats `best`'s.
fn consider(best: &mut (f64, usize), corr: i64, energy: i64, lag: usize) {
    if energy > 0 {
        let score = corr as f64 / (energy as f64).sqrt();
        if score > best.0 {
            *best = (score, lag);
        }
    }
}

/// Shifts `pcm` into the end of `hist`, dropping the oldest samples.
fn record_into(hist: &mut [i16], pcm: &[i16]) {
    let h = hist.len();
    if pcm.len() >= h {
        hist.copy_from_slice(&pcm[pcm.len() - h..]);
    } else {
        hist.copy_within(pcm.len().., 0);
        hist[h - pcm.len()..].copy_from_slice(pcm);
    }
}

/// Weight of the new signal at step `j` of an `n`-step linear cross-fade:
/// rises from 1/(n+1) to n/(n+1), so neither end repeats a sample.
fn ramp(j: usize, n: usize) -> f32 {
    (j + 1) as f32 / (n + 1) as f32
}

/// Rounds to the nearest sample value, saturating.
fn to_i16(x: f32) -> i16 {
    // `as` truncates toward zero and saturates (NaN to 0).
    (x + if x >= 0.0 { 0.5 } else { -0.5 }) as i16
}

#[cfg(test)]
impl Plc {
    /// The recorded history, oldest first.
    pub(super) fn history(&self) -> &[i16] {
        &self.hist
    }

    /// The pitch found at the start of the current or last erasure.
    pub(super) fn pitch(&self) -> usize {
        self.pitch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{CodecKind, Decoder, Encoder};
    use std::f64::consts::PI;

    /// A steady voiced sound: `f0` and its harmonics at 1/h amplitude
    /// below 0.45·rate, about ±9000 peak.
    fn tone(rate: u32, f0: f64, n: usize) -> Vec<i16> {
        voice(rate, f0, n, false)
    }

    /// As [`tone`], optionally under a 4 Hz syllabic envelope.
    fn voice(rate: u32, f0: f64, n: usize, envelope: bool) -> Vec<i16> {
        (0..n)
            .map(|i| {
                let t = i as f64 / f64::from(rate);
                let env = if envelope {
                    0.55 - 0.45 * (2.0 * PI * 4.0 * t).cos()
                } else {
                    1.0
                };
                let v: f64 = (1..=12)
                    .filter(|&h| f0 * f64::from(h) < f64::from(rate) * 0.45)
                    .map(|h| (2.0 * PI * f0 * f64::from(h) * t + f64::from(h)).sin() / f64::from(h))
                    .sum();
                (6000.0 * env * v).round() as i16
            })
            .collect()
    }

    /// Feeds `x` frame by frame, concealing the frames in `lost`.
    fn run(plc: &mut Plc, x: &[i16], frame: usize, lost: &[usize]) -> Vec<i16> {
        let mut out = Vec::new();
        for (i, f) in x.chunks(frame).enumerate() {
            if lost.contains(&i) {
                assert_eq!(plc.conceal(&mut out), frame);
            } else {
                let start = out.len();
                out.extend_from_slice(f);
                plc.decoded(&mut out[start..]);
            }
        }
        out
    }

    fn snr_db(reference: &[i16], test: &[i16]) -> f64 {
        let (mut sig, mut err) = (0.0f64, 0.0f64);
        for (&r, &t) in reference.iter().zip(test) {
            sig += f64::from(r).powi(2);
            err += (f64::from(r) - f64::from(t)).powi(2);
        }
        10.0 * (sig / err.max(1e-9)).log10()
    }

    /// Frequency of the strongest spectral peak between 60 and 400 Hz
    /// (Hann window, DFT evaluated every 0.1 Hz).
    fn dominant_hz(x: &[i16], rate: u32) -> f64 {
        let n = x.len() as f64;
        let mut best = (0.0, 0.0);
        for step in 600..=4000 {
            let f = f64::from(step) / 10.0;
            let (mut re, mut im) = (0.0, 0.0);
            for (i, &s) in x.iter().enumerate() {
                let w = 0.5 - 0.5 * (2.0 * PI * i as f64 / n).cos();
                let ph = 2.0 * PI * f * i as f64 / f64::from(rate);
                re += w * f64::from(s) * ph.cos();
                im += w * f64::from(s) * ph.sin();
            }
            let mag = re * re + im * im;
            if mag > best.0 {
                best = (mag, f);
            }
        }
        best.1
    }

    fn max_step(x: &[i16]) -> i32 {
        x.windows(2)
            .map(|w| (i32::from(w[1]) - i32::from(w[0])).abs())
            .max()
            .unwrap_or(0)
    }

    fn rms(x: &[i16]) -> f64 {
        (x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
    }

    #[test]
    fn pitch_estimate_finds_the_period() {
        for (rate, frame) in [(8000u32, 160usize), (16000, 320)] {
            for f0 in [70.0, 90.0, 110.0, 140.0, 150.0, 170.0, 195.0] {
                let mut plc = Plc::new(rate, frame);
                let x = tone(rate, f0, frame * 12);
                run(&mut plc, &x, frame, &[10]);
                let period = f64::from(rate) / f0;
                let found = plc.pitch() as f64;
                assert!(
                    (found - period).abs() <= 1.0,
                    "{rate} Hz, f0 {f0}: pitch {found}, period {period:.2}"
                );
            }
        }
    }

    #[test]
    fn voiced_loss_beats_frame_repeat() {
        // 150 Hz flatters frame repetition: 20 ms is exactly three of its
        // periods, so replaying the last frame is a perfect continuation
        // there (measured and printed, but only the other f0, which do not
        // divide 20 ms, must beat it).
        for f0 in [110.0, 140.0, 150.0, 165.0, 190.0] {
            let x = tone(8000, f0, 160 * 14);
            let lost = 10;
            let mut plc = Plc::new(8000, 160);
            let out = run(&mut plc, &x, 160, &[lost]);
            let truth = &x[lost * 160..(lost + 1) * 160];
            let concealed = &out[lost * 160..(lost + 1) * 160];
            let repeated = &x[(lost - 1) * 160..lost * 160];
            // The old concealment: the repeat faded from 1 to 0.5.
            let faded: Vec<i16> = repeated
                .iter()
                .enumerate()
                .map(|(i, &s)| (f32::from(s) * (1.0 - 0.5 * i as f32 / 160.0)) as i16)
                .collect();
            let (snr_plc, snr_rep, snr_fade) = (
                snr_db(truth, concealed),
                snr_db(truth, repeated),
                snr_db(truth, &faded),
            );
            let (f_true, f_plc) = (dominant_hz(truth, 8000), dominant_hz(concealed, 8000));
            println!(
                "f0 {f0}: pitch {} dominant {f_plc:.1} Hz (true frame {f_true:.1} Hz); \
                 SNR PLC {snr_plc:.1} dB, repeat {snr_rep:.1} dB, faded repeat {snr_fade:.1} dB",
                plc.pitch()
            );
            assert!((f_plc - f_true).abs() < 3.0, "f0 {f0}: {f_plc} vs {f_true}");
            // The period is a whole number of samples, so a fractional one
            // drifts (165 Hz: 48 for 48.5), which costs the high harmonics.
            assert!(snr_plc > 6.0, "f0 {f0}: PLC SNR {snr_plc:.1} dB");
            assert!(
                f0 == 150.0 || snr_plc > snr_rep + 10.0,
                "f0 {f0}: PLC {snr_plc:.1} dB vs repeat {snr_rep:.1} dB"
            );
        }
    }

    #[test]
    fn joints_are_continuous() {
        // A voice whose level moves (4 Hz envelope), lost one or two
        // frames at a time at many phases: the biggest step across the
        // start and the end of each erasure, against the biggest step of
        // the true signal around it.
        let mut worst: (f64, f64, f64) = (0.0, 0.0, 0.0);
        let mut worst_repeat: f64 = 0.0;
        for rate in [8000u32, 16000] {
            let frame = rate as usize / 50;
            for f0 in [95.0, 123.0, 140.0, 181.0] {
                let x = voice(rate, f0, frame * 48, true);
                for lost_len in [1, 2] {
                    for first in 4..44 {
                        let lost: Vec<usize> = (first..first + lost_len).collect();
                        let mut plc = Plc::new(rate, frame);
                        let out = run(&mut plc, &x, frame, &lost);
                        let n = first * frame;
                        let r = n + lost_len * frame;
                        let own = f64::from(max_step(&x[n - frame..r + frame]));
                        let ov = plc.pitch() / 4;
                        let start = f64::from(max_step(&out[n - 1..n + ov + 1])) / own;
                        // Recovery cross-fade is at most 10 ms long.
                        let end = f64::from(max_step(&out[r - 1..r + frame / 2 + 1])) / own;
                        // Inside: cycle wraps and the 10/20 ms switches.
                        let inside = f64::from(max_step(&out[n..r])) / own;
                        worst.2 = worst.2.max(inside);
                        worst.0 = worst.0.max(start);
                        worst.1 = worst.1.max(end);
                        let rep = (i32::from(x[n - frame]) - i32::from(x[n - 1])).abs();
                        worst_repeat = worst_repeat.max(f64::from(rep) / own);
                    }
                }
            }
        }
        println!(
            "worst joint step / own largest step: start {:.2}, recovery {:.2}, \
             inside the concealment {:.2} (plain frame repeat at the start: \
             {worst_repeat:.2})",
            worst.0, worst.1, worst.2
        );
        assert!(worst.2 < 1.1, "inside the concealment: {:.2}", worst.2);
        assert!(worst.0 < 1.1, "start of erasure: {:.2}", worst.0);
        assert!(worst.1 < 1.1, "recovery: {:.2}", worst.1);
    }

    #[test]
    fn fade_schedule_is_exact() {
        // A constant input makes every cycle constant, so the output is
        // the gain itself: 1 for 10 ms, then down 20 % per 10 ms to 0 at
        // 60 ms, then exact silence.
        for (rate, frame) in [(8000u32, 160usize), (16000, 320)] {
            let ten = frame / 2;
            let x = vec![10_000i16; frame * 10];
            let mut plc = Plc::new(rate, frame);
            let out = run(&mut plc, &x, frame, &[5, 6, 7, 8, 9]);
            for t in 0..5 * frame {
                let g = if t < ten {
                    1.0
                } else {
                    (1.0 - 0.2 * (t - ten) as f64 / ten as f64).max(0.0)
                };
                let want = (10_000.0 * g).round() as i16;
                let got = out[5 * frame + t];
                // ±1 for the f32 arithmetic of the gain ramp.
                assert!(
                    (got - want).abs() <= 1,
                    "{rate} Hz, t = {t}: {got} vs {want}"
                );
            }
            assert!(out[5 * frame + 3 * frame..].iter().all(|&s| s == 0));
        }
    }

    #[test]
    fn fade_on_a_voice_and_recovery_from_silence() {
        let x = tone(8000, 140.0, 160 * 14);
        let mut plc = Plc::new(8000, 160);
        let lost = [5, 6, 7, 8, 9];
        let out = run(&mut plc, &x, 160, &lost);
        // Energy of each concealed frame against the true frame: the mean
        // square gain is 0.907, 0.373, 0.053, then 0.
        let expected = [0.907, 0.373, 0.053];
        for (k, want) in expected.iter().enumerate() {
            let f = 5 + k;
            let ratio =
                (rms(&out[f * 160..(f + 1) * 160]) / rms(&x[f * 160..(f + 1) * 160])).powi(2);
            println!("concealed frame {k}: energy ratio {ratio:.3} (gain alone: {want})");
            assert!(
                (ratio / want - 1.0).abs() < 0.2,
                "frame {k}: {ratio:.3} vs {want}"
            );
        }
        for f in 8..10 {
            assert!(
                out[f * 160..(f + 1) * 160].iter().all(|&s| s == 0),
                "frame {f}"
            );
        }
        // After 100 ms of erasure the synthesis is silent, so recovery is a
        // 10 ms linear fade-in of the real signal, then the signal itself.
        let r = 10 * 160;
        for j in 0..80 {
            let w = (j + 1) as f32 / 81.0;
            assert_eq!(out[r + j], to_i16(f32::from(x[r + j]) * w), "j = {j}");
        }
        assert_eq!(out[r + 80..], x[r + 80..]);
    }

    #[test]
    fn recovery_overlap_grows_with_the_erasure() {
        // ¼ period + 1 ms after up to 10 ms, +4 ms per further 10 ms, at
        // most 10 ms. At 140 Hz (P = 57, ¼ = 14): a 20 ms loss gives
        // 14 + 8 + 32 = 54 samples, a 40 ms one 14 + 8 + 96, capped at 80.
        let x = tone(8000, 140.0, 160 * 14);
        for (lost, overlap) in [(vec![5], 14 + 8 + 32), (vec![5, 6], 80)] {
            let mut plc = Plc::new(8000, 160);
            let out = run(&mut plc, &x, 160, &lost);
            let r = (lost[lost.len() - 1] + 1) * 160;
            assert_ne!(out[r + overlap - 1], x[r + overlap - 1]);
            assert_eq!(out[r + overlap..], x[r + overlap..], "{lost:?}");
        }
    }

    #[test]
    fn g722_through_the_decoder() {
        // 16 kHz through the G.722 codec: decode, conceal, conceal, decode.
        let kind = CodecKind::G722;
        let x = tone(16000, 140.0, 320 * 20);
        let mut enc = Encoder::new(kind).unwrap();
        let packets: Vec<Vec<u8>> = x
            .chunks_exact(320)
            .map(|f| {
                let mut p = Vec::new();
                enc.encode(f, &mut p).unwrap();
                p
            })
            .collect();
        let lost = [10, 11];
        // What a decoder yields without losses, and one that just skips
        // the lost packets without concealing (its output of the packets
        // it did get).
        let mut clean = Vec::new();
        let mut full = Decoder::new(kind).unwrap();
        for p in &packets {
            full.decode(p, &mut clean).unwrap();
        }
        let mut skipping = Decoder::new(kind).unwrap();
        let mut skipped = Vec::new();
        for (i, p) in packets.iter().enumerate() {
            if lost.contains(&i) {
                skipped.resize(skipped.len() + 320, 0);
            } else {
                skipping.decode(p, &mut skipped).unwrap();
            }
        }
        let mut dec = Decoder::new(kind).unwrap();
        let mut out = Vec::new();
        for (i, p) in packets.iter().enumerate() {
            let n = if lost.contains(&i) {
                dec.conceal(&mut out).unwrap()
            } else {
                dec.decode(p, &mut out).unwrap()
            };
            assert_eq!(n, 320);
        }
        let frame = |s: &[i16], i: usize| s[i * 320..(i + 1) * 320].to_vec();
        for &i in &lost {
            let (f_true, f_plc) = (
                dominant_hz(&frame(&clean, i), 16000),
                dominant_hz(&frame(&out, i), 16000),
            );
            let snr = snr_db(&frame(&clean, i), &frame(&out, i));
            let rep = snr_db(&frame(&clean, i), &frame(&clean, 9));
            println!(
                "G.722 frame {i}: dominant {f_plc:.1} Hz (clean {f_true:.1}), \
                 SNR {snr:.1} dB (repeat of frame 9: {rep:.1} dB)"
            );
            assert!((f_plc - f_true).abs() < 3.0, "frame {i}");
            if i == lost[0] {
                assert!(snr > 12.0 && snr > rep + 10.0, "frame {i}: {snr:.1} dB");
            }
        }
        // Joints: no step beyond the signal's own (after the gap, the
        // decoder's own output may step harder while its ADPCM state,
        // which missed two packets, re-converges).
        let own = max_step(&clean[9 * 320..13 * 320]);
        let own_after = max_step(&skipped[12 * 320..12 * 320 + 170]).max(own);
        let start = max_step(&out[10 * 320 - 1..10 * 320 + 40]);
        let end = max_step(&out[12 * 320 - 1..12 * 320 + 170]);
        println!("G.722 joints: start {start} (own {own}), recovery {end} (own {own_after})");
        assert!(
            start <= own && end <= own_after,
            "{start} {end} vs {own} {own_after}"
        );
        // The ADPCM state was left alone: past the 10 ms cross-fade the
        // output is exactly what the decoder makes of the packets it got.
        assert_ne!(
            out[12 * 320..12 * 320 + 160],
            skipped[12 * 320..12 * 320 + 160]
        );
        assert_eq!(out[12 * 320 + 160..], skipped[12 * 320 + 160..]);
    }

    #[test]
    fn odd_inputs_never_panic() {
        for (rate, frame) in [(8000u32, 160usize), (16000, 320)] {
            // Concealment before anything was decoded is silence, and does
            // not touch the first real packet.
            let mut plc = Plc::new(rate, frame);
            let mut out = Vec::new();
            for _ in 0..10 {
                assert_eq!(plc.conceal(&mut out), frame);
            }
            assert!(out.iter().all(|&s| s == 0));
            let x = tone(rate, 140.0, frame);
            let mut first = x.clone();
            plc.decoded(&mut first);
            assert_eq!(first, x);

            // Silence stays silence.
            let mut plc = Plc::new(rate, frame);
            let out = run(&mut plc, &vec![0; frame * 8], frame, &[3, 4, 5]);
            assert!(out.iter().all(|&s| s == 0));

            // Very short history: one sample, then losses.
            for s in [i16::MAX, i16::MIN, 1] {
                let mut plc = Plc::new(rate, frame);
                plc.decoded(&mut [s]);
                let mut out = Vec::new();
                for _ in 0..5 {
                    assert_eq!(plc.conceal(&mut out), frame);
                }
                assert_eq!(out.len(), frame * 5);
            }

            // Full-scale noise and full-scale square waves.
            let mut rng = fastrand::Rng::with_seed(u64::from(rate));
            let noise: Vec<i16> = (0..frame * 20).map(|_| rng.i16(..)).collect();
            let square: Vec<i16> = (0..frame * 20)
                .map(|i| if (i / 7) % 2 == 0 { i16::MAX } else { i16::MIN })
                .collect();
            for x in [&noise, &square] {
                let mut plc = Plc::new(rate, frame);
                let out = run(&mut plc, x, frame, &[3, 6, 7, 10, 11, 12, 13, 14, 15]);
                assert_eq!(out.len(), x.len());
            }

            // Random packet sizes, contents and losses.
            let mut plc = Plc::new(rate, frame);
            let mut out = Vec::new();
            for _ in 0..3000 {
                out.clear();
                if rng.u8(..) < 90 {
                    assert_eq!(plc.conceal(&mut out), frame);
                } else {
                    let len = [0, 1, 2, 3, frame - 1, frame, frame + 1, rng.usize(..1500)]
                        [rng.usize(..8)];
                    let amp = [0, 1, 300, i16::MAX][rng.usize(..4)];
                    out.extend((0..len).map(|_| rng.i16(-amp..=amp)));
                    plc.decoded(&mut out);
                }
            }
        }
        // Rates the codecs do not use keep their invariants too.
        for rate in [1, 4000, 11025, 44100, 48000] {
            let frame = (rate as usize / 50).max(1);
            let mut plc = Plc::new(rate, frame);
            let x = tone(rate, 140.0, frame * 12);
            let out = run(&mut plc, &x, frame, &[2, 3, 4, 8]);
            assert_eq!(out.len(), x.len());
        }
    }
}
