//! One call's media: RTP in → 20 ms frames of 16 kHz PCM out; 16 kHz PCM in
//! → one paced RTP packet per 20 ms tick.
//!
//! # Drive rule
//!
//! Call [`MediaSession::handle_receive`] for every datagram on the RTP port
//! and [`MediaSession::handle_timeout`] when the instant last returned by
//! [`MediaSession::poll_output`] arrives. After either, drain `poll_output`
//! until it returns [`Output::Timeout`] and take decoded audio with
//! [`MediaSession::pop_frame`]. Feed outbound audio with
//! [`MediaSession::push_audio`]; [`MediaSession::flush_playout`] drops what
//! is queued (barge-in).
//!
//! # Pacing
//!
//! Ticks are due every 20 ms from the session start, on media time, not on
//! the time the shell happened to call. A tick that is up to 60 ms late is
//! still sent (a burst of at most three packets); an older missed tick is
//! skipped: its RTP timestamp is spent without a packet (the peer conceals
//! one frame) and the queued audio stays queued, so nothing that was going
//! to be said is dropped. The next packet carries the marker bit.
//!
//! Timestamps and sequence numbers are continuous for the whole call, across
//! silence, hold and codec-preserving re-INVITEs (RFC 3550 §5.1); the SSRC
//! never changes. While nothing is queued the session sends encoded silence
//! (configurable) so NAT bindings and carrier RTP timers stay alive.
//!
//! # Symmetric RTP
//!
//! With `symmetric_rtp` the session sends to the address the peer's packets
//! really come from (latching, as Asterisk's `comedia`): the first packet of
//! the expected payload type latches; a later source change is followed only
//! together with a new SSRC, so a stray packet cannot steal the stream.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::codec::{CodecError, CodecKind, Decoder, Encoder};
use crate::resample::{ResampleError, Resampler};
use crate::rtp::{MediaTime, RtpPacket, SeqNo, Ssrc};

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

/// One 20 ms frame of 16 kHz mono PCM.
pub type Frame = [i16; FRAME_SAMPLES];

/// How the session is set up; the server derives it from the SDP exchange.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// The negotiated codec.
    pub codec: CodecKind,
    /// Its RTP payload type.
    pub payload_type: u8,
    /// The negotiated telephone-event payload type (kept out of the audio).
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
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where.
    pub destination: SocketAddr,
    /// The RTP packet.
    pub payload: Vec<u8>,
}

/// What the session reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaEvent {
    /// RTP now goes to this address (symmetric RTP).
    Latched(SocketAddr),
    /// No RTP for the configured time; the call should end.
    Inactive(Duration),
}

/// Output of [`MediaSession::poll_output`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send a packet.
    Transmit(Transmit),
    /// An event.
    Event(MediaEvent),
    /// Call `handle_timeout` at this instant.
    Timeout(Instant),
}

/// Counters for the call's media.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaStats {
    /// Audio packets received and decoded.
    pub rx_packets: u64,
    /// Datagrams that were not RTP, or of an unexpected payload type.
    pub rx_ignored: u64,
    /// Payloads the decoder refused.
    pub rx_decode_errors: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Ticks skipped because the shell was late.
    pub skipped_ticks: u64,
    /// Inbound frames dropped because nobody consumed them.
    pub inbound_overflow: u64,
}

/// The per-call media state machine.
pub struct MediaSession {
    config: MediaConfig,
    encoder: Encoder,
    decoder: Decoder,
    upsample: Resampler,
    downsample: Resampler,
    remote: Option<SocketAddr>,
    latched_ssrc: Option<Ssrc>,
    seq: SeqNo,
    timestamp: MediaTime,
    marker_next: bool,
    next_tick: Instant,
    last_rx: Instant,
    inactive_reported: bool,
    playout: VecDeque<Frame>,
    partial_out: Vec<i16>,
    inbound: VecDeque<Frame>,
    partial_in: Vec<i16>,
    scratch_pcm: Vec<i16>,
    scratch_native: Vec<i16>,
    scratch_payload: Vec<u8>,
    out: VecDeque<Output>,
    stats: MediaStats,
}

