//! Adaptive jitter buffer: RTP audio packets in (any order, any timing),
//! packets out in media order, one 20 ms frame's worth per call.
//!
//! Sans-IO like the rest of the crate: the caller passes `now` to
//! [`JitterBuffer::put`] and the buffer never reads a clock. It counts in
//! *frames* (20 ms, [`JitterConfig::frame_ts`] RTP timestamp units) and in
//! RTP timestamp units of the stream's clock; payloads are opaque and their
//! duration is the caller's business (it passes `duration_ts`).
//!
//! # Drive rule
//!
//! - Every arriving audio RTP packet → [`JitterBuffer::put`]; every RFC 3389
//!   comfort-noise packet → [`JitterBuffer::put_comfort_noise`].
//! - Whenever the decoder needs the next 20 ms → [`JitterBuffer::pop`]: once
//!   per 20 ms tick, again within the tick when a popped packet was shorter
//!   than 20 ms, and *not* on the next tick when a popped packet was longer
//!   (a 40 ms packet covers two ticks).
//! - Decode [`Pop::Packet`]; conceal one frame on [`Pop::Lost`] (with Opus
//!   in-band FEC from `next` when present); play silence or comfort noise on
//!   [`Pop::Silence`] and [`Pop::Waiting`]. Hand decoded payloads back with
//!   [`JitterBuffer::recycle`] and the steady state allocates nothing.
//!
//! # Rules
//!
//! **Timeline.** Sequence numbers are extended to 64 bits and timestamps to
//! 63 bits across wrap-around, each relative to the packet with the highest
//! sequence number so far (the idea of RFC 3550 §A.1); the buffer is ordered
//! by extended timestamp. The *play position* is the extended timestamp of
//! the next media to hand out. A slop of [`JitterConfig::frame_ts`]/8
//! (2.5 ms) is tolerated wherever a packet must start at a position or
//! media is counted in whole frames, so a sender whose steps are off by a
//! tick still plays gap-free.
//!
//! **Sequence jumps** (RFC 3550 §A.1, `MAX_DROPOUT` = 3000, `MAX_MISORDER`
//! = 100). A packet more than 3000 ahead of or more than 100 behind the
//! highest sequence number is [`PutOutcome::Discarded`]; if the next packet
//! continues from it, the sender restarted its stream: resync with it.
//!
//! **Duplicates.** A packet whose extended sequence number was already
//! received (stored, played, or dropped; a 256-packet history), or whose
//! timestamp equals a stored packet's, is [`PutOutcome::Duplicate`].
//!
//! **Late.** While playing, a packet that starts before the play position
//! (so it ends at or before it, or would have to be played from its middle)
//! is dropped as [`PutOutcome::Late`]. While prefilling after a talkspurt
//! restart, the restart packet is the floor; after a stall there is none
//! (play restarts from whatever comes). Late packets still count as delay
//! measurements: they are why the depth grows.
//!
//! **SSRC change** (RFC 3550 §8): flush, forget the timeline and the delay
//! history, reset the policy, prefill again: [`PutOutcome::Resynced`].
//! Packets of the SSRC just left (stragglers reordered around the switch)
//! are `Discarded` unless two arrive in sequence, which switches back (a
//! B2BUA returning from music on hold to the original source).
//!
//! **Timestamp jumps.** For a packet newer than the highest sequence number
//! so far, its timestamp is expected at that packet's timestamp plus the
//! sequence distance times that packet's duration. A packet that starts
//! before the previous packet ends (a backward jump), or more than
//! [`JitterConfig::max_jump_ms`] (1 s) later than expected *without* the
//! marker bit, means the sender's clock restarted: resync. With the marker
//! bit the jump is silence suppression (RFC 3551 §4.1: the marker flags the
//! first packet of a talkspurt and the timestamp keeps counting through the
//! silence), and the timeline is kept. After comfort noise the same holds
//! without the marker. An older packet whose timestamp is not older than the
//! newest packet's is `Discarded`.
//!
//! **Talkspurt restart.** When a talkspurt starts (marker bit, or first
//! audio after comfort noise) while nothing is buffered, the play position
//! moves to the new packet and the buffer prefills again, so latency
//! neither builds up nor is lost across silences (a sender that does not
//! advance its timestamp during silence, or advances it too far, is fine).
//!
//! **Prefill.** [`Pop::Waiting`] until the buffered media (oldest start to
//! newest end) reaches the target depth, then play from the oldest packet.
//! This happens at the start, after a resync, after a stall and at a
//! talkspurt restart. Prefill also ends once `target` pops have found
//! something buffered: the oldest packet has then waited the target
//! latency, so a talkspurt shorter than the target (one short word) plays
//! instead of waiting for the next one.
//!
//! **Gaps.** If the packet for the play position is missing but later ones
//! are here: [`Pop::Lost`] and advance one frame (or less, up to the next
//! packet, so a short gap does not cost audio); `next` carries the payload
//! of the following packet when it starts right where the concealed frame
//! ends, for in-band FEC (RFC 7587 / RFC 6716 LBRR). A timestamp gap with
//! no sequence number missing since the last packet handed out (CN packets
//! count as received) is the sender's silence, not loss (RFC 3551 §4.1:
//! nothing is sent during silence, the sequence number runs on, the next
//! packet usually carries the marker): [`Pop::Silence`]. Before anything
//! was handed out, a gap in front of a marker packet is silence.
//!
//! **Underrun and stall.** Nothing buffered while playing: [`Pop::Lost`]
//! (counted as `underrun_frames` and `lost_frames`). After
//! [`JitterConfig::stall_frames`] (10 = 200 ms) underruns in a row the
//! buffer stalls: back to [`Pop::Waiting`], so play restarts from the
//! packets that come next, at the target depth.
//!
//! **Comfort noise** (RFC 3389). After [`JitterBuffer::put_comfort_noise`],
//! an empty buffer yields [`Pop::Silence`] (not `Lost`, not an underrun)
//! until an audio packet newer than the CN packet arrives. CN packets share
//! the stream's sequence and timestamp space and advance it.
//!
//! **Depth adaptation.** Every packet's *relative delay*, its transit time
//! (arrival in timestamp units minus its timestamp, as in RFC 3550 §A.8)
//! minus the smallest transit of the last 250 packets, goes to the
//! [`DepthPolicy`] in frames. The buffer samples its depth (media ahead of
//! the play position) at every pop; the *level* is the largest of the last
//! 10 samples (since the last adjustment): the depth right after the
//! fastest recent packet, which excludes the jitter the target is there to
//! absorb.
//! - level > target + 1: shrink by one frame: drop the packet at the play
//!   position (`dropped_for_depth`) once the current depth is above
//!   target + 1 too (not when the sender merely went quiet), that packet
//!   continues the audio just handed out (never the first packet after a
//!   silence or a loss) and the next packet follows it seamlessly.
//! - level < target (only while playing): stretch by one frame: return
//!   [`Pop::Lost`] with `next: None` (or [`Pop::Silence`] in a silence gap)
//!   *without* advancing (`concealed_for_depth`).
//! - At most one adjustment per 10 frames of output. While a talkspurt start
//!   (a silence gap, see *Gaps*) is buffered ahead, a due adjustment waits
//!   for the play position to reach that silence and is made there.
//! - Free shrink: when the play position is in a gap (loss or silence) and
//!   the current depth exceeds target + 1, the gap is skipped down to the
//!   target at once (`skipped_frames`); no audio is dropped, so this is not
//!   rate-limited (it does restart the 10-frame interval). A talkspurt after a
//!   silence longer than the buffer thus starts at the target depth, and an
//!   unmarked timestamp skip of less than a second costs no concealment.
//! - A talkspurt start whose relative delay exceeds the maximum depth (the
//!   sender's timestamps did not follow real time through the silence)
//!   restarts the delay reference instead of inflating the target.
//!
//! **Bounds.** Never panics on any input. Durations of 0 count as one
//! frame, longer than 6 frames (120 ms, the longest Opus packet) as 6
//! frames. At most `4 × max_depth_frames` packets (at least 8) and media
//! spanning `4 × max_depth_frames` frames are stored; beyond that the oldest
//! are dropped (`overflow`). The jitter estimate is RFC 3550 §A.8's
//! `J += (|D| − J)/16`, reported in milliseconds.

