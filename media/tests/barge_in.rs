//! Barge-in on virtual time, at an exact frame: the agent's reply plays
//! from the session's playout queue while the caller's RTP comes in.
//!
//! * the caller talking over the agent empties the queue in the very tick
//!   that reports `SpeechStarted`, and the session says exactly how much of
//!   the reply went out;
//! * the agent's own voice coming back (delayed 16–128 ms, 10 dB down) does
//!   not interrupt it;
//! * neither does a 150 ms cough;
//! * the caller talking over an echoing line still does.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use voxtrunk_media::codec::{CodecKind, Decoder, Encoder};
use voxtrunk_media::rtp::{MediaTime, RtpPacket, SeqNo, Ssrc};
use voxtrunk_media::session::{
    FRAME_SAMPLES, MediaConfig, MediaEvent, MediaSession, Output, PlayoutReport, TurnConfig,
};
use voxtrunk_media::vad::TurnEvent;

const AGENT: &[u8] = include_bytes!("data/agent_speech.wav");
const CALLER: &[u8] = include_bytes!("data/caller_speech.wav");

#[allow(clippy::disallowed_methods)] // the origin of virtual time
fn epoch() -> Instant {
    Instant::now()
}

fn wav(bytes: &[u8]) -> Vec<i16> {
    let data = bytes
        .windows(4)
        .position(|w| w == b"data")
        .expect("a data chunk");
    bytes[data + 8..]
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect()
}

/// 16 kHz → 8 kHz by averaging pairs (good enough to feed G.711 in a test).
fn to_8k(x: &[i16]) -> Vec<i16> {
    x.chunks(2)
        .map(|c| ((i32::from(c[0]) + i32::from(*c.last().unwrap())) / 2) as i16)
        .collect()
}

fn config() -> MediaConfig {
    MediaConfig {
        codec: CodecKind::Pcmu,
        payload_type: 0,
        telephone_event: None,
        remote: Some("198.51.100.7:40000".parse().unwrap()),
        send: true,
        receive: true,
        symmetric_rtp: false,
        inactivity_timeout: None,
        send_silence: true,
        ssrc: Ssrc(7),
        first_seq: SeqNo(1),
        first_timestamp: MediaTime(0),
        playout_frames: 10,
        jitter_max_frames: 10,
        turn: Some(TurnConfig {
            barge_in: true,
            ..TurnConfig::default()
        }),
        rtcp: None,
    }
}

/// What the caller's side sends, per 20 ms interval, as 8 kHz samples.
trait CallerSide {
    /// Samples for interval `k`, given everything we sent so far (8 kHz,
    /// sample 0 = tick 0).
    fn interval(&mut self, k: usize, sent: &[i16]) -> Vec<i16>;
}

struct Silent;
impl CallerSide for Silent {
    fn interval(&mut self, _: usize, _: &[i16]) -> Vec<i16> {
        vec![0; 160]
    }
}

/// Plays a signal starting at interval `start`.
struct Speaks {
    start: usize,
    signal: Vec<i16>,
}
impl CallerSide for Speaks {
    fn interval(&mut self, k: usize, _: &[i16]) -> Vec<i16> {
        (0..160)
            .map(|i| {
                let n = (k * 160 + i).checked_sub(self.start * 160);
                n.and_then(|n| self.signal.get(n)).copied().unwrap_or(0)
            })
            .collect()
    }
}

/// The agent's own audio returned after `delay`, scaled by `gain`.
struct Echo {
    delay_samples: usize,
    gain: f32,
}
impl CallerSide for Echo {
    fn interval(&mut self, k: usize, sent: &[i16]) -> Vec<i16> {
        (0..160)
            .map(|i| {
                let n = (k * 160 + i).checked_sub(self.delay_samples);
                let v = n.and_then(|n| sent.get(n)).copied().unwrap_or(0);
                (f32::from(v) * self.gain) as i16
            })
            .collect()
    }
}

/// Echo and speech together (double talk).
struct Both(Echo, Speaks);
impl CallerSide for Both {
    fn interval(&mut self, k: usize, sent: &[i16]) -> Vec<i16> {
        let a = self.0.interval(k, sent);
        let b = self.1.interval(k, sent);
        a.iter()
            .zip(&b)
            .map(|(x, y)| x.saturating_add(*y))
            .collect()
    }
}

struct Run {
    /// (tick, event)
    events: Vec<(usize, MediaEvent)>,
    /// Per tick: frames queued after the tick, and whether its packet was
    /// agent audio (not silence).
    queued_after: Vec<usize>,
    audio_sent: Vec<bool>,
}

