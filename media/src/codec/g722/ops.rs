//! The 16-bit fixed-point arithmetic G.722 is specified in.
//!
//! Every state variable of the SB-ADPCM coder is a 16-bit two's complement
//! word, and the Recommendation's computational details (clause 6) and the
//! ITU-T reference implementation (G.191 STL, built on the ITU-T basic
//! operators) *saturate* on overflow rather than wrap. Bit-exact
//! interoperation depends on reproducing that, including where in a chain
//! of additions the saturation happens, so the blocks are written with the
//! helpers below instead of `+`, `-` and `*`.
//!
//! None of them can panic, whatever their arguments.

/// Saturating 16-bit addition (the basic operator `add`).
#[inline]
pub(super) fn add(a: i16, b: i16) -> i16 {
    a.saturating_add(b)
}

/// Saturating 16-bit subtraction (the basic operator `sub`).
#[inline]
pub(super) fn sub(a: i16, b: i16) -> i16 {
    a.saturating_sub(b)
}

/// Fractional multiplication `(a × b) >> 15`, rounding towards −∞ and
/// saturating the single overflowing case −1 × −1 (the basic operator
/// `mult`). With `b` read as a Q15 fraction this scales `a` by `b / 2¹⁵`.
#[inline]
pub(super) fn mult(a: i16, b: i16) -> i16 {
    saturate((i32::from(a) * i32::from(b)) >> 15)
}

/// Saturating left shift by `n` (0–15) bits (the basic operator `shl`).
#[inline]
pub(super) fn shl(a: i16, n: u32) -> i16 {
    saturate(i32::from(a) << n.min(15))
}

/// Clamps a 32-bit intermediate into 16 bits.
#[inline]
pub(super) fn saturate(x: i32) -> i16 {
    // The clamp makes the conversion lossless.
    x.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16
}

/// LIMIT (blocks 6L and 6H, and the transmit QMF outputs): clamps a
/// sub-band signal to the 15-bit range the ADPCM coders work in.
#[inline]
pub(super) fn limit(x: i16) -> i16 {
    x.clamp(-16_384, 16_383)
}

/// Whether two words have the same sign in the Recommendation's sense,
/// `sgn(x) = sgn(y)`, where the sign is the sign bit: zero counts as
/// positive.
#[inline]
pub(super) fn same_sign(x: i16, y: i16) -> bool {
    (x < 0) == (y < 0)
}

/// Magnitude of a difference signal as the quantizers compare it: `x` for
/// `x ≥ 0`, and the one's complement `−x − 1` for `x < 0`. Always fits in
/// 15 bits, even for −32768.
#[inline]
pub(super) fn magnitude(x: i16) -> i16 {
    if x >= 0 { x } else { !x }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturating_operators() {
        assert_eq!(add(32_000, 1_000), i16::MAX);
        assert_eq!(add(-32_000, -1_000), i16::MIN);
        assert_eq!(sub(-32_000, 1_000), i16::MIN);
        assert_eq!(sub(0, i16::MIN), i16::MAX);
        assert_eq!(mult(i16::MIN, i16::MIN), i16::MAX);
        assert_eq!(mult(16_384, 16_384), 8_192);
        // Rounds towards −∞ like an arithmetic shift.
        assert_eq!(mult(-1, 1), -1);
        assert_eq!(mult(1, 1), 0);
        assert_eq!(shl(12_000, 2), i16::MAX);
        assert_eq!(shl(-12_000, 2), i16::MIN);
        assert_eq!(shl(100, 2), 400);
        assert_eq!(shl(1, 99), i16::MAX);
        assert_eq!(limit(i16::MAX), 16_383);
        assert_eq!(limit(i16::MIN), -16_384);
        assert_eq!(limit(-5), -5);
    }

    #[test]
    fn signs_and_magnitudes() {
        assert!(same_sign(0, 5));
        assert!(same_sign(-1, i16::MIN));
        assert!(!same_sign(0, -1));
        assert_eq!(magnitude(7), 7);
        assert_eq!(magnitude(-1), 0);
        assert_eq!(magnitude(-8), 7);
        assert_eq!(magnitude(i16::MIN), i16::MAX);
    }
}
