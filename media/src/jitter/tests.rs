//! The jitter buffer on virtual time, as scripts: each test is a list of
//! events (`put`, `cn`, `pop`, checks) with the expected outcome of each,
//! at `base + n ms`.
//!
//! Timestamps are written in frames from the script's `ts0` (fractions for
//! 10 ms packets); payloads carry their sequence number so that
//! `pop(..).packet(seq)` and `pop(..).fec(seq)` check what came out.

use std::collections::HashMap;
use std::time::Duration;

use super::*;

/// Timestamp units per frame in the scripts (8 kHz clock).
const F: u32 = 160;
const SSRC: u32 = 0x5151_0001;

/// What a `pop` step expects.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    Packet(u16),
    /// `Lost { next: None }`.
    Lost,
    /// `Lost { next: Some(payload of seq) }`.
    Fec(u16),
    Silence,
    Waiting,
}

#[derive(Debug, Clone)]
enum Step {
    Put {
        seq: u16,
        ts: f64,
        at: u64,
        marker: bool,
        frames: f64,
        want: PutOutcome,
    },
    Cn {
        seq: u16,
        ts: f64,
        at: u64,
    },
    Pop {
        at: u64,
        want: Want,
    },
    /// Later puts come from this SSRC.
    Ssrc(u32),
    Depth(usize),
    Target(usize),
    Check(&'static str, fn(&JitterStats) -> bool),
}

/// `put(seq, ts_frames, arrival_ms)`, expected `Stored` unless modified.
fn put(seq: u16, ts: impl Into<f64>, at: u64) -> Step {
    Step::Put {
        seq,
        ts: ts.into(),
        at,
        marker: false,
        frames: 1.0,
        want: PutOutcome::Stored,
    }
}

/// A put expected to be dropped as late.
fn late(seq: u16, ts: impl Into<f64>, at: u64) -> Step {
    put(seq, ts, at).expect(PutOutcome::Late)
}

/// A put expected to be refused as a duplicate.
fn duplicate(seq: u16, ts: impl Into<f64>, at: u64) -> Step {
    put(seq, ts, at).expect(PutOutcome::Duplicate)
}

/// A put whose timestamp jumps so that the stream resynchronises.
fn ts_jump(seq: u16, ts: impl Into<f64>, at: u64) -> Step {
    put(seq, ts, at).expect(PutOutcome::Resynced)
}

/// Switches the SSRC; the next put is expected to resync.
fn ssrc_change(ssrc: u32) -> Step {
    Step::Ssrc(ssrc)
}

/// A comfort-noise packet.
fn cn(seq: u16, ts: impl Into<f64>, at: u64) -> Step {
    Step::Cn {
        seq,
        ts: ts.into(),
        at,
    }
}

/// A pop at `at` ms; say what it must return with `.packet(seq)` etc.
fn pop(at: u64) -> Step {
    Step::Pop {
        at,
        want: Want::Waiting,
    }
}

fn depth(frames: usize) -> Step {
    Step::Depth(frames)
}

fn target(frames: usize) -> Step {
    Step::Target(frames)
}

fn check(what: &'static str, f: fn(&JitterStats) -> bool) -> Step {
    Step::Check(what, f)
}

impl Step {
    fn expect(mut self, outcome: PutOutcome) -> Self {
        if let Step::Put { want, .. } = &mut self {
            *want = outcome;
        }
        self
    }
    fn resynced(self) -> Self {
        self.expect(PutOutcome::Resynced)
    }
    fn discarded(self) -> Self {
        self.expect(PutOutcome::Discarded)
    }
    fn marker(mut self) -> Self {
        if let Step::Put { marker, .. } = &mut self {
            *marker = true;
        }
        self
    }
    /// Packet duration in frames (0 = "unknown", taken as one frame).
    fn frames(mut self, n: f64) -> Self {
        if let Step::Put { frames, .. } = &mut self {
            *frames = n;
        }
        self
    }
    fn want(mut self, w: Want) -> Self {
        if let Step::Pop { want, .. } = &mut self {
            *want = w;
        }
        self
    }
    fn packet(self, seq: u16) -> Self {
        self.want(Want::Packet(seq))
    }
    fn lost(self) -> Self {
        self.want(Want::Lost)
    }
    fn fec(self, seq: u16) -> Self {
        self.want(Want::Fec(seq))
    }
    fn silence(self) -> Self {
        self.want(Want::Silence)
    }
    fn waiting(self) -> Self {
        self.want(Want::Waiting)
    }
}

fn payload(seq: u16) -> Vec<u8> {
    let [a, b] = seq.to_be_bytes();
    vec![a, b, 0xA5]
}

fn seq_of(payload: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*payload.first()?, *payload.get(1)?]))
}

struct Script {
    jb: JitterBuffer,
    base: Instant,
    ts0: u32,
    ssrc: u32,
    /// Raw timestamp each sequence number was sent with.
    sent_ts: HashMap<u16, u32>,
    log: Vec<String>,
}

impl Script {
    fn new(config: JitterConfig, policy: Box<dyn DepthPolicy>) -> Self {
        Script {
            jb: JitterBuffer::new(config, policy),
            base: crate::test_epoch(),
            ts0: 1000,
            ssrc: SSRC,
            sent_ts: HashMap::new(),
            log: Vec::new(),
        }
    }

    fn fixed(frames: usize) -> Self {
        Self::new(JitterConfig::default(), Box::new(FixedDepth::new(frames)))
    }

    fn percentile() -> Self {
        Self::new(JitterConfig::default(), Box::new(PercentileDepth::new(10)))
    }

    fn ts0(mut self, ts0: u32) -> Self {
        self.ts0 = ts0;
        self
    }

    fn at(&self, ms: u64) -> Instant {
        self.base + Duration::from_millis(ms)
    }

