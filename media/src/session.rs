//! One call's media: RTP in → jitter buffer → decoded, concealed, resampled
//! 20 ms frames of 16 kHz PCM (with voice activity, turn events and DTMF);
//! 16 kHz PCM in → one paced RTP packet per 20 ms tick; RTCP alongside.
//!
//! # Drive rule
//!
//! Call [`MediaSession::handle_receive`] for every datagram on the RTP port,
//! [`MediaSession::handle_rtcp`] for every datagram on the RTCP port, and
//! [`MediaSession::handle_timeout`] when the instant last returned by
//! [`MediaSession::poll_output`] arrives. After any of them, drain
//! `poll_output` until it returns [`Output::Timeout`], and take the decoded
//! audio with [`MediaSession::pop_frame`] (one frame per tick). Feed
//! outbound audio with [`MediaSession::push_audio`] between
//! [`begin_utterance`](MediaSession::begin_utterance) and
//! [`finish_utterance`](MediaSession::finish_utterance).
//!
//! # A tick
//!
//! Every 20 ms of media time, in this order:
//! 1. **Inbound.** Pop the jitter buffer until one frame of 16 kHz PCM is
//!    ready: decode packets, conceal missing frames (Opus PLC, or Opus
//!    in-band FEC when the next packet is already here; G.711/G.722 repeat
//!    and fade), play silence for comfort noise, prefill and stalls. The
//!    frame goes to the application and, if turn detection is on, through
//!    the VAD, the echo guard and the endpointer.
//! 2. **Barge-in.** A `SpeechStarted` while agent audio is queued flushes
//!    the playout queue in the same tick, so not one more frame of the
//!    interrupted reply is sent, and reports how much of it was played.
//! 3. **Outbound.** Send one packet: a DTMF event packet while one is being
//!    sent, else the next queued frame, else encoded silence (or nothing,
//!    with `send_silence` off). Timestamps and sequence numbers are
//!    continuous for the whole call; the SSRC never changes; the first
//!    frame of each utterance carries the marker bit.
//! 4. **RTCP** when its interval is due, and the inactivity check.
//!
//! A tick that is up to 60 ms late is still sent (a burst of at most three
//! packets); an older missed tick is skipped: its RTP timestamp is spent
//! without a packet (the peer conceals one frame) and queued audio stays
//! queued, so nothing that was going to be said is dropped.
//!
//! # Symmetric RTP
//!
//! With `symmetric_rtp` the session sends to the address the peer's packets
//! really come from (latching, as Asterisk's `comedia`): the first packet of
//! a negotiated payload type latches; a later source change is followed only
//! together with a new SSRC, so a stray packet cannot steal the stream.
//! RTCP goes to the RTP address's port + 1 until RTCP arrives from the peer,
//! then to where it comes from.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::codec::{CodecError, CodecKind, Decoder, Encoder};
use crate::dtmf::{Digit, DtmfError, DtmfReceiver, DtmfSender};
use crate::jitter::{JitterBuffer, JitterConfig, JitterStats, PercentileDepth, Pop};
use crate::resample::{ResampleError, Resampler};
use crate::rtcp::{RtcpSession, RtcpStats};
use crate::rtp::{MediaTime, RtpPacket, SeqNo, Ssrc};
use crate::vad::{
    EchoGuard, EchoGuardConfig, EndpointConfig, Endpointer, TurnEvent, VadConfig, VoiceDetector,
    level_dbfs,
};

/// Samples in one 20 ms frame at 16 kHz.
pub const FRAME_SAMPLES: usize = 320;
/// The processing rate of every frame the session hands out or accepts.
pub const PCM_RATE: u32 = 16_000;
/// Frame duration.
pub const FRAME: Duration = Duration::from_millis(20);
/// Ticks later than this are skipped rather than sent in a burst.
const MAX_LATE: Duration = Duration::from_millis(60);
/// Payload type of RFC 3389 comfort noise.
const PT_CN: u8 = 13;
/// Inbound frames kept for the application before the oldest are dropped.
const INBOUND_CAPACITY: usize = 25;
/// Silent frames encoded before the packet is reused for further silence
/// (the resampler's history and the encoder's state have settled by then).
const SILENCE_SETTLE: u32 = 4;

/// One 20 ms frame of 16 kHz mono PCM.
pub type Frame = [i16; FRAME_SAMPLES];

/// Turn detection settings (VAD, endpointing, barge-in), per agent.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TurnConfig {
    /// Voice activity detection.
    pub vad: VadConfig,
    /// Start/stop hangovers and the barge-in threshold.
    pub endpoint: EndpointConfig,
    /// Echo guard.
    pub echo: EchoGuardConfig,
    /// Flush playout when the caller talks over the agent.
    pub barge_in: bool,
}

