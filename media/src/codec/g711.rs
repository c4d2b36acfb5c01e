//! G.711 μ-law (PCMU) and A-law (PCMA) companding, per ITU-T G.711 (11/88).
//!
//! Both laws quantise a sign-magnitude sample onto 8 segments of 16 intervals
//! each, the interval width doubling from one segment to the next, and the
//! decoder outputs the midpoint of the interval (G.711 Tables 1a and 2a).
//! The standard works on 14-bit (μ-law) and 13-bit (A-law) uniform PCM; our
//! samples are 16-bit, so every decision and output value here is the
//! standard's value scaled by 4 (μ-law) or 8 (A-law). That is why the largest
//! μ-law output is 32124 (= 8031·4) and the largest A-law output 32256
//! (= 4032·8).
//!
//! Encoding finds the segment from the position of the highest set bit
//! instead of searching the decision table; decoding uses 256-entry tables
//! built at compile time.
//!
//! Negative inputs: μ-law has a zero level, so it uses the true magnitude
//! `|x|` and stays symmetric about 0. A-law has no zero level (its smallest
//! outputs are ±8), so it uses the one's complement `!x = -x-1` for
//! negatives: that makes the quantiser symmetric about −½, which is where
//! two's-complement 16-bit PCM is centred, and lets −32768 map without
//! overflow.

/// μ-law bias (33 in the standard's 14-bit scale, times 4). Adding it makes
/// every segment boundary a power of two, so the segment is a bit position.
const ULAW_BIAS: i32 = 0x84;
/// Largest magnitude that still fits the top μ-law segment once biased:
/// 32635 + 132 = 32767. The standard's last decision value is 8159·4 = 32636.
const ULAW_CLIP: i32 = 32635;
/// A-law transmits every even bit inverted (G.711 §2, "even bits inverted").
const ALAW_EVEN_BITS: u8 = 0x55;

const fn ulaw_decode_const(code: u8) -> i16 {
    // μ-law transmits all bits inverted.
    let u = !code;
    let segment = ((u >> 4) & 0x07) as i32;
    let mantissa = (u & 0x0F) as i32;
    // Midpoint of the interval, still carrying the bias.
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << segment) - ULAW_BIAS;
    if u & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