    fn raw_ts(&self, frames: f64) -> u32 {
        let ticks = (frames * f64::from(F)).round() as i64;
        self.ts0.wrapping_add(ticks as u32)
    }

    fn fail(&self, i: usize, step: &Step, got: &dyn std::fmt::Debug) -> ! {
        panic!(
            "step {i}: {step:?}\n  got {got:?}\n  stats {:?}\ntrace:\n{}",
            self.jb.stats(),
            self.log.join("\n")
        );
    }

    fn run(&mut self, steps: &[Step]) -> &mut Self {
        for (i, step) in steps.iter().enumerate() {
            match *step {
                Step::Put {
                    seq,
                    ts,
                    at,
                    marker,
                    frames,
                    want,
                } => {
                    let raw = self.raw_ts(ts);
                    self.sent_ts.insert(seq, raw);
                    let dur = (frames * f64::from(F)).round() as u32;
                    let got = self.jb.put(
                        self.at(at),
                        Ssrc(self.ssrc),
                        SeqNo(seq),
                        MediaTime(raw),
                        marker,
                        &payload(seq),
                        dur,
                    );
                    self.log.push(format!(
                        "{i:3} @{at}ms put #{seq} ts {ts}{} → {got:?} (depth {}, target {})",
                        if marker { " M" } else { "" },
                        self.jb.depth_frames(),
                        self.jb.target_frames()
                    ));
                    if got != want {
                        self.fail(i, step, &got);
                    }
                }
                Step::Cn { seq, ts, at } => {
                    let raw = self.raw_ts(ts);
                    self.jb.put_comfort_noise(
                        self.at(at),
                        Ssrc(self.ssrc),
                        SeqNo(seq),
                        MediaTime(raw),
                    );
                    self.log.push(format!("{i:3} @{at}ms CN #{seq} ts {ts}"));
                }
                Step::Pop { at, want } => {
                    let got = self.jb.pop(self.at(at));
                    self.log.push(format!(
                        "{i:3} @{at}ms pop → {} (depth {}, target {})",
                        describe(&got),
                        self.jb.depth_frames(),
                        self.jb.target_frames()
                    ));
                    let ok = match (&got, want) {
                        (Pop::Packet(p), Want::Packet(s)) => {
                            seq_of(&p.payload) == Some(s)
                                && p.seq == SeqNo(s)
                                && self.sent_ts.get(&s) == Some(&p.timestamp.0)
                        }
                        (Pop::Lost { next: None }, Want::Lost) => true,
                        (Pop::Lost { next: Some(n) }, Want::Fec(s)) => seq_of(n) == Some(s),
                        (Pop::Silence, Want::Silence) | (Pop::Waiting, Want::Waiting) => true,
                        _ => false,
                    };
                    if !ok {
                        self.fail(i, step, &describe(&got));
                    }
                    if let Pop::Packet(p) = got {
                        self.jb.recycle(p.payload);
                    }
                }
                Step::Ssrc(s) => self.ssrc = s,
                Step::Depth(d) => {
                    let got = self.jb.depth_frames();
                    if got != d {
                        self.fail(i, step, &got);
                    }
                }
                Step::Target(t) => {
                    let got = self.jb.target_frames();
                    if got != t {
                        self.fail(i, step, &got);
                    }
                }
                Step::Check(what, f) => {
                    let s = self.jb.stats();
                    if !f(&s) {
                        self.fail(i, step, &format!("not {what}: {s:?}"));
                    }
                }
            }
        }
        self
    }
}

fn describe(p: &Pop) -> String {
    match p {
        Pop::Packet(b) => format!(
            "Packet(#{} ts {} dur {}{})",
            b.seq.0,
            b.timestamp.0,
            b.duration_ts,
            if b.marker { " M" } else { "" }
        ),
        Pop::Lost { next: None } => "Lost".into(),
        Pop::Lost { next: Some(n) } => format!("Lost(next #{:?})", seq_of(n)),
        Pop::Silence => "Silence".into(),
        Pop::Waiting => "Waiting".into(),
    }
}

// ---------------------------------------------------------------- scripts

#[test]
fn in_order_prefill_then_play() {
    Script::fixed(2).run(&[
        target(2),
        pop(0).waiting(),
        put(0, 0, 0),
        pop(10).waiting(),
        depth(1),
        put(1, 1, 20),
        depth(2),
        pop(30).packet(0),
        put(2, 2, 40),
        pop(50).packet(1),
        put(3, 3, 60),
        pop(70).packet(2),
        depth(1),
        put(4, 4, 80),
        pop(90).packet(3),
        pop(110).packet(4),
        pop(130).lost(),
        check("4 received, 1 underrun", |s| {
            s.received == 5 && s.lost_frames == 1 && s.underrun_frames == 1 && s.late == 0
        }),
    ]);
}

#[test]
fn a_talkspurt_shorter_than_the_target_still_plays() {
    // One 20 ms packet and nothing after it: after `target` pops it has
    // waited the target latency and plays.
    Script::fixed(3).run(&[
        pop(0).waiting(),
        put(0, 0, 5),
        pop(10).waiting(),
        pop(30).waiting(),
        pop(50).packet(0),
        pop(70).lost(),
    ]);
}

#[test]
fn reorder_within_depth_is_stored_in_place() {
    Script::fixed(3).run(&[
        put(0, 0, 0),
        put(2, 2, 20),
        pop(30).packet(0), // 0..3 spans 3 frames: prefilled although #1 is missing
        put(1, 1, 35),
        put(4, 4, 40),
        put(3, 3, 45),
        pop(50).packet(1),
        pop(70).packet(2),
        pop(90).packet(3),
        pop(110).packet(4),
        check("no loss", |s| s.lost_frames == 0 && s.late == 0),
    ]);
}