/// RTCP settings.
#[derive(Debug, Clone)]
pub struct RtcpConfig {
    /// Our canonical name.
    pub cname: String,
    /// Wall-clock mapping read by the shell at session start.
    pub clock: crate::clock::WallClock,
    /// Seed for the report interval randomization.
    pub seed: u64,
}

/// How the session is set up; the server derives it from the SDP exchange.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// The negotiated codec.
    pub codec: CodecKind,
    /// Its RTP payload type.
    pub payload_type: u8,
    /// The negotiated telephone-event payload type (DTMF, RFC 4733).
    pub telephone_event: Option<u8>,
    /// Where to send RTP (from SDP) until latching says otherwise.
    pub remote: Option<SocketAddr>,
    /// We send media (sendrecv or sendonly from our side).
    pub send: bool,
    /// We receive media (sendrecv or recvonly from our side).
    pub receive: bool,
    /// Follow the real source of the peer's RTP.
    pub symmetric_rtp: bool,
    /// End the call after this long without RTP (only while sendrecv).
    pub inactivity_timeout: Option<Duration>,
    /// Send encoded silence while nothing is queued.
    pub send_silence: bool,
    /// Our SSRC.
    pub ssrc: Ssrc,
    /// First sequence number (random per RFC 3550 §5.1).
    pub first_seq: SeqNo,
    /// First timestamp (random per RFC 3550 §5.1).
    pub first_timestamp: MediaTime,
    /// Outbound queue capacity in frames (kept small: barge-in flushes it).
    pub playout_frames: usize,
    /// Jitter buffer depth bound, in frames.
    pub jitter_max_frames: usize,
    /// Turn detection; `None` runs no VAD (echo, playback).
    pub turn: Option<TurnConfig>,
    /// RTCP; `None` sends and reads none.
    pub rtcp: Option<RtcpConfig>,
}

/// Failures setting up a session.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// The codec could not be created.
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    /// The resampler could not be created.
    #[error("resampler: {0}")]
    Resample(#[from] ResampleError),
    /// A DTMF request was refused.
    #[error("DTMF: {0}")]
    Dtmf(#[from] DtmfError),
    /// No telephone-event payload type was negotiated.
    #[error("the peer did not negotiate telephone-event")]
    NoTelephoneEvent,
}

/// Which socket a datagram belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// The RTP port.
    Rtp,
    /// The RTCP port.
    Rtcp,
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Which socket.
    pub channel: Channel,
    /// Where.
    pub destination: SocketAddr,
    /// The packet.
    pub payload: Vec<u8>,
}

/// How much of an utterance went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlayoutReport {
    /// The id given to `begin_utterance`.
    pub utterance: u64,
    /// 16 kHz samples of it sent to the peer.
    pub played_samples: u64,
}

impl PlayoutReport {
    /// Played duration.
    pub fn played(&self) -> Duration {
        Duration::from_micros(self.played_samples * 1_000_000 / u64::from(PCM_RATE))
    }
}

/// What the session reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaEvent {
    /// RTP now goes to this address (symmetric RTP).
    Latched(SocketAddr),
    /// No RTP for the configured time; the call should end.
    Inactive(Duration),
    /// The caller started or stopped speaking.
    Turn(TurnEvent),
    /// The caller talked over the agent: playout was flushed. `interrupted`
    /// says how much of the reply being played had been sent.
    BargeIn {
        /// The utterance that was cut, with what was played of it.
        interrupted: Option<PlayoutReport>,
        /// Frames dropped from the queue.
        flushed_frames: usize,
    },
    /// The first frame of an utterance was sent, at this tick (ticks count
    /// from 0 at session start, like the endpointer's frame indices, so the
    /// time from `SpeechStopped` to here is `(tick - frame) × 20 ms`).
    UtteranceStarted {
        /// The utterance.
        utterance: u64,
        /// The tick that sent its first packet.
        tick: u64,
    },
    /// The last frame of an utterance was sent.
    UtteranceDone(PlayoutReport),
    /// A DTMF digit arrived (RFC 4733).
    Dtmf(Digit),
}

/// Output of [`MediaSession::poll_output`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send a datagram.
    Transmit(Transmit),
    /// An event.
    Event(MediaEvent),
    /// Call `handle_timeout` at this instant.
    Timeout(Instant),
}

