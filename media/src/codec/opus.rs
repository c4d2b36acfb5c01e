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
/// Target bitrate: wideband speech for SILK plus its in-band FEC, at half
/// G.711's 64 kbit/s.
///
/// At our low default complexity this has to be higher than the 24 kbit/s
/// that would otherwise do: libopus judges whether FEC fits by an
/// "equivalent rate" that it discounts by about 30 % at complexity 0–1,
/// and at 10 % expected loss it then drops FEC (complexity 0) or narrows
/// the audio band until FEC fits (complexity 1: narrowband). From about
/// 32 kbit/s it keeps both wideband and FEC at every complexity.
const BITRATE: i32 = 32_000;
/// Expected loss used to size in-band FEC. libopus only spends bits on LBRR
/// (FEC) data when this is non-zero, so enabling FEC alone does nothing.
const EXPECTED_LOSS_PERCENT: i32 = 10;
/// Encoder complexity we run libopus at unless told otherwise; the
/// measurements behind the choice are on
/// [`EncoderOptions::with_opus_complexity`](super::EncoderOptions::with_opus_complexity).
pub(crate) const DEFAULT_COMPLEXITY: u8 = 0;

/// Opus encoder: VOIP application, mono, 16 kHz, in-band FEC on.
pub(crate) struct OpusEncoder {
    inner: ::opus::Encoder,
}