fn run(caller: &mut dyn CallerSide, ticks: usize) -> Run {
    let base = epoch();
    let mut s = MediaSession::new(config(), base).unwrap();
    let peer: SocketAddr = "198.51.100.7:40000".parse().unwrap();
    let agent = wav(AGENT);
    let mut agent_pos = 0;
    let mut enc = Encoder::new(CodecKind::Pcmu).unwrap();
    let mut dec = Decoder::new(CodecKind::Pcmu).unwrap();
    let mut sent_8k: Vec<i16> = Vec::new();
    let mut out = Run {
        events: Vec::new(),
        queued_after: Vec::new(),
        audio_sent: Vec::new(),
    };
    s.begin_utterance(1);
    for k in 0..ticks {
        let now = base + Duration::from_millis(20 * k as u64);
        // The caller's packet for the interval that just ended arrives now.
        if k > 0 {
            let pcm = caller.interval(k - 1, &sent_8k);
            let mut payload = Vec::new();
            enc.encode(&pcm, &mut payload).unwrap();
            let mut pkt = Vec::new();
            RtpPacket {
                marker: k == 1,
                payload_type: 0,
                seq: SeqNo(k as u16),
                timestamp: MediaTime(k as u32 * 160),
                ssrc: Ssrc(0xca11),
                payload: &payload,
            }
            .write(&mut pkt);
            s.handle_receive(now, peer, &pkt);
        }
        // The agent keeps its queue topped up (as the TTS stage would).
        while agent_pos < agent.len() && s.playout_room() > 0 {
            agent_pos += s.push_audio(&agent[agent_pos..]);
            if agent_pos == agent.len() {
                s.finish_utterance();
            }
        }
        s.handle_timeout(now);
        let mut audio = false;
        loop {
            match s.poll_output() {
                Output::Transmit(t) => {
                    let p = RtpPacket::parse(&t.payload).unwrap();
                    let start = sent_8k.len();
                    dec.decode(p.payload, &mut sent_8k).unwrap();
                    audio |= sent_8k[start..].iter().any(|v| v.abs() > 64);
                }
                Output::Event(e) => out.events.push((k, e)),
                Output::Timeout(_) => break,
            }
        }
        while s.pop_frame().is_some() {}
        // Stop feeding the agent once it was interrupted.
        if out
            .events
            .iter()
            .any(|(_, e)| matches!(e, MediaEvent::BargeIn { .. }))
        {
            agent_pos = agent.len();
        }
        out.queued_after.push(s.queued_frames());
        out.audio_sent.push(audio);
    }
    out
}

fn barge_ins(r: &Run) -> Vec<usize> {
    r.events
        .iter()
        .filter(|(_, e)| {
            matches!(
                e,
                MediaEvent::Turn(TurnEvent::SpeechStarted {
                    over_agent: true,
                    ..
                })
            )
        })
        .map(|(k, _)| *k)
        .collect()
}

#[test]
fn caller_speech_flushes_playout_within_the_tick() {
    let caller = to_8k(&wav(CALLER));
    let mut side = Speaks {
        start: 50,
        signal: caller,
    };
    let r = run(&mut side, 250);
    let starts = barge_ins(&r);
    assert_eq!(starts.len(), 1, "{:?}", r.events);
    let k = starts[0];
    assert!(
        (60..110).contains(&k),
        "barge-in at tick {k}, the caller started at 50"
    );
    assert_eq!(
        r.queued_after[k], 0,
        "queue empty at the end of the SpeechStarted tick"
    );
    assert!(
        r.audio_sent[k + 1..].iter().all(|a| !a),
        "no agent audio after the barge-in tick"
    );
    let report = r.events.iter().find_map(|(t, e)| match e {
        MediaEvent::BargeIn {
            interrupted,
            flushed_frames,
        } => Some((*t, *interrupted, *flushed_frames)),
        _ => None,
    });
    let (t, interrupted, flushed) = report.expect("a BargeIn event");
    assert_eq!(t, k);
    assert!(flushed > 0);
    let played_frames = r.audio_sent[..=k].iter().filter(|a| **a).count() as u64;
    let PlayoutReport {
        utterance,
        played_samples,
    } = interrupted.expect("what was played");
    assert_eq!(utterance, 1);
    // Ticks 0..k sent the reply (quiet frames between words count too);
    // tick k flushed before sending, so its packet is already silence.
    assert_eq!(
        played_samples,
        k as u64 * FRAME_SAMPLES as u64,
        "{played_frames} loud frames"
    );
    assert!(played_frames <= k as u64);
}

#[test]
fn the_agents_own_echo_does_not_barge_in() {
    for delay_ms in [16, 48, 96, 128] {
        let mut side = Echo {
            delay_samples: delay_ms * 8,
            gain: 0.316, // −10 dB
        };
        let r = run(&mut side, 300);
        assert!(
            barge_ins(&r).is_empty(),
            "echo at {delay_ms} ms interrupted: {:?}",
            r.events
        );
        assert!(
            r.events
                .iter()
                .any(|(_, e)| matches!(e, MediaEvent::UtteranceDone(_))),
            "the reply played to the end with {delay_ms} ms echo"
        );
    }
}

#[test]
fn a_150ms_cough_does_not_barge_in() {
    let mut rng = fastrand::Rng::with_seed(9);
    let cough: Vec<i16> = (0..1200)
        .map(|i| ((-(i as f32) / 350.0).exp() * 12000.0 * (rng.f32() * 2.0 - 1.0)) as i16)
        .collect();
    let mut side = Speaks {
        start: 60,
        signal: cough,
    };
    let r = run(&mut side, 200);
    assert!(barge_ins(&r).is_empty(), "{:?}", r.events);
}

#[test]
fn the_caller_talking_over_an_echoing_line_still_barges_in() {
    let side = Both(
        Echo {
            delay_samples: 64 * 8,
            gain: 0.316,
        },
        Speaks {
            start: 50,
            signal: to_8k(&wav(CALLER)),
        },
    );
    let mut side = side;
    let r = run(&mut side, 250);
    assert_eq!(barge_ins(&r).len(), 1, "{:?}", r.events);
}

#[test]
fn a_silent_caller_lets_the_reply_finish() {
    let r = run(&mut Silent, 320);
    assert!(barge_ins(&r).is_empty());
    let done = r.events.iter().find_map(|(_, e)| match e {
        MediaEvent::UtteranceDone(p) => Some(*p),
        _ => None,
    });
    let agent_samples = wav(AGENT).len() as u64;
    let p = done.expect("UtteranceDone");
    assert_eq!(p.utterance, 1);
    assert_eq!(
        p.played_samples,
        agent_samples.div_ceil(320) * 320,
        "the whole reply, padded to a frame"
    );
    let _ = Silent.interval(0, &[]);
}