/// Counters for the call's media.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MediaStats {
    /// Audio packets received (given to the jitter buffer).
    pub rx_packets: u64,
    /// Datagrams that were not RTP, or of an unexpected payload type.
    pub rx_ignored: u64,
    /// Payloads the decoder refused (concealed instead).
    pub rx_decode_errors: u64,
    /// Packets sent (audio and DTMF).
    pub tx_packets: u64,
    /// Ticks skipped because the shell was late.
    pub skipped_ticks: u64,
    /// Inbound frames dropped because nobody consumed them.
    pub inbound_overflow: u64,
    /// Frames concealed (loss, underrun, depth stretching).
    pub concealed_frames: u64,
    /// Of those, frames rebuilt from Opus in-band FEC.
    pub fec_frames: u64,
    /// Frames of silence played (comfort noise, prefill, stall).
    pub silence_frames: u64,
    /// DTMF digits received.
    pub dtmf_received: u64,
    /// DTMF digits sent.
    pub dtmf_sent: u64,
    /// Frames the VAD model ran on (the energy gate skips the rest).
    pub vad_model_blocks: u64,
    /// Playout frames flushed by barge-in.
    pub barge_in_flushed: u64,
    /// Jitter buffer counters.
    pub jitter: JitterStats,
    /// Jitter buffer depth now, frames.
    pub jitter_depth_frames: usize,
    /// Jitter buffer target depth now, frames.
    pub jitter_target_frames: usize,
}

/// A queued outbound frame.
#[derive(Debug, Clone, Copy)]
struct Queued {
    frame: Frame,
    utterance: u64,
    /// The last frame of its utterance.
    last: bool,
}

/// Per-call turn detection state.
struct Turn {
    config: TurnConfig,
    vad: VoiceDetector,
    guard: EchoGuard,
    endpointer: Endpointer,
}

/// The per-call media state machine.
pub struct MediaSession {
    config: MediaConfig,
    encoder: Encoder,
    decoder: Decoder,
    upsample: Resampler,
    downsample: Resampler,
    jitter: JitterBuffer,
    remote: Option<SocketAddr>,
    rtcp_remote: Option<SocketAddr>,
    latched_ssrc: Option<Ssrc>,
    seq: SeqNo,
    timestamp: MediaTime,
    marker_next: bool,
    next_tick: Instant,
    last_rx: Instant,
    inactive_reported: bool,
    playout: VecDeque<Queued>,
    partial_out: Vec<i16>,
    utterance: u64,
    /// The utterance being sent and how many of its samples went out.
    played: Option<PlayoutReport>,
    /// Decoded frames with their index (counted from the first tick).
    inbound: VecDeque<(u64, Frame)>,
    /// Index of the next inbound frame.
    inbound_next: u64,
    pcm_in: Vec<i16>,
    scratch_native: Vec<i16>,
    scratch_pcm: Vec<i16>,
    scratch_payload: Vec<u8>,
    /// Consecutive silent frames sent; from `SILENCE_SETTLE` on, the last
    /// encoded payload is reused.
    silence_run: u32,
    /// Ticks run so far.
    ticks: u64,
    /// The last tick sent a queued (application) frame.
    sending_audio: bool,
    turn: Option<Turn>,
    dtmf_rx: DtmfReceiver,
    dtmf_tx: Option<DtmfSender>,
    /// Newest media time heard from the peer (for DTMF end timeouts).
    peer_ts: Option<MediaTime>,
    rtcp: Option<RtcpSession>,
    out: VecDeque<Output>,
    stats: MediaStats,
}

impl std::fmt::Debug for MediaSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaSession")
            .field("codec", &self.config.codec)
            .field("remote", &self.remote)
            .field("stats", &self.stats)
            .finish()
    }
}

fn telephone_event_clock(codec: CodecKind) -> u32 {
    codec.rtp_clock_rate()
}

