//! RTCP (RFC 3550 §6) for one two-party audio stream, sans-IO.
//!
//! * Packets: [`parse_compound`] turns a datagram into typed
//!   [`RtcpPacket`]s (SR, RR, SDES, BYE; other types such as APP, RTPFB,
//!   PSFB and XR are kept as [`RtcpPacket::Other`]) after the validity checks
//!   of RFC 3550 A.2 (version 2 everywhere, padding only on the last packet
//!   and within it, length fields adding up to the datagram exactly). The
//!   first packet must be an RTCP type (192-223) but need not be SR/RR, so
//!   reduced-size RTCP (RFC 5506) is accepted. [`write_compound`] builds one.
//! * Statistics: [`ReceptionStats`] for the peer's stream (A.1 sequence
//!   extension and source validation, A.3 loss, A.8 jitter).
//! * [`RtcpSession`]: when to send what, and what the peer's reports say
//!   (loss, jitter, round-trip time).
//!
//! # Timing
//!
//! With two members and an audio stream the RTCP bandwidth rule of §6.2 gives
//! an interval far below the 5 s minimum, so the deterministic interval is
//! 5 s (2.5 s before the first report, §6.2), unless the average compound
//! size is unusually large for the configured session bandwidth. Each
//! interval is multiplied by a random factor in [0.5, 1.5) (§6.3.1) from a
//! `fastrand::Rng` seeded by the caller. Membership is fixed at two, so there
//! is no timer reconsideration and no e−3/2 compensation.
//!
//! # Drive rule
//!
//! Call [`RtcpSession::on_rtp_sent`] for every RTP packet sent (audio and
//! telephone-event), [`RtcpSession::on_rtp_received`] for every RTP packet
//! from the peer (all payload types share its sequence numbers),
//! [`RtcpSession::handle_rtcp`] for every RTCP datagram, and
//! [`RtcpSession::poll_transmit`] when [`RtcpSession::poll_timeout`]
//! arrives. [`RtcpSession::bye`] makes the final compound packet.

use std::time::{Duration, Instant};

use crate::clock::{NtpTime, WallClock, duration_to_short, short_to_duration};
use crate::rtp::{MediaTime, SeqNo, Ssrc};

/// Sender report.
pub const PT_SR: u8 = 200;
/// Receiver report.
pub const PT_RR: u8 = 201;
/// Source description.
pub const PT_SDES: u8 = 202;
/// Goodbye.
pub const PT_BYE: u8 = 203;
/// Application-defined.
pub const PT_APP: u8 = 204;

/// SDES item type of the canonical name.
const SDES_CNAME: u8 = 1;
/// At most 31 report blocks / chunks / sources per packet (5-bit count).
const MAX_COUNT: usize = 31;
/// UDP + IPv4 header bytes, counted in the average RTCP size (§6.2).
const UDP_IP_OVERHEAD: usize = 28;
/// Minimum report interval (§6.2).
const T_MIN: Duration = Duration::from_secs(5);
/// Default session bandwidth: G.711 (64 kbit/s) plus RTP/UDP/IP headers.
pub const DEFAULT_SESSION_BANDWIDTH: u32 = 80_000;

/// A.1 constants.
const MAX_DROPOUT: u16 = 3000;
const MAX_MISORDER: u16 = 100;
const MIN_SEQUENTIAL: u32 = 2;
const SEQ_MOD: u32 = 1 << 16;

/// Why a datagram is not valid RTCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RtcpError {
    /// Shorter than a header.
    #[error("RTCP packet truncated")]
    Truncated,
    /// A packet whose version field is not 2.
    #[error("RTCP version {0} is not 2")]
    Version(u8),
    /// Padding on a packet other than the last, or a padding count of zero
    /// or beyond the packet.
    #[error("invalid RTCP padding")]
    Padding,
    /// The length fields do not add up to the datagram (or it is not a
    /// multiple of 4 bytes).
    #[error("RTCP length fields do not match the datagram")]
    Length,
    /// A packet of this type whose body is shorter than its count and items
    /// require.
    #[error("malformed RTCP packet of type {0}")]
    Malformed(u8),
    /// The first packet type is outside the RTCP range 192-223.
    #[error("packet type {0} is not RTCP")]
    NotRtcp(u8),
}

/// A reception report block (§6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    /// The source this block is about.
    pub ssrc: Ssrc,
    /// Fraction lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed; duplicates make it negative).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub highest_seq: u32,
    /// Interarrival jitter in RTP timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR from the source
    /// (0: none).
    pub last_sr: u32,
    /// Delay since that SR was received, in 1/65536 s.
    pub delay_since_last_sr: u32,
}

impl ReportBlock {
    const LEN: usize = 24;

    fn parse(b: &[u8]) -> ReportBlock {
        let u = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let lost = u32::from_be_bytes([0, b[5], b[6], b[7]]);
        ReportBlock {
            ssrc: Ssrc(u(0)),
            fraction_lost: b[4],
            // Sign-extend the 24-bit field.
            cumulative_lost: ((lost << 8) as i32) >> 8,
            highest_seq: u(8),
            jitter: u(12),
            last_sr: u(16),
            delay_since_last_sr: u(20),
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.ssrc.0.to_be_bytes());
        out.push(self.fraction_lost);
        let lost = self.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff) as u32;
        out.extend_from_slice(&lost.to_be_bytes()[1..]);
        out.extend_from_slice(&self.highest_seq.to_be_bytes());
        out.extend_from_slice(&self.jitter.to_be_bytes());
        out.extend_from_slice(&self.last_sr.to_be_bytes());
        out.extend_from_slice(&self.delay_since_last_sr.to_be_bytes());
    }
}

/// The sender information of an SR (§6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    /// Wall-clock time of the report.
    pub ntp: NtpTime,
    /// The same instant in the sender's RTP timestamp units.
    pub rtp_timestamp: MediaTime,
    /// RTP packets sent since the start.
    pub packet_count: u32,
    /// RTP payload octets sent since the start.
    pub octet_count: u32,
}

/// One SDES chunk; only the CNAME item is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdesChunk {
    /// The source described.
    pub ssrc: Ssrc,
    /// Its CNAME item, if present (invalid UTF-8 replaced).
    pub cname: Option<String>,
}

/// One packet of a compound RTCP datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtcpPacket {
    /// SR (200).
    SenderReport {
        /// Sender.
        ssrc: Ssrc,
        /// Sender information.
        info: SenderInfo,
        /// Reception reports (at most 31 are written).
        reports: Vec<ReportBlock>,
    },
    /// RR (201).
    ReceiverReport {
        /// Reporter.
        ssrc: Ssrc,
        /// Reception reports (at most 31 are written).
        reports: Vec<ReportBlock>,
    },
    /// SDES (202).
    SourceDescription(Vec<SdesChunk>),
    /// BYE (203).
    Goodbye {
        /// Sources leaving.
        sources: Vec<Ssrc>,
        /// Reason for leaving.
        reason: Option<String>,
    },
    /// Any other type (APP 204, RTPFB 205, PSFB 206, XR 207, ...), unparsed.
    Other {
        /// Packet type.
        packet_type: u8,
        /// The 5-bit count/subtype field.
        count: u8,
        /// Body after the 4-byte header, padding removed.
        body: Vec<u8>,
    },
}