#[test]
fn duplicates_stored_or_played() {
    Script::fixed(2).run(&[
        put(0, 0, 0),
        duplicate(0, 0, 5),
        put(1, 1, 20),
        pop(30).packet(0),
        duplicate(0, 0, 31), // already played
        duplicate(1, 1, 32), // stored
        put(2, 2, 40),
        pop(50).packet(1),
        pop(70).packet(2),
        check("3 duplicates", |s| s.duplicates == 3),
    ]);
}

#[test]
fn late_packet_is_dropped_and_counted() {
    Script::fixed(1).run(&[
        put(0, 0, 0),
        pop(10).packet(0),
        pop(30).lost(), // #1 not here: underrun, play position moves on
        late(1, 1, 35),
        put(2, 2, 40),
        pop(50).packet(2),
        check("1 late, 1 lost", |s| {
            s.late == 1 && s.lost_frames == 1 && s.underrun_frames == 1
        }),
    ]);
}

#[test]
fn sequence_wraps_around() {
    Script::fixed(2).run(&[
        put(65534, 0, 0),
        put(0, 2, 20), // arrives before 65535
        pop(30).packet(65534),
        put(65535, 1, 25),
        put(1, 3, 40),
        pop(50).packet(65535),
        duplicate(65535, 1, 55),
        pop(70).packet(0),
        put(2, 4, 75),
        pop(90).packet(1),
        pop(110).packet(2),
        check("no loss, no resync", |s| {
            s.lost_frames == 0 && s.resyncs == 0
        }),
    ]);
}

#[test]
fn timestamp_wraps_around() {
    // ts0 = 2^32 − 320: frame 2 is at timestamp 0.
    Script::fixed(2).ts0(u32::MAX - 319).run(&[
        put(10, 0, 0),
        put(12, 2, 20),
        pop(30).packet(10),
        put(11, 1, 25),
        put(13, 3, 40),
        pop(50).packet(11),
        pop(70).packet(12),
        pop(90).packet(13),
        check("no loss, no resync", |s| {
            s.lost_frames == 0 && s.resyncs == 0
        }),
    ]);
}

#[test]
fn talkspurt_after_silence_keeps_timeline_and_prefills() {
    // 1.9 s of DTX silence, the timestamp advances through it and the first
    // packet after it carries the marker: no resync; the play position moves
    // to it and the buffer prefills again.
    Script::fixed(2).run(&[
        put(0, 0, 0),
        put(1, 1, 20),
        pop(30).packet(0),
        pop(50).packet(1),
        pop(70).lost(),
        pop(90).lost(),
        put(2, 100, 2000).marker(),
        pop(2010).waiting(),
        put(3, 101, 2020),
        pop(2030).packet(2),
        put(4, 102, 2040),
        pop(2050).packet(3),
        check("no resync", |s| s.resyncs == 0),
    ]);
}

#[test]
fn talkspurt_with_timestamp_behind_play_position_is_not_late() {
    // A sender that does not advance its timestamp during silence: the
    // marked packet is older than the play position, which follows it.
    Script::fixed(1).run(&[
        put(0, 0, 0),
        pop(10).packet(0),
        put(1, 1, 20),
        pop(30).packet(1),
        pop(50).lost(),
        pop(70).lost(),
        pop(90).lost(),
        put(2, 2, 400).marker(),
        pop(410).packet(2),
        put(3, 3, 420),
        pop(430).packet(3),
        check("nothing late", |s| s.late == 0 && s.resyncs == 0),
    ]);
}

#[test]
fn short_silence_before_marker_is_silence_not_loss() {
    // The marked packet arrives while the previous talkspurt still plays:
    // the gap in front of it is silence on purpose (RFC 3551 §4.1).
    Script::fixed(4).run(&[
        put(0, 0, 0),
        put(1, 1, 20),
        put(2, 2, 40),
        put(3, 3, 60),
        pop(70).packet(0),
        put(4, 4, 80),
        pop(90).packet(1),
        put(5, 5, 100),
        pop(110).packet(2),
        pop(130).packet(3),
        pop(150).packet(4),
        put(6, 8, 160).marker(), // frames 6 and 7 are silence
        pop(170).packet(5),
        put(7, 9, 180),
        pop(190).silence(),
        put(8, 10, 200),
        pop(210).silence(),
        pop(230).packet(6),
        pop(250).packet(7),
        check("no loss", |s| s.lost_frames == 0 && s.resyncs == 0),
    ]);
}

#[test]
fn gap_is_silence_only_when_no_sequence_number_is_missing() {
    Script::fixed(4).run(&[
        put(0, 0, 0),
        put(1, 1, 20),
        put(2, 2, 40),
        put(3, 3, 60),
        pop(70).packet(0),
        put(4, 4, 80),
        pop(90).packet(1),
        cn(5, 5, 100),
        pop(110).packet(2),
        pop(130).packet(3),
        // Frames 5–6 have no packet, but only the CN's sequence number lies
        // between #4 and #6: the peer was silent (no marker needed).
        put(6, 7, 140),
        pop(150).packet(4),
        put(7, 8, 160),
        pop(170).silence(),
        put(8, 9, 180),
        pop(190).silence(),
        put(9, 10, 200),
        pop(210).packet(6),
        pop(230).packet(7),
        // #10 (frame 11) is missing: the gap before the marked #11 is loss.
        put(11, 12, 240).marker(),
        pop(250).packet(8),
        pop(270).packet(9),
        pop(290).fec(11),
        pop(310).packet(11),
        check("one frame lost", |s| {
            s.lost_frames == 1 && s.skipped_frames == 0
        }),
    ]);
}