impl MediaSession {
    /// A session whose first tick is due at `now`.
    pub fn new(config: MediaConfig, now: Instant) -> Result<Self, MediaError> {
        let native = config.codec.native_rate();
        let jitter = JitterBuffer::new(
            JitterConfig {
                max_depth_frames: config.jitter_max_frames,
                ..JitterConfig::for_codec(config.codec)
            },
            Box::new(PercentileDepth::new(config.jitter_max_frames)),
        );
        let rtcp = config.rtcp.as_ref().map(|r| {
            RtcpSession::new(
                config.ssrc,
                config.codec.rtp_clock_rate(),
                r.cname.clone(),
                r.clock,
                now,
                r.seed,
            )
        });
        let turn = config.turn.map(|t| Turn {
            config: t,
            vad: VoiceDetector::new(t.vad),
            guard: EchoGuard::new(t.echo),
            endpointer: Endpointer::new(t.endpoint),
        });
        Ok(MediaSession {
            encoder: Encoder::new(config.codec)?,
            decoder: Decoder::new(config.codec)?,
            upsample: Resampler::new(native, PCM_RATE)?,
            downsample: Resampler::new(PCM_RATE, native)?,
            jitter,
            remote: config.remote,
            rtcp_remote: config.remote.map(rtcp_port),
            latched_ssrc: None,
            seq: config.first_seq,
            timestamp: config.first_timestamp,
            marker_next: true,
            next_tick: now,
            last_rx: now,
            inactive_reported: false,
            playout: VecDeque::with_capacity(config.playout_frames),
            partial_out: Vec::with_capacity(FRAME_SAMPLES),
            utterance: 0,
            played: None,
            inbound: VecDeque::with_capacity(4),
            inbound_next: 0,
            pcm_in: Vec::with_capacity(4 * FRAME_SAMPLES),
            scratch_native: Vec::with_capacity(2 * FRAME_SAMPLES),
            scratch_pcm: Vec::with_capacity(2 * FRAME_SAMPLES),
            scratch_payload: Vec::with_capacity(2 * FRAME_SAMPLES),
            silence_run: 0,
            ticks: 0,
            sending_audio: false,
            turn,
            dtmf_rx: DtmfReceiver::new(telephone_event_clock(config.codec)),
            dtmf_tx: config
                .telephone_event
                .map(|pt| DtmfSender::new(pt, telephone_event_clock(config.codec))),
            peer_ts: None,
            rtcp,
            out: VecDeque::new(),
            stats: MediaStats::default(),
            config,
        })
    }

    /// Counters, with the jitter buffer's current state.
    pub fn stats(&self) -> MediaStats {
        MediaStats {
            jitter: self.jitter.stats(),
            jitter_depth_frames: self.jitter.depth_frames(),
            jitter_target_frames: self.jitter.target_frames(),
            vad_model_blocks: self.turn.as_ref().map_or(0, |t| t.vad.model_blocks()),
            ..self.stats
        }
    }

    /// RTCP statistics (loss, jitter, round-trip time), when RTCP is on.
    pub fn rtcp_stats(&self) -> Option<RtcpStats> {
        self.rtcp.as_ref().map(RtcpSession::stats)
    }

    /// Where RTP is sent now.
    pub fn remote(&self) -> Option<SocketAddr> {
        self.remote
    }

    /// The configuration in force.
    pub fn config(&self) -> &MediaConfig {
        &self.config
    }

    /// The caller is speaking (between `SpeechStarted` and `SpeechStopped`).
    pub fn caller_speaking(&self) -> bool {
        self.turn.as_ref().is_some_and(|t| t.endpointer.in_speech())
    }

    /// Applies a new offer/answer outcome (hold, unhold, new address). The
    /// codec and payload type may change; SSRC, sequence and timestamp go on.
    pub fn update(&mut self, config: MediaConfig, now: Instant) -> Result<(), MediaError> {
        if config.codec != self.config.codec {
            let native = config.codec.native_rate();
            self.encoder = Encoder::new(config.codec)?;
            self.decoder = Decoder::new(config.codec)?;
            self.upsample = Resampler::new(native, PCM_RATE)?;
            self.downsample = Resampler::new(PCM_RATE, native)?;
            self.jitter = JitterBuffer::new(
                JitterConfig {
                    max_depth_frames: config.jitter_max_frames,
                    ..JitterConfig::for_codec(config.codec)
                },
                Box::new(PercentileDepth::new(config.jitter_max_frames)),
            );
            self.pcm_in.clear();
            self.silence_run = 0;
        }
        if config.remote != self.config.remote {
            // A new address in SDP restarts latching.
            self.remote = config.remote;
            self.rtcp_remote = config.remote.map(rtcp_port);
            self.latched_ssrc = None;
        }
        self.dtmf_tx = config
            .telephone_event
            .map(|pt| DtmfSender::new(pt, telephone_event_clock(config.codec)));
        self.last_rx = now;
        self.inactive_reported = false;
        self.marker_next = true;
        let (ssrc, seq, ts) = (self.config.ssrc, self.seq, self.timestamp);
        self.config = MediaConfig {
            ssrc,
            first_seq: seq,
            first_timestamp: ts,
            ..config
        };
        Ok(())
    }

    // --- inbound ---------------------------------------------------------