mod policy;

#[cfg(test)]
mod tests;

pub use policy::{DepthPolicy, FixedDepth, PercentileDepth};

use std::collections::VecDeque;
use std::time::Instant;

use crate::codec::CodecKind;
use crate::rtp::{MediaTime, SeqNo, Ssrc};

/// RFC 3550 §A.1: a jump further ahead than this is a possible restart.
const MAX_DROPOUT: i64 = 3000;
/// RFC 3550 §A.1: a packet further behind than this is a possible restart.
const MAX_MISORDER: i64 = 100;
/// Received-sequence history for duplicate detection (> `MAX_MISORDER`).
const SEEN: usize = 256;
/// Packets over which the fastest transit is the delay reference (≈ 5 s).
const DELAY_WINDOW: u64 = 250;
/// Frames of output between two depth adjustments.
const ADJUST_INTERVAL_FRAMES: u64 = 10;
/// Depth samples (pops) the level is the maximum of.
const LEVEL_SAMPLES: usize = 10;
/// Longest packet duration honoured, in frames (Opus: 120 ms).
const MAX_PACKET_FRAMES: u32 = 6;
/// The origin of extended sequence numbers and timestamps, so that
/// reordering before the first packet never goes negative.
const EXT_BASE: i64 = 1 << 40;

/// How a [`JitterBuffer`] is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JitterConfig {
    /// RTP clock rate (8000 for G.711/G.722, 48000 for Opus).
    pub clock_rate: u32,
    /// Timestamp units per 20 ms frame (160 or 960).
    pub frame_ts: u32,
    /// Upper bound of the target depth, in frames (default 10 = 200 ms).
    pub max_depth_frames: usize,
    /// Consecutive underrun frames after which the buffer prefills again
    /// (default 10 = 200 ms).
    pub stall_frames: usize,
    /// A forward timestamp jump beyond this without the marker bit is a
    /// resync (default 1000 ms).
    pub max_jump_ms: u32,
}

impl JitterConfig {
    /// Default depth bound, in frames.
    pub const MAX_DEPTH_FRAMES: usize = 10;
    /// Default stall length, in frames.
    pub const STALL_FRAMES: usize = 10;
    /// Default resync threshold for unmarked forward jumps.
    pub const MAX_JUMP_MS: u32 = 1000;

