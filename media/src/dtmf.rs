//! DTMF: RFC 4733 telephone-events over RTP, and SIP INFO relay bodies.
//!
//! # Receiving ([`DtmfReceiver`])
//!
//! Feed it every RTP packet of the negotiated telephone-event payload type
//! (timestamp, marker, payload). All packets of one event carry the event's
//! start timestamp (RFC 4733 §2.5.1.3), so an event is identified by that
//! timestamp; two identical digits pressed in a row are two events because
//! their timestamps differ. Each event is reported exactly once:
//!
//! * when its first end packet (E bit) arrives; the retransmitted end
//!   packets (usually three in all), retransmitted start packets and any late
//!   duplicate are swallowed;
//! * if all its end packets are lost: when a packet of a newer event arrives,
//!   when [`DtmfReceiver::handle_timeout`] is given a media time more than the
//!   end timeout (default [`DEFAULT_END_TIMEOUT`]) past the event's last known
//!   end, or when [`DtmfReceiver::flush`] is called (end of stream, SSRC
//!   change, BYE). The duration is then the longest one seen.
//!
//! A packet whose timestamp is that of one of the last 16 events (or of an
//! earlier segment of one) is a late duplicate and ignored. Any other
//! timestamp is a new event, even an older one: a sender that stepped its
//! timestamps back, or one whose earlier packets were all lost.
//!
//! Long events (RFC 4733 §2.5.1.5) whose duration no longer fits the 16-bit
//! field are sent as segments: the last packet of a segment reports 0xFFFF
//! without the E bit and the next segment starts at the previous segment's
//! timestamp + 0xFFFF. A packet of the same event at that timestamp (± 100 ms)
//! after a segment that reached (nearly) 0xFFFF continues the event; it is
//! reported once, with the total duration. A sender that instead lets the
//! duration field wrap within one timestamp is handled too (the wrap is
//! counted, not taken as a new event).
//!
//! A payload may carry several event blocks (RFC 4733 §2.5); they are taken
//! in order, block *k* starting at the packet timestamp plus the durations of
//! the blocks before it (all but the last are complete events). Most
//! senders put one event per packet.
//!
//! One call to [`DtmfReceiver::handle`] can complete two events (a lost end
//! detected by the next event, which itself arrives as an end packet, or a
//! multi-event payload). `handle`, `handle_timeout` and `flush` return the
//! oldest ready digit; [`DtmfReceiver::poll_digit`] drains the rest. A digit
//! not drained is returned by the next call, so none is lost.
//!
//! # Sending ([`DtmfSender`])
//!
//! The media session calls [`DtmfSender::next_packet`] once per 20 ms tick
//! while [`DtmfSender::is_active`], and sends the returned event packet
//! instead of audio for that tick (RFC 4733 §2.5.1), with its own next
//! sequence number. The first packet of an event has the marker bit and the
//! event's timestamp is the session's media time at that first tick; every
//! packet reports the duration from the event start to the end of its own
//! 20 ms (so the first says 20 ms); the final packet has the E bit and the
//! requested duration and is sent on three ticks in a row. Events
//! longer than 0xFFFF clock units are segmented as above. Digits started
//! while one plays are queued; each starts on the tick after the previous
//! one's third end packet (a gap of at least 40 ms).
//!
//! # SIP INFO ([`parse_dtmf_info`])
//!
//! `application/dtmf-relay` (`Signal=5` / `Duration=160` lines) and
//! `application/dtmf` (the digit alone).

use std::collections::VecDeque;
use std::time::Duration;

use crate::rtp::{MediaTime, RtpPacket, SeqNo, Ssrc};

/// Event code of a hook flash (in RFC 4733's DTMF event table), reported as
/// the digit `'F'`.
pub const EVENT_FLASH: u8 = 16;
/// Largest volume (power level in -dBm0) the 6-bit field can carry.
pub const MAX_VOLUME: u8 = 63;
/// Default for [`DtmfReceiver::set_end_timeout`].
pub const DEFAULT_END_TIMEOUT: Duration = Duration::from_millis(250);
/// Most digits [`DtmfSender::start`] queues behind the one playing.
pub const MAX_QUEUED: usize = 64;
/// Longest event [`DtmfSender::start`] accepts.
pub const MAX_EVENT_DURATION: Duration = Duration::from_secs(60);

/// Largest value of the duration field, and the length of a segment.
const SEGMENT: u32 = 0xFFFF;
/// Events remembered to recognise late duplicates.
const HISTORY: usize = 16;
/// End packets are sent this many times (RFC 4733 §2.5.1).
const END_COPIES: u8 = 3;

/// Errors of this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DtmfError {
    /// A telephone-event payload is empty or not a whole number of 4-byte
    /// event blocks.
    #[error("telephone-event payload of {0} bytes is not a multiple of 4")]
    PayloadLength(usize),
    /// Not one of `0-9 * # A-D` (or `F`, flash).
    #[error("{0:?} is not a DTMF digit")]
    UnknownDigit(char),
    /// Volume above 63 (-dBm0).
    #[error("volume {0} is out of range 0-63")]
    Volume(u8),
    /// Zero or longer than [`MAX_EVENT_DURATION`].
    #[error("event duration {0:?} is out of range")]
    Duration(Duration),
    /// [`MAX_QUEUED`] digits are already waiting.
    #[error("{0} digits already queued")]
    QueueFull(usize),
}

