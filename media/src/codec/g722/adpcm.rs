//! The two sub-band ADPCM coders (G.722 clauses 3.2–3.6 and 4.1–4.3; the
//! blocks of clause 6).
//!
//! Each sub-band runs the same loop: subtract a prediction from the
//! sub-band sample (SUBTRA), quantize the difference adaptively (QUANTL /
//! QUANTH), and feed the inverse-quantized difference back into the scale
//! factor adaptation (LOGSCL/SCALEL, LOGSCH/SCALEH) and the pole-zero
//! predictor (block 4). The decoder runs the identical feedback from the
//! received codes, which is what keeps the two ends in step; so
//! [`LowerBand::adapt`] and [`HigherBand::adapt`] are shared by encoder and
//! decoder.
//!
//! The lower band quantizes with 6 bits (60 levels), but its predictor and
//! scale factor only ever see the 4 most significant bits (INVQAL), so that
//! a decoder that lost the low bits to an auxiliary data channel (modes 2
//! and 3) stays in step. The higher band uses 2 bits (4 levels).
//!
//! Block names in the comments (SUBTRA, QUANTL, INVQAL, …) are those of the
//! Recommendation's computational details, whose variable names the fields
//! follow as well (`DETL`, `NBL`, `SL`, `SZL`, `AL1`, `BL1`, `DLT1`, …).

use super::ops::{add, limit, magnitude, mult, same_sign, saturate, shl, sub};
use super::tables::{
    IHN, IHP, ILB, ILN, ILP, INVQAH, INVQAL, INVQBL, NBH_MAX, NBL_MAX, Q2, Q6, RIH2, RIL4, WH, WL,
};

/// Quantizer scale factor `DETL` after a reset.
const DETL_RESET: i16 = 32;
/// Quantizer scale factor `DETH` after a reset.
const DETH_RESET: i16 = 8;

/// Lower sub-band ADPCM state (the `…L` variables).
#[derive(Debug, Clone)]
pub(super) struct LowerBand {
    /// `NBL`: logarithmic quantizer scale factor, 0…[`NBL_MAX`].
    nb: i16,
    /// `DETL`: linear quantizer scale factor derived from `nb`.
    det: i16,
    predictor: Predictor,
}

impl LowerBand {
    /// The state after the Recommendation's reset.
    pub(super) fn new() -> Self {
        Self {
            nb: 0,
            det: DETL_RESET,
            predictor: Predictor::default(),
        }
    }

    /// Encodes one lower sub-band sample `xL`, returning the 6-bit code
    /// `IL` (blocks 1L–4L).
    pub(super) fn encode(&mut self, xl: i16) -> u8 {
        let el = sub(xl, self.predictor.estimate()); // SUBTRA
        let il = quantl(el, self.det);
        self.adapt(il);
        il
    }

    /// Decodes one 6-bit code `IL` (mode 1: all six bits carry audio)
    /// into the reconstructed lower sub-band sample `rL` (blocks 5L, 6L,
    /// then 2L–4L). Only the low six bits of `il` are read.
    pub(super) fn decode(&mut self, il: u8) -> i16 {
        let il = il & 0x3F;
        let dl = invqbl(il, self.det);
        let rl = limit(add(self.predictor.estimate(), dl)); // RECONS, LIMIT
        self.adapt(il);
        rl
    }

    /// The feedback both ends run on the code `IL` (blocks 2L–4L).
    fn adapt(&mut self, il: u8) {
        let il4 = il >> 2;
        // INVQAL uses the scale factor of this sample, before the update.
        let dlt = invqal(il4, self.det);
        self.nb = logscl(il4, self.nb);
        self.det = scalel(self.nb);
        self.predictor.update(dlt);
    }

    /// Test hook: the quantizer scale factor, which ezk-g722 starts at 0
    /// instead of the Recommendation's reset value (see the module docs).
    #[cfg(test)]
    pub(super) fn set_scale_factor(&mut self, det: i16) {
        self.det = det;
    }
}

/// Higher sub-band ADPCM state (the `…H` variables).
#[derive(Debug, Clone)]
pub(super) struct HigherBand {
    /// `NBH`: logarithmic quantizer scale factor, 0…[`NBH_MAX`].
    nb: i16,
    /// `DETH`: linear quantizer scale factor derived from `nb`.
    det: i16,
    predictor: Predictor,
}

impl HigherBand {
    /// The state after the Recommendation's reset.
    pub(super) fn new() -> Self {
        Self {
            nb: 0,
            det: DETH_RESET,
            predictor: Predictor::default(),
        }
    }

