//! Opus (RFC 6716) via libopus, with the RTP conventions of RFC 7587.
//!
//! RFC 7587 fixes the RTP clock at 48 kHz and the rtpmap at `opus/48000/2`
//! whatever rate and channel count are actually coded. libopus decodes any
//! packet at any of its supported rates, so we run both directions directly
//! at our internal 16 kHz mono and need no resampling stage. Mono is the
//! default (`stereo=0`); stereo packets from the far end are downmixed by
//! the decoder.

use ::opus::{Application, Bandwidth, Bitrate, Channels, Signal};

/// PCM rate we run libopus at.
pub(crate) const OPUS_RATE: u32 = 16_000;
/// Samples in the longest Opus packet (120 ms, RFC 6716 §3.2.5) at 16 kHz;
/// the decoder needs room for that much whatever the frame size we expect.
const MAX_PACKET_SAMPLES: usize = 1920;
/// Largest payload one Opus frame can produce (RFC 6716 §3.2.1).
const MAX_FRAME_BYTES: usize = 1275;
/// Target bitrate: comfortably wideband speech for SILK, at well under
/// G.711's 64 kbit/s.
const BITRATE: i32 = 24_000;
/// Expected loss used to size in-band FEC. libopus only spends bits on LBRR
/// (FEC) data when this is non-zero, so enabling FEC alone does nothing.
const EXPECTED_LOSS_PERCENT: i32 = 10;

/// Opus encoder: VOIP application, mono, 16 kHz, in-band FEC on.
pub(crate) struct OpusEncoder {
    inner: ::opus::Encoder,
}

impl OpusEncoder {
    pub(crate) fn new() -> Result<Self, ::opus::Error> {
        let mut inner = ::opus::Encoder::new(OPUS_RATE, Channels::Mono, Application::Voip)?;
        inner.set_bitrate(Bitrate::Bits(BITRATE))?;
        inner.set_signal(Signal::Voice)?;
        inner.set_max_bandwidth(Bandwidth::Wideband)?;
        inner.set_inband_fec(true)?;
        inner.set_packet_loss_perc(EXPECTED_LOSS_PERCENT)?;
        Ok(Self { inner })
    }

    /// Appends one Opus packet encoding `pcm` to `out`.
    ///
    /// `pcm` must be a frame duration libopus accepts (2.5–60 ms at 16 kHz);
    /// the public [`Encoder`](super::Encoder) only ever passes 20 ms.
    pub(crate) fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) -> Result<(), ::opus::Error> {
        let start = out.len();
        out.resize(start + MAX_FRAME_BYTES, 0);
        match self.inner.encode(pcm, &mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                Ok(())
            }
            Err(e) => {
                out.truncate(start);
                Err(e)
            }
        }
    }
}

/// Opus decoder producing 16 kHz mono.
pub(crate) struct OpusDecoder {
    inner: ::opus::Decoder,
}

impl OpusDecoder {
    pub(crate) fn new() -> Result<Self, ::opus::Error> {
        Ok(Self {
            inner: ::opus::Decoder::new(OPUS_RATE, Channels::Mono)?,
        })
    }

    /// Decodes one packet, appending its PCM to `out`.
    ///
    /// `payload` must be non-empty: the `opus` crate maps an empty slice to
    /// a NULL packet, which libopus treats as a loss and conceals.
    pub(crate) fn decode(
        &mut self,
        payload: &[u8],
        out: &mut Vec<i16>,
    ) -> Result<usize, ::opus::Error> {
        debug_assert!(!payload.is_empty());
        self.run(payload, MAX_PACKET_SAMPLES, false, out)
    }

    /// Appends `samples` of libopus packet-loss concealment.
    pub(crate) fn conceal(
        &mut self,
        samples: usize,
        out: &mut Vec<i16>,
    ) -> Result<usize, ::opus::Error> {
        self.run(&[], samples, false, out)
    }

    /// Rebuilds the lost frame that precedes `next_payload` from the LBRR
    /// (in-band FEC) data carried in `next_payload`, appending `samples` of
    /// PCM. Where the packet carries no FEC, libopus falls back to PLC.
    pub(crate) fn recover_fec(
        &mut self,
        next_payload: &[u8],
        samples: usize,
        out: &mut Vec<i16>,
    ) -> Result<usize, ::opus::Error> {
        debug_assert!(!next_payload.is_empty());
        self.run(next_payload, samples, true, out)
    }

    fn run(
        &mut self,
        payload: &[u8],
        room: usize,
        fec: bool,
        out: &mut Vec<i16>,
    ) -> Result<usize, ::opus::Error> {
        let start = out.len();
        out.resize(start + room, 0);
        match self.inner.decode(payload, &mut out[start..], fec) {
            Ok(n) => {
                out.truncate(start + n);
                Ok(n)
            }
            Err(e) => {
                out.truncate(start);
                Err(e)
            }
        }
    }
}
