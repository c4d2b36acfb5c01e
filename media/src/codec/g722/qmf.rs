//! The quadrature mirror filters that split the 16 kHz signal into two
//! 8 kHz sub-bands and join them again (G.722 clauses 3.1 and 4.4, with the
//! computational details of clause 5).
//!
//! Both are the same 24-tap linear-phase filter [`QMF_COEFFS`] in
//! polyphase form: each output pair costs two 12-tap dot products, one over
//! the even taps `h(2i)` and one over the odd taps `h(2i+1)`. Sums are exact
//! in 32 bits, so only the final scaling and limiting need care.

use super::ops::{add, saturate, sub};
use super::tables::QMF_COEFFS;

/// Number of taps in each polyphase branch.
const BRANCH: usize = 12;

/// The taps of one polyphase branch, `h(first)`, `h(first + 2)`, …,
/// `h(first + 22)`, reversed so that they line up with a history kept
/// oldest sample first.
const fn branch_taps(first: usize) -> [i16; BRANCH] {
    let mut taps = [0; BRANCH];
    let mut i = 0;
    while i < BRANCH {
        taps[BRANCH - 1 - i] = QMF_COEFFS[first + 2 * i];
        i += 1;
    }
    taps
}

/// Even taps `h(2i)`, oldest-first order.
const EVEN_TAPS: [i16; BRANCH] = branch_taps(0);
/// Odd taps `h(2i+1)`, oldest-first order.
const ODD_TAPS: [i16; BRANCH] = branch_taps(1);

/// Σ taps·history in 32 bits. |Σ| ≤ 6482 · 32768 < 2³¹, so it cannot
/// overflow.
#[inline]
fn dot(history: &[i16; BRANCH], taps: &[i16; BRANCH]) -> i32 {
    history
        .iter()
        .zip(taps)
        .map(|(&x, &h)| i32::from(x) * i32::from(h))
        .sum()
}

/// Shifts `sample` into a history kept oldest first.
#[inline]
fn push(history: &mut [i16; BRANCH], sample: i16) {
    history.copy_within(1.., 0);
    history[BRANCH - 1] = sample;
}

/// Transmit (analysis) QMF: two input samples in, one lower and one higher
/// sub-band sample out.
#[derive(Debug, Clone)]
pub(super) struct TransmitQmf {
    /// `xin(j−2i)` for i = 11…0: the newer sample of each input pair,
    /// oldest first.
    newer: [i16; BRANCH],
    /// `xin(j−2i−1)` for i = 11…0: the older sample of each pair.
    older: [i16; BRANCH],
}

impl TransmitQmf {
    pub(super) fn new() -> Self {
        Self {
            newer: [0; BRANCH],
            older: [0; BRANCH],
        }
    }

    /// Clause 3.1: takes the next two input samples (`first` is the older)
    /// and returns `(xL, xH)`:
    ///
    /// ```text
    /// xA = Σ h(2i)·xin(j−2i)         xL = (xA + xB) · 2⁻¹⁴
    /// xB = Σ h(2i+1)·xin(j−2i−1)     xH = (xA − xB) · 2⁻¹⁴
    /// ```
    ///
    /// The results are *not* yet limited to 15 bits: a full-scale input can
    /// drive them to about ±25900 (the filter's passband ripple and Gibbs
    /// overshoot on top of a gain of ½). The encoder applies LIMIT.
    pub(super) fn analyse(&mut self, first: i16, second: i16) -> (i16, i16) {
        push(&mut self.older, first);
        push(&mut self.newer, second);
        let xa = dot(&self.newer, &EVEN_TAPS);
        let xb = dot(&self.older, &ODD_TAPS);
        (saturate((xa + xb) >> 14), saturate((xa - xb) >> 14))
    }
}

/// Receive (synthesis) QMF: one lower and one higher sub-band sample in,
/// two output samples out.
#[derive(Debug, Clone)]
pub(super) struct ReceiveQmf {
    /// `xd(j−i) = rL − rH` for i = 11…0, oldest first.
    xd: [i16; BRANCH],
    /// `xs(j−i) = rL + rH` for i = 11…0, oldest first.
    xs: [i16; BRANCH],
}

impl ReceiveQmf {
    pub(super) fn new() -> Self {
        Self {
            xd: [0; BRANCH],
            xs: [0; BRANCH],
        }
    }

    /// Clause 4.4: takes the reconstructed sub-band samples `rL`, `rH`
    /// (each within 15 bits) and returns the next two output samples,
    /// older first:
    ///
    /// ```text
    /// xout(j)   = Σ h(2i)·xd(j−i)   · 2⁻¹¹   saturated to 16 bits
    /// xout(j+1) = Σ h(2i+1)·xs(j−i) · 2⁻¹¹
    /// ```
    pub(super) fn synthesise(&mut self, rl: i16, rh: i16) -> [i16; 2] {
        push(&mut self.xd, sub(rl, rh));
        push(&mut self.xs, add(rl, rh));
        let even = dot(&self.xd, &EVEN_TAPS);
        let odd = dot(&self.xs, &ODD_TAPS);
        [saturate(even >> 11), saturate(odd >> 11)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dc_passes_at_half_gain_into_the_lower_band() {
        let mut qmf = TransmitQmf::new();
        let mut last = (0, 0);
        for _ in 0..20 {
            last = qmf.analyse(1000, 1000);
        }
        assert_eq!(last, (500, 0));
    }

    #[test]
    fn full_scale_overshoots_15_bits_before_limit() {
        // A full-scale square wave with a period of 24 samples has enough
        // energy near the band edge for the filter's overshoot to exceed
        // the 15-bit range: that is why the encoder must apply LIMIT.
        let mut qmf = TransmitQmf::new();
        let mut peak = 0i16;
        for n in 0..2400 {
            let s = |k: i32| {
                if (k / 12) % 2 == 0 {
                    i16::MAX
                } else {
                    i16::MIN
                }
            };
            let (xl, xh) = qmf.analyse(s(2 * n), s(2 * n + 1));
            peak = peak.max(xl.saturating_abs()).max(xh.saturating_abs());
        }
        assert!(peak > 16_384, "peak {peak}");
    }

    #[test]
    fn analysis_then_synthesis_reconstructs_with_delay() {
        // Without quantization in between, the QMF pair is nearly
        // transparent with a delay of 22 samples.
        let input: Vec<i16> = (0..4000)
            .map(|n| (8000.0 * (n as f64 * 0.05).sin() + 3000.0 * (n as f64 * 0.9).sin()) as i16)
            .collect();
        let mut tx = TransmitQmf::new();
        let mut rx = ReceiveQmf::new();
        let mut out = Vec::new();
        for pair in input.chunks_exact(2) {
            let (xl, xh) = tx.analyse(pair[0], pair[1]);
            out.extend(rx.synthesise(xl, xh));
        }
        let max_err = |delay: usize| {
            input[..input.len() - delay]
                .iter()
                .zip(&out[delay..])
                .skip(100)
                .map(|(&a, &b)| (i32::from(a) - i32::from(b)).abs())
                .max()
                .unwrap()
        };
        // Measured: at most 6 LSB off (the QMF pair is not quite perfect
        // reconstruction); any other delay is off by thousands.
        assert!(max_err(22) <= 8, "max error {}", max_err(22));
        assert!(max_err(21) > 1000 && max_err(23) > 1000);
    }
}