    /// Encodes one higher sub-band sample `xH`, returning the 2-bit code
    /// `IH` (blocks 1H–4H).
    pub(super) fn encode(&mut self, xh: i16) -> u8 {
        let eh = sub(xh, self.predictor.estimate()); // SUBTRA
        let ih = quanth(eh, self.det);
        self.adapt(ih);
        ih
    }

    /// Decodes one 2-bit code `IH` into the reconstructed higher sub-band
    /// sample `rH` (blocks 2H, 5H, 6H, then 3H–4H). Only the low two bits
    /// of `ih` are read.
    pub(super) fn decode(&mut self, ih: u8) -> i16 {
        let ih = ih & 0x03;
        let dh = invqah(ih, self.det);
        let rh = limit(add(self.predictor.estimate(), dh)); // RECONS, LIMIT
        self.adapt(ih);
        rh
    }

    /// The feedback both ends run on the code `IH` (blocks 2H–4H).
    fn adapt(&mut self, ih: u8) {
        let dh = invqah(ih, self.det);
        self.nb = logsch(ih, self.nb);
        self.det = scaleh(self.nb);
        self.predictor.update(dh);
    }

    /// Test hook, as [`LowerBand::set_scale_factor`].
    #[cfg(test)]
    pub(super) fn set_scale_factor(&mut self, det: i16) {
        self.det = det;
    }
}

// ---------------------------------------------------------------------------
// Quantizers and inverse quantizers (blocks 1L, 2L, 5L, 1H, 2H)

/// QUANTL (block 1L): 6-bit adaptive quantization of the lower-band
/// difference `el` with scale factor `detl`.
///
/// Finds the magnitude interval `mL` (1…30) whose scaled decision levels
/// `Q6(mL−1)·DETL ≤ |el| < Q6(mL)·DETL` contain `el`, then picks the code
/// for that interval and the sign of `el`.
fn quantl(el: i16, detl: i16) -> u8 {
    let wd = i32::from(magnitude(el));
    let det = i32::from(detl);
    // The Recommendation scans the levels upwards for the first one above
    // |el|; as they increase, that is the same as counting the levels at or
    // below it, which is mL − 1 (29 at most, i.e. mL = 30), and the count
    // runs without data-dependent branches. Each scaled level is
    // `mult(Q6 << 3, DETL)`; as `Q6 << 3` < 2¹⁵, neither the shift nor the
    // product can saturate, so that equals `(Q6 · DETL) >> 12` exactly.
    let below = Q6
        .iter()
        .map(|&q| usize::from((i32::from(q) * det) >> 12 <= wd))
        .sum::<usize>();
    if el < 0 { ILN[below] } else { ILP[below] }
}

/// INVQAL (block 2L): the 4-bit inverse quantizer whose output `DLT`
/// drives the lower band's adaptation, from `il4 = IL >> 2`.
fn invqal(il4: u8, detl: i16) -> i16 {
    mult(detl, INVQAL[usize::from(il4 & 0x0F)])
}

/// INVQBL (block 5L, mode 1): the 6-bit inverse quantizer whose output
/// `DL` the decoder reconstructs the lower band from.
fn invqbl(il: u8, detl: i16) -> i16 {
    mult(detl, INVQBL[usize::from(il & 0x3F)])
}

/// QUANTH (block 1H): 2-bit adaptive quantization of the higher-band
/// difference `eh` with scale factor `deth`.
fn quanth(eh: i16, deth: i16) -> u8 {
    let wd = magnitude(eh);
    let mh = usize::from(wd >= mult(shl(Q2, 3), deth)); // 0 ↔ mH = 1
    if eh < 0 { IHN[mh] } else { IHP[mh] }
}

/// INVQAH (block 2H): the 2-bit inverse quantizer, output `DH`.
fn invqah(ih: u8, deth: i16) -> i16 {
    mult(INVQAH[usize::from(ih & 0x03)], deth)
}

// ---------------------------------------------------------------------------
// Quantizer adaptation (blocks 3L, 3H)

/// Leakage of the log scale factor, 127/128 as a Q15 fraction.
const NB_LEAK: i16 = 32_512;

/// LOGSCL (block 3L): updates the lower band's log scale factor `NBL`
/// from the 4-bit code: a leaky integrator of the `WL` increments, held to
/// 0…[`NBL_MAX`].
fn logscl(il4: u8, nbl: i16) -> i16 {
    let w = WL[usize::from(RIL4[usize::from(il4 & 0x0F)])];
    add(mult(nbl, NB_LEAK), w).clamp(0, NBL_MAX)
}