    /// A datagram arrived on the RTP port.
    pub fn handle_receive(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let Ok(pkt) = RtpPacket::parse(datagram) else {
            self.stats.rx_ignored += 1;
            return;
        };
        let pt = pkt.payload_type;
        let is_audio = pt == self.config.payload_type;
        let is_event = Some(pt) == self.config.telephone_event;
        if !(is_audio || is_event || pt == PT_CN) {
            self.stats.rx_ignored += 1;
            return;
        }
        self.latch(from, pkt.ssrc);
        self.last_rx = now;
        self.inactive_reported = false;
        if let Some(r) = &mut self.rtcp {
            r.on_rtp_received(now, pkt.ssrc, pkt.seq, pkt.timestamp);
        }
        if self.peer_ts.is_none_or(|t| t.delta(pkt.timestamp) > 0) {
            self.peer_ts = Some(pkt.timestamp);
        }
        if !self.config.receive {
            return;
        }
        if is_event {
            if let Some(d) = self.dtmf_rx.handle(pkt.timestamp, pkt.marker, pkt.payload) {
                self.digit(d);
            }
        } else if pt == PT_CN {
            self.jitter
                .put_comfort_noise(now, pkt.ssrc, pkt.seq, pkt.timestamp);
        } else {
            self.stats.rx_packets += 1;
            let frame_ts = self.config.codec.rtp_timestamp_step();
            let duration = self
                .config
                .codec
                .packet_duration_ts(pkt.payload)
                .unwrap_or(frame_ts);
            self.jitter.put(
                now,
                pkt.ssrc,
                pkt.seq,
                pkt.timestamp,
                pkt.marker,
                pkt.payload,
                duration,
            );
        }
    }

    /// A datagram arrived on the RTCP port.
    pub fn handle_rtcp(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let Some(r) = &mut self.rtcp else { return };
        if r.handle_rtcp(now, datagram).is_ok() && self.config.symmetric_rtp {
            self.rtcp_remote = Some(from);
        }
    }

    fn digit(&mut self, d: Digit) {
        self.stats.dtmf_received += 1;
        self.out.push_back(Output::Event(MediaEvent::Dtmf(d)));
    }

    fn latch(&mut self, from: SocketAddr, ssrc: Ssrc) {
        if !self.config.symmetric_rtp || self.remote == Some(from) {
            self.latched_ssrc.get_or_insert(ssrc);
            return;
        }
        if self.latched_ssrc.is_none_or(|s| s != ssrc) {
            self.remote = Some(from);
            self.rtcp_remote = Some(rtcp_port(from));
            self.latched_ssrc = Some(ssrc);
            self.out.push_back(Output::Event(MediaEvent::Latched(from)));
        }
    }

    /// The next decoded inbound frame (one per tick).
    pub fn pop_frame(&mut self) -> Option<Frame> {
        self.inbound.pop_front().map(|(_, f)| f)
    }

    /// The next decoded inbound frame and its index: frames are counted
    /// from the session's first tick, as turn detection counts them, so
    /// [`TurnEvent`] frame numbers name these frames even when some were
    /// dropped on the way.
    pub fn pop_indexed_frame(&mut self) -> Option<(u64, Frame)> {
        self.inbound.pop_front()
    }

    /// Produces one 16 kHz frame from the jitter buffer.
    fn pull_inbound(&mut self, now: Instant) -> Frame {
        // A frame needs at most a handful of pops (10 ms packets need two);
        // the bound keeps a misbehaving buffer from spinning.
        for _ in 0..8 {
            if self.pcm_in.len() >= FRAME_SAMPLES {
                break;
            }
            self.scratch_native.clear();
            match self.jitter.pop(now) {
                Pop::Packet(p) => {
                    if self
                        .decoder
                        .decode(&p.payload, &mut self.scratch_native)
                        .is_err()
                    {
                        self.stats.rx_decode_errors += 1;
                        self.scratch_native.clear();
                        let _ = self.decoder.conceal(&mut self.scratch_native);
                        self.stats.concealed_frames += 1;
                    }
                    self.jitter.recycle(p.payload);
                }
                Pop::Lost { next } => {
                    let fec = match &next {
                        Some(n) if self.config.codec == CodecKind::Opus => self
                            .decoder
                            .conceal_with_fec(n, &mut self.scratch_native)
                            .is_ok(),
                        _ => false,
                    };
                    if !fec {
                        self.scratch_native.clear();
                        let _ = self.decoder.conceal(&mut self.scratch_native);
                    } else {
                        self.stats.fec_frames += 1;
                    }
                    self.stats.concealed_frames += 1;
                    if let Some(n) = next {
                        self.jitter.recycle(n);
                    }
                }
                Pop::Silence | Pop::Waiting => {
                    self.stats.silence_frames += 1;
                    self.scratch_native
                        .resize(self.config.codec.samples_per_frame(), 0);
                }
            }
            self.upsample
                .process(&self.scratch_native, &mut self.pcm_in);
        }
        let mut frame = [0i16; FRAME_SAMPLES];
        let n = self.pcm_in.len().min(FRAME_SAMPLES);
        frame[..n].copy_from_slice(&self.pcm_in[..n]);
        self.pcm_in.drain(..n);
        frame
    }