impl OpusEncoder {
    /// `complexity` is libopus's 0–10 speed/quality trade-off; libopus
    /// rejects anything above 10.
    pub(crate) fn new(complexity: u8) -> Result<Self, ::opus::Error> {
        let mut inner = ::opus::Encoder::new(OPUS_RATE, Channels::Mono, Application::Voip)?;
        inner.set_complexity(i32::from(complexity))?;
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

#[cfg(test)]
mod tests {
    use super::super::tests::speech_like;
    use super::super::{CodecKind, Decoder, Encoder, EncoderOptions};
    use super::DEFAULT_COMPLEXITY;
    use std::f64::consts::PI;

    fn tone_1khz(samples: usize) -> Vec<i16> {
        (0..samples)
            .map(|n| (8000.0 * (2.0 * PI * 1000.0 * n as f64 / 16_000.0).sin()).round() as i16)
            .collect()
    }

    /// Best SNR (dB) of `decoded` against `reference` over lags
    /// 0..=`max_lag`, scored on `reference[skip..]`; returns (snr, lag).
    fn best_snr(reference: &[i16], decoded: &[i16], skip: usize, max_lag: usize) -> (f64, usize) {
        let mut best = (f64::NEG_INFINITY, 0);
        for lag in 0..=max_lag {
            let n = reference.len().min(decoded.len().saturating_sub(lag));
            let (mut sig, mut noise) = (0.0f64, 0.0f64);
            for i in skip..n {
                let (r, d) = (f64::from(reference[i]), f64::from(decoded[i + lag]));
                sig += r * r;
                noise += (r - d) * (r - d);
            }
            let snr = 10.0 * (sig / noise.max(1e-9)).log10();
            if snr > best.0 {
                best = (snr, lag);
            }
        }
        best
    }

    /// What one complexity setting does to a signal.
    struct Trial {
        /// Best-lag SNR of the decoded signal (dB) and that lag.
        snr: f64,
        lag: usize,
        /// Packets coded at wideband, of all.
        wideband: usize,
        packets: usize,
        /// Squared error of a lost frame rebuilt from the next packet's
        /// FEC data, relative to plain PLC (lower is better; 1.0 means
        /// the packets carry no FEC).
        fec_vs_plc: f64,
    }

    /// Encodes `pcm` at `complexity` through the public API, decodes it,
    /// and decodes it again with frame 30 lost, concealed by FEC and by
    /// PLC.
    fn trial(complexity: u8, pcm: &[i16]) -> Trial {
        let options = EncoderOptions::default().with_opus_complexity(complexity);
        let mut enc = Encoder::with_options(CodecKind::Opus, options).unwrap();
        let packets: Vec<Vec<u8>> = pcm
            .chunks_exact(320)
            .map(|frame| {
                let mut payload = Vec::new();
                enc.encode(frame, &mut payload).unwrap();
                payload
            })
            .collect();
        let lost = 30;
        let decode = |conceal: Option<bool>| {
            let mut dec = Decoder::new(CodecKind::Opus).unwrap();
            let mut out = Vec::new();
            for (i, p) in packets.iter().enumerate() {
                match conceal {
                    Some(true) if i == lost => dec.conceal_with_fec(&packets[i + 1], &mut out),
                    Some(false) if i == lost => dec.conceal(&mut out),
                    _ => dec.decode(p, &mut out),
                }
                .unwrap();
            }
            out
        };
        let clean = decode(None);
        let (snr, lag) = best_snr(pcm, &clean, 3200, 200);
        let frame_error = |x: &[i16]| -> f64 {
            let range = lost * 320..(lost + 1) * 320;
            x[range.clone()]
                .iter()
                .zip(&clean[range])
                .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
                .sum()
        };
        let wideband = packets
            .iter()
            .filter(|p| ::opus::packet::get_bandwidth(p).ok() == Some(::opus::Bandwidth::Wideband))
            .count();
        Trial {
            snr,
            lag,
            wideband,
            packets: packets.len(),
            fec_vs_plc: frame_error(&decode(Some(true))) / frame_error(&decode(Some(false))),
        }
    }

    /// The quality columns of the table on
    /// [`EncoderOptions::with_opus_complexity`]; run with `--nocapture` to
    /// see them. Every complexity in the table must keep our configuration
    /// (wideband, working in-band FEC) and code the signals recognisably at
    /// libopus's 6.5 ms delay.
    #[test]
    fn complexity_sweep_quality() {
        let speech = speech_like(16_000, 32_000, 10_000.0);
        let tone = tone_1khz(32_000);
        for complexity in [0, 1, 2, 3, 5, 9] {
            let s = trial(complexity, &speech);
            let t = trial(complexity, &tone);
            println!(
                "complexity {complexity}: speech {:.1} dB (lag {}), 1 kHz {:.1} dB, \
                 wideband {}/{}, FEC/PLC error {:.2}",
                s.snr, s.lag, t.snr, s.wideband, s.packets, s.fec_vs_plc
            );
            assert!(s.snr > 4.0, "complexity {complexity}: {:.1} dB", s.snr);
            assert!((100..=108).contains(&s.lag), "complexity {complexity}");
            // The tone's best lag is only defined modulo its period.
            assert_eq!(t.lag % 16, 104 % 16, "complexity {complexity}");
            assert!(t.snr > 15.0, "complexity {complexity}: {:.1} dB", t.snr);
            assert_eq!(s.wideband, s.packets, "complexity {complexity}");
            assert!(s.fec_vs_plc < 0.5, "complexity {complexity}: no FEC");
        }
    }

    #[test]
    fn complexity_is_applied_and_validated() {
        assert_eq!(
            EncoderOptions::default().opus_complexity(),
            DEFAULT_COMPLEXITY
        );
        let encode = |complexity: u8| {
            let options = EncoderOptions::default().with_opus_complexity(complexity);
            let mut enc = Encoder::with_options(CodecKind::Opus, options).unwrap();
            let mut out = Vec::new();
            for frame in speech_like(16_000, 3200, 10_000.0).chunks_exact(320) {
                enc.encode(frame, &mut out).unwrap();
            }
            out
        };
        // Different complexities make different (valid) streams.
        assert_ne!(encode(0), encode(9));
        assert!(
            Encoder::with_options(
                CodecKind::Opus,
                EncoderOptions::default().with_opus_complexity(11)
            )
            .is_err()
        );
        // The option is Opus-only.
        let options = EncoderOptions::default().with_opus_complexity(11);
        assert!(Encoder::with_options(CodecKind::G722, options).is_ok());
    }
}