/// SCALEL (block 3L): the lower band's linear scale factor `DETL` from
/// `NBL`.
fn scalel(nbl: i16) -> i16 {
    log_to_linear(nbl, 8)
}

/// LOGSCH (block 3H): as [`logscl`] for the higher band, with the `WH`
/// increments and the 0…[`NBH_MAX`] range.
fn logsch(ih: u8, nbh: i16) -> i16 {
    let w = WH[usize::from(RIH2[usize::from(ih & 0x03)])];
    add(mult(nbh, NB_LEAK), w).clamp(0, NBH_MAX)
}

/// SCALEH (block 3H): the higher band's linear scale factor `DETH`.
fn scaleh(nbh: i16) -> i16 {
    log_to_linear(nbh, 10)
}

/// The antilog shared by SCALEL and SCALEH: `NB` is a base-2 logarithm
/// with 11 fraction bits, of which the top five index the [`ILB`]
/// mantissa table and the integer part sets the shift. `bias` is 8 for the
/// lower band and 10 for the higher band; the result is scaled by 4.
fn log_to_linear(nb: i16, bias: i16) -> i16 {
    let mantissa = i32::from(ILB[((nb >> 6) & 31) as usize]);
    let shift = i32::from(bias) - i32::from(nb >> 11);
    // LOGSCL/LOGSCH hold `nb` in 0…22528, so `shift` is in −1…10 and the
    // result in 8…16384; the clamps only make the bounds explicit.
    let scaled = if shift >= 0 {
        mantissa >> shift.min(31)
    } else {
        mantissa << (-shift).min(4)
    };
    saturate(scaled << 2)
}

// ---------------------------------------------------------------------------
// Adaptive prediction (block 4)

/// Leakage of the zero-section and first pole coefficients, 255/256.
const LEAK_255_256: i16 = 32_640;
/// Leakage of the second pole coefficient, 127/128.
const LEAK_127_128: i16 = 32_512;
/// Stability bound on the second pole coefficient, 0.75 in Q14.
const A2_MAX: i16 = 12_288;
/// `1 − 2⁻⁴` in Q14: `|A1| ≤ 15360 − A2` keeps the pole pair stable.
const A1_BOUND_BASE: i16 = 15_360;

/// The sub-band predictor of block 4: two poles on the reconstructed
/// signal and six zeros on the quantized difference, both adapted by
/// sign-sign gradient steps. Identical for the two bands.
#[derive(Debug, Clone, Default)]
struct Predictor {
    /// `S`: signal estimate for the next sample (`SP + SZ`).
    s: i16,
    /// `SZ`: the zero section's part of `s`.
    sz: i16,
    /// `A1`, `A2`: pole section coefficients (Q14).
    a: [i16; 2],
    /// `B1`…`B6`: zero section coefficients (Q14).
    b: [i16; 6],
    /// `DLT1`…`DLT6`: past quantized differences, newest first.
    d: [i16; 6],
    /// `PLT1`, `PLT2`: past partially reconstructed signals.
    p: [i16; 2],
    /// `RLT1`, `RLT2`: past reconstructed signals.
    r: [i16; 2],
}

impl Predictor {
    /// The prediction `S` of the current sample.
    fn estimate(&self) -> i16 {
        self.s
    }

    /// Block 4 for one sample with quantized difference `d`: adapts the
    /// coefficients, shifts the delay lines and computes the prediction of
    /// the next sample. The order of the steps matters for bit-exactness:
    /// the first pole coefficient is bounded by the *new* second one, and
    /// the filters run with the new coefficients.
    fn update(&mut self, d: i16) {
        let p = add(d, self.sz); // PARREC: partially reconstructed signal
        let r = add(self.s, d); // RECONS: reconstructed signal
        self.upzero(d);
        let a2 = uppol2(self.a, p, self.p);
        let a1 = uppol1(self.a[0], a2, p, self.p[0]);
        self.a = [a1, a2];
        // DELAYA
        self.d = [d, self.d[0], self.d[1], self.d[2], self.d[3], self.d[4]];
        self.p = [p, self.p[0]];
        self.r = [r, self.r[0]];
        self.sz = self.filtez();
        let sp = self.filtep();
        self.s = add(sp, self.sz); // PREDIC
    }

    /// UPZERO: `Bi ← Bi·(1 − 2⁻⁸) + 2⁻⁷·sgn(D)·sgn(DLTi)`, with no step
    /// at all when `D` is zero.
    fn upzero(&mut self, d: i16) {
        let step = if d == 0 { 0 } else { 128 };
        for (b, &past) in self.b.iter_mut().zip(&self.d) {
            let g = if same_sign(d, past) { step } else { -step };
            *b = add(g, mult(*b, LEAK_255_256));
        }
    }

