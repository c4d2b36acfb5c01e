//! The media session on virtual time.

use super::*;
use crate::codec::{Decoder, Encoder};

const PEER: &str = "198.51.100.7:40000";
const NAT: &str = "203.0.113.50:61000";

fn config(codec: CodecKind, pt: u8) -> MediaConfig {
    MediaConfig {
        codec,
        payload_type: pt,
        telephone_event: Some(101),
        remote: Some(PEER.parse().unwrap()),
        send: true,
        receive: true,
        symmetric_rtp: true,
        inactivity_timeout: Some(Duration::from_secs(30)),
        send_silence: true,
        ssrc: Ssrc(0x5eed),
        first_seq: SeqNo(65530),
        first_timestamp: MediaTime(u32::MAX - 300),
        playout_frames: 10,
        jitter_max_frames: 10,
        turn: None,
        rtcp: None,
    }
}

struct Run {
    s: MediaSession,
    base: Instant,
    sent: Vec<(Duration, Transmit)>,
    events: Vec<(Duration, MediaEvent)>,
}

impl Run {
    fn new(cfg: MediaConfig) -> Self {
        let base = crate::test_epoch();
        Run {
            s: MediaSession::new(cfg, base).unwrap(),
            base,
            sent: Vec::new(),
            events: Vec::new(),
        }
    }

    fn drain(&mut self, now: Instant) -> Instant {
        loop {
            match self.s.poll_output() {
                Output::Transmit(t) => self.sent.push((now - self.base, t)),
                Output::Event(e) => self.events.push((now - self.base, e)),
                Output::Timeout(at) => return at,
            }
        }
    }

    /// Runs timers until `until` after the start, calling `each` after
    /// every tick (where an application would feed or read audio).
    fn run_until(
        &mut self,
        until: Duration,
        mut each: impl FnMut(&mut MediaSession, Instant, Duration),
    ) {
        let end = self.base + until;
        let mut at = self.drain(self.base);
        while at <= end {
            self.s.handle_timeout(at);
            each(&mut self.s, at, at - self.base);
            at = self.drain(at);
        }
    }

    fn packets(&self) -> Vec<RtpPacket<'_>> {
        self.sent
            .iter()
            .map(|(_, t)| RtpPacket::parse(&t.payload).unwrap())
            .collect()
    }
}

fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    RtpPacket {
        marker: false,
        payload_type: pt,
        seq: SeqNo(seq),
        timestamp: MediaTime(ts),
        ssrc: Ssrc(ssrc),
        payload,
    }
    .write(&mut b);
    b
}

fn tone(freq: f32, rate: u32, n: usize, offset: usize) -> Vec<i16> {
    (0..n)
        .map(|i| {
            let t = (i + offset) as f32 / rate as f32;
            (8000.0 * (2.0 * std::f32::consts::PI * freq * t).sin()) as i16
        })
        .collect()
}

/// Zero crossings per second of a signal.
fn crossings_per_second(x: &[i16], rate: u32) -> f32 {
    let c = x.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
    c as f32 * rate as f32 / x.len() as f32
}

#[test]
fn one_packet_per_tick_with_continuous_seq_and_timestamp() {
    let mut r = Run::new(config(CodecKind::Pcmu, 0));
    r.run_until(Duration::from_millis(990), |_, _, _| {});
    let times: Vec<u128> = r.sent.iter().map(|(t, _)| t.as_millis()).collect();
    assert_eq!(times, (0..50).map(|i| i * 20).collect::<Vec<_>>());
    let p = r.packets();
    for w in p.windows(2) {
        assert_eq!(
            w[0].seq.next(),
            w[1].seq,
            "continuous across the 16-bit wrap"
        );
        assert_eq!(
            w[0].timestamp.advance(160),
            w[1].timestamp,
            "continuous across the 32-bit wrap"
        );
        assert_eq!(w[1].ssrc, Ssrc(0x5eed));
    }
    assert!(p.iter().all(|p| !p.marker), "silence is not a talkspurt");
    assert!(
        r.sent
            .iter()
            .all(|(_, t)| t.destination == PEER.parse().unwrap())
    );
}

#[test]
fn timestamp_steps_follow_the_codec_clock() {
    for (codec, pt, step) in [
        (CodecKind::G722, 9, 160),
        (CodecKind::Opus, 96, 960),
        (CodecKind::Pcma, 8, 160),
    ] {
        let mut r = Run::new(config(codec, pt));
        r.run_until(Duration::from_millis(100), |_, _, _| {});
        let p = r.packets();
        assert_eq!(p.len(), 6);
        assert!(
            p.windows(2)
                .all(|w| w[0].timestamp.advance(step) == w[1].timestamp),
            "{codec:?}"
        );
        assert!(p.iter().all(|p| p.payload_type == pt));
    }
}