    /// Turn detection on an inbound frame; barge-in flushes playout.
    fn detect_turn(&mut self, frame: &Frame) {
        let agent_playing = self.agent_playing();
        let Some(t) = &mut self.turn else { return };
        let v = t.vad.process(frame);
        let echo = t.guard.push_near(v.level_dbfs);
        let counts = v.speech && !(agent_playing && echo);
        let Some(event) = t.endpointer.push(counts, agent_playing) else {
            return;
        };
        let barge_in = t.config.barge_in
            && matches!(
                event,
                TurnEvent::SpeechStarted {
                    over_agent: true,
                    ..
                }
            );
        self.out.push_back(Output::Event(MediaEvent::Turn(event)));
        if barge_in {
            let interrupted = self.playout_position();
            let flushed = self.flush_playout_frames();
            self.stats.barge_in_flushed += flushed as u64;
            self.out.push_back(Output::Event(MediaEvent::BargeIn {
                interrupted,
                flushed_frames: flushed,
            }));
        }
    }

    // --- outbound --------------------------------------------------------

    /// Tags the audio pushed from now on as utterance `id` (for playout
    /// reports and barge-in accounting). Starts a new talkspurt.
    pub fn begin_utterance(&mut self, id: u64) {
        self.finish_utterance();
        self.utterance = id;
    }

    /// Queues 16 kHz PCM for playout. Returns how many samples were taken:
    /// fewer than given when the playout queue is full (the caller keeps the
    /// rest and offers it again after the next tick).
    pub fn push_audio(&mut self, pcm: &[i16]) -> usize {
        let mut taken = 0;
        while taken < pcm.len() && self.playout.len() < self.config.playout_frames {
            let need = FRAME_SAMPLES - self.partial_out.len();
            let n = need.min(pcm.len() - taken);
            self.partial_out.extend_from_slice(&pcm[taken..taken + n]);
            taken += n;
            if self.partial_out.len() == FRAME_SAMPLES {
                let mut frame = [0i16; FRAME_SAMPLES];
                frame.copy_from_slice(&self.partial_out);
                self.partial_out.clear();
                self.playout.push_back(Queued {
                    frame,
                    utterance: self.utterance,
                    last: false,
                });
            }
        }
        taken
    }

    /// Turns turn detection off for the rest of the session (the call is
    /// now between two people: no endpointing, no barge-in flushes).
    pub fn stop_turn_detection(&mut self) {
        self.turn = None;
        self.config.turn = None;
    }

    /// Ends the current utterance: the pending partial frame is padded with
    /// silence and its last frame is marked, so an
    /// [`MediaEvent::UtteranceDone`] follows when it has been sent.
    pub fn finish_utterance(&mut self) {
        if !self.partial_out.is_empty() && self.playout.len() < self.config.playout_frames {
            self.partial_out.resize(FRAME_SAMPLES, 0);
            let mut frame = [0i16; FRAME_SAMPLES];
            frame.copy_from_slice(&self.partial_out);
            self.partial_out.clear();
            self.playout.push_back(Queued {
                frame,
                utterance: self.utterance,
                last: false,
            });
        }
        if let Some(q) = self
            .playout
            .back_mut()
            .filter(|q| q.utterance == self.utterance)
        {
            q.last = true;
        }
    }

    fn playout_position(&self) -> Option<PlayoutReport> {
        let utterance = self
            .playout
            .front()
            .map(|q| q.utterance)
            .or(self.played.map(|p| p.utterance))?;
        let played_samples = match self.played {
            Some(p) if p.utterance == utterance => p.played_samples,
            _ => 0,
        };
        Some(PlayoutReport {
            utterance,
            played_samples,
        })
    }

    fn flush_playout_frames(&mut self) -> usize {
        let n = self.playout.len();
        self.playout.clear();
        self.partial_out.clear();
        self.marker_next = true;
        n
    }

    /// Drops all queued outbound audio at once; returns how much of the
    /// utterance being played had been sent.
    pub fn flush_playout(&mut self) -> Option<PlayoutReport> {
        let at = self.playout_position();
        self.flush_playout_frames();
        at
    }

    /// Frames queued for playout.
    pub fn queued_frames(&self) -> usize {
        self.playout.len()
    }

    /// Room left in the playout queue, in frames.
    pub fn playout_room(&self) -> usize {
        self.config.playout_frames - self.playout.len()
    }

    /// True while agent audio is queued.
    pub fn agent_playing(&self) -> bool {
        !self.playout.is_empty() || !self.partial_out.is_empty()
    }

    /// Sends a DTMF digit as RFC 4733 telephone-events (queued behind one
    /// already being sent).
    pub fn send_dtmf(&mut self, digit: char, duration: Duration) -> Result<(), MediaError> {
        let tx = self.dtmf_tx.as_mut().ok_or(MediaError::NoTelephoneEvent)?;
        tx.start(digit, duration, 10)?;
        self.stats.dtmf_sent += 1;
        Ok(())
    }