/// Inbound frames kept for the application before the oldest are dropped.
const INBOUND_CAPACITY: usize = 50;

impl MediaSession {
    /// A session whose first tick is due at `now`.
    pub fn new(config: MediaConfig, now: Instant) -> Result<Self, MediaError> {
        let native = config.codec.native_rate();
        Ok(MediaSession {
            encoder: Encoder::new(config.codec)?,
            decoder: Decoder::new(config.codec)?,
            upsample: Resampler::new(native, PCM_RATE)?,
            downsample: Resampler::new(PCM_RATE, native)?,
            remote: config.remote,
            latched_ssrc: None,
            seq: config.first_seq,
            timestamp: config.first_timestamp,
            marker_next: true,
            next_tick: now,
            last_rx: now,
            inactive_reported: false,
            playout: VecDeque::with_capacity(config.playout_frames),
            partial_out: Vec::with_capacity(FRAME_SAMPLES),
            inbound: VecDeque::with_capacity(8),
            partial_in: Vec::with_capacity(2 * FRAME_SAMPLES),
            scratch_pcm: Vec::with_capacity(2 * FRAME_SAMPLES),
            scratch_native: Vec::with_capacity(2 * FRAME_SAMPLES),
            scratch_payload: Vec::with_capacity(2 * FRAME_SAMPLES),
            out: VecDeque::new(),
            stats: MediaStats::default(),
            config,
        })
    }

    /// Counters.
    pub fn stats(&self) -> &MediaStats {
        &self.stats
    }

    /// Where RTP is sent now.
    pub fn remote(&self) -> Option<SocketAddr> {
        self.remote
    }

    /// The configuration in force.
    pub fn config(&self) -> &MediaConfig {
        &self.config
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
            self.partial_in.clear();
        }
        if config.remote != self.config.remote {
            // A new address in SDP restarts latching.
            self.remote = config.remote;
            self.latched_ssrc = None;
        }
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

    /// A datagram arrived on the RTP port.
    pub fn handle_receive(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let Ok(pkt) = RtpPacket::parse(datagram) else {
            self.stats.rx_ignored += 1;
            return;
        };
        let is_audio = pkt.payload_type == self.config.payload_type;
        let is_known = is_audio
            || Some(pkt.payload_type) == self.config.telephone_event
            || pkt.payload_type == PT_CN;
        if !is_known {
            self.stats.rx_ignored += 1;
            return;
        }
        self.latch(from, pkt.ssrc);
        self.last_rx = now;
        self.inactive_reported = false;
        if !is_audio || !self.config.receive {
            return;
        }
        self.scratch_native.clear();
        if self
            .decoder
            .decode(pkt.payload, &mut self.scratch_native)
            .is_err()
        {
            self.stats.rx_decode_errors += 1;
            return;
        }
        self.stats.rx_packets += 1;
        self.upsample
            .process(&self.scratch_native, &mut self.partial_in);
        while self.partial_in.len() >= FRAME_SAMPLES {
            let mut frame = [0i16; FRAME_SAMPLES];
            frame.copy_from_slice(&self.partial_in[..FRAME_SAMPLES]);
            self.partial_in.drain(..FRAME_SAMPLES);
            if self.inbound.len() == INBOUND_CAPACITY {
                self.inbound.pop_front();
                self.stats.inbound_overflow += 1;
            }
            self.inbound.push_back(frame);
        }
    }

    fn latch(&mut self, from: SocketAddr, ssrc: Ssrc) {
        if !self.config.symmetric_rtp || self.remote == Some(from) {
            self.latched_ssrc.get_or_insert(ssrc);
            return;
        }
        if self.latched_ssrc.is_none_or(|s| s != ssrc) {
            self.remote = Some(from);
            self.latched_ssrc = Some(ssrc);
            self.out.push_back(Output::Event(MediaEvent::Latched(from)));
        }
    }