    /// The defaults for a codec's RTP clock.
    pub fn for_codec(kind: CodecKind) -> Self {
        JitterConfig {
            clock_rate: kind.rtp_clock_rate(),
            frame_ts: kind.rtp_timestamp_step(),
            ..Self::default()
        }
    }
}

impl Default for JitterConfig {
    /// 8 kHz clock, 160 per frame, the default bounds.
    fn default() -> Self {
        JitterConfig {
            clock_rate: 8000,
            frame_ts: 160,
            max_depth_frames: Self::MAX_DEPTH_FRAMES,
            stall_frames: Self::STALL_FRAMES,
            max_jump_ms: Self::MAX_JUMP_MS,
        }
    }
}

/// What [`JitterBuffer::put`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// Stored for playout.
    Stored,
    /// Already received (same sequence number or same media time).
    Duplicate,
    /// Its media was due already; dropped.
    Late,
    /// The stream restarted (new SSRC, timestamp jump, confirmed sequence
    /// jump): buffer flushed, prefilling from this packet.
    Resynced,
    /// Not stored: its sequence number is far from the stream's (a restart
    /// candidate, confirmed by the next packet) or contradicts its
    /// timestamp.
    Discarded,
}

/// A packet handed out for decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferedPacket {
    /// The payload.
    pub payload: Vec<u8>,
    /// Its RTP sequence number.
    pub seq: SeqNo,
    /// Its RTP timestamp.
    pub timestamp: MediaTime,
    /// Its duration as given to `put` (0 replaced by one frame).
    pub duration_ts: u32,
    /// Its marker bit (start of a talkspurt).
    pub marker: bool,
}

/// What [`JitterBuffer::pop`] hands out for the next stretch of media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pop {
    /// Media starting exactly at the play position: decode it.
    Packet(BufferedPacket),
    /// One frame is missing (or the buffer stretches): conceal one frame.
    /// `next` is the payload of the packet right after the concealed frame
    /// when it is already here (Opus in-band FEC).
    Lost {
        /// The following packet's payload, if buffered and contiguous.
        next: Option<Vec<u8>>,
    },
    /// The peer is silent on purpose (RFC 3389 comfort noise, or the
    /// silence before a marked talkspurt): one frame of silence or CN.
    Silence,
    /// Not playing: prefilling up to the target depth (start, resync,
    /// stall, talkspurt restart). Play silence; the play position stays.
    Waiting,
}

/// Counters of a [`JitterBuffer`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct JitterStats {
    /// Audio packets given to `put`.
    pub received: u64,
    /// Packets refused as duplicates.
    pub duplicates: u64,
    /// Packets dropped because their media was due already.
    pub late: u64,
    /// Packets refused for a sequence or timestamp inconsistent with the
    /// stream (RFC 3550 §A.1 probation).
    pub discarded: u64,
    /// Frames reported [`Pop::Lost`] because media was missing (gaps and
    /// underruns; not depth stretching).
    pub lost_frames: u64,
    /// Of `lost_frames`, those with nothing buffered at all.
    pub underrun_frames: u64,
    /// Runs of underruns long enough to go back to prefilling.
    pub stalls: u64,
    /// Frames concealed to grow the depth (stretching).
    pub concealed_for_depth: u64,
    /// Audio packets dropped to shrink the depth.
    pub dropped_for_depth: u64,
    /// Frames of gaps or silence skipped to shrink the depth.
    pub skipped_frames: u64,
    /// Packets dropped because the storage bound was reached.
    pub overflow: u64,
    /// Resynchronisations (SSRC change, timestamp or sequence jump).
    pub resyncs: u64,
    /// Comfort-noise packets received.
    pub comfort_noise: u64,
    /// Largest depth seen, in frames.
    pub max_depth_frames: usize,
    /// Interarrival jitter (RFC 3550 §A.8), in milliseconds.
    pub jitter_ms: f64,
}

/// A stored packet.
#[derive(Debug)]
struct Slot {
    seq: u64,
    ts: i64,
    dur: u32,
    marker: bool,
    payload: Vec<u8>,
}

impl Slot {
    fn end(&self) -> i64 {
        self.ts + i64::from(self.dur)
    }
}