    /// FILTEZ: the zero section `Σ Bi·DLTi`, accumulated from the oldest
    /// tap to the newest with a saturating add at every step (so the order
    /// matters once it saturates).
    fn filtez(&self) -> i16 {
        self.b
            .iter()
            .zip(&self.d)
            .rev()
            .fold(0, |sz, (&b, &d)| add(sz, mult(add(d, d), b)))
    }

    /// FILTEP: the pole section `A1·RLT1 + A2·RLT2`.
    fn filtep(&self) -> i16 {
        let [r1, r2] = self.r;
        add(mult(self.a[0], add(r1, r1)), mult(self.a[1], add(r2, r2)))
    }
}

/// UPPOL2: the new second pole coefficient,
/// `A2·(1 − 2⁻⁷) + 2⁻⁷·(sgn(P)·sgn(P2) − f(A1)·sgn(P)·sgn(P1))` with
/// `f(A1) = 4·A1` saturated, held to ±[`A2_MAX`].
fn uppol2([a1, a2]: [i16; 2], p: i16, [p1, p2]: [i16; 2]) -> i16 {
    let f = shl(a1, 2);
    let gradient = if same_sign(p, p1) { sub(0, f) } else { f };
    let step = if same_sign(p, p2) { 128 } else { -128 };
    add(add(gradient >> 7, step), mult(a2, LEAK_127_128)).clamp(-A2_MAX, A2_MAX)
}

/// UPPOL1: the new first pole coefficient,
/// `A1·(1 − 2⁻⁸) + 3·2⁻⁸·sgn(P)·sgn(P1)`, held to
/// `±(15360 − A2)` with the already updated `A2`.
fn uppol1(a1: i16, a2: i16, p: i16, p1: i16) -> i16 {
    let step = if same_sign(p, p1) { 192 } else { -192 };
    let a1 = add(step, mult(a1, LEAK_255_256));
    // a2 ∈ ±12288, so the bound is in 3072…27648 and its negation exists.
    let bound = sub(A1_BOUND_BASE, a2);
    if a1 > bound {
        bound
    } else if a1 < -bound {
        -bound
    } else {
        a1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_state() {
        let l = LowerBand::new();
        let h = HigherBand::new();
        assert_eq!((l.nb, l.det), (0, 32));
        assert_eq!((h.nb, h.det), (0, 8));
        // SCALEL/SCALEH of the reset NB give the reset DET.
        assert_eq!(scalel(0), 32);
        assert_eq!(scaleh(0), 8);
    }

    #[test]
    fn scale_factor_range() {
        // Ends of the NB ranges, including the one left shift at the top.
        assert_eq!(scalel(NBL_MAX), 16_384);
        assert_eq!(scaleh(NBH_MAX), 16_384);
        let mut prev = 0;
        for nb in 0..=NBL_MAX {
            let det = scalel(nb);
            assert!(det >= prev, "SCALEL not monotonic at {nb}");
            prev = det;
        }
        // LOGSCL saturates at both ends.
        assert_eq!(logscl(0, 0), 0); // −60 clamps to 0 (code 0 → WL[0])
        assert_eq!(logscl(1, NBL_MAX), NBL_MAX); // +3042 clamps
    }

    #[test]
    fn quantl_matches_linear_scan() {
        // The binary search must agree with the Recommendation's scan over
        // every magnitude interval edge, for every reachable DETL.
        let scan = |el: i16, det: i16| {
            let wd = magnitude(el);
            let mut m = 0;
            while m < 29 && wd >= mult(shl(Q6[m], 3), det) {
                m += 1;
            }
            if el < 0 { ILN[m] } else { ILP[m] }
        };
        let mut dets: Vec<i16> = (0..=NBL_MAX).step_by(7).map(scalel).collect();
        dets.extend([0, 32, 16_384]);
        for det in dets {
            for el in (i16::MIN..=i16::MAX)
                .step_by(97)
                .chain([-1, 0, 1, i16::MAX])
            {
                assert_eq!(quantl(el, det), scan(el, det), "el {el} det {det}");
            }
        }
    }

    #[test]
    fn predictor_stays_bounded_on_wild_input() {
        let mut p = Predictor::default();
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..100_000 {
            p.update(rng.i16(..));
            assert!(p.a[1].abs() <= A2_MAX);
            assert!(p.a[0].abs() <= A1_BOUND_BASE - p.a[1]);
        }
    }
}