#[test]
fn long_gap_is_skipped_down_to_target() {
    // Marked packet 15 frames ahead while the buffer still holds media:
    // the silence is skipped down to the target depth, no packet dropped.
    Script::fixed(4).run(&[
        put(0, 0, 0),
        put(1, 1, 20),
        put(2, 2, 40),
        put(3, 3, 60),
        pop(70).packet(0),
        put(4, 4, 80),
        pop(90).packet(1),
        put(5, 5, 100),
        pop(110).packet(2),
        pop(130).packet(3),
        pop(150).packet(4),
        put(6, 20, 160).marker(),
        pop(170).packet(5),
        // depth is 21 − 6 = 15 frames: skip 11 of the 14 silent ones
        pop(190).silence(),
        depth(3),
        pop(210).silence(),
        pop(230).silence(),
        pop(250).packet(6),
        check("11 skipped, none dropped", |s| {
            s.skipped_frames == 11 && s.dropped_for_depth == 0 && s.lost_frames == 0
        }),
    ]);
}

#[test]
fn unmarked_jump_within_a_second_is_a_gap() {
    // The sender skipped 160 ms of timestamps without a marker: a gap,
    // skipped down to the target at once.
    Script::fixed(2).run(&[
        put(0, 0, 0),
        put(1, 1, 20),
        pop(30).packet(0),
        put(2, 10, 40),
        pop(50).packet(1),
        put(3, 11, 60),
        pop(70).packet(2),
        pop(90).packet(3),
        check("skipped, no resync", |s| {
            s.resyncs == 0 && s.skipped_frames == 8 && s.lost_frames == 0
        }),
    ]);
}

#[test]
fn timestamp_jump_without_marker_resyncs() {
    Script::fixed(2).run(&[
        put(0, 0, 0),
        put(1, 1, 20),
        pop(30).packet(0),
        put(2, 2, 40),
        ts_jump(3, 200, 60), // 4 s ahead, no marker
        pop(70).waiting(),   // flushed: #2 is gone, prefilling from #3
        put(4, 201, 80),
        pop(90).packet(3),
        pop(110).packet(4),
        check("1 resync", |s| s.resyncs == 1),
    ]);
}

#[test]
fn timestamp_jump_backward_resyncs() {
    Script::fixed(1).run(&[
        put(0, 100, 0),
        pop(10).packet(0),
        put(1, 101, 20),
        ts_jump(2, 50, 40),
        pop(50).packet(2),
        put(3, 51, 60),
        pop(70).packet(3),
        check("1 resync", |s| s.resyncs == 1 && s.late == 0),
    ]);
}

#[test]
fn ssrc_change_resyncs_and_old_ssrc_needs_probation() {
    Script::fixed(2).run(&[
        put(0, 0, 0),
        put(1, 1, 20),
        pop(30).packet(0),
        ssrc_change(0xBEEF),
        put(5000, 7000, 40).resynced(),
        pop(50).waiting(),
        put(5001, 7001, 60),
        pop(70).packet(5000),
        // A straggler of the old SSRC is ignored...
        ssrc_change(SSRC),
        put(2, 2, 75).discarded(),
        ssrc_change(0xBEEF),
        put(5002, 7002, 80),
        pop(90).packet(5001),
        // ...but the old source coming back for good is followed.
        ssrc_change(SSRC),
        put(10, 10, 100).discarded(),
        put(11, 11, 120).resynced(),
        put(12, 12, 140),
        pop(150).packet(11),
        check("2 resyncs", |s| s.resyncs == 2 && s.discarded == 2),
    ]);
}

#[test]
fn comfort_noise_then_silence_then_resume() {
    Script::fixed(2).run(&[
        put(0, 0, 0),
        put(1, 1, 20),
        pop(30).packet(0),
        cn(2, 2, 40),
        pop(50).packet(1),
        // CN: silence, not loss, and no stall however long it lasts.
        pop(70).silence(),
        pop(90).silence(),
        pop(110).silence(),
        pop(130).silence(),
        pop(150).silence(),
        pop(170).silence(),
        pop(190).silence(),
        pop(210).silence(),
        pop(230).silence(),
        pop(250).silence(),
        pop(270).silence(),
        pop(290).silence(),
        // Audio resumes 3 s later, no marker: the CN announced the silence,
        // so the jump is no resync.
        put(3, 150, 3000),
        pop(3010).waiting(),
        put(4, 151, 3020),
        pop(3030).packet(3),
        pop(3050).packet(4),
        pop(3070).lost(), // audio again: an empty buffer is an underrun
        check("cn, no loss, no stall", |s| {
            s.comfort_noise == 1 && s.lost_frames == 1 && s.stalls == 0 && s.resyncs == 0
        }),
    ]);
}

#[test]
fn packets_of_40ms() {
    // The session pops only when it needs media: once per 40 ms here.
    Script::fixed(4).run(&[
        put(0, 0, 0).frames(2.0),
        pop(10).waiting(),
        put(1, 2, 40).frames(2.0),
        pop(50).packet(0), // two packets are 4 frames
        pop(90).packet(1),
        // #2 (frames 4–5) is lost
        put(3, 6, 120).frames(2.0),
        pop(130).lost(),
        pop(150).fec(3), // the second lost frame is right before #3
        put(4, 8, 160).frames(2.0),
        pop(170).packet(3),
        pop(210).packet(4),
        check("2 frames lost", |s| {
            s.lost_frames == 2 && s.skipped_frames == 0
        }),
    ]);
}

#[test]
fn packets_of_10ms() {
    // The session pops twice per 20 ms tick.
    Script::fixed(2).run(&[
        put(0, 0.0, 0).frames(0.5),
        put(1, 0.5, 10).frames(0.5),
        put(2, 1.0, 20).frames(0.5),
        pop(25).waiting(),
        put(3, 1.5, 30).frames(0.5),
        pop(35).packet(0),
        pop(35).packet(1),
        put(4, 2.0, 40).frames(0.5),
        // #5 lost
        put(6, 3.0, 60).frames(0.5),
        pop(55).packet(2),
        pop(55).packet(3),
        pop(75).packet(4),
        pop(75).fec(6), // half a frame missing: conceal up to #6
        pop(95).packet(6),
        check("1 loss", |s| s.lost_frames == 1),
    ]);
}