/// The timeline of the current SSRC.
#[derive(Debug, Clone, Copy)]
struct Stream {
    ssrc: Ssrc,
    /// Extended sequence number, timestamp and duration of the packet with
    /// the highest sequence number so far (audio or CN).
    hi_seq: u64,
    hi_ts: i64,
    hi_dur: u32,
    /// RFC 3550 §A.1 `bad_seq`: the sequence number that would confirm a
    /// restart.
    probation: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Adjust {
    None,
    Shrink,
    Stretch,
}

/// Reorders, times and adapts one inbound RTP audio stream.
#[derive(Debug)]
pub struct JitterBuffer {
    config: JitterConfig,
    policy: Box<dyn DepthPolicy>,
    /// Stored packets by extended timestamp.
    slots: VecDeque<Slot>,
    /// Payload buffers for reuse.
    spare: Vec<Vec<u8>>,
    stream: Option<Stream>,
    /// The SSRC before the last change, and the sequence number that would
    /// confirm its return.
    prev_ssrc: Option<Ssrc>,
    ssrc_probation: Option<(Ssrc, u16)>,
    /// `seen[s % SEEN] == s` when extended sequence number `s` was received.
    seen: Box<[u64; SEEN]>,
    /// Handing out media (else prefilling).
    playing: bool,
    /// The play position while playing; the floor for late packets while
    /// prefilling after a talkspurt restart.
    play_pos: Option<i64>,
    /// Comfort noise received and no newer audio yet.
    cn_active: bool,
    underrun_run: usize,
    /// Pops answered `Waiting` while something was buffered.
    waiting_pops: usize,
    /// Extended sequence number and end of the last packet handed out or
    /// dropped for depth.
    last_out: Option<(u64, i64)>,
    /// Output (timestamp units) since the last depth adjustment.
    since_adjust_ts: u64,
    /// The last `LEVEL_SAMPLES` depth samples (frames, one per pop) since
    /// the last adjustment, a ring.
    recent: [usize; LEVEL_SAMPLES],
    recent_len: usize,
    recent_head: usize,
    /// Monotonic deque of (arrival index, transit) for the sliding minimum.
    delay_min: VecDeque<(u64, i64)>,
    arrivals: u64,
    origin: Option<Instant>,
    last_transit: Option<i64>,
    jitter_ts: f64,
    stats: JitterStats,
    // Derived from the configuration.
    slack: i64,
    frame: i64,
    cap_packets: usize,
    cap_ts: i64,
    jump_ts: i64,
}

impl JitterBuffer {
    /// A buffer with `policy` deciding its depth. Nonsensical configuration
    /// values are raised to the smallest sensible ones (1 Hz, 1 unit per
    /// frame, 1 frame of depth, 1 stall frame).
    pub fn new(config: JitterConfig, policy: Box<dyn DepthPolicy>) -> Self {
        let config = JitterConfig {
            clock_rate: config.clock_rate.max(1),
            frame_ts: config.frame_ts.max(1),
            max_depth_frames: config.max_depth_frames.clamp(1, 1000),
            stall_frames: config.stall_frames.max(1),
            max_jump_ms: config.max_jump_ms,
        };
        let frame = i64::from(config.frame_ts);
        let cap = (4 * config.max_depth_frames).max(8);
        let jump_ts = (i128::from(config.clock_rate) * i128::from(config.max_jump_ms) / 1000)
            .min(i128::from(i64::MAX / 4)) as i64;
        JitterBuffer {
            policy,
            slots: VecDeque::with_capacity(cap + 1),
            spare: Vec::with_capacity(cap + 1),
            stream: None,
            prev_ssrc: None,
            ssrc_probation: None,
            seen: Box::new([u64::MAX; SEEN]),
            playing: false,
            play_pos: None,
            cn_active: false,
            underrun_run: 0,
            waiting_pops: 0,
            last_out: None,
            since_adjust_ts: 0,
            recent: [0; LEVEL_SAMPLES],
            recent_len: 0,
            recent_head: 0,
            delay_min: VecDeque::with_capacity(DELAY_WINDOW as usize + 1),
            arrivals: 0,
            origin: None,
            last_transit: None,
            jitter_ts: 0.0,
            stats: JitterStats::default(),
            slack: (frame / 8).max(0),
            frame,
            cap_packets: cap,
            cap_ts: cap as i64 * frame,
            jump_ts: jump_ts.max(frame),
            config,
        }
    }

    /// The configuration in force (after sanitising).
    pub fn config(&self) -> &JitterConfig {
        &self.config
    }