const fn alaw_decode_const(code: u8) -> i16 {
    let v = code ^ ALAW_EVEN_BITS;
    let segment = ((v >> 4) & 0x07) as i32;
    let mantissa = (v & 0x0F) as i32;
    // In the 13-bit scale: segment 0 has step 2 from 0, segment s ≥ 1 has
    // step 2^s from 2^(s+4); the output is the interval midpoint.
    let magnitude13 = if segment == 0 {
        (mantissa << 1) + 1
    } else {
        ((mantissa + 16) << segment) + (1 << (segment - 1))
    };
    let magnitude = magnitude13 << 3;
    // In A-law a set sign bit means positive.
    if v & 0x80 != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

/// Const fns cannot call through function pointers, hence a macro.
macro_rules! decode_table {
    ($decode:ident) => {{
        let mut table = [0i16; 256];
        let mut code = 0;
        while code < 256 {
            table[code] = $decode(code as u8);
            code += 1;
        }
        table
    }};
}

static ULAW_TO_LINEAR: [i16; 256] = decode_table!(ulaw_decode_const);
static ALAW_TO_LINEAR: [i16; 256] = decode_table!(alaw_decode_const);

/// Decodes one μ-law code to 16-bit linear PCM.
///
/// Codes `0xFF` (+0) and `0x7F` (−0) both decode to 0.
#[inline]
pub fn ulaw_to_linear(code: u8) -> i16 {
    ULAW_TO_LINEAR[usize::from(code)]
}

/// Decodes one A-law code to 16-bit linear PCM.
#[inline]
pub fn alaw_to_linear(code: u8) -> i16 {
    ALAW_TO_LINEAR[usize::from(code)]
}

/// Encodes one 16-bit linear sample to μ-law.
///
/// Magnitudes above 32635 clip to the top interval. Zero encodes as `0xFF`.
#[inline]
pub fn linear_to_ulaw(sample: i16) -> u8 {
    // Widen first so that −32768 has a representable magnitude.
    let (sign, magnitude) = if sample < 0 {
        (0x80u8, -i32::from(sample))
    } else {
        (0x00u8, i32::from(sample))
    };
    // biased ∈ [132, 32767]: its top set bit is bit 7 + segment.
    let biased = magnitude.min(ULAW_CLIP) + ULAW_BIAS;
    let segment = (31 - biased.leading_zeros()) - 7;
    let mantissa = (biased >> (segment + 3)) & 0x0F;
    !(sign | (segment << 4) as u8 | mantissa as u8)
}

/// Encodes one 16-bit linear sample to A-law.
#[inline]
pub fn linear_to_alaw(sample: i16) -> u8 {
    let (sign, magnitude) = if sample >= 0 {
        (0x80u8, i32::from(sample))
    } else {
        (0x00u8, i32::from(!sample))
    };
    // 12-bit magnitude of the standard's 13-bit sign-magnitude input.
    let m = magnitude >> 3;
    let (segment, mantissa) = if m < 32 {
        (0, m >> 1)
    } else {
        // m ∈ [2^(s+4), 2^(s+5)) for segment s.
        let segment = (31 - m.leading_zeros()) - 4;
        (segment, (m >> segment) & 0x0F)
    };
    (sign | (segment << 4) as u8 | mantissa as u8) ^ ALAW_EVEN_BITS
}

/// Appends the μ-law encoding of `pcm` to `out`.
pub(crate) fn encode_ulaw(pcm: &[i16], out: &mut Vec<u8>) {
    out.extend(pcm.iter().map(|&s| linear_to_ulaw(s)));
}

/// Appends the A-law encoding of `pcm` to `out`.
pub(crate) fn encode_alaw(pcm: &[i16], out: &mut Vec<u8>) {
    out.extend(pcm.iter().map(|&s| linear_to_alaw(s)));
}

/// Appends the decoded μ-law `payload` to `out`.
pub(crate) fn decode_ulaw(payload: &[u8], out: &mut Vec<i16>) {
    out.extend(payload.iter().map(|&c| ulaw_to_linear(c)));
}

/// Appends the decoded A-law `payload` to `out`.
pub(crate) fn decode_alaw(payload: &[u8], out: &mut Vec<i16>) {
    out.extend(payload.iter().map(|&c| alaw_to_linear(c)));
}

#[cfg(test)]
mod tests {
    //! The reference tables here are rebuilt from the G.711 text (segment end
    //! points and interval counts of Tables 1a/2a), not from the code above,
    //! so the tests check the implementation against the standard.

    use super::*;

    /// One quantisation interval of the standard, in our 16-bit scale.
    #[derive(Debug, Clone, Copy)]
    struct Interval {
        /// Lower decision value (inclusive).
        lo: i32,
        /// Upper decision value (exclusive); the top interval is open-ended
        /// because larger inputs clip into it.
        hi: i32,
        /// Decoder output: the midpoint, except μ-law interval 0 whose
        /// output is 0 by definition.
        out: i32,
        /// Whether this is the first interval of its segment.
        first_of_segment: bool,
    }

    /// Builds the 128 positive intervals from segment end points, the
    /// number/size of intervals per segment, scaled by `scale`.
    fn intervals(segments: &[(i32, &[(i32, i32)])], scale: i32, zero_level: bool) -> Vec<Interval> {
        let mut v = Vec::new();
        for &(start, parts) in segments {
            let mut lo = start;
            let mut first = true;
            for &(count, size) in parts {
                for _ in 0..count {
                    let hi = lo + size;
                    let out = if zero_level && lo == 0 {
                        0
                    } else {
                        lo * 2 + size
                    };
                    // `out` above is twice the midpoint to keep odd sizes exact.
                    let out = if zero_level && lo == 0 {
                        out
                    } else {
                        out * scale / 2
                    };
                    v.push(Interval {
                        lo: lo * scale,
                        hi: hi * scale,
                        out,
                        first_of_segment: first,
                    });
                    first = false;
                    lo = hi;
                }
            }
        }
        assert_eq!(v.len(), 128);
        v.last_mut().unwrap().hi = i32::MAX;
        v
    }

    /// G.711 Table 2a: μ-law, 14-bit scale, end points 0, 31, 95, …, 8159.
    fn ulaw_intervals() -> Vec<Interval> {
        let segs: [(i32, &[(i32, i32)]); 8] = [
            (0, &[(1, 1), (15, 2)]),
            (31, &[(16, 4)]),
            (95, &[(16, 8)]),
            (223, &[(16, 16)]),
            (479, &[(16, 32)]),
            (991, &[(16, 64)]),
            (2015, &[(16, 128)]),
            (4063, &[(16, 256)]),
        ];
        let v = intervals(&segs, 4, true);
        assert_eq!(v[127].lo, 7903 * 4);
        v
    }

    /// G.711 Table 1a: A-law, 13-bit scale, end points 0, 32, 64, …, 4096.
    fn alaw_intervals() -> Vec<Interval> {
        let segs: [(i32, &[(i32, i32)]); 8] = [
            (0, &[(16, 2)]),
            (32, &[(16, 2)]),
            (64, &[(16, 4)]),
            (128, &[(16, 8)]),
            (256, &[(16, 16)]),
            (512, &[(16, 32)]),
            (1024, &[(16, 64)]),
            (2048, &[(16, 128)]),
        ];
        intervals(&segs, 8, false)
    }

    /// μ-law character signal for interval `n` (0 = smallest magnitude).
    /// Before the all-bits inversion the sign bit is 0 for positive, so
    /// positive codes count down from 0xFF and negative ones from 0x7F.
    fn ulaw_code(negative: bool, n: usize) -> u8 {
        if negative {
            0x7F - n as u8
        } else {
            0xFF - n as u8
        }
    }

    /// A-law character signal for interval `n`: sign bit 1 is positive,
    /// then even bits are inverted.
    fn alaw_code(negative: bool, n: usize) -> u8 {
        let sign = if negative { 0x00 } else { 0x80 };
        (sign | n as u8) ^ 0x55
    }

    fn find(intervals: &[Interval], magnitude: i32) -> usize {
        intervals
            .iter()
            .position(|iv| iv.lo <= magnitude && magnitude < iv.hi)
            .expect("intervals cover all magnitudes")
    }

    #[test]
    fn ulaw_anchor_values() {
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x7F), 0);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
    }

    #[test]
    fn alaw_anchor_values() {
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xAA), 32256);
        assert_eq!(alaw_to_linear(0x2A), -32256);
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(linear_to_alaw(-1), 0x55);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
    }

    #[test]
    fn ulaw_decode_matches_table_2a() {
        let ivs = ulaw_intervals();
        for (n, iv) in ivs.iter().enumerate() {
            assert_eq!(
                i32::from(ulaw_to_linear(ulaw_code(false, n))),
                iv.out,
                "+{n}"
            );
            assert_eq!(
                i32::from(ulaw_to_linear(ulaw_code(true, n))),
                -iv.out,
                "-{n}"
            );
        }
    }

    #[test]
    fn alaw_decode_matches_table_1a() {
        let ivs = alaw_intervals();
        for (n, iv) in ivs.iter().enumerate() {
            assert_eq!(
                i32::from(alaw_to_linear(alaw_code(false, n))),
                iv.out,
                "+{n}"
            );
            assert_eq!(
                i32::from(alaw_to_linear(alaw_code(true, n))),
                -iv.out,
                "-{n}"
            );
        }
    }

    #[test]
    fn decode_is_monotonic_in_segment_order() {
        for (name, code_of, decode) in [
            (
                "ulaw",
                ulaw_code as fn(bool, usize) -> u8,
                ulaw_to_linear as fn(u8) -> i16,
            ),
            ("alaw", alaw_code, alaw_to_linear),
        ] {
            for n in 1..128 {
                let (prev, cur) = (decode(code_of(false, n - 1)), decode(code_of(false, n)));
                assert!(cur > prev, "{name} +{n}: {prev} !< {cur}");
                let (prev, cur) = (decode(code_of(true, n - 1)), decode(code_of(true, n)));
                assert!(cur < prev, "{name} -{n}: {prev} !> {cur}");
            }
        }
    }

    #[test]
    fn ulaw_round_trip_all_codes() {
        for code in 0..=255u8 {
            let back = linear_to_ulaw(ulaw_to_linear(code));
            // G.711 has two codes for zero; the encoder emits the positive one.
            let expected = if code == 0x7F { 0xFF } else { code };
            assert_eq!(back, expected, "code {code:#04x}");
        }
    }

    #[test]
    fn alaw_round_trip_all_codes() {
        // A-law has no zero level, hence no duplicate codes: all 256 survive.
        for code in 0..=255u8 {
            assert_eq!(
                linear_to_alaw(alaw_to_linear(code)),
                code,
                "code {code:#04x}"
            );
        }
    }

    /// Shared check over all 65 536 inputs: the code is the one whose
    /// decision interval contains the input, the error is within half the
    /// interval, and the chosen level is the nearest one except in the first
    /// interval of a segment (where the standard's decision value sits at
    /// the boundary, not halfway between the neighbouring outputs).
    fn check_encoder(
        ivs: &[Interval],
        encode: fn(i16) -> u8,
        decode: fn(u8) -> i16,
        code_of: fn(bool, usize) -> u8,
        magnitude_of: fn(i32) -> i32,
    ) {
        let mut levels: Vec<i32> = ivs.iter().flat_map(|iv| [iv.out, -iv.out]).collect();
        levels.sort_unstable();
        levels.dedup();
        for x in i16::MIN..=i16::MAX {
            let xi = i32::from(x);
            let negative = x < 0;
            let mag = magnitude_of(xi);
            let n = find(ivs, mag);
            let code = encode(x);
            // μ-law interval 0 has the single output 0; the standard allows
            // either sign code, and we emit the sign of the input.
            assert_eq!(code, code_of(negative, n), "x={x} mag={mag} n={n}");
            let y = i32::from(decode(code));
            let err = (xi - y).abs();
            let iv = ivs[n];
            if iv.hi != i32::MAX {
                if iv.out == 0 {
                    // μ-law's zero level serves the interval and its mirror
                    // image, [−hi, hi), so it sits at their common centre.
                    assert!(err < iv.hi, "x={x} y={y} err={err}");
                } else {
                    assert!(2 * err <= iv.hi - iv.lo, "x={x} y={y} err={err}");
                }
                let nearest = levels.iter().map(|l| (xi - l).abs()).min().unwrap();
                if !iv.first_of_segment {
                    assert_eq!(err, nearest, "x={x}: not nearest level");
                }
            } else {
                // Clipping region: the top output is the closest level.
                assert_eq!(y.abs(), iv.out, "x={x}");
            }
        }
    }

    #[test]
    fn ulaw_encoder_follows_g711_decision_values() {
        check_encoder(
            &ulaw_intervals(),
            linear_to_ulaw,
            ulaw_to_linear,
            ulaw_code,
            |x| x.abs(),
        );
    }

    #[test]
    fn alaw_encoder_follows_g711_decision_values() {
        check_encoder(
            &alaw_intervals(),
            linear_to_alaw,
            alaw_to_linear,
            alaw_code,
            |x| if x < 0 { -x - 1 } else { x },
        );
    }

    #[test]
    fn slice_helpers_append() {
        let mut bytes = vec![0xAB];
        encode_ulaw(&[0, 1000, -1000], &mut bytes);
        encode_alaw(&[0, 1000, -1000], &mut bytes);
        assert_eq!(bytes.len(), 7);
        assert_eq!(bytes[0], 0xAB);
        let mut pcm = vec![7];
        decode_ulaw(&bytes[1..4], &mut pcm);
        decode_alaw(&bytes[4..7], &mut pcm);
        assert_eq!(pcm.len(), 7);
        assert_eq!(pcm[0], 7);
        assert!((i32::from(pcm[2]) - 1000).abs() <= 32);
        assert!((i32::from(pcm[6]) + 1000).abs() <= 32);
    }
}