/// One event block of a telephone-event payload (RFC 4733 §2.3):
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |     event     |E|R| volume    |          duration             |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code (0-9, 10 `*`, 11 `#`, 12-15 `A`-`D`, 16 flash, ...).
    pub event: u8,
    /// E bit: the final packet(s) of the event.
    pub end: bool,
    /// Power level in -dBm0 (0-63; 6 bits on the wire).
    pub volume: u8,
    /// Duration so far, in RTP timestamp units.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Bytes per event block.
    pub const LEN: usize = 4;

    /// Parses the first event block of a payload. The payload must be a
    /// non-empty whole number of blocks (any further blocks are checked for
    /// length only; see [`TelephoneEvent::parse_all`]).
    pub fn parse(payload: &[u8]) -> Result<TelephoneEvent, DtmfError> {
        Self::parse_all(payload)?
            .next()
            .ok_or(DtmfError::PayloadLength(payload.len()))
    }

    /// Parses every event block of a payload (RFC 4733 §2.5 allows several),
    /// in payload order.
    pub fn parse_all(
        payload: &[u8],
    ) -> Result<impl ExactSizeIterator<Item = TelephoneEvent> + '_, DtmfError> {
        if payload.is_empty() || !payload.len().is_multiple_of(Self::LEN) {
            return Err(DtmfError::PayloadLength(payload.len()));
        }
        Ok(payload.chunks_exact(Self::LEN).map(|b| TelephoneEvent {
            event: b[0],
            end: b[1] & 0x80 != 0,
            volume: b[1] & 0x3f,
            duration: u16::from_be_bytes([b[2], b[3]]),
        }))
    }

    /// The 4 bytes on the wire (R bit zero, volume masked to 6 bits).
    pub fn to_bytes(&self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            u8::from(self.end) << 7 | (self.volume & 0x3f),
            d[0],
            d[1],
        ]
    }

    /// Appends the 4 bytes to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes());
    }
}

/// The character of a DTMF event code: `'0'`-`'9'`, `'*'` (10), `'#'` (11),
/// `'A'`-`'D'` (12-15), and `'F'` for a hook flash (16).
pub fn digit_for_event(event: u8) -> Option<char> {
    match event {
        0..=9 => Some(char::from(b'0' + event)),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + event - 12)),
        EVENT_FLASH => Some('F'),
        _ => None,
    }
}

/// The event code of a DTMF character (letters in either case; `'F'` is a
/// hook flash).
pub fn event_for_digit(digit: char) -> Option<u8> {
    match digit {
        '0'..='9' => Some(digit as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(digit as u8 - b'A' + 12),
        'a'..='d' => Some(digit as u8 - b'a' + 12),
        'F' | 'f' => Some(EVENT_FLASH),
        _ => None,
    }
}

/// A received digit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digit {
    /// `'0'`-`'9'`, `'*'`, `'#'`, `'A'`-`'D'`, or `'F'` (flash).
    pub digit: char,
    /// Total duration of the event (all segments), in milliseconds.
    pub duration_ms: u32,
    /// RTP timestamp of the event start.
    pub timestamp: MediaTime,
}

/// The event being tracked by the receiver.
#[derive(Debug, Clone, Copy)]
struct Tracked {
    event: u8,
    /// Timestamp of the first segment (the event start).
    start: MediaTime,
    /// Timestamp of the current segment.
    segment: MediaTime,
    /// Clock units in the segments before the current one.
    before: u64,
    /// Longest duration seen in the current segment (wraps counted).
    elapsed: u64,
    /// Duration field of the newest packet of the segment, and how often it
    /// wrapped (senders that do not segment).
    last_raw: u16,
    wraps: u64,
    /// Reported already: everything else about it is a duplicate.
    done: bool,
}

impl Tracked {
    fn new(event: u8, ts: MediaTime) -> Tracked {
        Tracked {
            event,
            start: ts,
            segment: ts,
            before: 0,
            elapsed: 0,
            last_raw: 0,
            wraps: 0,
            done: false,
        }
    }

    fn update(&mut self, raw: u16) {
        if raw < self.last_raw && self.last_raw - raw > 0x8000 {
            self.wraps += 1;
        } else if raw > self.last_raw && raw - self.last_raw > 0x8000 {
            // A packet from before the last wrap: nothing new.
            if self.wraps > 0 {
                return;
            }
        }
        self.last_raw = raw;
        self.elapsed = self.elapsed.max((self.wraps << 16) + u64::from(raw));
    }

    fn next_segment(&mut self, ts: MediaTime) {
        self.before += self.segment.delta(ts).max(0) as u64;
        self.segment = ts;
        self.elapsed = 0;
        self.last_raw = 0;
        self.wraps = 0;
    }

    fn total(&self) -> u64 {
        self.before + self.elapsed
    }
}

/// Turns received telephone-event packets into digits, once each (see the
/// module documentation).
#[derive(Debug, Clone)]
pub struct DtmfReceiver {
    clock_rate: u32,
    end_timeout: u32,
    current: Option<Tracked>,
    /// (start, last segment) of the events before the current one.
    history: VecDeque<(MediaTime, MediaTime)>,
    ready: VecDeque<Digit>,
}

impl DtmfReceiver {
    /// `clock_rate` of the telephone-event payload type (as in
    /// `a=rtpmap:101 telephone-event/8000`), which is the audio's.
    pub fn new(clock_rate: u32) -> DtmfReceiver {
        let clock_rate = clock_rate.max(1);
        DtmfReceiver {
            clock_rate,
            end_timeout: units(DEFAULT_END_TIMEOUT, clock_rate),
            current: None,
            history: VecDeque::with_capacity(HISTORY),
            ready: VecDeque::new(),
        }
    }

    /// How far past an unfinished event's last reported duration
    /// [`DtmfReceiver::handle_timeout`]'s media time must be to report it.
    pub fn set_end_timeout(&mut self, timeout: Duration) {
        self.end_timeout = units(timeout, self.clock_rate);
    }