    /// Stores one audio packet. `duration_ts` is its media duration in
    /// timestamp units (0 is taken as one frame).
    #[allow(clippy::too_many_arguments)]
    pub fn put(
        &mut self,
        now: Instant,
        ssrc: Ssrc,
        seq: SeqNo,
        timestamp: MediaTime,
        marker: bool,
        payload: &[u8],
        duration_ts: u32,
    ) -> PutOutcome {
        self.stats.received += 1;
        let dur = self.normalise_duration(duration_ts);
        let Some(mut st) = self.stream else {
            self.begin(now, ssrc, seq, timestamp, marker, payload, dur);
            return PutOutcome::Stored;
        };
        if st.ssrc != ssrc {
            if self.prev_ssrc == Some(ssrc) && self.ssrc_probation != Some((ssrc, seq.0)) {
                // A straggler of the source we just left; only two packets
                // in sequence bring it back.
                self.ssrc_probation = Some((ssrc, seq.next().0));
                self.stats.discarded += 1;
                return PutOutcome::Discarded;
            }
            self.prev_ssrc = Some(st.ssrc);
            self.ssrc_probation = None;
            return self.resync(now, ssrc, seq, timestamp, marker, payload, dur);
        }
        let sd = i64::from(SeqNo(st.hi_seq as u16).delta(seq));
        if !(-MAX_MISORDER..=MAX_DROPOUT).contains(&sd) {
            if st.probation == Some(seq.0) {
                return self.resync(now, ssrc, seq, timestamp, marker, payload, dur);
            }
            st.probation = Some(seq.next().0);
            self.stream = Some(st);
            self.stats.discarded += 1;
            return PutOutcome::Discarded;
        }
        let ext_seq = st.hi_seq.wrapping_add_signed(sd);
        if self.seen[(ext_seq % SEEN as u64) as usize] == ext_seq {
            self.stats.duplicates += 1;
            return PutOutcome::Duplicate;
        }
        let td = MediaTime(st.hi_ts as u32).delta(timestamp);
        let ext_ts = st.hi_ts + td;
        let talkspurt = sd > 0 && (marker || self.cn_active);
        if sd > 0 {
            let backward = td < i64::from(st.hi_dur) - self.slack;
            let beyond = td - sd * i64::from(st.hi_dur) > self.jump_ts;
            if backward || (beyond && !talkspurt) {
                return self.resync(now, ssrc, seq, timestamp, marker, payload, dur);
            }
        } else if td + i64::from(dur) > self.slack {
            // Older sequence number but not older media: from another
            // timeline (e.g. before a resync), or overlapping.
            self.stats.discarded += 1;
            return PutOutcome::Discarded;
        }

        self.observe_arrival(now, ext_ts, talkspurt);
        self.seen[(ext_seq % SEEN as u64) as usize] = ext_seq;
        if sd > 0 {
            st.hi_seq = ext_seq;
            st.hi_ts = ext_ts;
            st.hi_dur = dur;
            self.cn_active = false;
        }
        self.stream = Some(st);

        if talkspurt && self.playing && self.slots.is_empty() {
            // Talkspurt restart after the buffer ran dry: anchor here.
            self.playing = false;
            self.play_pos = Some(ext_ts);
            self.underrun_run = 0;
            self.waiting_pops = 0;
        }
        if self.play_pos.is_some_and(|p| ext_ts < p - self.slack) {
            self.stats.late += 1;
            return PutOutcome::Late;
        }
        if !self.store(ext_ts, ext_seq, dur, marker, payload) {
            self.stats.duplicates += 1;
            return PutOutcome::Duplicate;
        }
        PutOutcome::Stored
    }

    /// An RFC 3389 comfort-noise packet: the peer has gone silent on
    /// purpose. Pops with an empty buffer return [`Pop::Silence`] until a
    /// newer audio packet arrives.
    pub fn put_comfort_noise(
        &mut self,
        now: Instant,
        ssrc: Ssrc,
        seq: SeqNo,
        timestamp: MediaTime,
    ) {
        self.stats.comfort_noise += 1;
        let _ = now;
        let Some(mut st) = self.stream.filter(|st| st.ssrc == ssrc) else {
            if let Some(old) = self.stream {
                if self.prev_ssrc == Some(ssrc) {
                    return;
                }
                self.prev_ssrc = Some(old.ssrc);
                self.ssrc_probation = None;
                self.stats.resyncs += 1;
            }
            // CN lasts until the next packet: duration 0 for the timeline.
            self.restart(ssrc, seq, timestamp, 0);
            self.cn_active = true;
            return;
        };
        let sd = i64::from(SeqNo(st.hi_seq as u16).delta(seq));
        // Only a CN packet newer than everything so far means "silent now";
        // an old or wild one is ignored.
        if !(1..=MAX_DROPOUT).contains(&sd) {
            return;
        }
        let td = MediaTime(st.hi_ts as u32).delta(timestamp);
        st.hi_seq = st.hi_seq.wrapping_add_signed(sd);
        st.hi_ts += td;
        st.hi_dur = 0;
        self.seen[(st.hi_seq % SEEN as u64) as usize] = st.hi_seq;
        self.stream = Some(st);
        self.cn_active = true;
    }

