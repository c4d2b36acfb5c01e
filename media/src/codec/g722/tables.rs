//! Constants of ITU-T G.722, transcribed from the Recommendation (the
//! tables of clauses 5 and 6), named as it names them.
//!
//! Levels are in the Recommendation's fixed-point units; the blocks that
//! use them (see `adpcm`) apply the scaling it specifies.

/// Transmit and receive QMF coefficients `h0`…`h23`, scaled by 2¹³
/// (clause 5). The filter is symmetric: `h(i) = h(23 − i)`.
#[rustfmt::skip]
pub(super) const QMF_COEFFS: [i16; 24] = [
    3, -11, -11, 53, 12, -156, 32, 362, -210, -805, 951, 3876,
    3876, 951, -805, -210, 362, 32, -156, 12, 53, -11, -11, 3,
];

// ---------------------------------------------------------------------------
// Lower sub-band (blocks 1L–6L)

/// QUANTL decision levels `Q6(mL)` for `mL = 1…29`: the magnitude
/// interval `mL` of the 6-bit quantizer is `[Q6(mL−1), Q6(mL))` scaled by
/// the quantizer scale factor; interval 30 is unbounded above.
pub(super) const Q6: [i16; 29] = [
    35, 72, 110, 150, 190, 233, 276, 323, 370, 422, 473, 530, 587, 650, 714, 786, 858, 940, 1023,
    1121, 1219, 1339, 1458, 1612, 1765, 1980, 2195, 2557, 2919,
];

/// QUANTL output code `IL` for a negative difference signal, by magnitude
/// interval `mL = 1…30` (index 0 is `mL = 1`).
pub(super) const ILN: [u8; 30] = [
    63, 62, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10,
    9, 8, 7, 6, 5, 4,
];

/// QUANTL output code `IL` for a non-negative difference signal, by
/// magnitude interval `mL = 1…30` (index 0 is `mL = 1`).
pub(super) const ILP: [u8; 30] = [
    61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47, 46, 45, 44, 43, 42, 41, 40, 39, 38,
    37, 36, 35, 34, 33, 32,
];

/// Output levels `QQ4` of the 4-bit inverse quantizer (INVQAL), by
/// magnitude index.
pub(super) const QQ4: [i16; 8] = [0, 150, 323, 530, 786, 1121, 1612, 2557];

/// Magnitude index into [`QQ4`] and [`WL`] for each 4-bit code `IL >> 2`
/// (the Recommendation's `RIL` to `IL4` mapping).
pub(super) const RIL4: [u8; 16] = [0, 7, 6, 5, 4, 3, 2, 1, 7, 6, 5, 4, 3, 2, 1, 0];

/// Whether a 4-bit code `IL >> 2` stands for a negative difference.
const fn negative_4bit(code: usize) -> bool {
    code < 8
}

/// Output levels `QQ6` of the 6-bit inverse quantizer (INVQBL, mode 1),
/// by magnitude index.
pub(super) const QQ6: [i16; 31] = [
    0, 17, 54, 91, 130, 170, 211, 254, 300, 347, 396, 447, 501, 558, 618, 682, 750, 822, 899, 982,
    1072, 1170, 1279, 1399, 1535, 1689, 1873, 2088, 2376, 2738, 3101,
];

/// Magnitude index into [`QQ6`] for each 6-bit code `IL`. Codes 0–3 are
/// never produced by an encoder; the Recommendation decodes them as the
/// smallest negative level.
#[rustfmt::skip]
pub(super) const RIL6: [u8; 64] = [
    // Codes 0–31 (negative differences; 0–3 unused by encoders).
    1, 1, 1, 1, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19,
    18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3,
    // Codes 32–63 (positive, except 62 and 63).
    30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15,
    14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 2, 1,
];

/// Whether a 6-bit code `IL` stands for a negative difference: the codes
/// of [`ILN`] (4–31, 62, 63) and the unused 0–3.
const fn negative_6bit(code: usize) -> bool {
    code < 32 || code >= 62
}

/// LOGSCL log-scale factor increments `WL`, by [`RIL4`] magnitude index.
pub(super) const WL: [i16; 8] = [-60, -30, 58, 172, 334, 538, 1198, 3042];

/// Upper limit of the lower-band log scale factor `NBL` (LOGSCL).
pub(super) const NBL_MAX: i16 = 18_432;

// ---------------------------------------------------------------------------
// Higher sub-band (blocks 1H–6H)

/// QUANTH decision level `Q2` between the two magnitude intervals.
pub(super) const Q2: i16 = 564;

/// QUANTH output code `IH` for a negative difference, by magnitude
/// interval `mH = 1, 2` (index 0 is `mH = 1`).
pub(super) const IHN: [u8; 2] = [1, 0];