    /// One telephone-event RTP packet. Returns a digit when one is complete
    /// (the oldest, if more are; see [`DtmfReceiver::poll_digit`]). Malformed
    /// payloads are ignored.
    pub fn handle(&mut self, timestamp: MediaTime, marker: bool, payload: &[u8]) -> Option<Digit> {
        // The marker bit only says "new event", which the timestamp says too;
        // a retransmitted start packet carries it as well.
        let _ = marker;
        if let Ok(blocks) = TelephoneEvent::parse_all(payload) {
            let mut start = timestamp;
            for block in blocks {
                self.block(start, block);
                start = start.advance(u32::from(block.duration));
            }
        }
        self.ready.pop_front()
    }

    /// Reports an event whose end packets were all lost once `now_ts` (the
    /// media time of the same stream, e.g. the timestamp of the newest audio
    /// packet, or one extrapolated from the wall clock) is more than the end
    /// timeout past its last known end.
    pub fn handle_timeout(&mut self, now_ts: MediaTime) -> Option<Digit> {
        if let Some(t) = self.current.as_ref().filter(|t| !t.done) {
            let known_end = t.segment.advance(t.elapsed.min(u64::from(u32::MAX)) as u32);
            if known_end.delta(now_ts) > i64::from(self.end_timeout) {
                self.finish();
            }
        }
        self.ready.pop_front()
    }

    /// Reports the event in progress now, if any (end of stream, SSRC change,
    /// BYE). Later packets of it are still recognised as duplicates.
    pub fn flush(&mut self) -> Option<Digit> {
        self.finish();
        self.ready.pop_front()
    }

    /// The next ready digit not yet returned.
    pub fn poll_digit(&mut self) -> Option<Digit> {
        self.ready.pop_front()
    }

    /// Whether an event is in progress (started, not yet reported).
    pub fn in_progress(&self) -> bool {
        self.current.is_some_and(|t| !t.done)
    }

    fn block(&mut self, ts: MediaTime, ev: TelephoneEvent) {
        if let Some(cur) = self.current.as_mut() {
            let from_segment = cur.segment.delta(ts);
            if from_segment == 0 && ev.event == cur.event {
                if !cur.done {
                    cur.update(ev.duration);
                    if ev.end {
                        self.finish();
                    }
                }
                return;
            }
            let tol = i64::from(self.clock_rate / 10);
            let continues = !cur.done
                && ev.event == cur.event
                && (from_segment - i64::from(SEGMENT)).abs() <= tol
                && cur.elapsed + tol as u64 >= u64::from(SEGMENT);
            if continues {
                cur.next_segment(ts);
                cur.update(ev.duration);
                if ev.end {
                    self.finish();
                }
                return;
            }
        }
        if self.seen(ts) {
            return;
        }
        // A new event (a different event code on the current timestamp, from
        // a sender that does not advance it, too): the previous one is over
        // even if its end was lost.
        self.finish();
        if let Some(old) = self.current.take() {
            if self.history.len() == HISTORY {
                self.history.pop_front();
            }
            self.history.push_back((old.start, old.segment));
        }
        let mut t = Tracked::new(ev.event, ts);
        t.update(ev.duration);
        self.current = Some(t);
        if ev.end {
            self.finish();
        }
    }

    /// `ts` is the timestamp of a remembered event or of one of its
    /// segments (for the current event: an earlier segment).
    fn seen(&self, ts: MediaTime) -> bool {
        let within = |start: MediaTime, last: MediaTime| {
            let at = start.delta(ts);
            at >= 0 && at <= start.delta(last)
        };
        let earlier_segment = self
            .current
            .is_some_and(|c| ts != c.segment && within(c.start, c.segment));
        earlier_segment || self.history.iter().any(|&(s, l)| within(s, l))
    }

    /// Reports the current event unless already reported.
    fn finish(&mut self) {
        let Some(t) = self.current.as_mut().filter(|t| !t.done) else {
            return;
        };
        t.done = true;
        if let Some(digit) = digit_for_event(t.event) {
            let ms =
                (t.total() * 1000 + u64::from(self.clock_rate) / 2) / u64::from(self.clock_rate);
            self.ready.push_back(Digit {
                digit,
                duration_ms: u32::try_from(ms).unwrap_or(u32::MAX),
                timestamp: t.start,
            });
        }
    }
}

/// A duration in clock units, rounded, saturating.
fn units(d: Duration, clock_rate: u32) -> u32 {
    let u = (d.as_nanos() * u128::from(clock_rate) + 500_000_000) / 1_000_000_000;
    u32::try_from(u).unwrap_or(u32::MAX)
}

/// A telephone-event packet for the media session to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPacket {
    /// Marker bit (first packet of an event).
    pub marker: bool,
    /// RTP timestamp: the start of the event (or of its segment).
    pub timestamp: MediaTime,
    /// The event block.
    pub payload: [u8; 4],
}