    // --- time ------------------------------------------------------------

    /// Fires due ticks, RTCP and the inactivity check.
    pub fn handle_timeout(&mut self, now: Instant) {
        while self.next_tick <= now {
            if now - self.next_tick > MAX_LATE {
                self.stats.skipped_ticks += 1;
                self.timestamp = self
                    .timestamp
                    .advance(self.config.codec.rtp_timestamp_step());
                self.marker_next = true;
                // The inbound side keeps its pace too: one frame per tick.
                self.inbound_tick(now);
            } else {
                self.inbound_tick(now);
                self.outbound_tick(now);
            }
            self.next_tick += FRAME;
            self.ticks += 1;
        }
        if let Some(r) = &mut self.rtcp {
            if r.poll_timeout() <= now {
                if let (Some(p), Some(to)) = (r.poll_transmit(now), self.rtcp_remote) {
                    self.out.push_back(Output::Transmit(Transmit {
                        channel: Channel::Rtcp,
                        destination: to,
                        payload: p,
                    }));
                }
            }
        }
        if self.inactivity_deadline().is_some_and(|d| d <= now) {
            self.inactive_reported = true;
            let silent = now - self.last_rx;
            self.out
                .push_back(Output::Event(MediaEvent::Inactive(silent)));
        }
    }

    fn inbound_tick(&mut self, now: Instant) {
        let frame = self.pull_inbound(now);
        self.detect_turn(&frame);
        if let Some(ts) = self.peer_ts {
            if let Some(d) = self
                .dtmf_rx
                .handle_timeout(ts.advance(self.config.codec.rtp_timestamp_step()))
            {
                self.digit(d);
            }
        }
        if self.inbound.len() == INBOUND_CAPACITY {
            self.inbound.pop_front();
            self.stats.inbound_overflow += 1;
        }
        self.inbound.push_back((self.inbound_next, frame));
        self.inbound_next += 1;
    }

    /// When silence ends the call: only while media flows both ways (not on
    /// hold) and not already reported.
    fn inactivity_deadline(&self) -> Option<Instant> {
        let limit = self.config.inactivity_timeout?;
        let active = self.config.send && self.config.receive && !self.inactive_reported;
        active.then(|| self.last_rx + limit)
    }

    fn outbound_tick(&mut self, now: Instant) {
        self.sending_audio = false;
        let step = self.config.codec.rtp_timestamp_step();
        let Some(destination) = self.remote.filter(|_| self.config.send) else {
            // Not sending (hold, no address): media time still passes.
            self.playout.pop_front();
            self.timestamp = self.timestamp.advance(step);
            self.marker_next = true;
            self.far_level(-100.0);
            return;
        };
        if let Some(ev) = self
            .dtmf_tx
            .as_mut()
            .and_then(|tx| tx.next_packet(self.timestamp))
        {
            let pt = self.dtmf_tx.as_ref().map_or(0, DtmfSender::payload_type);
            let mut payload = Vec::with_capacity(16);
            ev.rtp(pt, self.seq, self.config.ssrc).write(&mut payload);
            self.send_rtp(now, destination, ev.timestamp, payload, 4);
            self.timestamp = self.timestamp.advance(step);
            self.far_level(-100.0);
            return;
        }
        let queued = self.playout.pop_front();
        self.sending_audio = queued.is_some();
        if queued.is_none() && !self.config.send_silence {
            self.timestamp = self.timestamp.advance(step);
            self.marker_next = true;
            self.far_level(-100.0);
            return;
        }
        let marker = match queued {
            Some(_) => std::mem::take(&mut self.marker_next),
            None => {
                self.marker_next = true;
                false
            }
        };
        let pcm = queued.map_or([0; FRAME_SAMPLES], |q| q.frame);
        self.far_level(if queued.is_some() {
            level_dbfs(&pcm)
        } else {
            -100.0
        });
        let encoded = if queued.is_none() && self.silence_run >= SILENCE_SETTLE {
            // Steady silence: the encoder and resampler have settled, so the
            // packet they would make is the one already made. Reusing it
            // saves the encoder's cost (Opus: ~33 µs per frame) whenever
            // the agent is silent.
            Ok(())
        } else {
            self.downsample.process(&pcm, &mut self.scratch_pcm);
            let n = self.config.codec.samples_per_frame();
            if self.scratch_pcm.len() < n {
                // Priming: the resampler's first output is short by its delay.
                let pad = n - self.scratch_pcm.len();
                self.scratch_pcm.splice(0..0, std::iter::repeat_n(0, pad));
            }
            self.scratch_payload.clear();
            let r = self
                .encoder
                .encode(&self.scratch_pcm[..n], &mut self.scratch_payload);
            self.scratch_pcm.drain(..n);
            r
        };
        self.silence_run = if queued.is_none() {
            self.silence_run.saturating_add(1)
        } else {
            0
        };
        if encoded.is_ok() {
            let mut packet = Vec::with_capacity(12 + self.scratch_payload.len());
            RtpPacket {
                marker,
                payload_type: self.config.payload_type,
                seq: self.seq,
                timestamp: self.timestamp,
                ssrc: self.config.ssrc,
                payload: &self.scratch_payload,
            }
            .write(&mut packet);
            let len = self.scratch_payload.len();
            self.send_rtp(now, destination, self.timestamp, packet, len);
        }
        self.timestamp = self.timestamp.advance(step);
        if let Some(q) = queued {
            self.account_played(q);
        }
    }

