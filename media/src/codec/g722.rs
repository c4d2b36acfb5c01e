//! G.722 wideband ADPCM (ITU-T G.722), mode 1: 64 kbit/s.
//!
//! The codec itself comes from `ezk-g722` (a Rust port of the spandsp /
//! sippy libg722 implementation); this module only pins its configuration:
//! 16 kHz input, 64 kbit/s, unpacked. In mode 1 every pair of 16 kHz samples
//! becomes one byte (6 low-band bits + 2 high-band bits), so a 20 ms frame of
//! 320 samples is 160 bytes and "unpacked" is already the RTP payload format
//! of RFC 3551 §4.5.2.
//!
//! The QMF analysis/synthesis pair gives an end-to-end delay of about 22
//! samples (1.4 ms) at 16 kHz.

use ezk_g722::libg722::{Bitrate, decoder, encoder};

/// G.722 encoder state (64 kbit/s, 16 kHz input).
pub(crate) struct G722Encoder {
    inner: encoder::Encoder,
}

impl G722Encoder {
    pub(crate) fn new() -> Self {
        // ezk-g722's encoder takes (rate, eight_k, packed) while its decoder
        // takes (rate, packed, eight_k); name them to keep the order honest.
        let eight_k = false;
        let packed = false;
        Self {
            inner: encoder::Encoder::new(Bitrate::Mode1_64000, eight_k, packed),
        }
    }

    /// Appends the encoding of `pcm` to `out`.
    ///
    /// The QMF consumes samples in pairs and ezk-g722 asserts on an odd
    /// count, so callers must pass an even number of samples (a 20 ms frame
    /// is 320).
    pub(crate) fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) {
        debug_assert!(pcm.len().is_multiple_of(2), "G.722 needs sample pairs");
        out.extend_from_slice(&self.inner.encode(pcm));
    }
}

/// G.722 decoder state (64 kbit/s, 16 kHz output).
pub(crate) struct G722Decoder {
    inner: decoder::Decoder,
}

impl G722Decoder {
    pub(crate) fn new() -> Self {
        let packed = false;
        let eight_k = false;
        Self {
            inner: decoder::Decoder::new(Bitrate::Mode1_64000, packed, eight_k),
        }
    }

    /// Appends the decoding of `payload` (two samples per byte) to `out` and
    /// returns the number of samples appended. Every byte value is a valid
    /// codeword, so there is no error case.
    pub(crate) fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> usize {
        let pcm = self.inner.decode(payload);
        out.extend_from_slice(&pcm);
        pcm.len()
    }
}