impl EventPacket {
    /// The RTP packet, with the session's payload type, sequence number and
    /// SSRC.
    pub fn rtp(&self, payload_type: u8, seq: SeqNo, ssrc: Ssrc) -> RtpPacket<'_> {
        RtpPacket {
            marker: self.marker,
            payload_type,
            seq,
            timestamp: self.timestamp,
            ssrc,
            payload: &self.payload,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Queued {
    event: u8,
    /// Total duration in clock units (at least one tick).
    units: u64,
    volume: u8,
}

#[derive(Debug, Clone, Copy)]
struct Playing {
    ev: Queued,
    /// Event start (first tick's media time).
    start: MediaTime,
    /// Timestamp of the current segment.
    segment: MediaTime,
    /// Clock units in the finished segments.
    before: u64,
    /// The next packet is the event's first.
    first: bool,
    /// End packets still to send, with their duration field.
    ending: Option<(u8, u16)>,
}

/// Generates RFC 4733 event packets on the media session's 20 ms ticks (see
/// the module documentation).
#[derive(Debug, Clone)]
pub struct DtmfSender {
    payload_type: u8,
    clock_rate: u32,
    /// Clock units per 20 ms tick.
    step: u32,
    playing: Option<Playing>,
    queue: VecDeque<Queued>,
}

impl DtmfSender {
    /// `payload_type` and `clock_rate` of the negotiated telephone-event.
    pub fn new(payload_type: u8, clock_rate: u32) -> DtmfSender {
        let clock_rate = clock_rate.max(50);
        DtmfSender {
            payload_type,
            clock_rate,
            step: clock_rate / 50,
            playing: None,
            queue: VecDeque::new(),
        }
    }

    /// The telephone-event payload type to put in the RTP header.
    pub fn payload_type(&self) -> u8 {
        self.payload_type
    }

    /// Queues a digit of `duration` (rounded to clock units, at least one
    /// 20 ms tick) at `volume` -dBm0 (10 is typical). It starts on the next
    /// tick, or after the digits before it.
    pub fn start(&mut self, digit: char, duration: Duration, volume: u8) -> Result<(), DtmfError> {
        let event = event_for_digit(digit).ok_or(DtmfError::UnknownDigit(digit))?;
        if volume > MAX_VOLUME {
            return Err(DtmfError::Volume(volume));
        }
        if duration.is_zero() || duration > MAX_EVENT_DURATION {
            return Err(DtmfError::Duration(duration));
        }
        if self.queue.len() >= MAX_QUEUED {
            return Err(DtmfError::QueueFull(self.queue.len()));
        }
        let units = u64::from(units(duration, self.clock_rate).max(self.step));
        self.queue.push_back(Queued {
            event,
            units,
            volume,
        });
        Ok(())
    }

    /// An event is playing or queued: the session should call
    /// [`DtmfSender::next_packet`] on this tick instead of sending audio.
    pub fn is_active(&self) -> bool {
        self.playing.is_some() || !self.queue.is_empty()
    }

    /// Drops the queued digits; the one playing finishes normally.
    pub fn clear_queue(&mut self) {
        self.queue.clear();
    }

    /// The packet for the tick whose media time is `now_ts` (the timestamp
    /// an audio packet of this tick would carry). `None` when idle.
    pub fn next_packet(&mut self, now_ts: MediaTime) -> Option<EventPacket> {
        if self.playing.is_none() {
            let ev = self.queue.pop_front()?;
            self.playing = Some(Playing {
                ev,
                start: now_ts,
                segment: now_ts,
                before: 0,
                first: true,
                ending: None,
            });
        }
        let p = self.playing.as_mut()?;
        let ev = p.ev;
        let block = |end: bool, duration: u16| TelephoneEvent {
            event: ev.event,
            end,
            volume: ev.volume,
            duration,
        };
        if let Some((left, duration)) = p.ending {
            let pkt = EventPacket {
                marker: false,
                timestamp: p.segment,
                payload: block(true, duration).to_bytes(),
            };
            if left <= 1 {
                self.playing = None;
            } else {
                p.ending = Some((left - 1, duration));
            }
            return Some(pkt);
        }
        let marker = std::mem::take(&mut p.first);
        // Through the end of this tick's 20 ms.
        let elapsed = p.start.delta(now_ts).max(0) as u64 + u64::from(self.step);
        let in_segment = elapsed.saturating_sub(p.before);
        let left_in_event = ev.units - p.before;
        if in_segment >= u64::from(SEGMENT) && left_in_event > u64::from(SEGMENT) {
            // Close this segment (no E bit); the next starts 0xFFFF later.
            let pkt = EventPacket {
                marker,
                timestamp: p.segment,
                payload: block(false, SEGMENT as u16).to_bytes(),
            };
            p.segment = p.segment.advance(SEGMENT);
            p.before += u64::from(SEGMENT);
            return Some(pkt);
        }
        if elapsed >= ev.units {
            let duration = left_in_event as u16;
            let pkt = EventPacket {
                marker,
                timestamp: p.segment,
                payload: block(true, duration).to_bytes(),
            };
            p.ending = Some((END_COPIES - 1, duration));
            return Some(pkt);
        }
        Some(EventPacket {
            marker,
            timestamp: p.segment,
            payload: block(false, in_segment as u16).to_bytes(),
        })
    }
}

/// The digit (and duration in ms, if given) of a SIP INFO body:
/// `application/dtmf-relay` (`Signal=5\r\nDuration=160\r\n`; keys in any
/// case, whitespace anywhere, `\n` or `\r\n` lines) or `application/dtmf`
/// (`5`). The signal may also be an event code 10-16 (`Signal=11` is `#`)
/// or `!` (flash, as `'F'`); letters are returned upper case. `None` for
/// other content types and anything unparsable.
pub fn parse_dtmf_info(content_type: &str, body: &[u8]) -> Option<(char, Option<u32>)> {
    let mime = content_type.split(';').next()?.trim();
    let body = std::str::from_utf8(body).ok()?;
    if mime.eq_ignore_ascii_case("application/dtmf-relay") {
        let mut signal = None;
        let mut duration = None;
        for line in body.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let (key, value) = (key.trim(), value.trim());
            if key.eq_ignore_ascii_case("signal") {
                signal = Some(parse_signal(value)?);
            } else if key.eq_ignore_ascii_case("duration") {
                duration = value.parse::<u32>().ok();
            }
        }
        Some((signal?, duration))
    } else if mime.eq_ignore_ascii_case("application/dtmf") {
        Some((parse_signal(body.trim())?, None))
    } else {
        None
    }
}

fn parse_signal(s: &str) -> Option<char> {
    let mut chars = s.chars();
    let (c, rest) = (chars.next()?, chars.as_str());
    if rest.is_empty() {
        if c == '!' {
            return Some('F');
        }
        return event_for_digit(c).and_then(digit_for_event);
    }
    match s.parse::<u8>() {
        Ok(code @ 10..=16) => digit_for_event(code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: u8, end: bool, duration: u16) -> [u8; 4] {
        TelephoneEvent {
            event,
            end,
            volume: 10,
            duration,
        }
        .to_bytes()
    }

    /// Feeds `(ts, marker, payload)` packets, collecting every digit.
    fn feed(rx: &mut DtmfReceiver, pkts: &[(u32, bool, [u8; 4])]) -> Vec<Digit> {
        let mut out = Vec::new();
        for (ts, m, p) in pkts {
            out.extend(rx.handle(MediaTime(*ts), *m, p));
            out.extend(std::iter::from_fn(|| rx.poll_digit()));
        }
        out
    }

    /// A well-behaved 8 kHz event: start at `ts`, updates every 160, three
    /// end packets with `total` duration.
    fn event_packets(ts: u32, code: u8, total: u16) -> Vec<(u32, bool, [u8; 4])> {
        let mut v = vec![(ts, true, ev(code, false, 160))];
        let mut d = 320;
        while d < total {
            v.push((ts, false, ev(code, false, d)));
            d += 160;
        }
        for _ in 0..3 {
            v.push((ts, false, ev(code, true, total)));
        }
        v
    }

    #[test]
    fn event_block_round_trip_and_layout() {
        let e = TelephoneEvent {
            event: 11,
            end: true,
            volume: 10,
            duration: 0x0320,
        };
        assert_eq!(e.to_bytes(), [11, 0x8a, 0x03, 0x20]);
        assert_eq!(TelephoneEvent::parse(&e.to_bytes()), Ok(e));
        // The R bit is ignored on input and volume masked on output.
        assert_eq!(TelephoneEvent::parse(&[1, 0x4a, 0, 0]).unwrap().volume, 10);
        let loud = TelephoneEvent { volume: 0xff, ..e };
        assert_eq!(loud.to_bytes()[1], 0xbf);
        let mut two = e.to_bytes().to_vec();
        TelephoneEvent { event: 3, ..e }.write(&mut two);
        let all: Vec<_> = TelephoneEvent::parse_all(&two).unwrap().collect();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].event, 3);
        for bad in [&[][..], &[1, 2, 3], &[1, 2, 3, 4, 5]] {
            assert_eq!(
                TelephoneEvent::parse(bad),
                Err(DtmfError::PayloadLength(bad.len()))
            );
        }
    }

