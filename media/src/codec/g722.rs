//! G.722 wideband SB-ADPCM (ITU-T G.722), mode 1: 64 kbit/s.
//!
//! Our own implementation of the Recommendation's sub-band ADPCM coder,
//! written from its text (clauses 3–6) and checked bit for bit against the
//! ITU-T reference implementation's test data and against ezk-g722 (see
//! *Conformance* below).
//!
//! # Format
//!
//! 16 kHz, 16-bit input. The transmit QMF splits each pair of samples into
//! one lower and one higher sub-band sample at 8 kHz; the lower band is
//! coded with 6 bits, the higher with 2, and the two codes form one octet
//! (`IH` in the two most significant bits). So a 20 ms frame of 320 samples
//! becomes 160 bytes, which is already the RTP payload of RFC 3551 §4.5.2.
//! Only mode 1 is implemented: modes 2 and 3 (56 and 48 kbit/s) steal low
//! bits for a data channel that RTP never uses.
//!
//! The QMF analysis/synthesis pair delays the signal by 22 samples
//! (1.375 ms) end to end.
//!
//! # Where the Recommendation's blocks are
//!
//! | G.722 | what | here |
//! |---|---|---|
//! | 3.1, 4.4, 5 | transmit and receive QMF | [`qmf`] |
//! | 3.2–3.6, 6 (blocks 1L–4L, 1H–4H) | encoder ADPCM: SUBTRA, QUANTL/QUANTH, INVQAL/INVQAH, LOGSCL/SCALEL, LOGSCH/SCALEH, block 4 predictor (PARREC, RECONS, UPZERO, UPPOL2, UPPOL1, DELAYA, FILTEZ, FILTEP, PREDIC) | [`adpcm`] |
//! | 4.1–4.3, 6 (blocks 5L, 6L, 5H, 6H) | decoder ADPCM: INVQBL, RECONS, LIMIT and the same adaptation | [`adpcm`] |
//! | 6 | the saturating 16-bit arithmetic of all of the above | [`ops`] |
//! | 5, 6 | coefficient, decision-level, output-level and adaptation tables | [`tables`] |
//!
//! Every operation saturates like the Recommendation's 16-bit arithmetic,
//! nothing indexes out of range, and every octet is a valid codeword: no
//! input, PCM or payload, can make this code panic.
//!
//! # Conformance
//!
//! - **ITU-T reference.** Bit-exact on the Appendix II digital test
//!   sequences (configuration 1 encoder, configuration 2 decoder in mode 1,
//!   with their resets) and on the G.191 STL reference encoder and decoder
//!   output for its 6 s speech file, QMFs included. Those files are not
//!   redistributed; `tests::itu_t_test_sequences` runs them when
//!   `G722_TEST_VECTORS` points at them.
//! - **ezk-g722** (a Rust port of spandsp/libg722), a dev-dependency:
//!   bit-exact encoder and decoder over 34 s of varied audio and 15 s of
//!   random and extreme octet streams, once its departures from the
//!   Recommendation are taken into account. Those are:
//!   1. *Reset state.* It starts with the quantizer scale factors `DETL`
//!      and `DETH` at 0 instead of the reset values 32 and 8 (libg722's
//!      init functions set them; the port builds its state with `Default`).
//!      Silence then codes as 0xA0 first instead of the reference's 0xFA,
//!      and as ADPCM state depends on all history, its stream stays
//!      different from the Recommendation's for seconds afterwards.
//!   2. *No LIMIT after the transmit QMF.* Near full scale the filter's
//!      overshoot drives the sub-band signals to about ±25 900, past the
//!      15 bits the ADPCM works in; the reference clamps them to
//!      −16384…16383 and so do we. This changes the codes only on such
//!      clipping peaks (full-scale square waves, hard-clipped speech).
//!   3. *FILTEZ* sums the six zero-section terms in 32 bits and saturates
//!      once, where the reference saturates after every addition. It would
//!      take a partial sum beyond 16 bits to tell them apart; none of the
//!      test signals, random streams or ITU-T sequences produced one.
//!
//!   The tests run our coder from ezk-g722's starting state and, for the
//!   comparison, with the QMF limit switched off; separate tests check
//!   that the production configuration follows the Recommendation instead.

mod adpcm;
mod ops;
mod qmf;
mod tables;
#[cfg(test)]
mod tests;

use adpcm::{HigherBand, LowerBand};
use qmf::{ReceiveQmf, TransmitQmf};

/// Packs the two sub-band codes into the transmitted octet: `IH` in the two
/// most significant bits, `IL` in the six below.
fn codeword(ih: u8, il: u8) -> u8 {
    (ih << 6) | (il & 0x3F)
}

/// G.722 encoder state (64 kbit/s, 16 kHz input).
#[derive(Debug, Clone)]
pub(crate) struct G722Encoder {
    qmf: TransmitQmf,
    lower: LowerBand,
    higher: HigherBand,
}

impl G722Encoder {
    /// An encoder in the Recommendation's reset state.
    pub(crate) fn new() -> Self {
        Self {
            qmf: TransmitQmf::new(),
            lower: LowerBand::new(),
            higher: HigherBand::new(),
        }
    }

    /// Appends the encoding of `pcm` to `out`: one octet per pair of
    /// samples, so a 20 ms frame of 320 samples gives 160 bytes.
    ///
    /// The QMF consumes samples in pairs; a trailing odd sample is ignored
    /// (the public [`Encoder`](super::Encoder) only passes whole frames).
    pub(crate) fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) {
        self.encode_with::<true>(pcm, out);
    }

    /// [`encode`](Self::encode), with the LIMIT on the transmit QMF's
    /// outputs switchable so that tests can reproduce implementations that
    /// omit it (see the module docs). Production code always limits.
    fn encode_with<const LIMIT_QMF: bool>(&mut self, pcm: &[i16], out: &mut Vec<u8>) {
        out.reserve(pcm.len() / 2);
        for pair in pcm.chunks_exact(2) {
            let (xl, xh) = self.qmf.analyse(pair[0], pair[1]);
            let (xl, xh) = if LIMIT_QMF {
                (ops::limit(xl), ops::limit(xh))
            } else {
                (xl, xh)
            };
            let il = self.lower.encode(xl);
            let ih = self.higher.encode(xh);
            out.push(codeword(ih, il));
        }
    }
}

/// G.722 decoder state (64 kbit/s, 16 kHz output).
#[derive(Debug, Clone)]
pub(crate) struct G722Decoder {
    lower: LowerBand,
    higher: HigherBand,
    qmf: ReceiveQmf,
}

impl G722Decoder {
    /// A decoder in the Recommendation's reset state.
    pub(crate) fn new() -> Self {
        Self {
            lower: LowerBand::new(),
            higher: HigherBand::new(),
            qmf: ReceiveQmf::new(),
        }
    }

    /// Appends the decoding of `payload` (two samples per byte) to `out` and
    /// returns the number of samples appended. Every byte value is a valid
    /// codeword, so there is no error case.
    pub(crate) fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> usize {
        out.reserve(payload.len() * 2);
        for &code in payload {
            let rl = self.lower.decode(code & 0x3F);
            let rh = self.higher.decode(code >> 6);
            out.extend_from_slice(&self.qmf.synthesise(rl, rh));
        }
        payload.len() * 2
    }
}