    /// The next media for the decoder; see [`Pop`].
    ///
    /// `now` is accepted for symmetry with `put`; the buffer works on media
    /// time and the number of pops.
    pub fn pop(&mut self, now: Instant) -> Pop {
        let _ = now;
        let target = self.target_frames();
        if !self.playing {
            if !self.slots.is_empty() {
                self.waiting_pops += 1;
            }
            if !self.prefilled(target) && self.waiting_pops < target {
                if self.slots.is_empty() && self.cn_active {
                    return Pop::Silence;
                }
                return Pop::Waiting;
            }
            self.playing = true;
            self.play_pos = self.slots.front().map(|s| s.ts);
            self.underrun_run = 0;
            self.waiting_pops = 0;
            self.adjusted();
        }
        let mut pos = self.play_pos.unwrap_or(0);

        // Packets overtaken by the play position (overlapping senders,
        // eviction) are late now.
        while self.slots.front().is_some_and(|s| s.ts < pos - self.slack) {
            if let Some(s) = self.slots.pop_front() {
                self.stats.late += 1;
                self.spare_buffer(s.payload);
            }
        }

        let depth_ts = self.depth_ts_at(pos);
        self.sample_depth(self.whole_frames(depth_ts));

        let Some(front) = self.slots.front() else {
            self.play_pos = Some(pos + self.frame);
            self.since_adjust_ts += self.frame as u64;
            if self.cn_active {
                self.underrun_run = 0;
                return Pop::Silence;
            }
            if self.underrun_run >= self.config.stall_frames {
                // No floor: play restarts from whatever comes next.
                self.playing = false;
                self.play_pos = None;
                self.stats.stalls += 1;
                self.underrun_run = 0;
                self.waiting_pops = 0;
                return Pop::Waiting;
            }
            self.underrun_run += 1;
            self.stats.lost_frames += 1;
            self.stats.underrun_frames += 1;
            return Pop::Lost { next: None };
        };
        self.underrun_run = 0;
        let silent_gap = self.is_silence_before(front);
        let mut gap = front.ts - pos;
        let want = self.adjustment(target);

        if gap > self.slack {
            // Free shrink: skip missing or silent media down to the target.
            let excess = depth_ts - target as i64 * self.frame;
            if self.whole_frames(depth_ts) > target + 1 && excess > 0 {
                let skip = gap.min(excess);
                pos += skip;
                gap -= skip;
                self.stats.skipped_frames += frames_ceil(skip, self.frame);
                self.adjusted();
            }
        }
        if gap > self.slack && want == Adjust::Stretch {
            self.stats.concealed_for_depth += 1;
            self.play_pos = Some(pos);
            self.adjusted();
            self.since_adjust_ts += self.frame as u64;
            return if silent_gap {
                Pop::Silence
            } else {
                Pop::Lost { next: None }
            };
        }
        if gap > self.slack {
            let step = gap.min(self.frame);
            pos += step;
            gap -= step;
            self.play_pos = Some(pos);
            self.since_adjust_ts += self.frame as u64;
            if silent_gap {
                return Pop::Silence;
            }
            self.stats.lost_frames += 1;
            let next = if gap <= self.slack {
                self.slots.front().map(|s| s.payload.clone())
            } else {
                None
            };
            return Pop::Lost { next };
        }

        // The front packet is at the play position.
        match want {
            Adjust::Stretch => {
                self.stats.concealed_for_depth += 1;
                self.play_pos = Some(pos);
                self.adjusted();
                self.since_adjust_ts += self.frame as u64;
                return Pop::Lost { next: None };
            }
            Adjust::Shrink
                if self.whole_frames(depth_ts) > target + 1 && self.droppable_front() =>
            {
                if let Some(s) = self.slots.pop_front() {
                    self.stats.dropped_for_depth += 1;
                    self.last_out = Some((s.seq, s.end()));
                    self.spare_buffer(s.payload);
                }
                self.adjusted();
            }
            _ => {}
        }
        let Some(s) = self.slots.pop_front() else {
            // Unreachable: droppable_front() requires a second packet.
            self.play_pos = Some(pos + self.frame);
            return Pop::Lost { next: None };
        };
        self.play_pos = Some(s.end());
        self.last_out = Some((s.seq, s.end()));
        self.since_adjust_ts += u64::from(s.dur);
        Pop::Packet(BufferedPacket {
            payload: s.payload,
            seq: SeqNo(s.seq as u16),
            timestamp: MediaTime(s.ts as u32),
            duration_ts: s.dur,
            marker: s.marker,
        })
    }

    /// Gives a payload buffer (from [`Pop::Packet`] or [`Pop::Lost`]) back
    /// for reuse by later packets.
    pub fn recycle(&mut self, mut payload: Vec<u8>) {
        payload.clear();
        self.spare_buffer(payload);
    }

    /// Forgets the stream (e.g. the codec changed): flushes, and the next
    /// packet starts a new timeline. Counters are kept.
    pub fn reset(&mut self) {
        self.flush();
        self.stream = None;
        self.prev_ssrc = None;
        self.ssrc_probation = None;
        self.playing = false;
        self.play_pos = None;
        self.cn_active = false;
        self.waiting_pops = 0;
        self.policy.reset();
    }

    /// Media buffered ahead of the play position (while prefilling: from
    /// the oldest packet), in whole frames.
    pub fn depth_frames(&self) -> usize {
        let ts = if self.playing {
            self.depth_ts_at(self.play_pos.unwrap_or(0))
        } else {
            self.span_ts()
        };
        self.whole_frames(ts)
    }

    /// The depth the buffer steers towards, in frames (the policy's answer
    /// clamped to `[1, max_depth_frames]`).
    pub fn target_frames(&self) -> usize {
        self.policy
            .target_frames()
            .clamp(1, self.config.max_depth_frames)
    }

    /// The policy's name.
    pub fn policy_name(&self) -> &'static str {
        self.policy.name()
    }

    /// Whether the buffer is handing out media (not prefilling).
    pub fn is_playing(&self) -> bool {
        self.playing
    }

    /// Packets stored.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no packet is stored.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The most packets ever stored at once (the storage bound).
    pub fn capacity_packets(&self) -> usize {
        self.cap_packets
    }

    /// Counters.
    pub fn stats(&self) -> JitterStats {
        let mut s = self.stats;
        s.jitter_ms = self.jitter_ts * 1000.0 / f64::from(self.config.clock_rate);
        s
    }

    // ---- internals ----

    fn normalise_duration(&self, d: u32) -> u32 {
        if d == 0 {
            self.config.frame_ts
        } else {
            d.min(self.config.frame_ts.saturating_mul(MAX_PACKET_FRAMES))
        }
    }

    fn ext_first(&self, ts: MediaTime) -> i64 {
        EXT_BASE + i64::from(ts.0)
    }

    fn ext_seq_first(&self, seq: SeqNo) -> u64 {
        (1u64 << 32) + u64::from(seq.0)
    }