    fn send_rtp(
        &mut self,
        now: Instant,
        destination: SocketAddr,
        ts: MediaTime,
        packet: Vec<u8>,
        payload_len: usize,
    ) {
        self.seq = self.seq.next();
        self.stats.tx_packets += 1;
        if let Some(r) = &mut self.rtcp {
            r.on_rtp_sent(now, ts, payload_len);
        }
        self.out.push_back(Output::Transmit(Transmit {
            channel: Channel::Rtp,
            destination,
            payload: packet,
        }));
    }

    fn far_level(&mut self, level: f32) {
        if let Some(t) = &mut self.turn {
            t.guard.push_far(level);
        }
    }

    fn account_played(&mut self, q: Queued) {
        let p = match self.played {
            Some(p) if p.utterance == q.utterance => p,
            _ => {
                self.out
                    .push_back(Output::Event(MediaEvent::UtteranceStarted {
                        utterance: q.utterance,
                        tick: self.ticks,
                    }));
                PlayoutReport {
                    utterance: q.utterance,
                    played_samples: 0,
                }
            }
        };
        let p = PlayoutReport {
            played_samples: p.played_samples + FRAME_SAMPLES as u64,
            ..p
        };
        self.played = Some(p);
        if q.last {
            self.marker_next = true;
            self.out
                .push_back(Output::Event(MediaEvent::UtteranceDone(p)));
        }
    }

    /// Ticks run since the session started.
    pub fn tick_index(&self) -> u64 {
        self.ticks
    }

    /// Starts sending queued audio now instead of at the next 20 ms tick,
    /// when the stream is idle (only silence sent, or nothing): the agent's
    /// reply then leaves as soon as its first frame is ready. The timestamp
    /// jumps by the time elapsed since the last packet and the packet has
    /// the marker bit, as any talkspurt after silence does (RFC 3550 §5.1).
    /// Returns true when it re-phased.
    pub fn play_now(&mut self, now: Instant) -> bool {
        let idle = !self.sending_audio;
        let last = self.next_tick.checked_sub(FRAME);
        match (idle, last) {
            (true, Some(last))
                if now > last && now < self.next_tick && !self.playout.is_empty() =>
            {
                let elapsed = now - last;
                let clock = u128::from(self.config.codec.rtp_clock_rate());
                let ticks = (elapsed.as_nanos() * clock / 1_000_000_000) as u32;
                // `timestamp` is due at `next_tick`; this packet is `elapsed`
                // after the last one instead of a whole frame.
                let step = self.config.codec.rtp_timestamp_step();
                self.timestamp = self.timestamp.advance(ticks.wrapping_sub(step));
                self.marker_next = true;
                self.next_tick = now;
                true
            }
            _ => false,
        }
    }

    /// The next output; drain until [`Output::Timeout`].
    pub fn poll_output(&mut self) -> Output {
        if let Some(o) = self.out.pop_front() {
            return o;
        }
        let mut at = self.next_tick;
        if let Some(deadline) = self.inactivity_deadline() {
            at = at.min(deadline);
        }
        if let Some(r) = &self.rtcp {
            at = at.min(r.poll_timeout());
        }
        Output::Timeout(at)
    }

    /// An RTCP BYE to send when the call ends (with its destination).
    pub fn rtcp_bye(&mut self) -> Option<Transmit> {
        let to = self.rtcp_remote?;
        let payload = self.rtcp.as_mut()?.bye();
        Some(Transmit {
            channel: Channel::Rtcp,
            destination: to,
            payload,
        })
    }
}

/// RTCP goes to the port above RTP unless learnt otherwise (RFC 3550 §11).
fn rtcp_port(rtp: SocketAddr) -> SocketAddr {
    SocketAddr::new(rtp.ip(), rtp.port().wrapping_add(1))
}

#[cfg(test)]
mod tests;