    #[test]
    fn digit_mapping() {
        let all = "0123456789*#ABCDF";
        for (code, c) in all.chars().enumerate() {
            assert_eq!(digit_for_event(code as u8), Some(c));
            assert_eq!(event_for_digit(c), Some(code as u8));
        }
        assert_eq!(event_for_digit('b'), Some(13));
        assert_eq!(digit_for_event(17), None);
        assert_eq!(digit_for_event(255), None);
        assert_eq!(event_for_digit('E'), None);
        assert_eq!(event_for_digit('x'), None);
    }

    #[test]
    fn three_end_packets_give_one_digit() {
        let mut rx = DtmfReceiver::new(8000);
        let pkts = event_packets(1000, 5, 800);
        let mut digits = Vec::new();
        for (i, (ts, m, p)) in pkts.iter().enumerate() {
            let d = rx.handle(MediaTime(*ts), *m, p);
            // Reported on the first end packet, nothing before or after.
            assert_eq!(d.is_some(), i == pkts.len() - 3, "packet {i}");
            digits.extend(d);
        }
        assert_eq!(
            digits,
            [Digit {
                digit: '5',
                duration_ms: 100,
                timestamp: MediaTime(1000)
            }]
        );
        assert!(!rx.in_progress());
        // Late duplicates (even much later) and a flush add nothing.
        assert!(feed(&mut rx, &pkts).is_empty());
        assert_eq!(rx.flush(), None);
        assert_eq!(rx.handle_timeout(MediaTime(100_000)), None);
    }