    /// Flush and start a new timeline at this packet; a resync if there
    /// was one before.
    #[allow(clippy::too_many_arguments)]
    fn resync(
        &mut self,
        now: Instant,
        ssrc: Ssrc,
        seq: SeqNo,
        timestamp: MediaTime,
        marker: bool,
        payload: &[u8],
        dur: u32,
    ) -> PutOutcome {
        self.stats.resyncs += 1;
        self.begin(now, ssrc, seq, timestamp, marker, payload, dur);
        PutOutcome::Resynced
    }

    /// Starts a new timeline with this packet as its first.
    #[allow(clippy::too_many_arguments)]
    fn begin(
        &mut self,
        now: Instant,
        ssrc: Ssrc,
        seq: SeqNo,
        timestamp: MediaTime,
        marker: bool,
        payload: &[u8],
        dur: u32,
    ) {
        self.restart(ssrc, seq, timestamp, dur);
        let ext_ts = self.ext_first(timestamp);
        self.observe_arrival(now, ext_ts, false);
        self.store(ext_ts, self.ext_seq_first(seq), dur, marker, payload);
    }

    /// Resets everything about the stream; this packet (not stored here)
    /// is the first of the new timeline.
    fn restart(&mut self, ssrc: Ssrc, seq: SeqNo, timestamp: MediaTime, dur: u32) {
        self.flush();
        let ext_seq = self.ext_seq_first(seq);
        let ext_ts = self.ext_first(timestamp);
        self.stream = Some(Stream {
            ssrc,
            hi_seq: ext_seq,
            hi_ts: ext_ts,
            hi_dur: dur,
            probation: None,
        });
        self.playing = false;
        self.play_pos = None;
        self.cn_active = false;
        self.underrun_run = 0;
        self.waiting_pops = 0;
        self.adjusted();
        self.policy.reset();
        self.delay_min.clear();
        self.last_transit = None;
        self.last_out = None;
        self.seen[(ext_seq % SEEN as u64) as usize] = ext_seq;
    }

    fn flush(&mut self) {
        while let Some(s) = self.slots.pop_front() {
            self.spare_buffer(s.payload);
        }
        self.seen.fill(u64::MAX);
        self.underrun_run = 0;
        self.adjusted();
    }

    fn spare_buffer(&mut self, payload: Vec<u8>) {
        if self.spare.len() < self.cap_packets + 1 && payload.capacity() > 0 {
            self.spare.push(payload);
        }
    }

    /// Restarts the rate limit and the level after a depth change.
    fn adjusted(&mut self) {
        self.since_adjust_ts = 0;
        self.recent_len = 0;
    }

    fn sample_depth(&mut self, frames: usize) {
        self.recent[self.recent_head] = frames;
        self.recent_head = (self.recent_head + 1) % LEVEL_SAMPLES;
        self.recent_len = (self.recent_len + 1).min(LEVEL_SAMPLES);
    }

    /// The largest recent depth sample.
    fn level(&self) -> Option<usize> {
        (0..self.recent_len)
            .map(|i| self.recent[(self.recent_head + LEVEL_SAMPLES - 1 - i) % LEVEL_SAMPLES])
            .max()
    }

    /// Transit time, jitter estimate, relative delay to the policy.
    fn observe_arrival(&mut self, now: Instant, ext_ts: i64, talkspurt: bool) {
        let origin = *self.origin.get_or_insert(now);
        let arrival = ticks_between(origin, now, self.config.clock_rate);
        let transit = arrival.saturating_sub(ext_ts);
        if let Some(prev) = self.last_transit {
            let d = transit.saturating_sub(prev).unsigned_abs() as f64;
            self.jitter_ts += (d - self.jitter_ts) / 16.0;
        }
        self.last_transit = Some(transit);

        self.arrivals += 1;
        let idx = self.arrivals;
        if talkspurt
            && self.delay_min.front().is_some_and(|&(_, m)| {
                transit.saturating_sub(m) > self.config.max_depth_frames as i64 * self.frame
            })
        {
            // The sender's clock did not follow real time through the
            // silence: the old reference means nothing now.
            self.delay_min.clear();
        }
        while self.delay_min.back().is_some_and(|&(_, t)| t >= transit) {
            self.delay_min.pop_back();
        }
        self.delay_min.push_back((idx, transit));
        while self
            .delay_min
            .front()
            .is_some_and(|&(i, _)| i + DELAY_WINDOW <= idx)
        {
            self.delay_min.pop_front();
        }
        let min = self.delay_min.front().map_or(transit, |&(_, t)| t);
        let rel = transit.saturating_sub(min).max(0) as f64 / self.frame as f64;
        self.policy.on_arrival(rel as f32);
    }

    /// Inserts in timestamp order, enforcing the storage bounds. False if a
    /// packet with the same timestamp is stored.
    fn store(&mut self, ts: i64, seq: u64, dur: u32, marker: bool, payload: &[u8]) -> bool {
        let idx = self.slots.partition_point(|s| s.ts < ts);
        if self.slots.get(idx).is_some_and(|s| s.ts == ts) {
            return false;
        }
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(payload);
        self.slots.insert(
            idx,
            Slot {
                seq,
                ts,
                dur,
                marker,
                payload: buf,
            },
        );
        self.enforce_bounds();
        let depth = self.depth_frames();
        self.stats.max_depth_frames = self.stats.max_depth_frames.max(depth);
        true
    }