    /// The next decoded inbound frame.
    pub fn pop_frame(&mut self) -> Option<Frame> {
        self.inbound.pop_front()
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
                self.playout.push_back(frame);
            }
        }
        taken
    }

    /// Sends whatever partial frame is pending, padded with silence (end of
    /// an utterance).
    pub fn finish_utterance(&mut self) {
        if !self.partial_out.is_empty() && self.playout.len() < self.config.playout_frames {
            self.partial_out.resize(FRAME_SAMPLES, 0);
            let mut frame = [0i16; FRAME_SAMPLES];
            frame.copy_from_slice(&self.partial_out);
            self.partial_out.clear();
            self.playout.push_back(frame);
        }
    }

    /// Drops all queued outbound audio; returns the number of frames dropped.
    pub fn flush_playout(&mut self) -> usize {
        let n = self.playout.len();
        self.playout.clear();
        self.partial_out.clear();
        n
    }

    /// Frames queued for playout.
    pub fn queued_frames(&self) -> usize {
        self.playout.len()
    }

    /// Room left in the playout queue, in frames.
    pub fn playout_room(&self) -> usize {
        self.config.playout_frames - self.playout.len()
    }

    /// Fires due ticks and the inactivity check.
    pub fn handle_timeout(&mut self, now: Instant) {
        while self.next_tick <= now {
            if now - self.next_tick > MAX_LATE {
                self.stats.skipped_ticks += 1;
                self.timestamp = self
                    .timestamp
                    .advance(self.config.codec.rtp_timestamp_step());
                self.marker_next = true;
            } else {
                self.tick();
            }
            self.next_tick += FRAME;
        }
        if self.inactivity_deadline().is_some_and(|d| d <= now) {
            self.inactive_reported = true;
            let silent = now - self.last_rx;
            self.out
                .push_back(Output::Event(MediaEvent::Inactive(silent)));
        }
    }

    /// When silence ends the call: only while media flows both ways (not on
    /// hold) and not already reported.
    fn inactivity_deadline(&self) -> Option<Instant> {
        let limit = self.config.inactivity_timeout?;
        let active = self.config.send && self.config.receive && !self.inactive_reported;
        active.then(|| self.last_rx + limit)
    }

    fn tick(&mut self) {
        let step = self.config.codec.rtp_timestamp_step();
        let frame = self.playout.pop_front();
        let destination = match self.remote {
            Some(r) if self.config.send && (frame.is_some() || self.config.send_silence) => r,
            _ => {
                self.timestamp = self.timestamp.advance(step);
                self.marker_next = true;
                return;
            }
        };
        let marker = match frame {
            Some(_) => std::mem::take(&mut self.marker_next),
            None => {
                self.marker_next = true;
                false
            }
        };
        let pcm = frame.unwrap_or([0; FRAME_SAMPLES]);
        self.downsample.process(&pcm, &mut self.scratch_pcm);
        let n = self.config.codec.samples_per_frame();
        if self.scratch_pcm.len() < n {
            // Priming: the resampler's first output is short by its delay.
            let pad = n - self.scratch_pcm.len();
            self.scratch_pcm.splice(0..0, std::iter::repeat_n(0, pad));
        }
        self.scratch_payload.clear();
        let encoded = self
            .encoder
            .encode(&self.scratch_pcm[..n], &mut self.scratch_payload);
        self.scratch_pcm.drain(..n);
        if encoded.is_err() {
            self.timestamp = self.timestamp.advance(step);
            return;
        }
        let mut payload = Vec::with_capacity(12 + self.scratch_payload.len());
        RtpPacket {
            marker,
            payload_type: self.config.payload_type,
            seq: self.seq,
            timestamp: self.timestamp,
            ssrc: self.config.ssrc,
            payload: &self.scratch_payload,
        }
        .write(&mut payload);
        self.seq = self.seq.next();
        self.timestamp = self.timestamp.advance(step);
        self.stats.tx_packets += 1;
        self.out.push_back(Output::Transmit(Transmit {
            destination,
            payload,
        }));
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
        Output::Timeout(at)
    }
}

#[cfg(test)]
mod tests;