#[test]
fn marker_bit_starts_each_talkspurt() {
    let mut r = Run::new(config(CodecKind::Pcmu, 0));
    let speech = tone(440.0, 16_000, 3 * FRAME_SAMPLES, 0);
    r.run_until(Duration::from_millis(400), |s, _, t| {
        if t == Duration::from_millis(100) || t == Duration::from_millis(260) {
            assert_eq!(s.push_audio(&speech), speech.len());
        }
    });
    let markers: Vec<usize> = r
        .packets()
        .iter()
        .enumerate()
        .filter(|(_, p)| p.marker)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(markers, [6, 14], "first audio packet after each silence");
}

#[test]
fn late_shell_bursts_up_to_60ms_then_skips_without_losing_audio() {
    let mut r = Run::new(config(CodecKind::Pcmu, 0));
    r.drain(r.base);
    r.s.handle_timeout(r.base); // tick 0
    r.s.push_audio(&tone(440.0, 16_000, 2 * FRAME_SAMPLES, 0));
    r.s.handle_timeout(r.base + Duration::from_millis(150)); // ticks 1..=7 due
    r.drain(r.base);
    let p = r.packets();
    // Ticks 1–4 are more than 60 ms late and skipped; 5, 6, 7 go out.
    assert_eq!(p.len(), 4);
    assert_eq!(r.s.stats().skipped_ticks, 4);
    assert_eq!(
        p[0].timestamp.advance(160 * 5),
        p[1].timestamp,
        "skipped ticks spend their timestamps"
    );
    assert!(p[1].marker, "the gap starts a new talkspurt");
    assert_eq!(
        r.s.queued_frames(),
        0,
        "both queued frames were still played"
    );
}

#[test]
fn flush_empties_the_queue_at_once() {
    let mut r = Run::new(config(CodecKind::Pcmu, 0));
    assert_eq!(
        r.s.push_audio(&vec![1000; 20 * FRAME_SAMPLES]),
        10 * FRAME_SAMPLES,
        "capacity 10 frames"
    );
    assert_eq!(r.s.playout_room(), 0);
    assert_eq!(
        r.s.flush_playout(),
        Some(PlayoutReport {
            utterance: 0,
            played_samples: 0
        })
    );
    assert_eq!(r.s.queued_frames(), 0);
}

#[test]
fn decodes_to_16k_frames_and_echoes_back() {
    let mut r = Run::new(config(CodecKind::Pcmu, 0));
    let mut enc = Encoder::new(CodecKind::Pcmu).unwrap();
    let peer: SocketAddr = PEER.parse().unwrap();
    let mut seq = 100u16;
    r.run_until(Duration::from_millis(1000), |s, now, t| {
        let n = (t.as_millis() / 20) as usize;
        let mut payload = Vec::new();
        enc.encode(&tone(1000.0, 8000, 160, n * 160), &mut payload)
            .unwrap();
        s.handle_receive(now, peer, &rtp(0, seq, seq as u32 * 160, 7, &payload));
        seq = seq.wrapping_add(1);
        while let Some(f) = s.pop_frame() {
            s.push_audio(&f);
        }
    });
    assert_eq!(r.s.stats().rx_packets, 51);
    // Decode what was sent after the echo started and check the tone.
    let mut dec = Decoder::new(CodecKind::Pcmu).unwrap();
    let mut pcm = Vec::new();
    for p in r.packets().iter().skip(10) {
        dec.decode(p.payload, &mut pcm).unwrap();
    }
    let f = crossings_per_second(&pcm, 8000) / 2.0;
    assert!((f - 1000.0).abs() < 10.0, "echoed tone at {f} Hz");
    assert_eq!(r.s.stats().skipped_ticks, 0);
}

#[test]
fn symmetric_rtp_latches_to_the_real_source() {
    let mut r = Run::new(config(CodecKind::Pcmu, 0));
    let now = r.base;
    let nat: SocketAddr = NAT.parse().unwrap();
    r.s.handle_receive(now, nat, &rtp(0, 1, 0, 0xaaaa, &[0xff; 160]));
    r.drain(now);
    assert_eq!(r.events, [(Duration::ZERO, MediaEvent::Latched(nat))]);
    r.s.handle_timeout(now);
    r.drain(now);
    assert_eq!(r.sent.last().unwrap().1.destination, nat);
    // A stray packet with the same SSRC from elsewhere does not steal it.
    let stray: SocketAddr = "192.0.2.66:5000".parse().unwrap();
    r.s.handle_receive(now, stray, &rtp(0, 2, 160, 0xaaaa, &[0xff; 160]));
    assert_eq!(r.s.remote(), Some(nat));
    // Garbage and unknown payload types never latch.
    r.s.handle_receive(now, stray, &rtp(18, 3, 320, 0xbbbb, &[0; 20]));
    r.s.handle_receive(now, stray, b"hello");
    assert_eq!(r.s.remote(), Some(nat));
    assert_eq!(r.s.stats().rx_ignored, 2);
    // A new stream (new SSRC) from a new address is followed.
    r.s.handle_receive(now, stray, &rtp(0, 9, 0, 0xcccc, &[0xff; 160]));
    assert_eq!(r.s.remote(), Some(stray));
}