    fn enforce_bounds(&mut self) {
        while self.slots.len() > self.cap_packets {
            if let Some(s) = self.slots.pop_front() {
                self.stats.overflow += 1;
                self.spare_buffer(s.payload);
            }
        }
        let Some(newest_end) = self.slots.back().map(Slot::end) else {
            return;
        };
        let limit = newest_end - self.cap_ts;
        while self.slots.len() > 1 && self.slots.front().is_some_and(|s| s.ts < limit) {
            if let Some(s) = self.slots.pop_front() {
                self.stats.overflow += 1;
                self.spare_buffer(s.payload);
            }
        }
        if !self.playing {
            return;
        }
        if let (Some(pos), Some(front)) = (self.play_pos, self.slots.front()) {
            if newest_end - pos > self.cap_ts {
                // The play position fell out of the window: jump to what is
                // left.
                let to = front.ts.max(pos);
                self.stats.skipped_frames += frames_ceil(to - pos, self.frame);
                self.play_pos = Some(to);
            }
        }
    }

    /// Whole frames in `ts` units of media, a few ticks short counting as
    /// whole (the slop).
    fn whole_frames(&self, ts: i64) -> usize {
        ((ts.max(0) + self.slack) / self.frame) as usize
    }

    /// Buffered media from the oldest packet to the newest end.
    fn span_ts(&self) -> i64 {
        match (self.slots.front(), self.slots.back()) {
            (Some(f), Some(b)) => (b.end() - f.ts).max(0),
            _ => 0,
        }
    }

    /// Buffered media ahead of `pos`.
    fn depth_ts_at(&self, pos: i64) -> i64 {
        self.slots.back().map_or(0, |b| (b.end() - pos).max(0))
    }

    fn prefilled(&self, target: usize) -> bool {
        !self.slots.is_empty() && self.span_ts() >= target as i64 * self.frame - self.slack
    }

    /// The front packet may be dropped to shrink: it continues the audio
    /// just handed out (mid-talkspurt, not right after silence or loss) and
    /// the next packet follows it seamlessly.
    fn droppable_front(&self) -> bool {
        let (Some(a), Some(b)) = (self.slots.front(), self.slots.get(1)) else {
            return false;
        };
        let continues = self
            .last_out
            .is_some_and(|(_, end)| (a.ts - end).abs() <= self.slack);
        continues && (b.ts - a.end()).abs() <= self.slack
    }

    /// Whether every sequence number strictly between `from` and `to` was
    /// received (so nothing is missing: a timestamp gap between them is the
    /// sender's silence, possibly filled with comfort noise).
    fn nothing_missing(&self, from: u64, to: u64) -> bool {
        to > from
            && to - from <= MAX_MISORDER as u64
            && (from + 1..to).all(|s| self.seen[(s % SEEN as u64) as usize] == s)
    }

    /// Whether the gap in front of `b` is intentional silence: no sequence
    /// number is missing since the last packet handed out (RFC 3551 §4.1:
    /// no packets during silence, the sequence number runs on), or, with
    /// nothing handed out yet, `b` carries the marker.
    fn is_silence_before(&self, b: &Slot) -> bool {
        match self.last_out {
            Some((seq, _)) => self.nothing_missing(seq, b.seq),
            None => b.marker,
        }
    }

    /// Whether a depth adjustment is due, and which.
    fn adjustment(&self, target: usize) -> Adjust {
        if self.since_adjust_ts < ADJUST_INTERVAL_FRAMES * self.frame as u64 {
            return Adjust::None;
        }
        let Some(level) = self.level() else {
            return Adjust::None;
        };
        let want = if level > target + 1 {
            Adjust::Shrink
        } else if level < target {
            Adjust::Stretch
        } else {
            Adjust::None
        };
        if want == Adjust::None {
            return Adjust::None;
        }
        if self.silence_ahead() {
            // Wait for the silence in front of it.
            return Adjust::None;
        }
        want
    }

    /// A silence (a timestamp gap without missing sequence numbers) lies
    /// between two buffered packets: a talkspurt start is buffered ahead.
    fn silence_ahead(&self) -> bool {
        self.slots
            .iter()
            .zip(self.slots.iter().skip(1))
            .any(|(a, b)| b.ts - a.end() > self.slack && self.nothing_missing(a.seq, b.seq))
    }
}

/// Whole frames covering `ts` (≥ 0) timestamp units.
fn frames_ceil(ts: i64, frame: i64) -> u64 {
    (ts.max(0) + frame - 1).checked_div(frame).unwrap_or(0) as u64
}

/// `now − origin` in clock units, negative if `now` is earlier.
fn ticks_between(origin: Instant, now: Instant, clock_rate: u32) -> i64 {
    let (d, sign) = match now.checked_duration_since(origin) {
        Some(d) => (d, 1i128),
        None => (origin.saturating_duration_since(now), -1i128),
    };
    let t = d.as_nanos() as i128 * i128::from(clock_rate) / 1_000_000_000;
    (sign * t).clamp(i128::from(i64::MIN / 4), i128::from(i64::MAX / 4)) as i64
}