#[test]
fn zero_duration_is_one_frame() {
    let mut s = Script::fixed(1);
    s.run(&[put(0, 0, 0).frames(0.0), put(1, 1, 20).frames(0.0)]);
    let Pop::Packet(p) = s.jb.pop(s.at(25)) else {
        panic!("expected a packet")
    };
    assert_eq!(p.duration_ts, F);
    s.run(&[pop(45).packet(1)]);
}

#[test]
fn underrun_then_stall_then_restart() {
    let mut steps = vec![
        put(0, 0, 0),
        put(1, 1, 20),
        pop(30).packet(0),
        pop(50).packet(1),
    ];
    // The network stalls: 10 frames of underrun, then the buffer waits.
    for k in 0..10 {
        steps.push(pop(70 + 20 * k).lost());
    }
    steps.push(pop(270).waiting());
    steps.push(pop(290).waiting());
    // Packets resume; their timestamps did not advance (the sender paused
    // without a marker): play restarts from them, nothing is late.
    steps.extend([
        put(2, 2, 300),
        pop(310).waiting(),
        put(3, 3, 320),
        pop(330).packet(2),
        put(4, 4, 340),
        pop(350).packet(3),
        check("1 stall after 10 underruns", |s| {
            s.stalls == 1 && s.underrun_frames == 10 && s.lost_frames == 10 && s.late == 0
        }),
    ]);
    Script::fixed(2).run(&steps);
}

#[test]
fn timestamps_off_by_a_tick_play_gap_free() {
    // Senders stepping 159 or 161 instead of 160: packets overlap or leave
    // a one-tick hole; both are within the slop and play seamlessly.
    for step in [159.0, 161.0] {
        let mut steps = vec![put(0, 0, 0), pop(10).waiting()];
        for k in 1..100u16 {
            let at = 20 * u64::from(k);
            steps.push(put(k, f64::from(k) * step / f64::from(F), at));
            steps.push(pop(at + 10).packet(k - 1));
        }
        steps.push(check("seamless", |s| {
            s.lost_frames == 0 && s.late == 0 && s.resyncs == 0 && s.dropped_for_depth == 0
        }));
        Script::fixed(2).run(&steps);
    }
}

#[test]
fn reset_forgets_the_stream() {
    let mut s = Script::fixed(1);
    s.run(&[put(0, 0, 0), pop(10).packet(0), put(1, 1, 20)]);
    s.jb.reset();
    s.run(&[
        pop(30).waiting(),
        put(9000, 5000, 40), // a new timeline, not a resync
        pop(50).packet(9000),
        check("no resync", |s| s.resyncs == 0),
    ]);
}

#[test]
fn fec_next_when_the_following_packet_is_buffered() {
    Script::fixed(3).run(&[
        put(0, 0, 0),
        put(1, 1, 20),
        // #2 lost
        put(3, 3, 60),
        pop(70).packet(0),
        put(4, 4, 80),
        pop(90).packet(1),
        pop(110).fec(3),
        pop(130).packet(3),
        // two in a row: only the second concealed frame has a successor
        put(7, 7, 140),
        pop(150).packet(4),
        put(8, 8, 160),
        pop(170).lost(),
        pop(190).fec(7),
        pop(210).packet(7),
        check("3 lost", |s| s.lost_frames == 3),
    ]);
}

#[test]
fn sequence_jump_needs_confirmation() {
    Script::fixed(1).run(&[
        put(0, 0, 0),
        pop(10).packet(0),
        put(9000, 1, 20).discarded(), // a single wild packet is ignored
        put(1, 1, 20),
        pop(30).packet(1),
        put(40000, 500, 40).discarded(),
        put(40001, 501, 60).resynced(), // two in a row: the sender restarted
        pop(70).packet(40001),
        check("1 resync, 2 discarded", |s| {
            s.resyncs == 1 && s.discarded == 2
        }),
    ]);
}

#[test]
fn fixed_depth_drops_down_to_target() {
    // The network froze for 140 ms and releases eight packets at once:
    // play starts from the oldest at depth 8 and one packet is dropped every
    // 10 frames until the depth is at most target + 1.
    let mut sim = Sim::new(Box::new(FixedDepth::new(2)));
    for k in 0..300u64 {
        sim.packet(k, (20_000 * k).max(140_000));
    }
    sim.pops(10_000, 300);
    sim.run();
    let st = sim.jb.stats();
    assert_eq!(st.dropped_for_depth, 5, "{st:?}");
    assert_eq!(st.concealed_for_depth, 0, "{st:?}");
    assert_eq!(st.lost_frames, 0, "{st:?}");
    assert_eq!(sim.depth_before_pop[8], 8);
    assert_eq!(sim.depth_before_pop.last(), Some(&3));
    sim.assert_played_in_order();
}

#[test]
fn fixed_depth_stretches_up_to_target() {
    // The route gets 40 ms slower: depth drops from 3 to 1 without any
    // loss, then two stretches (one per 10 frames) restore it.
    let mut sim = Sim::new(Box::new(FixedDepth::new(3)));
    for k in 0..300u64 {
        let delay = if k < 20 { 0 } else { 40_000 };
        sim.packet(k, 20_000 * k + delay);
    }
    sim.pops(10_000, 300);
    sim.run();
    let st = sim.jb.stats();
    assert_eq!(st.concealed_for_depth, 2, "{st:?}");
    assert_eq!(st.lost_frames, 0, "{st:?}");
    assert_eq!(st.dropped_for_depth, 0, "{st:?}");
    assert_eq!(sim.depth_before_pop.last(), Some(&3));
    sim.assert_played_in_order();
}

