//! 2:1 and 1:2 conversion with a linear-phase half-band FIR.
//!
//! Every narrowband call crosses 8 kHz ↔ 16 kHz twice per 20 ms frame, so
//! this hop gets its own filter instead of the general sinc resampler: a
//! half-band lowpass has every other coefficient zero and is symmetric, so
//! the 63-tap filter below costs 16 multiply-adds per interpolated sample
//! (and none for the other phase, which is a plain copy of the input), and
//! its whole state is 64 samples. That is roughly a quarter of the CPU of
//! rubato's 64-tap sinc for this ratio and a few hundred bytes instead of
//! tens of kilobytes of filter tables per call.
//!
//! Design: windowed sinc, `h[j] = sinc(j/2)·w(j)` for odd `j` within ±31,
//! Kaiser window with β = 8 (about 80 dB stopband), odd taps renormalised
//! so that DC passes with unit gain. Passband flat to about 3.5 kHz,
//! stopband from about 4.5 kHz (at 8 kHz ↔ 16 kHz), covering the 300–3400 Hz
//! telephone band.

/// Nonzero coefficients on each side of the centre.
const K: usize = 16;
/// Kaiser window β.
const BETA: f64 = 8.0;

/// Zeroth-order modified Bessel function of the first kind (series).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let q = x * x / 4.0;
    for k in 1..64 {
        term *= q / (k * k) as f64;
        sum += term;
        if term < sum * 1e-16 {
            break;
        }
    }
    sum
}

/// The odd-offset coefficients `c[i] = h[2i+1]` of the interpolating
/// filter (centre tap 1), DC-normalised.
fn coefficients() -> [f32; K] {
    let half_span = (2 * K) as f64;
    let mut c = [0.0f64; K];
    for (i, ci) in c.iter_mut().enumerate() {
        let j = (2 * i + 1) as f64;
        let x = std::f64::consts::PI * j / 2.0;
        let sinc = x.sin() / x;
        let r = j / half_span;
        let w = bessel_i0(BETA * (1.0 - r * r).max(0.0).sqrt()) / bessel_i0(BETA);
        *ci = sinc * w;
    }
    // An interpolated sample is Σ c[i]·(two neighbours): unit DC gain needs
    // Σ 2·c[i] = 1.
    let total: f64 = c.iter().map(|v| 2.0 * v).sum();
    c.map(|v| (v / total) as f32)
}

/// Coefficient scale: Q14 fixed point. Integer arithmetic keeps the sums
/// exact and lets the compiler vectorise them; with Σ|c| < 1.3 the worst
/// case sum of 16 symmetric pairs of full-scale samples stays below 2^31.
const Q: i32 = 14;

/// Which way the half-band filter converts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// 1 → 2 samples (8 kHz → 16 kHz).
    Up,
    /// 2 → 1 samples (16 kHz → 8 kHz).
    Down,
}

/// Streaming half-band converter.
#[derive(Debug, Clone)]
pub struct HalfBand {
    direction: Direction,
    /// Odd-offset coefficients, nearest the centre first (Q14).
    c: [i32; K],
    /// The same, reversed, for the half of the window before the centre.
    c_rev: [i32; K],
    /// Going up: past input. Going down: past odd-indexed input samples
    /// (the only ones the odd taps touch).
    hist: Vec<i32>,
    /// Going down: past even-indexed input samples (the centre taps).
    even: Vec<i32>,
    /// Going down: an even sample waiting for its odd partner.
    pending: Option<i32>,
}

/// Σ c_rev·left + Σ c·right, the symmetric half-band sum around a centre.
#[inline]
fn symmetric_sum(c: &[i32; K], c_rev: &[i32; K], left: &[i32], right: &[i32]) -> i32 {
    let l: i32 = c_rev.iter().zip(left).map(|(a, b)| a * b).sum();
    let r: i32 = c.iter().zip(right).map(|(a, b)| a * b).sum();
    l + r
}

fn to_i16(acc: i32) -> i16 {
    ((acc + (1 << (Q - 1))) >> Q).clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16
}