/// Parses and validates a compound RTCP datagram (see the module docs).
pub fn parse_compound(b: &[u8]) -> Result<Vec<RtcpPacket>, RtcpError> {
    if b.len() < 4 {
        return Err(RtcpError::Truncated);
    }
    if !b.len().is_multiple_of(4) {
        return Err(RtcpError::Length);
    }
    if !(192..=223).contains(&b[1]) {
        return Err(RtcpError::NotRtcp(b[1]));
    }
    let mut packets = Vec::new();
    let mut off = 0;
    while off < b.len() {
        let h = &b[off..];
        if h.len() < 4 {
            return Err(RtcpError::Truncated);
        }
        let version = h[0] >> 6;
        if version != 2 {
            return Err(RtcpError::Version(version));
        }
        let count = h[0] & 0x1f;
        let pt = h[1];
        let len = (usize::from(u16::from_be_bytes([h[2], h[3]])) + 1) * 4;
        if len > h.len() {
            return Err(RtcpError::Length);
        }
        let mut body = &h[4..len];
        if h[0] & 0x20 != 0 {
            if off + len != b.len() {
                return Err(RtcpError::Padding);
            }
            let pad = usize::from(h[len - 1]);
            if pad == 0 || pad > body.len() {
                return Err(RtcpError::Padding);
            }
            body = &body[..body.len() - pad];
        }
        packets.push(parse_one(pt, count, body)?);
        off += len;
    }
    Ok(packets)
}

fn be32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

fn parse_reports(pt: u8, count: u8, b: &[u8]) -> Result<Vec<ReportBlock>, RtcpError> {
    let n = usize::from(count);
    if b.len() < n * ReportBlock::LEN {
        return Err(RtcpError::Malformed(pt));
    }
    Ok(b.chunks_exact(ReportBlock::LEN)
        .take(n)
        .map(ReportBlock::parse)
        .collect())
}

fn parse_one(pt: u8, count: u8, body: &[u8]) -> Result<RtcpPacket, RtcpError> {
    match pt {
        PT_SR => {
            if body.len() < 24 {
                return Err(RtcpError::Malformed(pt));
            }
            let info = SenderInfo {
                ntp: NtpTime(u64::from(be32(body, 4)) << 32 | u64::from(be32(body, 8))),
                rtp_timestamp: MediaTime(be32(body, 12)),
                packet_count: be32(body, 16),
                octet_count: be32(body, 20),
            };
            Ok(RtcpPacket::SenderReport {
                ssrc: Ssrc(be32(body, 0)),
                info,
                reports: parse_reports(pt, count, &body[24..])?,
            })
        }
        PT_RR => {
            if body.len() < 4 {
                return Err(RtcpError::Malformed(pt));
            }
            Ok(RtcpPacket::ReceiverReport {
                ssrc: Ssrc(be32(body, 0)),
                reports: parse_reports(pt, count, &body[4..])?,
            })
        }
        PT_SDES => parse_sdes(count, body).ok_or(RtcpError::Malformed(pt)),
        PT_BYE => {
            let n = usize::from(count);
            if body.len() < 4 * n {
                return Err(RtcpError::Malformed(pt));
            }
            let sources = (0..n).map(|i| Ssrc(be32(body, 4 * i))).collect();
            let rest = &body[4 * n..];
            let reason = match rest.split_first() {
                Some((&len, text)) if len > 0 => {
                    let text = text
                        .get(..usize::from(len))
                        .ok_or(RtcpError::Malformed(pt))?;
                    Some(String::from_utf8_lossy(text).into_owned())
                }
                _ => None,
            };
            Ok(RtcpPacket::Goodbye { sources, reason })
        }
        _ => Ok(RtcpPacket::Other {
            packet_type: pt,
            count,
            body: body.to_vec(),
        }),
    }
}

fn parse_sdes(count: u8, body: &[u8]) -> Option<RtcpPacket> {
    let mut chunks = Vec::with_capacity(usize::from(count));
    let mut i = 0;
    for _ in 0..count {
        let ssrc = Ssrc(u32::from_be_bytes(body.get(i..i + 4)?.try_into().ok()?));
        i += 4;
        let mut cname = None;
        loop {
            let item = *body.get(i)?;
            if item == 0 {
                // The null item ends the chunk; skip to the next word.
                i = (i + 4) & !3;
                break;
            }
            let len = usize::from(*body.get(i + 1)?);
            let text = body.get(i + 2..i + 2 + len)?;
            if item == SDES_CNAME {
                cname = Some(String::from_utf8_lossy(text).into_owned());
            }
            i += 2 + len;
        }
        chunks.push(SdesChunk { ssrc, cname });
    }
    Some(RtcpPacket::SourceDescription(chunks))
}

impl RtcpPacket {
    /// Appends the packet (no padding bit; bodies are zero-filled to a
    /// 32-bit boundary; counts above 31 are truncated).
    pub fn write(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0x80, 0, 0, 0]);
        let (pt, count) = match self {
            RtcpPacket::SenderReport {
                ssrc,
                info,
                reports,
            } => {
                out.extend_from_slice(&ssrc.0.to_be_bytes());
                out.extend_from_slice(&info.ntp.0.to_be_bytes());
                out.extend_from_slice(&info.rtp_timestamp.0.to_be_bytes());
                out.extend_from_slice(&info.packet_count.to_be_bytes());
                out.extend_from_slice(&info.octet_count.to_be_bytes());
                reports.iter().take(MAX_COUNT).for_each(|r| r.write(out));
                (PT_SR, reports.len().min(MAX_COUNT))
            }
            RtcpPacket::ReceiverReport { ssrc, reports } => {
                out.extend_from_slice(&ssrc.0.to_be_bytes());
                reports.iter().take(MAX_COUNT).for_each(|r| r.write(out));
                (PT_RR, reports.len().min(MAX_COUNT))
            }
            RtcpPacket::SourceDescription(chunks) => {
                for c in chunks.iter().take(MAX_COUNT) {
                    out.extend_from_slice(&c.ssrc.0.to_be_bytes());
                    if let Some(cname) = &c.cname {
                        let text = truncate_utf8(cname, 255);
                        out.push(SDES_CNAME);
                        out.push(text.len() as u8);
                        out.extend_from_slice(text.as_bytes());
                    }
                    // At least one null octet, up to the next word.
                    out.push(0);
                    pad4(out, start);
                }
                (PT_SDES, chunks.len().min(MAX_COUNT))
            }
            RtcpPacket::Goodbye { sources, reason } => {
                sources
                    .iter()
                    .take(MAX_COUNT)
                    .for_each(|s| out.extend_from_slice(&s.0.to_be_bytes()));
                if let Some(reason) = reason.as_deref().filter(|r| !r.is_empty()) {
                    let text = truncate_utf8(reason, 255);
                    out.push(text.len() as u8);
                    out.extend_from_slice(text.as_bytes());
                }
                (PT_BYE, sources.len().min(MAX_COUNT))
            }
            RtcpPacket::Other {
                packet_type,
                count,
                body,
            } => {
                out.extend_from_slice(body);
                (*packet_type, usize::from(*count & 0x1f))
            }
        };
        pad4(out, start);
        let words = ((out.len() - start) / 4 - 1).min(usize::from(u16::MAX)) as u16;
        out[start] = 0x80 | count as u8;
        out[start + 1] = pt;
        out[start + 2..start + 4].copy_from_slice(&words.to_be_bytes());
    }
}