#[test]
fn depth_adjustment_waits_for_the_next_talkspurt() {
    // Eight packets arrive at once (depth 8, target 2). Talkspurt 1 is
    // frames 0–14, silence 15–16, talkspurt 2 (marked) from frame 17. When
    // the first shrink is due, talkspurt 2 is already buffered: the silence
    // is skipped instead of dropping speech of talkspurt 1.
    let run = |silence: bool| {
        let mut sim = Sim::new(Box::new(FixedDepth::new(2)));
        for seq in 0..15u16 {
            let ts = u32::from(seq);
            sim.packet_ts(seq, ts, (20_000 * u64::from(ts)).max(140_000), false);
        }
        for ts in 17..150u32 {
            // Silence: the sequence number runs on. Loss: two are missing.
            let seq = if silence { ts - 2 } else { ts } as u16;
            sim.packet_ts(seq, ts, 20_000 * u64::from(ts), silence && ts == 17);
        }
        sim.pops(10_000, 150);
        sim.run();
        sim.assert_played_in_order();
        sim
    };
    let sim = run(true);
    let played = sim.played_frames();
    let st = sim.jb.stats();
    assert!((0..15).all(|f| played.contains(&f)), "{played:?}");
    assert_eq!(st.skipped_frames, 2, "{st:?}");
    assert_eq!(st.dropped_for_depth, 3, "{st:?}");
    assert_eq!(st.lost_frames, 0, "{st:?}");
    assert_eq!(sim.depth_before_pop.last(), Some(&3));

    // The same timestamp gap with two packets missing is loss, no
    // talkspurt start: the first shrink drops speech at once.
    let sim = run(false);
    let played = sim.played_frames();
    assert!(!(0..15).all(|f| played.contains(&f)), "{played:?}");
}

// -------------------------------------------------------- simulations

/// A stream with arrival times in µs, popped every 20 ms.
struct Sim {
    jb: JitterBuffer,
    base: Instant,
    /// (time µs, order, event)
    events: Vec<(u64, u8, Ev)>,
    played: Vec<i64>,
    depth_before_pop: Vec<usize>,
    targets: Vec<(u64, usize)>,
    /// When pops reported missing media (not stretching).
    lost_at: Vec<u64>,
}

#[derive(Debug, Clone, Copy)]
enum Ev {
    /// Sequence number, timestamp in frames, marker.
    Put(u16, u32, bool),
    Pop,
}

impl Sim {
    fn new(policy: Box<dyn DepthPolicy>) -> Self {
        Sim {
            jb: JitterBuffer::new(JitterConfig::default(), policy),
            base: crate::test_epoch(),
            events: Vec::new(),
            played: Vec::new(),
            depth_before_pop: Vec::new(),
            targets: Vec::new(),
            lost_at: Vec::new(),
        }
    }

    /// Packet `k` (seq k, ts k frames) arrives at `at_us`.
    fn packet(&mut self, k: u64, at_us: u64) {
        self.events
            .push((at_us, 0, Ev::Put(k as u16, k as u32, false)));
    }

    /// Any packet.
    fn packet_ts(&mut self, seq: u16, ts_frames: u32, at_us: u64, marker: bool) {
        self.events
            .push((at_us, 0, Ev::Put(seq, ts_frames, marker)));
    }

    /// Timestamps (in frames) played.
    fn played_frames(&self) -> Vec<u32> {
        self.played
            .iter()
            .map(|&t| (t as u32).wrapping_sub(7) / F)
            .collect()
    }

    /// `n` pops every 20 ms from `first_us`.
    fn pops(&mut self, first_us: u64, n: u64) {
        for i in 0..n {
            self.events.push((first_us + 20_000 * i, 1, Ev::Pop));
        }
    }

    fn run(&mut self) {
        self.events.sort_by_key(|&(t, o, _)| (t, o));
        let events = std::mem::take(&mut self.events);
        for (t, _, ev) in events {
            let now = self.base + Duration::from_micros(t);
            match ev {
                Ev::Put(seq, ts, marker) => {
                    let ts = MediaTime(7u32.wrapping_add(ts.wrapping_mul(F)));
                    self.jb
                        .put(now, Ssrc(SSRC), SeqNo(seq), ts, marker, &payload(seq), F);
                }
                Ev::Pop => {
                    self.depth_before_pop.push(self.jb.depth_frames());
                    self.targets.push((t, self.jb.target_frames()));
                    let lost = self.jb.stats().lost_frames;
                    if let Pop::Packet(p) = self.jb.pop(now) {
                        self.played.push(i64::from(p.timestamp.0));
                        self.jb.recycle(p.payload);
                    }
                    if self.jb.stats().lost_frames > lost {
                        self.lost_at.push(t);
                    }
                }
            }
        }
    }

    fn assert_played_in_order(&self) {
        for w in self.played.windows(2) {
            assert!(w[0] < w[1], "played out of order: {w:?}");
        }
    }

    fn target_at(&self, t_us: u64) -> usize {
        self.targets
            .iter()
            .rev()
            .find(|&&(t, _)| t <= t_us)
            .map_or(0, |&(_, v)| v)
    }
}