impl HalfBand {
    /// A converter in `direction`, starting from silence.
    pub fn new(direction: Direction) -> Self {
        let f = coefficients();
        // Going down every coefficient is halved (the filter's passband gain
        // is 1, the interpolating one's is 2).
        let scale = match direction {
            Direction::Up => f64::from(1 << Q),
            Direction::Down => f64::from(1 << (Q - 1)),
        };
        let mut c = f.map(|v| (f64::from(v) * scale).round() as i32);
        // Exact unit DC gain after rounding: the pairs must sum to the scale.
        let target = scale.round() as i32;
        let sum: i32 = c.iter().map(|v| 2 * v).sum();
        c[0] += (target - sum) / 2;
        let mut c_rev = c;
        c_rev.reverse();
        let mut hb = HalfBand {
            direction,
            c,
            c_rev,
            hist: Vec::with_capacity(4 * K),
            even: Vec::with_capacity(2 * K),
            pending: None,
        };
        hb.reset();
        hb
    }

    /// Back to silence.
    pub fn reset(&mut self) {
        self.hist.clear();
        self.even.clear();
        self.pending = None;
        match self.direction {
            Direction::Up => self.hist.resize(2 * K - 1, 0),
            Direction::Down => {
                self.hist.resize(2 * K - 1, 0);
                self.even.resize(K - 1, 0);
            }
        }
    }

    /// Output samples by which the output lags the input: 2K = 32 at
    /// 16 kHz (2 ms) up, K − 1 = 15 at 8 kHz (1.9 ms) down.
    pub fn delay_samples(&self) -> usize {
        match self.direction {
            Direction::Up => 2 * K,
            Direction::Down => K - 1,
        }
    }