fn pad4(out: &mut Vec<u8>, start: usize) {
    while !(out.len() - start).is_multiple_of(4) {
        out.push(0);
    }
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Writes packets into one compound datagram.
pub fn write_compound(packets: &[RtcpPacket]) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    for p in packets {
        p.write(&mut out);
    }
    out
}

/// Reception statistics of one source (RFC 3550 A.1, A.3, A.8).
#[derive(Debug, Clone)]
pub struct ReceptionStats {
    ssrc: Ssrc,
    max_seq: u16,
    /// Sequence number cycles, shifted (multiples of 2^16).
    cycles: u32,
    base_seq: u32,
    bad_seq: u32,
    probation: u32,
    received: u32,
    expected_prior: u32,
    received_prior: u32,
    /// Previous relative transit time (A.8), and the timestamp it was for.
    transit: Option<(i32, MediaTime)>,
    /// Jitter estimate × 16 (A.8, integer form).
    jitter16: u32,
}

impl ReceptionStats {
    /// Starts tracking `ssrc` whose first packet has `seq`; the source is
    /// valid after 2 packets in sequence (A.1 `MIN_SEQUENTIAL`). Feed that
    /// first packet to [`ReceptionStats::update`] too.
    pub fn new(ssrc: Ssrc, seq: SeqNo) -> ReceptionStats {
        let mut s = ReceptionStats {
            ssrc,
            max_seq: 0,
            cycles: 0,
            base_seq: 0,
            bad_seq: 0,
            probation: 0,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            transit: None,
            jitter16: 0,
        };
        s.restart(seq.0);
        s.max_seq = seq.0.wrapping_sub(1);
        s.probation = MIN_SEQUENTIAL;
        s
    }

    fn restart(&mut self, seq: u16) {
        self.base_seq = u32::from(seq);
        self.max_seq = seq;
        self.bad_seq = SEQ_MOD + 1;
        self.cycles = 0;
        self.received = 0;
        self.received_prior = 0;
        self.expected_prior = 0;
    }

    /// The source.
    pub fn ssrc(&self) -> Ssrc {
        self.ssrc
    }

    /// One packet; `arrival` is its arrival time in RTP timestamp units (any
    /// origin, wrapping). Returns whether it counts (the source is valid and
    /// the sequence number plausible).
    pub fn update(&mut self, seq: SeqNo, timestamp: MediaTime, arrival: u32) -> bool {
        if !self.update_seq(seq.0) {
            return false;
        }
        // A.8. Packets repeating the previous timestamp (RFC 4733 event
        // updates and retransmissions) were not sampled at their send time:
        // they would read as jitter, so they are left out.
        let transit = arrival.wrapping_sub(timestamp.0) as i32;
        match self.transit {
            Some((_, ts)) if ts == timestamp => {}
            Some((prev, _)) => {
                let d = transit.wrapping_sub(prev).unsigned_abs();
                let j =
                    i64::from(self.jitter16) + i64::from(d) - i64::from((self.jitter16 + 8) >> 4);
                self.jitter16 = j.clamp(0, i64::from(u32::MAX)) as u32;
                self.transit = Some((transit, timestamp));
            }
            None => self.transit = Some((transit, timestamp)),
        }
        true
    }

    /// A.1: sequence number bookkeeping.
    fn update_seq(&mut self, seq: u16) -> bool {
        let udelta = seq.wrapping_sub(self.max_seq);
        if self.probation > 0 {
            if seq == self.max_seq.wrapping_add(1) {
                self.probation -= 1;
                self.max_seq = seq;
                if self.probation == 0 {
                    self.restart(seq);
                    self.received += 1;
                    return true;
                }
            } else {
                self.probation = MIN_SEQUENTIAL - 1;
                self.max_seq = seq;
            }
            return false;
        }
        if udelta < MAX_DROPOUT {
            // In order, with a permissible gap.
            if seq < self.max_seq {
                self.cycles = self.cycles.wrapping_add(SEQ_MOD);
            }
            self.max_seq = seq;
        } else if u32::from(udelta) <= SEQ_MOD - u32::from(MAX_MISORDER) {
            // A very large jump: believe it after two sequential packets
            // (the sender restarted).
            if u32::from(seq) == self.bad_seq {
                self.restart(seq);
            } else {
                self.bad_seq = (u32::from(seq) + 1) & (SEQ_MOD - 1);
                return false;
            }
        }
        // Otherwise a duplicate or reordered packet: counted.
        self.received += 1;
        true
    }

    /// Validated (enough packets in sequence).
    pub fn is_valid(&self) -> bool {
        self.probation == 0
    }

    /// Extended highest sequence number received.
    pub fn extended_max(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max_seq))
    }

    /// Packets expected (A.3).
    pub fn expected(&self) -> u32 {
        if !self.is_valid() {
            return 0;
        }
        self.extended_max()
            .wrapping_sub(self.base_seq)
            .wrapping_add(1)
    }

    /// Packets received (duplicates included, as A.1 counts them).
    pub fn received(&self) -> u32 {
        self.received
    }

    /// Cumulative packets lost: expected − received (negative with
    /// duplicates).
    pub fn lost(&self) -> i64 {
        i64::from(self.expected()) - i64::from(self.received)
    }

    /// Interarrival jitter in RTP timestamp units.
    pub fn jitter(&self) -> u32 {
        self.jitter16 >> 4
    }

    /// Fraction lost since the previous call, in 1/256 (A.3); starts the
    /// next interval.
    pub fn take_fraction_lost(&mut self) -> u8 {
        let expected = self.expected();
        let expected_interval = expected.wrapping_sub(self.expected_prior);
        self.expected_prior = expected;
        let received_interval = self.received.wrapping_sub(self.received_prior);
        self.received_prior = self.received;
        let lost_interval = i64::from(expected_interval) - i64::from(received_interval);
        if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / i64::from(expected_interval)).min(255) as u8
        }
    }
}

/// What an [`RtcpSession`] knows (a copy).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RtcpStats {
    /// RTP packets we sent.
    pub packets_sent: u32,
    /// RTP payload octets we sent.
    pub octets_sent: u32,
    /// RTP packets received from the peer (A.1 counting, after validation).
    pub packets_received: u32,
    /// Packets expected from the peer's sequence numbers.
    pub packets_expected: u32,
    /// Cumulative packets lost from the peer (expected − received).
    pub packets_lost: i64,
    /// Fraction lost we put in our last report (0.0-1.0).
    pub fraction_lost: f32,
    /// Fraction of our packets lost, from the peer's last report.
    pub remote_fraction_lost: Option<f32>,
    /// Cumulative loss of our packets, from the peer's last report.
    pub remote_packets_lost: Option<i32>,
    /// Our interarrival jitter estimate of the peer's stream, in ms.
    pub jitter_ms: f64,
    /// The peer's jitter estimate of our stream, in ms.
    pub remote_jitter_ms: Option<f64>,
    /// Round-trip time from the peer's last report with an LSR (§6.4.1).
    pub rtt: Option<Duration>,
    /// Compound packets we sent (BYE included).
    pub reports_sent: u32,
    /// SR/RR packets received from the peer.
    pub reports_received: u32,
    /// The peer sent a BYE.
    pub bye_received: bool,
}