#[test]
fn telephone_events_and_comfort_noise_are_not_decoded_as_audio() {
    let mut r = Run::new(config(CodecKind::Pcmu, 0));
    let peer: SocketAddr = PEER.parse().unwrap();
    r.s.handle_receive(r.base, peer, &rtp(101, 1, 0, 5, &[1, 0x0a, 0, 160]));
    r.s.handle_receive(r.base, peer, &rtp(13, 2, 0, 5, &[40]));
    assert_eq!(r.s.stats().rx_packets, 0);
    assert!(r.s.pop_frame().is_none());
}

#[test]
fn inactivity_reported_once_after_the_timeout() {
    let mut r = Run::new(config(CodecKind::Pcmu, 0));
    r.run_until(Duration::from_secs(31), |_, _, _| {});
    assert_eq!(
        r.events,
        [(
            Duration::from_secs(30),
            MediaEvent::Inactive(Duration::from_secs(30))
        )]
    );
}

#[test]
fn inactivity_is_off_while_on_hold() {
    let mut cfg = config(CodecKind::Pcmu, 0);
    cfg.send = false; // the peer sent a=sendonly: we only receive
    let mut r = Run::new(cfg);
    r.run_until(Duration::from_secs(60), |_, _, _| {});
    assert!(r.events.is_empty());
    assert!(r.sent.is_empty(), "no RTP while we must not send");
}

#[test]
fn update_keeps_ssrc_sequence_and_timestamps_running() {
    let mut r = Run::new(config(CodecKind::Pcmu, 0));
    r.run_until(Duration::from_millis(40), |_, _, _| {});
    let mut held = config(CodecKind::Pcmu, 0);
    held.send = false;
    r.s.update(held, r.base + Duration::from_millis(50))
        .unwrap();
    r.run_until(Duration::from_millis(200), |_, _, _| {});
    let before = r.sent.len();
    let mut unheld = config(CodecKind::Pcmu, 0);
    unheld.remote = Some("198.51.100.8:40002".parse().unwrap());
    r.s.update(unheld, r.base + Duration::from_millis(210))
        .unwrap();
    r.run_until(Duration::from_millis(260), |_, _, _| {});
    let p = r.packets();
    assert_eq!(before, 3);
    assert_eq!(p[2].seq.next(), p[3].seq, "sequence continues across hold");
    assert_eq!(
        p[2].timestamp.advance(160 * 9),
        p[3].timestamp,
        "timestamps kept running on hold"
    );
    assert_eq!(
        r.sent[3].1.destination,
        "198.51.100.8:40002".parse().unwrap()
    );
    assert!(p.iter().all(|x| x.ssrc == Ssrc(0x5eed)));
}

#[test]
fn two_sessions_exchange_rtcp_and_measure_round_trip_time() {
    use crate::clock::WallClock;
    let base = crate::test_epoch();
    let a_addr: SocketAddr = "192.0.2.10:40000".parse().unwrap();
    let b_addr: SocketAddr = "192.0.2.20:50000".parse().unwrap();
    let mk = |me: u32, peer: SocketAddr| {
        let mut c = config(CodecKind::Pcmu, 0);
        c.ssrc = Ssrc(me);
        c.remote = Some(peer);
        c.symmetric_rtp = false;
        c.rtcp = Some(RtcpConfig {
            cname: format!("s{me}@test"),
            clock: WallClock::new(base, Duration::from_secs(1_700_000_000)),
            seed: u64::from(me),
        });
        MediaSession::new(c, base).unwrap()
    };
    let (mut a, mut b) = (mk(1, b_addr), mk(2, a_addr));
    let one_way = Duration::from_millis(35);
    // (deliver at, to a?, from, channel, bytes)
    let mut wire: Vec<(Instant, bool, SocketAddr, Channel, Vec<u8>)> = Vec::new();
    let mut now = base;
    let end = base + Duration::from_secs(20);
    while now < end {
        wire.sort_by_key(|w| w.0);
        while wire.first().is_some_and(|w| w.0 <= now) {
            let (at, to_a, from, ch, bytes) = wire.remove(0);
            let s = if to_a { &mut a } else { &mut b };
            match ch {
                Channel::Rtp => s.handle_receive(at, from, &bytes),
                Channel::Rtcp => s.handle_rtcp(at, from, &bytes),
            }
        }
        let mut next = end;
        for (to_a, s) in [(false, &mut a), (true, &mut b)] {
            s.handle_timeout(now);
            let from = if to_a { b_addr } else { a_addr };
            loop {
                match s.poll_output() {
                    Output::Transmit(t) => {
                        let from = if t.channel == Channel::Rtcp {
                            SocketAddr::new(from.ip(), from.port() + 1)
                        } else {
                            from
                        };
                        wire.push((now + one_way, to_a, from, t.channel, t.payload));
                    }
                    Output::Event(_) => {}
                    Output::Timeout(t) => {
                        next = next.min(t);
                        break;
                    }
                }
            }
            while s.pop_frame().is_some() {}
        }
        now = next
            .min(wire.iter().map(|w| w.0).min().unwrap_or(end))
            .max(now + Duration::from_micros(1));
    }
    let ra = a.rtcp_stats().unwrap();
    let rb = b.rtcp_stats().unwrap();
    assert!(
        ra.reports_received >= 2 && rb.reports_received >= 2,
        "{ra:?} {rb:?}"
    );
    let rtt = ra.rtt.expect("A measured the round trip");
    assert!((rtt.as_millis() as i64 - 70).abs() <= 2, "RTT {rtt:?}");
    assert_eq!(rb.packets_lost, 0);
    assert!(ra.packets_received > 900 && rb.packets_received > 900);
    let st = a.stats();
    assert_eq!(
        st.concealed_frames, 0,
        "a clean network needs no concealment"
    );
}