    #[test]
    fn retransmitted_start_is_not_a_new_digit() {
        let mut rx = DtmfReceiver::new(8000);
        let mut pkts = vec![(50, true, ev(1, false, 160)), (50, true, ev(1, false, 160))];
        pkts.push((50, true, ev(1, false, 160)));
        pkts.push((50, false, ev(1, false, 320)));
        pkts.push((50, true, ev(1, false, 160))); // reordered retransmission
        pkts.extend([(50, false, ev(1, true, 480)); 3]);
        let d = feed(&mut rx, &pkts);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].digit, '1');
        assert_eq!(d[0].duration_ms, 60);
    }

    #[test]
    fn end_alone_is_reported() {
        // Start and updates lost; only the end packets came through.
        let mut rx = DtmfReceiver::new(8000);
        let d = feed(&mut rx, &[(7, false, ev(11, true, 1600)); 3]);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].digit, d[0].duration_ms), ('#', 200));
    }

    #[test]
    fn lost_end_reported_by_next_event() {
        let mut rx = DtmfReceiver::new(8000);
        let mut pkts = event_packets(0, 3, 800);
        pkts.truncate(pkts.len() - 3); // all end packets lost
        let mut d = feed(&mut rx, &pkts);
        assert!(d.is_empty());
        assert!(rx.in_progress());
        // The next event's start reports the previous one.
        d = feed(&mut rx, &event_packets(2400, 4, 640));
        let got: Vec<_> = d.iter().map(|d| (d.digit, d.duration_ms)).collect();
        assert_eq!(got, [('3', 80), ('4', 80)]);
        assert_eq!(d[0].timestamp, MediaTime(0));
        assert_eq!(d[1].timestamp, MediaTime(2400));
    }

    #[test]
    fn lost_end_reported_on_next_events_end_packet() {
        // Both the previous event's end and the next event's start were lost:
        // one packet completes two digits; none is lost.
        let mut rx = DtmfReceiver::new(8000);
        assert_eq!(rx.handle(MediaTime(0), true, &ev(7, false, 160)), None);
        let first = rx.handle(MediaTime(4000), false, &ev(8, true, 800));
        assert_eq!(first.map(|d| d.digit), Some('7'));
        assert_eq!(rx.poll_digit().map(|d| d.digit), Some('8'));
        assert_eq!(rx.poll_digit(), None);
        // Without poll_digit the second digit comes out of the next call.
        let mut rx = DtmfReceiver::new(8000);
        rx.handle(MediaTime(0), true, &ev(7, false, 160));
        assert_eq!(
            rx.handle(MediaTime(4000), false, &ev(8, true, 800))
                .map(|d| d.digit),
            Some('7')
        );
        assert_eq!(
            rx.handle(MediaTime(4000), false, &ev(8, true, 800))
                .map(|d| d.digit),
            Some('8')
        );
        assert_eq!(rx.handle(MediaTime(4000), false, &ev(8, true, 800)), None);
    }

    #[test]
    fn lost_end_reported_by_timeout_or_flush() {
        let mut rx = DtmfReceiver::new(8000);
        feed(
            &mut rx,
            &[
                (1000, true, ev(9, false, 160)),
                (1000, false, ev(9, false, 320)),
            ],
        );
        // Known end at 1320; 250 ms = 2000 units of slack.
        assert_eq!(rx.handle_timeout(MediaTime(1320 + 2000)), None);
        let d = rx.handle_timeout(MediaTime(1320 + 2001)).unwrap();
        assert_eq!(
            (d.digit, d.duration_ms, d.timestamp),
            ('9', 40, MediaTime(1000))
        );
        // Its late end packets are duplicates now.
        assert!(feed(&mut rx, &[(1000, false, ev(9, true, 800)); 3]).is_empty());

        rx.set_end_timeout(Duration::from_millis(50));
        feed(&mut rx, &[(9000, true, ev(0, false, 160))]);
        assert_eq!(rx.handle_timeout(MediaTime(9000 + 160 + 400)), None);
        assert_eq!(
            rx.handle_timeout(MediaTime(9000 + 160 + 401))
                .map(|d| d.digit),
            Some('0')
        );

        feed(&mut rx, &[(20_000, true, ev(10, false, 160))]);
        assert_eq!(rx.flush().map(|d| d.digit), Some('*'));
        assert_eq!(rx.flush(), None);
        assert!(feed(&mut rx, &[(20_000, false, ev(10, true, 480))]).is_empty());
    }

    #[test]
    fn two_quick_identical_digits_are_two_events() {
        let mut rx = DtmfReceiver::new(8000);
        let mut pkts = event_packets(10_000, 5, 640);
        pkts.extend(event_packets(10_000 + 640 + 480, 5, 640));
        let d = feed(&mut rx, &pkts);
        assert_eq!(d.len(), 2);
        assert!(d.iter().all(|d| d.digit == '5'));
        assert_eq!(d[1].timestamp, MediaTime(11_120));
        // A late end packet of the first one after the second started.
        let mut rx = DtmfReceiver::new(8000);
        let mut pkts = event_packets(10_000, 5, 640);
        let late = pkts.pop().unwrap();
        pkts.extend(event_packets(11_120, 5, 640));
        pkts.push(late);
        assert_eq!(feed(&mut rx, &pkts).len(), 2);
    }

    #[test]
    fn timestamps_wrap() {
        let mut rx = DtmfReceiver::new(8000);
        let mut pkts = event_packets(u32::MAX - 100, 1, 480);
        pkts.extend(event_packets(400, 2, 480));
        let d: Vec<_> = feed(&mut rx, &pkts).iter().map(|d| d.digit).collect();
        assert_eq!(d, ['1', '2']);
    }

    #[test]
    fn unknown_older_timestamp_is_a_new_event() {
        // Far back (a sender that reset its timestamps) or a little (the
        // sip-tester captures played in digit order: '0' is at 17632, '1' at
        // 13280).
        for back in [999_000, 4_352] {
            let mut rx = DtmfReceiver::new(8000);
            let mut pkts = event_packets(1_000_000, 1, 480);
            pkts.extend(event_packets(1_000_000 - back, 2, 480));
            let d: Vec<_> = feed(&mut rx, &pkts).iter().map(|d| d.digit).collect();
            assert_eq!(d, ['1', '2']);
        }
        // Late packets of any of the last 16 events are still duplicates.
        let mut rx = DtmfReceiver::new(8000);
        let mut pkts = Vec::new();
        for k in 0..16u32 {
            pkts.extend(event_packets(k * 1000, (k % 10) as u8, 480));
        }
        assert_eq!(feed(&mut rx, &pkts).len(), 16);
        pkts.reverse();
        assert!(feed(&mut rx, &pkts).is_empty());
    }

    #[test]
    fn long_segmented_event_is_one_digit() {
        // 20 s of '#' at 8 kHz: segments of 0xFFFF at ts, ts+0xFFFF, ...
        let mut rx = DtmfReceiver::new(8000);
        let total = 160_000u32;
        let base = 5_000u32;
        let mut digits = Vec::new();
        let mut t = 0u32;
        let mut seg = 0u32;
        while t < total {
            t = (t + 160).min(total);
            if t - seg > SEGMENT {
                // Segment end packet sent 3 times (as some senders do).
                for _ in 0..3 {
                    digits.extend(rx.handle(MediaTime(base + seg), false, &ev(11, false, 0xFFFF)));
                }
                seg += SEGMENT;
            }
            let end = t == total;
            for _ in 0..if end { 3 } else { 1 } {
                let p = ev(11, end, (t - seg) as u16);
                digits.extend(rx.handle(MediaTime(base + seg), t == 160, &p));
                if seg > 0 {
                    // A stale packet of the first segment.
                    digits.extend(rx.handle(MediaTime(base), false, &ev(11, false, 0xFFFF)));
                }
            }
            // Audio keeps flowing; no timeout fires while updates arrive.
            digits.extend(rx.handle_timeout(MediaTime(base + t + 160)));
        }
        assert_eq!(digits.len(), 1, "{digits:?}");
        assert_eq!(digits[0].digit, '#');
        assert_eq!(digits[0].duration_ms, 20_000);
        assert_eq!(digits[0].timestamp, MediaTime(base));
    }

    #[test]
    fn long_event_with_lost_segment_end_and_wrapping_field() {
        let mut rx = DtmfReceiver::new(8000);
        // Segment 1 reaches 0xFF00 (its last packets lost), segment 2 ends.
        let mut d = feed(
            &mut rx,
            &[
                (0, true, ev(2, false, 160)),
                (0, false, ev(2, false, 0xFF00)),
            ],
        );
        d.extend(feed(&mut rx, &[(SEGMENT, false, ev(2, true, 8000)); 3]));
        assert_eq!(d.len(), 1);
        // (65535 + 8000) / 8 kHz = 9191.875 ms
        assert_eq!(d[0].duration_ms, 9192);
        // A sender that lets the field wrap on one timestamp.
        let mut rx = DtmfReceiver::new(8000);
        let mut pkts = Vec::new();
        for k in 1..=500u32 {
            pkts.push((77, k == 1, ev(4, false, (k * 160) as u16)));
        }
        pkts.extend([(77, false, ev(4, true, (500 * 160u32 + 160) as u16)); 3]);
        let d = feed(&mut rx, &pkts);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].duration_ms, 501 * 20);
    }

    #[test]
    fn multiple_events_in_one_payload() {
        let mut rx = DtmfReceiver::new(8000);
        let mut p = ev(1, true, 800).to_vec();
        p.extend_from_slice(&ev(2, false, 320));
        assert_eq!(
            rx.handle(MediaTime(0), true, &p).map(|d| d.digit),
            Some('1')
        );
        assert_eq!(rx.poll_digit(), None);
        // The second event continues on its own at 0 + 800.
        let d = rx.handle(MediaTime(800), false, &ev(2, true, 640)).unwrap();
        assert_eq!((d.digit, d.timestamp), ('2', MediaTime(800)));
        assert_eq!(rx.handle(MediaTime(0), false, &p), None);
    }

    #[test]
    fn garbage_and_unknown_events_are_ignored() {
        let mut rx = DtmfReceiver::new(8000);
        assert_eq!(rx.handle(MediaTime(0), true, &[]), None);
        assert_eq!(rx.handle(MediaTime(0), true, &[1, 2, 3]), None);
        // Event 40 (a tone outside DTMF) ends without a digit.
        assert!(feed(&mut rx, &event_packets(100, 40, 480)).is_empty());
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let p: Vec<u8> = (0..rng.usize(0..13)).map(|_| rng.u8(..)).collect();
            let _ = rx.handle(MediaTime(rng.u32(..)), rng.bool(), &p);
            let _ = rx.handle_timeout(MediaTime(rng.u32(..)));
        }
        let _ = rx.flush();
    }

    /// Ticks the sender from `ts`, 160 units per tick, until idle.
    fn run_sender(tx: &mut DtmfSender, mut ts: u32) -> Vec<(u32, EventPacket)> {
        let mut out = Vec::new();
        while tx.is_active() {
            let p = tx.next_packet(MediaTime(ts)).expect("active sender sends");
            out.push((ts, p));
            ts = ts.wrapping_add(160);
            assert!(out.len() < 10_000);
        }
        assert_eq!(tx.next_packet(MediaTime(ts)), None);
        out
    }

    #[test]
    fn sender_packet_sequence_and_timing() {
        let mut tx = DtmfSender::new(101, 8000);
        assert!(!tx.is_active());
        tx.start('7', Duration::from_millis(100), 10).unwrap();
        assert!(tx.is_active());
        let pkts = run_sender(&mut tx, 4000);
        let fields: Vec<_> = pkts
            .iter()
            .map(|(_, p)| {
                let e = TelephoneEvent::parse(&p.payload).unwrap();
                (p.marker, p.timestamp.0, e.end, e.duration)
            })
            .collect();
        assert_eq!(
            fields,
            [
                (true, 4000, false, 160),
                (false, 4000, false, 320),
                (false, 4000, false, 480),
                (false, 4000, false, 640),
                (false, 4000, true, 800),
                (false, 4000, true, 800),
                (false, 4000, true, 800),
            ]
        );
        let e = TelephoneEvent::parse(&pkts[0].1.payload).unwrap();
        assert_eq!((e.event, e.volume), (7, 10));
        // Into an RTP packet.
        let mut b = Vec::new();
        pkts[0]
            .1
            .rtp(tx.payload_type(), SeqNo(9), Ssrc(1))
            .write(&mut b);
        let rtp = RtpPacket::parse(&b).unwrap();
        assert_eq!(
            (rtp.payload_type, rtp.marker, rtp.timestamp),
            (101, true, MediaTime(4000))
        );
    }

    #[test]
    fn sender_queue_and_receiver_agree() {
        let mut tx = DtmfSender::new(101, 8000);
        for c in "55#".chars() {
            tx.start(c, Duration::from_millis(90), 10).unwrap();
        }
        let pkts = run_sender(&mut tx, 0);
        // 90 ms rounds up to 5 ticks + 2 extra end copies = 7 ticks each.
        assert_eq!(pkts.len(), 21);
        let starts: Vec<_> = pkts
            .iter()
            .filter(|(_, p)| p.marker)
            .map(|(ts, p)| (*ts, p.timestamp.0))
            .collect();
        assert_eq!(starts, [(0, 0), (1120, 1120), (2240, 2240)]);
        let mut rx = DtmfReceiver::new(8000);
        let mut got = Vec::new();
        for (_, p) in &pkts {
            got.extend(rx.handle(p.timestamp, p.marker, &p.payload));
        }
        let got: Vec<_> = got.iter().map(|d| (d.digit, d.duration_ms)).collect();
        assert_eq!(got, [('5', 90), ('5', 90), ('#', 90)]);
    }

    #[test]
    fn sender_follows_skipped_ticks() {
        let mut tx = DtmfSender::new(101, 8000);
        tx.start('1', Duration::from_millis(200), 10).unwrap();
        let p0 = tx.next_packet(MediaTime(0)).unwrap();
        // The session skipped ticks: the duration follows media time.
        let p1 = tx.next_packet(MediaTime(800)).unwrap();
        assert!(p0.marker && !p1.marker);
        assert_eq!(TelephoneEvent::parse(&p1.payload).unwrap().duration, 960);
        let p2 = tx.next_packet(MediaTime(5000)).unwrap();
        let e = TelephoneEvent::parse(&p2.payload).unwrap();
        assert!(e.end);
        assert_eq!(e.duration, 1600);
    }

    #[test]
    fn sender_segments_long_events() {
        let mut tx = DtmfSender::new(96, 48_000);
        tx.start('D', Duration::from_secs(3), 5).unwrap();
        let pkts = run_sender(&mut tx, 1_000);
        let mut segments: Vec<u32> = pkts.iter().map(|(_, p)| p.timestamp.0).collect();
        segments.dedup();
        assert_eq!(segments, [1_000, 1_000 + SEGMENT, 1_000 + 2 * SEGMENT]);
        assert_eq!(pkts.iter().filter(|(_, p)| p.marker).count(), 1);
        let ends: Vec<_> = pkts
            .iter()
            .map(|(_, p)| TelephoneEvent::parse(&p.payload).unwrap())
            .filter(|e| e.end)
            .collect();
        assert_eq!(ends.len(), 3);
        assert_eq!(u32::from(ends[0].duration), 144_000 - 2 * SEGMENT);
        let mut rx = DtmfReceiver::new(48_000);
        let mut got = Vec::new();
        for (ts, p) in &pkts {
            got.extend(rx.handle(p.timestamp, p.marker, &p.payload));
            got.extend(rx.handle_timeout(MediaTime(*ts)));
        }
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].digit, got[0].duration_ms), ('D', 3000));
    }

    #[test]
    fn sender_rejects_bad_input() {
        let mut tx = DtmfSender::new(101, 8000);
        let d = Duration::from_millis(100);
        assert_eq!(tx.start('x', d, 10), Err(DtmfError::UnknownDigit('x')));
        assert_eq!(tx.start('1', d, 64), Err(DtmfError::Volume(64)));
        assert_eq!(
            tx.start('1', Duration::ZERO, 10),
            Err(DtmfError::Duration(Duration::ZERO))
        );
        let long = Duration::from_secs(61);
        assert_eq!(tx.start('1', long, 10), Err(DtmfError::Duration(long)));
        for _ in 0..MAX_QUEUED {
            tx.start('1', d, 10).unwrap();
        }
        assert_eq!(tx.start('1', d, 10), Err(DtmfError::QueueFull(MAX_QUEUED)));
        tx.clear_queue();
        assert!(!tx.is_active());
        // Very short digits last one tick.
        tx.start('2', Duration::from_millis(1), 10).unwrap();
        let pkts = run_sender(&mut tx, 0);
        assert_eq!(pkts.len(), 3);
        assert!(pkts[0].1.marker);
        assert_eq!(
            TelephoneEvent::parse(&pkts[0].1.payload).unwrap().duration,
            160
        );
    }

    #[test]
    fn info_bodies() {
        let relay = "application/dtmf-relay";
        assert_eq!(
            parse_dtmf_info(relay, b"Signal=5\r\nDuration=160\r\n"),
            Some(('5', Some(160)))
        );
        assert_eq!(
            parse_dtmf_info(relay, b"signal = #\nDURATION= 250"),
            Some(('#', Some(250)))
        );
        assert_eq!(parse_dtmf_info(relay, b"Signal= *\r\n"), Some(('*', None)));
        assert_eq!(
            parse_dtmf_info(relay, b"  Signal=d\r\nDuration=abc\r\n"),
            Some(('D', None))
        );
        assert_eq!(
            parse_dtmf_info(relay, b"Signal=11\r\nDuration=100"),
            Some(('#', Some(100)))
        );
        assert_eq!(parse_dtmf_info(relay, b"Signal=!"), Some(('F', None)));
        assert_eq!(parse_dtmf_info(relay, b"Signal=16"), Some(('F', None)));
        assert_eq!(
            parse_dtmf_info("Application/DTMF-Relay; charset=utf-8", b"Signal=1\r\n"),
            Some(('1', None))
        );
        assert_eq!(parse_dtmf_info("application/dtmf", b"7"), Some(('7', None)));
        assert_eq!(
            parse_dtmf_info("application/dtmf", b" 7\r\n"),
            Some(('7', None))
        );
        assert_eq!(parse_dtmf_info("APPLICATION/DTMF", b"#"), Some(('#', None)));
        // Garbage.
        for (ct, body) in [
            (relay, &b""[..]),
            (relay, b"Duration=160\r\n"),
            (relay, b"Signal=\r\n"),
            (relay, b"Signal=12345"),
            (relay, b"Signal=x"),
            (relay, b"Signal=99"),
            (relay, b"Signal=5=5"),
            (relay, b"\xff\xfe"),
            ("application/dtmf", b"55"),
            ("application/dtmf", b""),
            ("application/sdp", b"Signal=5"),
            ("text/plain", b"5"),
            ("", b"5"),
        ] {
            assert_eq!(parse_dtmf_info(ct, body), None, "{ct} {body:?}");
        }
    }
}