/// RTCP for one RTP session with one peer (see the module docs).
#[derive(Debug)]
pub struct RtcpSession {
    ssrc: Ssrc,
    clock_rate: u32,
    cname: String,
    clock: WallClock,
    start: Instant,
    /// The latest `now` given to any method (used by [`RtcpSession::bye`]).
    last_now: Instant,
    rng: fastrand::Rng,
    /// Session bandwidth in bytes per second.
    session_bw: f64,
    // Our stream.
    packets_sent: u32,
    octets_sent: u32,
    last_sent: Option<(Instant, MediaTime)>,
    we_sent: bool,
    // The peer's stream.
    remote: Option<ReceptionStats>,
    /// Last SR from the peer: its SSRC, middle 32 bits, when it arrived.
    last_sr: Option<(Ssrc, u32, Instant)>,
    fraction_lost: f32,
    remote_cname: Option<String>,
    // What the peer reports about us.
    remote_block: Option<ReportBlock>,
    rtt: Option<Duration>,
    // Timing.
    next: Instant,
    initial: bool,
    avg_rtcp_size: f64,
    reports_sent: u32,
    reports_received: u32,
    left: bool,
    bye_received: bool,
}

impl RtcpSession {
    /// `ssrc` is our RTP SSRC, `clock_rate` the RTP clock rate of the audio
    /// payload, `cname` our canonical name (e.g. `voxtrunk@host` or a random
    /// per-call string), `clock` the wall-clock mapping read at session start,
    /// `seed` for the interval randomization.
    pub fn new(
        ssrc: Ssrc,
        clock_rate: u32,
        cname: String,
        clock: WallClock,
        now: Instant,
        seed: u64,
    ) -> RtcpSession {
        // The size of a compound RR + SDES(CNAME) (§6.3.2: the probable size
        // of the first packet).
        let sdes = 4 + 4 + 2 + cname.len().min(255) + 4;
        let first_size = 8 + ReportBlock::LEN + sdes + UDP_IP_OVERHEAD;
        let mut s = RtcpSession {
            ssrc,
            clock_rate: clock_rate.max(1),
            cname,
            clock,
            start: now,
            last_now: now,
            rng: fastrand::Rng::with_seed(seed),
            session_bw: f64::from(DEFAULT_SESSION_BANDWIDTH) / 8.0,
            packets_sent: 0,
            octets_sent: 0,
            last_sent: None,
            we_sent: false,
            remote: None,
            last_sr: None,
            fraction_lost: 0.0,
            remote_cname: None,
            remote_block: None,
            rtt: None,
            next: now,
            initial: true,
            avg_rtcp_size: first_size as f64,
            reports_sent: 0,
            reports_received: 0,
            left: false,
            bye_received: false,
        };
        s.next = now + s.interval();
        s
    }

    /// The session bandwidth (bits per second) the RTCP share (5 %) is taken
    /// from; the default suits G.711. Applies from the next interval.
    pub fn set_session_bandwidth(&mut self, bits_per_second: u32) {
        self.session_bw = f64::from(bits_per_second.max(1)) / 8.0;
    }

    /// We sent an RTP packet with `timestamp` and `payload_len` payload bytes.
    pub fn on_rtp_sent(&mut self, now: Instant, timestamp: MediaTime, payload_len: usize) {
        self.touch(now);
        self.packets_sent = self.packets_sent.wrapping_add(1);
        self.octets_sent = self.octets_sent.wrapping_add(payload_len as u32);
        self.last_sent = Some((now, timestamp));
        self.we_sent = true;
    }

    /// An RTP packet from the peer arrived at `now`. A new SSRC restarts the
    /// statistics.
    pub fn on_rtp_received(&mut self, now: Instant, ssrc: Ssrc, seq: SeqNo, timestamp: MediaTime) {
        self.touch(now);
        let arrival = self.rtp_units(now.saturating_duration_since(self.start)) as u32;
        match &mut self.remote {
            Some(s) if s.ssrc == ssrc => {
                s.update(seq, timestamp, arrival);
            }
            _ => {
                let mut s = ReceptionStats::new(ssrc, seq);
                s.update(seq, timestamp, arrival);
                self.remote = Some(s);
                self.fraction_lost = 0.0;
            }
        }
    }