#[test]
fn percentile_depth_grows_after_spike_and_shrinks_after_calm() {
    let mut rng = fastrand::Rng::with_seed(0x0717);
    let mut sim = Sim::new(Box::new(PercentileDepth::new(10)));
    // 0–10 s calm (0–4 ms), 10–12 s spike (0–120 ms), 12–30 s calm.
    let n = 1500u64;
    for k in 0..n {
        let t = 20_000 * k;
        let jitter = if (500..600).contains(&k) {
            rng.u64(0..120_000)
        } else {
            rng.u64(0..4_000)
        };
        sim.packet(k, t + jitter);
    }
    sim.pops(10_000, n);
    sim.run();
    sim.assert_played_in_order();

    let before = sim.target_at(9_990_000);
    let during = (10_000_000..13_000_000)
        .step_by(20_000)
        .map(|t| sim.target_at(t))
        .max()
        .unwrap();
    let end = sim.target_at(29_990_000);
    assert!(before <= 2, "calm target {before}");
    assert!(during >= 6, "spike target {during}");
    assert_eq!(end, before, "target back after calm");

    // Depth followed: it grew during the spike and came back down.
    let depth = |from_s: usize, to_s: usize| sim.depth_before_pop[from_s * 50..to_s * 50].to_vec();
    let calm_max = *depth(8, 10).iter().max().unwrap();
    let spike_max = *depth(11, 14).iter().max().unwrap();
    let end_max = *depth(28, 30).iter().max().unwrap();
    assert!(calm_max <= 3, "calm depth {calm_max}");
    assert!(spike_max >= 5, "depth after spike {spike_max}");
    assert!(
        end_max <= end + 1,
        "depth at the end {end_max} for target {end}"
    );

    let st = sim.jb.stats();
    assert!(st.concealed_for_depth >= 3, "{st:?}");
    assert!(st.dropped_for_depth >= 3, "{st:?}");
    // Once grown, later spike packets are no longer lost; calm is loss-free.
    let lost_late = sim.lost_at.iter().filter(|&&t| t > 13_000_000).count();
    assert_eq!(lost_late, 0, "losses after the spike: {st:?}");
    let lost_early = sim.lost_at.iter().filter(|&&t| t < 10_000_000).count();
    assert_eq!(lost_early, 0, "losses before the spike: {st:?}");
    assert!(st.jitter_ms > 0.0);
}

#[test]
fn random_network_plays_each_packet_once_in_order() {
    // Loss, duplication and reordering (up to 60 ms of jitter), both
    // policies: whatever is played is played once and in media order.
    for (seed, policy) in [
        (1u64, Box::new(FixedDepth::new(3)) as Box<dyn DepthPolicy>),
        (2, Box::new(PercentileDepth::new(10))),
    ] {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut sim = Sim::new(policy);
        let n = 3000u64;
        for k in 0..n {
            if rng.f32() < 0.05 {
                continue;
            }
            let at = 20_000 * k + rng.u64(0..60_000);
            sim.packet(k, at);
            if rng.f32() < 0.02 {
                sim.packet(k, at + rng.u64(0..40_000));
            }
        }
        sim.pops(10_000, n);
        sim.run();
        sim.assert_played_in_order();
        let st = sim.jb.stats();
        assert!(st.duplicates > 0, "{st:?}");
        assert!(sim.played.len() as u64 > n * 8 / 10, "{st:?}");
    }
}

// ------------------------------------------------------------- the rest

#[test]
fn percentile_policy_window_and_clamp() {
    let mut p = PercentileDepth::with_params(0.95, 100, 10);
    assert_eq!(p.target_frames(), 1);
    for _ in 0..100 {
        p.on_arrival(0.0);
    }
    assert_eq!(p.target_frames(), 1);
    // 6 % of the window at 2.5 frames: the 95th percentile is 2.5 → 3 + 1.
    for _ in 0..6 {
        p.on_arrival(2.5);
    }
    assert_eq!(p.target_frames(), 4);
    // 5 % only: the 95th value is still 0.
    let mut q = PercentileDepth::with_params(0.95, 100, 10);
    for _ in 0..95 {
        q.on_arrival(0.0);
    }
    for _ in 0..5 {
        q.on_arrival(2.5);
    }
    assert_eq!(q.target_frames(), 1);
    // The spike leaves the window.
    for _ in 0..100 {
        p.on_arrival(0.2);
    }
    assert_eq!(p.target_frames(), 2);
    // Clamped to the maximum; NaN and negatives count as no delay.
    for _ in 0..100 {
        p.on_arrival(50.0);
    }
    assert_eq!(p.target_frames(), 10);
    p.on_arrival(f32::INFINITY);
    assert_eq!(p.target_frames(), 10);
    p.reset();
    assert_eq!(p.samples(), 0);
    for _ in 0..100 {
        p.on_arrival(f32::NAN);
        p.on_arrival(-3.0);
    }
    assert_eq!(p.target_frames(), 1);
    assert_eq!(p.name(), "percentile");
    assert_eq!(FixedDepth::new(0).target_frames(), 1);
}

#[test]
fn jitter_estimate_follows_rfc3550() {
    // Transit alternates by 10 ms: |D| = 10 ms each time, J → 10 ms.
    let mut s = Script::percentile();
    let base = s.base;
    for k in 0..400u32 {
        let at = base + Duration::from_millis(u64::from(20 * k + 10 * (k % 2)));
        s.jb.put(
            at,
            Ssrc(1),
            SeqNo(k as u16),
            MediaTime(k * F),
            false,
            &[0],
            F,
        );
    }
    let j = s.jb.stats().jitter_ms;
    assert!((j - 10.0).abs() < 0.1, "jitter {j} ms");
    assert_eq!(s.jb.policy_name(), "percentile");
}

#[test]
fn storage_is_bounded() {
    let config = JitterConfig {
        max_depth_frames: 2,
        ..JitterConfig::default()
    };
    let mut jb = JitterBuffer::new(config, Box::new(FixedDepth::new(2)));
    let now = crate::test_epoch();
    for k in 0..20u16 {
        jb.put(
            now,
            Ssrc(1),
            SeqNo(k),
            MediaTime(u32::from(k) * F),
            false,
            &[1],
            F,
        );
    }
    assert_eq!(jb.capacity_packets(), 8);
    assert_eq!(jb.len(), 8);
    assert_eq!(jb.stats().overflow, 12);
    assert!(jb.depth_frames() <= 8);
    // What is left plays from the oldest kept.
    let Pop::Packet(p) = jb.pop(now) else {
        panic!("expected a packet")
    };
    assert_eq!(p.seq, SeqNo(12));
}