#[test]
fn dtmf_is_sent_as_telephone_events_between_audio_packets() {
    let mut r = Run::new(config(CodecKind::Pcmu, 0));
    r.s.send_dtmf('5', Duration::from_millis(100)).unwrap();
    r.run_until(Duration::from_millis(300), |_, _, _| {});
    let p = r.packets();
    let events: Vec<&RtpPacket<'_>> = p.iter().filter(|x| x.payload_type == 101).collect();
    // 100 ms = 5 ticks of updates (the last is the end), the end sent 3 times.
    assert_eq!(events.len(), 7, "{events:?}");
    assert!(events[0].marker);
    assert!(
        events.iter().all(|e| e.timestamp == events[0].timestamp),
        "one event, one timestamp"
    );
    let ends = events.iter().filter(|e| e.payload[1] & 0x80 != 0).count();
    assert_eq!(ends, 3);
    assert_eq!(events[0].payload[0], 5);
    // Sequence numbers run on through events and audio alike; audio after
    // the event carries the timestamps of its own ticks.
    assert!(p.windows(2).all(|w| w[0].seq.next() == w[1].seq));
    let first_audio_after = p
        .iter()
        .position(|x| x.payload_type == 0 && x.seq.0 > events[6].seq.0)
        .unwrap();
    assert_eq!(
        p[first_audio_after].timestamp,
        p[0].timestamp.advance(160 * first_audio_after as u32)
    );
    assert_eq!(r.s.stats().dtmf_sent, 1);
    assert!(r.s.send_dtmf('x', Duration::from_millis(100)).is_err());
}

#[test]
fn a_reply_starts_at_once_instead_of_waiting_for_the_tick() {
    let mut r = Run::new(config(CodecKind::Pcmu, 0));
    r.run_until(Duration::from_millis(100), |_, _, _| {});
    // Silence went out at 0..=100 ms; the next tick is due at 120 ms. A
    // reply ready at 107 ms leaves at 107 ms.
    let at = r.base + Duration::from_millis(107);
    r.s.begin_utterance(3);
    r.s.push_audio(&[5000; 640]);
    assert!(r.s.play_now(at));
    r.s.handle_timeout(at);
    let _ = r.drain(at);
    let p = r.packets();
    let (last_silence, first_audio) = (p[p.len() - 2].timestamp, p[p.len() - 1].timestamp);
    assert!(p[p.len() - 1].marker);
    assert_eq!(
        last_silence.advance(56),
        first_audio,
        "7 ms = 56 ticks after the last packet"
    );
    let ev: Vec<MediaEvent> = r.events.iter().map(|(_, e)| *e).collect();
    assert!(
        ev.contains(&MediaEvent::UtteranceStarted {
            utterance: 3,
            tick: 6
        }),
        "{ev:?}"
    );
    // The next packet follows 20 ms later, continuing the new phase.
    r.run_until(Duration::from_millis(127), |_, _, _| {});
    let p = r.packets();
    assert_eq!(p[p.len() - 1].timestamp, first_audio.advance(160));
    assert_eq!(r.sent.last().unwrap().0, Duration::from_millis(127));
    // While audio is flowing, nothing re-phases.
    r.s.push_audio(&[5000; 320]);
    assert!(!r.s.play_now(r.base + Duration::from_millis(130)));
}