    /// An RTCP datagram from the peer: its SR is remembered for our LSR/DLSR,
    /// report blocks about our SSRC give the remote loss, jitter and RTT.
    pub fn handle_rtcp(&mut self, now: Instant, bytes: &[u8]) -> Result<(), RtcpError> {
        self.touch(now);
        let packets = parse_compound(bytes)?;
        self.avg_rtcp_size += ((bytes.len() + UDP_IP_OVERHEAD) as f64 - self.avg_rtcp_size) / 16.0;
        for p in packets {
            match p {
                RtcpPacket::SenderReport {
                    ssrc,
                    info,
                    reports,
                } if ssrc != self.ssrc => {
                    self.last_sr = Some((ssrc, info.ntp.middle32(), now));
                    self.reports_received += 1;
                    self.take_reports(now, &reports);
                }
                RtcpPacket::ReceiverReport { ssrc, reports } if ssrc != self.ssrc => {
                    self.reports_received += 1;
                    self.take_reports(now, &reports);
                }
                RtcpPacket::SourceDescription(chunks) => {
                    if let Some(c) = chunks
                        .into_iter()
                        .find(|c| c.ssrc != self.ssrc && c.cname.is_some())
                    {
                        self.remote_cname = c.cname;
                    }
                }
                RtcpPacket::Goodbye { sources, .. } if sources.iter().any(|s| *s != self.ssrc) => {
                    self.bye_received = true;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn take_reports(&mut self, now: Instant, reports: &[ReportBlock]) {
        let Some(b) = reports.iter().find(|b| b.ssrc == self.ssrc) else {
            return;
        };
        self.remote_block = Some(*b);
        if b.last_sr != 0 {
            // §6.4.1: RTT = A − LSR − DLSR, in 1/65536 s.
            let a = self.clock.ntp(now).middle32();
            let rtt = a
                .wrapping_sub(b.last_sr)
                .wrapping_sub(b.delay_since_last_sr);
            if (rtt as i32) >= 0 {
                self.rtt = Some(short_to_duration(rtt));
            }
        }
    }

    /// When [`RtcpSession::poll_transmit`] has something to send.
    pub fn poll_timeout(&self) -> Instant {
        self.next
    }

    /// The compound report (SR if we sent RTP since the last report, else RR;
    /// then SDES CNAME) when due, and schedules the next.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        self.touch(now);
        if self.left || now < self.next {
            return None;
        }
        let mut packets = self.report(now);
        packets.push(self.sdes());
        let bytes = write_compound(&packets);
        self.sent(bytes.len());
        self.next = now + self.interval();
        Some(bytes)
    }

    /// The final compound packet: report, SDES, BYE. Afterwards
    /// `poll_transmit` returns nothing and `poll_timeout` is an hour ahead.
    /// The report is taken at the latest instant any method was given.
    pub fn bye(&mut self) -> Vec<u8> {
        let now = self.last_now;
        let mut packets = self.report(now);
        packets.push(self.sdes());
        packets.push(RtcpPacket::Goodbye {
            sources: vec![self.ssrc],
            reason: None,
        });
        let bytes = write_compound(&packets);
        self.sent(bytes.len());
        self.left = true;
        self.next = now + Duration::from_secs(3600);
        bytes
    }

    /// Counters and estimates so far.
    pub fn stats(&self) -> RtcpStats {
        let units_to_ms = |u: u32| f64::from(u) * 1000.0 / f64::from(self.clock_rate);
        let r = self.remote.as_ref();
        RtcpStats {
            packets_sent: self.packets_sent,
            octets_sent: self.octets_sent,
            packets_received: r.map_or(0, |r| r.received()),
            packets_expected: r.map_or(0, |r| r.expected()),
            packets_lost: r.map_or(0, |r| r.lost()),
            fraction_lost: self.fraction_lost,
            remote_fraction_lost: self
                .remote_block
                .map(|b| f32::from(b.fraction_lost) / 256.0),
            remote_packets_lost: self.remote_block.map(|b| b.cumulative_lost),
            jitter_ms: r.map_or(0.0, |r| units_to_ms(r.jitter())),
            remote_jitter_ms: self.remote_block.map(|b| units_to_ms(b.jitter)),
            rtt: self.rtt,
            reports_sent: self.reports_sent,
            reports_received: self.reports_received,
            bye_received: self.bye_received,
        }
    }

    /// The statistics of the peer's stream, once a packet arrived.
    pub fn reception(&self) -> Option<&ReceptionStats> {
        self.remote.as_ref()
    }

    /// The peer's CNAME, once an SDES arrived.
    pub fn remote_cname(&self) -> Option<&str> {
        self.remote_cname.as_deref()
    }

    fn touch(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
    }

    fn rtp_units(&self, d: Duration) -> u64 {
        (d.as_nanos() * u128::from(self.clock_rate) / 1_000_000_000) as u64
    }

    /// SR or RR, with a block about the peer's stream once it is valid.
    fn report(&mut self, now: Instant) -> Vec<RtcpPacket> {
        let mut reports = Vec::new();
        if let Some(s) = self.remote.as_mut().filter(|s| s.is_valid()) {
            let fraction = s.take_fraction_lost();
            self.fraction_lost = f32::from(fraction) / 256.0;
            let (last_sr, delay) = match self.last_sr {
                Some((ssrc, lsr, at)) if ssrc == s.ssrc => {
                    (lsr, duration_to_short(now.saturating_duration_since(at)))
                }
                _ => (0, 0),
            };
            reports.push(ReportBlock {
                ssrc: s.ssrc,
                fraction_lost: fraction,
                cumulative_lost: s.lost().clamp(-0x80_0000, 0x7f_ffff) as i32,
                highest_seq: s.extended_max(),
                jitter: s.jitter(),
                last_sr,
                delay_since_last_sr: delay,
            });
        }
        let packet = if self.we_sent {
            let rtp_timestamp = match self.last_sent {
                Some((at, ts)) => {
                    let ahead = self.rtp_units(now.saturating_duration_since(at));
                    ts.advance(ahead as u32)
                }
                None => MediaTime(0),
            };
            RtcpPacket::SenderReport {
                ssrc: self.ssrc,
                info: SenderInfo {
                    ntp: self.clock.ntp(now),
                    rtp_timestamp,
                    packet_count: self.packets_sent,
                    octet_count: self.octets_sent,
                },
                reports,
            }
        } else {
            RtcpPacket::ReceiverReport {
                ssrc: self.ssrc,
                reports,
            }
        };
        vec![packet]
    }

    fn sdes(&self) -> RtcpPacket {
        RtcpPacket::SourceDescription(vec![SdesChunk {
            ssrc: self.ssrc,
            cname: Some(self.cname.clone()),
        }])
    }

    fn sent(&mut self, len: usize) {
        self.reports_sent += 1;
        self.we_sent = false;
        self.initial = false;
        self.avg_rtcp_size += ((len + UDP_IP_OVERHEAD) as f64 - self.avg_rtcp_size) / 16.0;
    }

    /// §6.3.1 for two members: Td = max(Tmin, n·C), randomized ×[0.5, 1.5).
    fn interval(&mut self) -> Duration {
        let rtcp_bw = self.session_bw * 0.05;
        let members = 2.0;
        let td = (members * self.avg_rtcp_size / rtcp_bw).max(if self.initial {
            T_MIN.as_secs_f64() / 2.0
        } else {
            T_MIN.as_secs_f64()
        });
        Duration::from_secs_f64(td * (0.5 + self.rng.f64()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(ssrc: u32) -> ReportBlock {
        ReportBlock {
            ssrc: Ssrc(ssrc),
            fraction_lost: 7,
            cumulative_lost: -3,
            highest_seq: 0x0001_0005,
            jitter: 42,
            last_sr: 0x1234_5678,
            delay_since_last_sr: 0x0001_8000,
        }
    }

    fn sample_compound() -> Vec<RtcpPacket> {
        vec![
            RtcpPacket::SenderReport {
                ssrc: Ssrc(1),
                info: SenderInfo {
                    ntp: NtpTime(0xe000_0000_8000_0000),
                    rtp_timestamp: MediaTime(160_000),
                    packet_count: 1000,
                    octet_count: 160_000,
                },
                reports: vec![block(2)],
            },
            RtcpPacket::SourceDescription(vec![
                SdesChunk {
                    ssrc: Ssrc(1),
                    cname: Some("voxtrunk@example.org".into()),
                },
                SdesChunk {
                    ssrc: Ssrc(3),
                    cname: None,
                },
            ]),
            RtcpPacket::Goodbye {
                sources: vec![Ssrc(1)],
                reason: Some("call ended".into()),
            },
        ]
    }

    #[test]
    fn compound_round_trip() {
        let packets = sample_compound();
        let bytes = write_compound(&packets);
        assert_eq!(bytes.len() % 4, 0);
        // SR: 28 + 24; SDES: 4 + (4+2+20+1 → 28) + (4+1 → 8); BYE: 4 + 4 + 12.
        assert_eq!(bytes.len(), 52 + 40 + 20);
        assert_eq!(&bytes[..2], &[0x81, 200]);
        assert_eq!(u16::from_be_bytes([bytes[2], bytes[3]]), 12);
        assert_eq!(parse_compound(&bytes).unwrap(), packets);

        let rr = vec![RtcpPacket::ReceiverReport {
            ssrc: Ssrc(9),
            reports: vec![
                block(1),
                ReportBlock {
                    cumulative_lost: 0x7f_ffff,
                    ..block(4)
                },
            ],
        }];
        assert_eq!(parse_compound(&write_compound(&rr)).unwrap(), rr);
        // Cumulative loss saturates at the 24-bit range.
        let huge = vec![RtcpPacket::ReceiverReport {
            ssrc: Ssrc(9),
            reports: vec![ReportBlock {
                cumulative_lost: -10_000_000,
                ..block(1)
            }],
        }];
        match &parse_compound(&write_compound(&huge)).unwrap()[0] {
            RtcpPacket::ReceiverReport { reports, .. } => {
                assert_eq!(reports[0].cumulative_lost, -0x80_0000)
            }
            p => panic!("{p:?}"),
        }
        // An empty RR and a BYE without reason.
        let empty = vec![
            RtcpPacket::ReceiverReport {
                ssrc: Ssrc(5),
                reports: vec![],
            },
            RtcpPacket::Goodbye {
                sources: vec![Ssrc(5), Ssrc(6)],
                reason: None,
            },
        ];
        let b = write_compound(&empty);
        assert_eq!(b.len(), 8 + 12);
        assert_eq!(parse_compound(&b).unwrap(), empty);
    }

    #[test]
    fn unknown_types_are_kept_and_skipped() {
        let mut bytes = write_compound(&[RtcpPacket::ReceiverReport {
            ssrc: Ssrc(5),
            reports: vec![block(1)],
        }]);
        // XR (207) with one block, APP (204) "name" + data, RTPFB (205) NACK.
        bytes.extend_from_slice(&[0x80, 207, 0, 3, 0, 0, 0, 5, 4, 0, 0, 2, 1, 2, 3, 4]);
        bytes.extend_from_slice(&[
            0x81, 204, 0, 3, 0, 0, 0, 5, b'n', b'a', b'm', b'e', 9, 9, 9, 9,
        ]);
        bytes.extend_from_slice(&[0x81, 205, 0, 3, 0, 0, 0, 5, 0, 0, 0, 1, 0, 7, 0, 0]);
        let p = parse_compound(&bytes).unwrap();
        assert_eq!(p.len(), 4);
        assert_eq!(
            p[1],
            RtcpPacket::Other {
                packet_type: 207,
                count: 0,
                body: vec![0, 0, 0, 5, 4, 0, 0, 2, 1, 2, 3, 4],
            }
        );
        assert!(matches!(
            p[2],
            RtcpPacket::Other {
                packet_type: PT_APP,
                count: 1,
                ..
            }
        ));
        // Written back unchanged.
        assert_eq!(write_compound(&p), bytes);
        // A session takes the RR and ignores the rest.
        let base = crate::test_epoch();
        let mut s = session(1, base, 1);
        s.handle_rtcp(base, &bytes).unwrap();
        assert_eq!(s.stats().reports_received, 1);
        assert_eq!(s.stats().remote_fraction_lost, Some(7.0 / 256.0));
        assert_eq!(s.stats().remote_packets_lost, Some(-3));
        assert_eq!(s.stats().remote_jitter_ms, Some(42.0 / 8.0));
    }

    #[test]
    fn validation_errors() {
        let rr = write_compound(&[RtcpPacket::ReceiverReport {
            ssrc: Ssrc(5),
            reports: vec![block(1)],
        }]);
        assert_eq!(parse_compound(&[]), Err(RtcpError::Truncated));
        assert_eq!(parse_compound(&[0x80, 201]), Err(RtcpError::Truncated));
        assert_eq!(parse_compound(&rr[..30]), Err(RtcpError::Length));
        assert_eq!(parse_compound(&rr[..28]), Err(RtcpError::Length));
        assert_eq!(parse_compound(&[0x80, 0, 0, 0]), Err(RtcpError::NotRtcp(0)));
        assert_eq!(
            parse_compound(&[0x80, 96, 0, 0]),
            Err(RtcpError::NotRtcp(96))
        );
        let mut v = rr.clone();
        v[0] = 0x41;
        assert_eq!(parse_compound(&v), Err(RtcpError::Version(1)));
        // Version check on a later packet too.
        let mut two = rr.clone();
        two.extend_from_slice(&[0xc0, 202, 0, 0]);
        assert_eq!(parse_compound(&two), Err(RtcpError::Version(3)));
        // Length field beyond the datagram / trailing bytes.
        let mut long = rr.clone();
        long[3] = 9;
        assert_eq!(parse_compound(&long), Err(RtcpError::Length));
        let mut trailing = rr.clone();
        trailing.extend_from_slice(&[0x80, 202, 0, 1]);
        assert_eq!(parse_compound(&trailing), Err(RtcpError::Length));
        // Padding: only on the last packet, count within the packet, not 0.
        let mut padded_first = rr.clone();
        padded_first[0] |= 0x20;
        padded_first.extend_from_slice(&[0x80, 202, 0, 0]);
        assert_eq!(parse_compound(&padded_first), Err(RtcpError::Padding));
        let mut pad = vec![0xa0, 201, 0, 2, 0, 0, 0, 5, 0, 0, 0, 4];
        assert!(matches!(
            parse_compound(&pad).unwrap()[0],
            RtcpPacket::ReceiverReport { ssrc: Ssrc(5), .. }
        ));
        pad[11] = 0;
        assert_eq!(parse_compound(&pad), Err(RtcpError::Padding));
        pad[11] = 9;
        assert_eq!(parse_compound(&pad), Err(RtcpError::Padding));
        // Counts that the body cannot hold.
        assert_eq!(
            parse_compound(&[0x81, 201, 0, 1, 0, 0, 0, 5]),
            Err(RtcpError::Malformed(201))
        );
        assert_eq!(
            parse_compound(&[0x80, 200, 0, 1, 0, 0, 0, 5]),
            Err(RtcpError::Malformed(200))
        );
        assert_eq!(
            parse_compound(&[0x80, 201, 0, 0]),
            Err(RtcpError::Malformed(201))
        );
        assert_eq!(
            parse_compound(&[0x82, 203, 0, 1, 0, 0, 0, 5]),
            Err(RtcpError::Malformed(203))
        );
        assert_eq!(
            parse_compound(&[0x81, 203, 0, 2, 0, 0, 0, 5, 9, b'a', 0, 0]),
            Err(RtcpError::Malformed(203))
        );
        // SDES item running past the packet, and a chunk without its null.
        assert_eq!(
            parse_compound(&[0x81, 202, 0, 2, 0, 0, 0, 5, 1, 9, b'a', b'b']),
            Err(RtcpError::Malformed(202))
        );
        assert_eq!(
            parse_compound(&[0x81, 202, 0, 2, 0, 0, 0, 5, 1, 2, b'a', b'b']),
            Err(RtcpError::Malformed(202))
        );
        // A session reports the error and keeps its state.
        let base = crate::test_epoch();
        let mut s = session(1, base, 1);
        assert_eq!(s.handle_rtcp(base, &pad), Err(RtcpError::Padding));
        assert_eq!(s.stats().reports_received, 0);
    }

    #[test]
    fn random_bytes_never_panic() {
        let base = crate::test_epoch();
        let mut s = session(1, base, 1);
        let mut rng = fastrand::Rng::with_seed(11);
        for _ in 0..50_000 {
            let v: Vec<u8> = (0..rng.usize(0..120)).map(|_| rng.u8(..)).collect();
            let _ = parse_compound(&v);
            let _ = s.handle_rtcp(base, &v);
        }
        // Mutations of a valid compound reach the inner parsers.
        let valid = write_compound(&sample_compound());
        let mut parsed = 0;
        for _ in 0..50_000 {
            let mut v = valid.clone();
            for _ in 0..rng.usize(1..4) {
                let i = rng.usize(..v.len());
                v[i] = rng.u8(..);
            }
            v.truncate(rng.usize(v.len() - 8..=v.len()));
            if parse_compound(&v).is_ok() {
                parsed += 1;
            }
            let _ = s.handle_rtcp(base, &v);
        }
        assert!(parsed > 1000, "{parsed}");
        let _ = s.poll_transmit(base + Duration::from_secs(10));
    }

    #[test]
    fn sequence_extension_validation_and_loss() {
        let mut s = ReceptionStats::new(Ssrc(1), SeqNo(65530));
        let mut arrival = 0;
        let mut feed = |s: &mut ReceptionStats, seq: u16| {
            arrival += 160;
            s.update(SeqNo(seq), MediaTime(u32::from(seq) * 160), arrival)
        };
        assert!(!feed(&mut s, 65530));
        assert!(!s.is_valid());
        assert_eq!(s.expected(), 0);
        assert!(feed(&mut s, 65531));
        assert!(s.is_valid());
        for seq in (65532..=65535).chain(0..=10) {
            if seq != 3 && seq != 7 {
                assert!(feed(&mut s, seq));
            }
        }
        assert_eq!(s.extended_max(), 65536 + 10);
        assert_eq!(s.expected(), 16);
        assert_eq!(s.received(), 14);
        assert_eq!(s.lost(), 2);
        assert_eq!(s.take_fraction_lost(), 32); // 2/16
        assert_eq!(s.take_fraction_lost(), 0);
        // A late packet and a duplicate count as received (A.1).
        assert!(feed(&mut s, 7));
        assert!(feed(&mut s, 7));
        assert_eq!(s.lost(), 0);
        assert_eq!(s.take_fraction_lost(), 0);
        // A large jump is believed after two sequential packets.
        assert!(!feed(&mut s, 30_000));
        assert_eq!(s.extended_max(), 65546);
        assert!(feed(&mut s, 30_001));
        assert_eq!(
            (s.extended_max(), s.expected(), s.received()),
            (30_001, 1, 1)
        );
        // Probation restarts on a gap.
        let mut p = ReceptionStats::new(Ssrc(2), SeqNo(100));
        assert!(!p.update(SeqNo(100), MediaTime(0), 0));
        assert!(!p.update(SeqNo(102), MediaTime(0), 0));
        assert!(p.update(SeqNo(103), MediaTime(0), 0));
        assert_eq!(p.expected(), 1);
    }

    #[test]
    fn jitter_estimator() {
        let mut s = ReceptionStats::new(Ssrc(1), SeqNo(0));
        // Constant transit: no jitter.
        for i in 0..100u16 {
            s.update(
                SeqNo(i),
                MediaTime(u32::from(i) * 160),
                5_000 + u32::from(i) * 160,
            );
        }
        assert_eq!(s.jitter(), 0);
        // Repeated timestamps (telephone-event updates) are not jitter.
        for i in 100..120u16 {
            s.update(SeqNo(i), MediaTime(100 * 160), 5_000 + u32::from(i) * 160);
        }
        assert_eq!(s.jitter(), 0);
        // Transit alternating by 80 units: J converges to 80.
        for i in 120..600u16 {
            let wobble = if i % 2 == 0 { 80 } else { 0 };
            s.update(
                SeqNo(i),
                MediaTime(u32::from(i) * 160),
                5_000 + u32::from(i) * 160 + wobble,
            );
        }
        assert!((76..=80).contains(&s.jitter()), "{}", s.jitter());
    }

    fn session(ssrc: u32, base: Instant, seed: u64) -> RtcpSession {
        let clock = WallClock::new(base, Duration::from_secs(1_700_000_000));
        RtcpSession::new(
            Ssrc(ssrc),
            8000,
            format!("peer{ssrc}@test"),
            clock,
            base,
            seed,
        )
    }

    #[test]
    fn report_timing() {
        let base = crate::test_epoch();
        let mut firsts = Vec::new();
        let mut intervals = Vec::new();
        for seed in 0..40 {
            let mut s = session(1, base, seed);
            let first = s.poll_timeout() - base;
            assert!(
                first >= Duration::from_millis(1250) && first <= Duration::from_millis(3750),
                "{first:?}"
            );
            firsts.push(first.as_secs_f64());
            assert_eq!(
                s.poll_transmit(s.poll_timeout() - Duration::from_millis(1)),
                None
            );
            let mut now = s.poll_timeout();
            for _ in 0..10 {
                assert!(s.poll_transmit(now).is_some());
                assert_eq!(s.poll_transmit(now), None);
                let next = s.poll_timeout();
                let t = next - now;
                assert!(
                    t >= Duration::from_millis(2500) && t <= Duration::from_millis(7500),
                    "{t:?}"
                );
                intervals.push(t.as_secs_f64());
                now = next;
            }
            assert_eq!(s.stats().reports_sent, 10);
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        assert!((2.2..2.8).contains(&mean(&firsts)), "{}", mean(&firsts));
        assert!(
            (4.6..5.4).contains(&mean(&intervals)),
            "{}",
            mean(&intervals)
        );
        // Randomized: spread over most of the range.
        let min = intervals.iter().cloned().fold(f64::MAX, f64::min);
        let max = intervals.iter().cloned().fold(0.0, f64::max);
        assert!(min < 3.0 && max > 7.0, "{min} {max}");
        // A late caller is not owed a burst: the next is an interval later.
        let mut s = session(1, base, 99);
        let late = base + Duration::from_secs(60);
        assert!(s.poll_transmit(late).is_some());
        assert!(s.poll_timeout() >= late + Duration::from_millis(2500));
    }

    #[test]
    fn sr_only_after_sending_and_bye() {
        let base = crate::test_epoch();
        let mut s = session(7, base, 3);
        let t1 = s.poll_timeout();
        let p = parse_compound(&s.poll_transmit(t1).unwrap()).unwrap();
        assert!(
            matches!(p[0], RtcpPacket::ReceiverReport { ssrc: Ssrc(7), ref reports } if reports.is_empty())
        );
        assert_eq!(
            p[1],
            RtcpPacket::SourceDescription(vec![SdesChunk {
                ssrc: Ssrc(7),
                cname: Some("peer7@test".into())
            }])
        );
        // Send 1 s of audio, then report 100 ms after the last packet.
        let mut now = t1;
        for i in 0..50u32 {
            now = t1 + Duration::from_millis(20 * u64::from(i));
            s.on_rtp_sent(now, MediaTime(1000 + 160 * i), 160);
        }
        let t2 = s.poll_timeout().max(now + Duration::from_millis(100));
        let p = parse_compound(&s.poll_transmit(t2).unwrap()).unwrap();
        match &p[0] {
            RtcpPacket::SenderReport { ssrc, info, .. } => {
                assert_eq!(*ssrc, Ssrc(7));
                assert_eq!((info.packet_count, info.octet_count), (50, 8000));
                // The RTP timestamp is extrapolated to the report's instant.
                let ahead = (t2 - now).as_micros() as u32 * 8 / 1000;
                assert_eq!(info.rtp_timestamp, MediaTime(1000 + 160 * 49 + ahead));
                let wall = WallClock::new(base, Duration::from_secs(1_700_000_000));
                assert_eq!(info.ntp, wall.ntp(t2));
            }
            p => panic!("{p:?}"),
        }
        // Nothing sent since: RR again.
        let t3 = s.poll_timeout();
        let p = parse_compound(&s.poll_transmit(t3).unwrap()).unwrap();
        assert!(matches!(p[0], RtcpPacket::ReceiverReport { .. }));
        // BYE: report, SDES, BYE; then silence.
        let bye = s.bye();
        let p = parse_compound(&bye).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(
            p[2],
            RtcpPacket::Goodbye {
                sources: vec![Ssrc(7)],
                reason: None
            }
        );
        assert_eq!(s.poll_transmit(t3 + Duration::from_secs(100)), None);
        assert!(s.poll_timeout() > t3 + Duration::from_secs(3000));
        assert_eq!(s.stats().reports_sent, 4);
        let mut peer = session(8, base, 4);
        assert!(!peer.stats().bye_received);
        peer.handle_rtcp(t3, &bye).unwrap();
        assert!(peer.stats().bye_received);
        assert_eq!(peer.remote_cname(), Some("peer7@test"));
    }

    enum Msg {
        Rtp(Ssrc, SeqNo, MediaTime),
        Rtcp(Vec<u8>),
    }

    struct Sim {
        a: RtcpSession,
        b: RtcpSession,
        /// Fractions lost A read in each report of B.
        remote_fractions_at_a: Vec<f32>,
    }

    /// A and B send 20 ms RTP to each other for `secs` s with `loss`, a
    /// one-way delay of `delay` plus up to `jitter` (RTP from A to B only),
    /// and exchange RTCP (not lost, not jittered).
    fn simulate(secs: u64, loss: f64, delay: Duration, jitter: Duration) -> Sim {
        let base = crate::test_epoch();
        let a = session(0xaaaa, base, 1);
        let clock_b = WallClock::new(base, Duration::from_secs(1_800_000_000));
        let b = RtcpSession::new(Ssrc(0xbbbb), 8000, "b@test".into(), clock_b, base, 2);
        let mut sim = Sim {
            a,
            b,
            remote_fractions_at_a: Vec::new(),
        };
        let mut rng = fastrand::Rng::with_seed(1234);
        // (deliver at, to B?, message)
        let mut net: Vec<(Instant, bool, Msg)> = Vec::new();
        let (mut seq_a, mut seq_b) = (SeqNo(65_000), SeqNo(17));
        let (mut ts_a, mut ts_b) = (MediaTime(u32::MAX - 5000), MediaTime(99));
        let mut reports_at_a = 0;
        for ms in 0..secs * 1000 {
            let now = base + Duration::from_millis(ms);
            let mut due: Vec<_> = Vec::new();
            let mut i = 0;
            while i < net.len() {
                if net[i].0 <= now {
                    due.push(net.swap_remove(i));
                } else {
                    i += 1;
                }
            }
            due.sort_by_key(|m| m.0);
            for (_, to_b, msg) in due {
                let s = if to_b { &mut sim.b } else { &mut sim.a };
                match msg {
                    Msg::Rtp(ssrc, seq, ts) => s.on_rtp_received(now, ssrc, seq, ts),
                    Msg::Rtcp(bytes) => s.handle_rtcp(now, &bytes).unwrap(),
                }
            }
            let st = sim.a.stats();
            if st.reports_received > reports_at_a {
                reports_at_a = st.reports_received;
                sim.remote_fractions_at_a.extend(st.remote_fraction_lost);
            }
            if ms % 20 == 0 {
                sim.a.on_rtp_sent(now, ts_a, 160);
                sim.b.on_rtp_sent(now, ts_b, 160);
                if rng.f64() >= loss {
                    let extra = jitter.mul_f64(rng.f64());
                    net.push((
                        now + delay + extra,
                        true,
                        Msg::Rtp(Ssrc(0xaaaa), seq_a, ts_a),
                    ));
                }
                if rng.f64() >= loss {
                    net.push((now + delay, false, Msg::Rtp(Ssrc(0xbbbb), seq_b, ts_b)));
                }
                seq_a = seq_a.next();
                seq_b = seq_b.next();
                ts_a = ts_a.advance(160);
                ts_b = ts_b.advance(160);
            }
            for (s, to_b) in [(&mut sim.a, true), (&mut sim.b, false)] {
                if s.poll_timeout() <= now {
                    let bytes = s.poll_transmit(now).expect("due");
                    net.push((now + delay, to_b, Msg::Rtcp(bytes)));
                }
            }
        }
        sim
    }

    #[test]
    fn two_sessions_loss_and_round_trip_time() {
        let sim = simulate(120, 0.03, Duration::from_millis(40), Duration::ZERO);
        let (a, b) = (sim.a.stats(), sim.b.stats());
        // B's own view of A's stream.
        let lost = b.packets_lost as f64 / f64::from(b.packets_expected);
        assert!((0.02..0.04).contains(&lost), "B lost {lost}");
        assert!(b.packets_expected >= 5990, "{}", b.packets_expected);
        // What A learns from B's reports: about 3 % per interval.
        let f = &sim.remote_fractions_at_a;
        assert!(f.len() >= 18, "{} reports", f.len());
        let mean = f.iter().map(|&x| f64::from(x)).sum::<f64>() / f.len() as f64;
        assert!(
            (0.02..0.04).contains(&mean),
            "mean reported fraction {mean} from {f:?}"
        );
        let cum = a.remote_packets_lost.unwrap();
        assert!((0.02..0.04).contains(&(f64::from(cum) / 6000.0)), "{cum}");
        // RTT = 2 × 40 ms, to the 1/65536 s resolution of LSR/DLSR.
        for (name, s) in [("A", a), ("B", b)] {
            let rtt = s.rtt.expect("RTT measured");
            let err = rtt.abs_diff(Duration::from_millis(80));
            assert!(err < Duration::from_millis(1), "{name} RTT {rtt:?}");
            assert!(s.jitter_ms < 0.5, "{name} jitter {}", s.jitter_ms);
            assert!(s.reports_sent >= 20 && s.reports_received >= 20, "{s:?}");
        }
        assert_eq!(a.packets_sent, 6000);
        assert_eq!(a.octets_sent, 6000 * 160);
        assert!(a.remote_fraction_lost.is_some() && b.remote_fraction_lost.is_some());
        assert_eq!(sim.a.remote_cname(), Some("b@test"));
    }

    #[test]
    fn jitter_grows_with_injected_jitter() {
        let calm = simulate(30, 0.0, Duration::from_millis(40), Duration::ZERO);
        let rough = simulate(
            30,
            0.0,
            Duration::from_millis(40),
            Duration::from_millis(30),
        );
        let calm_j = calm.b.stats().jitter_ms;
        let rough_j = rough.b.stats().jitter_ms;
        assert!(calm_j < 0.5, "{calm_j}");
        // Uniform 0-30 ms delay: E|D| = 10 ms.
        assert!((5.0..20.0).contains(&rough_j), "{rough_j}");
        // A hears about it from B's reports.
        let remote = rough.a.stats().remote_jitter_ms.unwrap();
        assert!((4.0..20.0).contains(&remote), "{remote}");
        assert!(calm.a.stats().remote_jitter_ms.unwrap() < 0.5);
        // B's stream to A is not jittered.
        assert!(rough.a.stats().jitter_ms < 0.5);
        assert_eq!(rough.b.stats().packets_lost, 0);
    }
}