#[test]
fn payload_buffers_are_reused() {
    let mut s = Script::fixed(1);
    s.run(&[put(0, 0, 0)]);
    let Pop::Packet(p) = s.jb.pop(s.at(10)) else {
        panic!("expected a packet")
    };
    let ptr = p.payload.as_ptr();
    s.jb.recycle(p.payload);
    s.run(&[put(1, 1, 20)]);
    let Pop::Packet(p) = s.jb.pop(s.at(30)) else {
        panic!("expected a packet")
    };
    assert_eq!(p.payload.as_ptr(), ptr, "the recycled buffer was reused");
}

#[test]
fn config_for_codecs_and_sanitising() {
    let c = JitterConfig::for_codec(CodecKind::Opus);
    assert_eq!((c.clock_rate, c.frame_ts), (48_000, 960));
    let c = JitterConfig::for_codec(CodecKind::G722);
    assert_eq!((c.clock_rate, c.frame_ts), (8_000, 160));
    let jb = JitterBuffer::new(
        JitterConfig {
            clock_rate: 0,
            frame_ts: 0,
            max_depth_frames: 0,
            stall_frames: 0,
            max_jump_ms: 0,
        },
        Box::new(FixedDepth::new(5)),
    );
    assert_eq!(jb.target_frames(), 1);
    assert_eq!(jb.config().frame_ts, 1);
    fn assert_send<T: Send>() {}
    assert_send::<JitterBuffer>();
}

#[test]
fn random_input_never_panics_and_stays_bounded() {
    let configs = [
        JitterConfig::default(),
        JitterConfig::for_codec(CodecKind::Opus),
        JitterConfig {
            clock_rate: 0,
            frame_ts: 0,
            max_depth_frames: 0,
            stall_frames: 0,
            max_jump_ms: 0,
        },
        JitterConfig {
            clock_rate: u32::MAX,
            frame_ts: u32::MAX,
            max_depth_frames: usize::MAX,
            stall_frames: usize::MAX,
            max_jump_ms: u32::MAX,
        },
    ];
    for (i, config) in configs.into_iter().enumerate() {
        for percentile in [false, true] {
            let policy: Box<dyn DepthPolicy> = if percentile {
                Box::new(PercentileDepth::new(config.max_depth_frames))
            } else {
                Box::new(FixedDepth::new(4))
            };
            let played = fuzz(
                0xF00D + i as u64 * 2 + u64::from(percentile),
                config.clone(),
                policy,
            );
            if i < 2 {
                assert!(played > 1000, "config {i}: only {played} packets played");
            }
        }
    }
}

fn fuzz(seed: u64, config: JitterConfig, policy: Box<dyn DepthPolicy>) -> u32 {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut jb = JitterBuffer::new(config, policy);
    let frame = jb.config().frame_ts;
    let bound = jb.capacity_packets();
    let base = crate::test_epoch() + Duration::from_secs(3600);
    let mut t_ms: i64 = 0;
    let mut seq: u16 = rng.u16(..);
    let mut ts: u32 = rng.u32(..);
    let ssrcs = [Ssrc(1), Ssrc(2), Ssrc(rng.u32(..))];
    let mut buf = Vec::new();
    let mut played = 0u32;
    for _ in 0..20_000 {
        // Mostly forward in time, sometimes backwards.
        t_ms += rng.i64(-30..60);
        let now = if t_ms >= 0 {
            base + Duration::from_millis(t_ms as u64)
        } else {
            base - Duration::from_millis(t_ms.unsigned_abs())
        };
        match rng.u8(0..10) {
            0..=4 => {
                // Mostly a plausible stream, sometimes anything at all.
                let (s, t) = if rng.u8(0..10) < 8 {
                    seq = seq.wrapping_add(rng.u16(0..3)).wrapping_sub(rng.u16(0..2));
                    ts = ts.wrapping_add(frame.wrapping_mul(rng.u32(0..3)));
                    (seq, ts)
                } else {
                    (rng.u16(..), rng.u32(..))
                };
                buf.clear();
                buf.extend((0..rng.usize(0..200)).map(|_| rng.u8(..)));
                let dur = match rng.u8(0..4) {
                    0 => 0,
                    1 => rng.u32(..),
                    _ => frame.wrapping_mul(rng.u32(1..3)),
                };
                let ssrc = if rng.u8(0..50) == 0 {
                    ssrcs[rng.usize(..ssrcs.len())]
                } else {
                    ssrcs[0]
                };
                jb.put(now, ssrc, SeqNo(s), MediaTime(t), rng.bool(), &buf, dur);
            }
            5 => {
                let s = if rng.bool() {
                    seq.wrapping_add(1)
                } else {
                    rng.u16(..)
                };
                jb.put_comfort_noise(now, ssrcs[0], SeqNo(s), MediaTime(ts));
            }
            6 if rng.u8(0..20) == 0 => jb.reset(),
            _ => match jb.pop(now) {
                Pop::Packet(p) => {
                    played += 1;
                    jb.recycle(p.payload);
                }
                Pop::Lost { next: Some(n) } => jb.recycle(n),
                _ => {}
            },
        }
        assert!(jb.len() <= bound, "{} packets stored", jb.len());
        assert!(jb.depth_frames() <= bound, "depth {}", jb.depth_frames());
        let t = jb.target_frames();
        assert!(
            (1..=jb.config().max_depth_frames).contains(&t),
            "target {t}"
        );
    }
    let st = jb.stats();
    assert!(st.received > 0);
    played
}