    /// Converts `input`, appending the output; returns how many samples
    /// were appended (twice the input going up; one per complete input
    /// pair going down, an odd sample waits for its partner).
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) -> usize {
        let start = out.len();
        match self.direction {
            Direction::Up => {
                out.reserve(2 * input.len());
                self.hist.extend(input.iter().map(|&x| i32::from(x)));
                let first = 2 * K - 1;
                for q in first..self.hist.len() {
                    // Even output: the input sample K places back; odd
                    // output: the symmetric sum around the midpoint after it.
                    let centre = q - K;
                    let left = &self.hist[centre + 1 - K..=centre];
                    let right = &self.hist[centre + 1..=centre + K];
                    out.push(
                        self.hist[centre].clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16,
                    );
                    out.push(to_i16(symmetric_sum(&self.c, &self.c_rev, left, right)));
                }
                let consumed = self.hist.len() - first;
                self.hist.drain(..consumed);
            }
            Direction::Down => {
                out.reserve(input.len() / 2 + 1);
                // Output m is centred on even input 2m: 0.5·x[2m] plus the
                // odd taps, which only touch odd-indexed samples — kept in
                // their own history so the sum runs over contiguous memory.
                let mut pairs = 0;
                for &x in input {
                    let x = i32::from(x);
                    match self.pending.take() {
                        None => self.pending = Some(x),
                        Some(e) => {
                            self.even.push(e);
                            self.hist.push(x);
                            pairs += 1;
                        }
                    }
                }
                let (odd_len, even_len) = (self.hist.len(), self.even.len());
                for p in 0..pairs {
                    let n = odd_len - pairs + p + 1;
                    // odd[m-K ..= m-1] and odd[m ..= m+K-1] with m the centre.
                    let left = &self.hist[n - 2 * K..n - K];
                    let right = &self.hist[n - K..n];
                    let centre = self.even[even_len - pairs + p + 1 - K] << (Q - 1);
                    out.push(to_i16(
                        centre + symmetric_sum(&self.c, &self.c_rev, left, right),
                    ));
                }
                let keep_odd = 2 * K - 1;
                if self.hist.len() > keep_odd {
                    let excess = self.hist.len() - keep_odd;
                    self.hist.drain(..excess);
                }
                if self.even.len() > K - 1 {
                    let excess = self.even.len() - (K - 1);
                    self.even.drain(..excess);
                }
            }
        }
        out.len() - start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f64, rate: f64, n: usize, amp: f64) -> Vec<i16> {
        (0..n)
            .map(|i| {
                (amp * (2.0 * std::f64::consts::PI * freq * i as f64 / rate).sin()).round() as i16
            })
            .collect()
    }

    fn rms(x: &[i16]) -> f64 {
        (x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / x.len() as f64).sqrt()
    }

    #[test]
    fn dc_passes_with_unit_gain_both_ways() {
        let mut up = HalfBand::new(Direction::Up);
        let mut out = Vec::new();
        up.process(&[1000; 400], &mut out);
        assert!(
            out[200..].iter().all(|&v| (v - 1000).abs() <= 1),
            "{:?}",
            &out[200..210]
        );
        let mut down = HalfBand::new(Direction::Down);
        let mut out = Vec::new();
        down.process(&[1000; 400], &mut out);
        assert!(out[100..].iter().all(|&v| (v - 1000).abs() <= 1));
    }

    #[test]
    fn passband_tone_kept_and_images_removed_going_up() {
        let mut up = HalfBand::new(Direction::Up);
        let mut out = Vec::new();
        up.process(&tone(1000.0, 8000.0, 8000, 10000.0), &mut out);
        let steady = &out[1000..15000];
        let ratio = rms(steady) / (10000.0 / 2f64.sqrt());
        assert!((ratio - 1.0).abs() < 0.01, "1 kHz level {ratio}");
        // The image of 1 kHz sits at 7 kHz: project onto it.
        let (mut re, mut im) = (0.0, 0.0);
        for (n, &v) in steady.iter().enumerate() {
            let ph = 2.0 * std::f64::consts::PI * 7000.0 * n as f64 / 16000.0;
            re += f64::from(v) * ph.cos();
            im += f64::from(v) * ph.sin();
        }
        let image = 2.0 * (re * re + im * im).sqrt() / steady.len() as f64;
        assert!(image < 1.0, "7 kHz image amplitude {image}");
    }

    #[test]
    fn aliases_rejected_going_down() {
        let mut down = HalfBand::new(Direction::Down);
        let mut out = Vec::new();
        down.process(&tone(5000.0, 16000.0, 16000, 10000.0), &mut out);
        assert!(rms(&out[100..]) < 1.0, "5 kHz leaks {}", rms(&out[100..]));
        let mut down = HalfBand::new(Direction::Down);
        let mut out = Vec::new();
        down.process(&tone(3000.0, 16000.0, 16000, 10000.0), &mut out);
        let ratio = rms(&out[100..]) / (10000.0 / 2f64.sqrt());
        assert!((ratio - 1.0).abs() < 0.02, "3 kHz level {ratio}");
    }

    #[test]
    fn impulse_lands_at_the_reported_delay() {
        for dir in [Direction::Up, Direction::Down] {
            let mut hb = HalfBand::new(dir);
            let mut input = vec![0i16; 200];
            input[40] = 20000;
            let mut out = Vec::new();
            hb.process(&input, &mut out);
            let peak = out
                .iter()
                .enumerate()
                .max_by_key(|(_, v)| v.abs())
                .unwrap()
                .0;
            let expected = match dir {
                Direction::Up => 80 + hb.delay_samples(),
                Direction::Down => 20 + hb.delay_samples(),
            };
            assert_eq!(peak, expected, "{dir:?}");
        }
    }

    #[test]
    fn pieces_of_any_size_give_the_same_output() {
        let input = tone(700.0, 16000.0, 3001, 9000.0);
        for dir in [Direction::Up, Direction::Down] {
            let mut whole = Vec::new();
            HalfBand::new(dir).process(&input, &mut whole);
            let mut hb = HalfBand::new(dir);
            let mut parts = Vec::new();
            for chunk in input.chunks(37) {
                hb.process(chunk, &mut parts);
            }
            assert_eq!(whole, parts, "{dir:?}");
        }
    }

    #[test]
    fn full_scale_saturates() {
        let mut hb = HalfBand::new(Direction::Up);
        let mut out = Vec::new();
        let square: Vec<i16> = (0..400)
            .map(|i| if (i / 4) % 2 == 0 { i16::MAX } else { i16::MIN })
            .collect();
        hb.process(&square, &mut out);
        assert_eq!(out.len(), 800);
    }
}