/// QUANTH output code `IH` for a non-negative difference, by magnitude
/// interval `mH = 1, 2`.
pub(super) const IHP: [u8; 2] = [3, 2];

/// Output levels `QQ2` of the 2-bit inverse quantizer (INVQAH), by
/// magnitude index.
pub(super) const QQ2: [i16; 3] = [0, 202, 926];

/// Magnitude index into [`QQ2`] and [`WH`] for each code `IH`.
pub(super) const RIH2: [u8; 4] = [2, 1, 2, 1];

/// Whether a code `IH` stands for a negative difference.
const fn negative_2bit(code: usize) -> bool {
    code < 2
}

/// LOGSCH log-scale factor increments `WH`, by [`RIH2`] magnitude index.
pub(super) const WH: [i16; 3] = [0, -214, 798];

/// Upper limit of the higher-band log scale factor `NBH` (LOGSCH).
pub(super) const NBH_MAX: i16 = 22_528;

// ---------------------------------------------------------------------------
// Both sub-bands

/// SCALEL/SCALEH antilog table `ILB`: `2048 · 2^(i/32)`, the mantissa of
/// the linear scale factor for the five fraction bits of `NB`.
pub(super) const ILB: [i16; 32] = [
    2048, 2093, 2139, 2186, 2233, 2282, 2332, 2383, 2435, 2489, 2543, 2599, 2656, 2714, 2774, 2834,
    2896, 2960, 3025, 3091, 3158, 3228, 3298, 3371, 3444, 3520, 3597, 3676, 3756, 3838, 3922, 4008,
];

// ---------------------------------------------------------------------------
// Signed inverse-quantizer tables, derived once at compile time from the
// Recommendation's tables above: entry `code` is `±(QQ(level) << 3)`,
// the factor the block multiplies the scale factor by.

/// INVQAL: signed, shifted `QQ4` level for each 4-bit code `IL >> 2`.
pub(super) const INVQAL: [i16; 16] = {
    let mut t = [0; 16];
    let mut code = 0;
    while code < 16 {
        let level = QQ4[RIL4[code] as usize] << 3;
        t[code] = if negative_4bit(code) { -level } else { level };
        code += 1;
    }
    t
};

/// INVQBL (mode 1): signed, shifted `QQ6` level for each 6-bit code `IL`.
pub(super) const INVQBL: [i16; 64] = {
    let mut t = [0; 64];
    let mut code = 0;
    while code < 64 {
        let level = QQ6[RIL6[code] as usize] << 3;
        t[code] = if negative_6bit(code) { -level } else { level };
        code += 1;
    }
    t
};

/// INVQAH: signed, shifted `QQ2` level for each code `IH`.
pub(super) const INVQAH: [i16; 4] = {
    let mut t = [0; 4];
    let mut code = 0;
    while code < 4 {
        let level = QQ2[RIH2[code] as usize] << 3;
        t[code] = if negative_2bit(code) { -level } else { level };
        code += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qmf_is_symmetric_with_unit_gain_per_phase() {
        for i in 0..24 {
            assert_eq!(QMF_COEFFS[i], QMF_COEFFS[23 - i]);
        }
        // Each polyphase branch sums to 2¹², so DC passes the QMF pair with
        // the gain the fixed-point shifts assume.
        let even: i32 = QMF_COEFFS.iter().step_by(2).map(|&h| i32::from(h)).sum();
        let odd: i32 = QMF_COEFFS
            .iter()
            .skip(1)
            .step_by(2)
            .map(|&h| i32::from(h))
            .sum();
        assert_eq!((even, odd), (4096, 4096));
    }

    #[test]
    fn code_tables_are_consistent() {
        // QUANTL's codes decode back to the magnitude interval they came
        // from: code → RIL6 → mL.
        for (i, (&n, &p)) in ILN.iter().zip(&ILP).enumerate() {
            let m = i as u8 + 1;
            assert_eq!(RIL6[usize::from(n)], m);
            assert_eq!(RIL6[usize::from(p)], m);
            assert!(INVQBL[usize::from(n)] < 0 && INVQBL[usize::from(p)] > 0);
        }
        // Decision levels increase, as the quantizer's search requires.
        assert!(Q6.windows(2).all(|w| w[0] < w[1]));
        // Spot values of the derived tables.
        assert_eq!(INVQAL[1], -20_456);
        assert_eq!(INVQAL[8], 20_456);
        assert_eq!(INVQAL[0], 0);
        assert_eq!(INVQBL[4], -24_808);
        assert_eq!(INVQBL[63], -136);
        assert_eq!(INVQAH, [-7408, -1616, 7408, 1616]);
    }
}
