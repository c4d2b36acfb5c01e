//! Speech through a bad network into a media session, on virtual time: 30 ms
//! of jitter with 100 ms spikes, 3 % random loss and 60 ms loss bursts. The
//! session must hand out one 16 kHz frame per tick without a hole (losses
//! come out as short runs of concealment, never as gaps or resets), and its
//! jitter buffer must shrink back to a small depth once the network calms.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use voxtrunk_media::codec::{CodecKind, Encoder};
use voxtrunk_media::rtp::{MediaTime, RtpPacket, SeqNo, Ssrc};
use voxtrunk_media::session::{FRAME, MediaConfig, MediaSession, Output};

#[allow(clippy::disallowed_methods)] // the origin of virtual time
fn epoch() -> Instant {
    Instant::now()
}

fn config(codec: CodecKind, pt: u8) -> MediaConfig {
    MediaConfig {
        codec,
        payload_type: pt,
        telephone_event: None,
        remote: Some("198.51.100.7:40000".parse().unwrap()),
        send: true,
        receive: true,
        symmetric_rtp: false,
        inactivity_timeout: None,
        send_silence: false,
        ssrc: Ssrc(1),
        first_seq: SeqNo(1),
        first_timestamp: MediaTime(0),
        playout_frames: 10,
        jitter_max_frames: 10,
        turn: None,
        rtcp: None,
    }
}

/// A speech-like test signal at 16 kHz: harmonics with a syllable envelope.
fn speech_like(n: usize) -> Vec<i16> {
    (0..n)
        .map(|i| {
            let t = i as f32 / 16_000.0;
            let env = 0.5 + 0.5 * (2.0 * std::f32::consts::PI * 3.0 * t).sin();
            let f0 = 140.0;
            let v: f32 = (1..6)
                .map(|h| (2.0 * std::f32::consts::PI * f0 * h as f32 * t).sin() / h as f32)
                .sum();
            (env * v * 6000.0) as i16
        })
        .collect()
}

struct Sent {
    arrival: Duration,
    packet: Vec<u8>,
}

/// One packet every 20 ms for `seconds`, with the network's delays and
/// losses; `rough` decides whether a packet is sent during the bad period.
fn network(codec: CodecKind, pt: u8, seconds: u32, rough_until: Duration, seed: u64) -> Vec<Sent> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut enc = Encoder::new(codec).unwrap();
    let pcm = speech_like(16_000 * seconds as usize);
    let native = codec.native_rate() as usize;
    let frames = seconds as usize * 50;
    let mut out = Vec::new();
    let mut burst_left = 0;
    for n in 0..frames {
        let send_at = FRAME * n as u32;
        let rough = send_at < rough_until;
        // 16 kHz → native by simple decimation for 8 kHz codecs (the test
        // signal has nothing above 4 kHz worth keeping).
        let chunk: Vec<i16> = pcm[n * 320..(n + 1) * 320]
            .iter()
            .step_by(16_000 / native)
            .copied()
            .collect();
        let mut payload = Vec::new();
        enc.encode(&chunk, &mut payload).unwrap();
        let mut packet = Vec::new();
        RtpPacket {
            marker: n == 0,
            payload_type: pt,
            seq: SeqNo(n as u16),
            timestamp: MediaTime(n as u32 * codec.rtp_timestamp_step()),
            ssrc: Ssrc(0xfeed),
            payload: &payload,
        }
        .write(&mut packet);
        if rough {
            if burst_left > 0 {
                burst_left -= 1;
                continue;
            }
            if rng.f32() < 0.01 {
                burst_left = 2; // this packet and the next two: 60 ms
                continue;
            }
            if rng.f32() < 0.03 {
                continue;
            }
        }
        let base = Duration::from_millis(40);
        let jitter = if rough {
            Duration::from_micros(rng.u64(0..30_000))
        } else {
            Duration::ZERO
        };
        // A 100 ms spike now and then (every ~2 s), as when a radio link
        // hands over or a queue fills.
        let spike = if rough && rng.f32() < 0.01 {
            Duration::from_millis(100)
        } else {
            Duration::ZERO
        };
        out.push(Sent {
            arrival: send_at + base + jitter + spike,
            packet,
        });
    }
    out.sort_by_key(|s| s.arrival);
    out
}

struct Outcome {
    frames: usize,
    max_concealed_run: usize,
    concealed: u64,
    depth_after_calm: usize,
    max_depth: usize,
    losses: usize,
}

fn run(codec: CodecKind, pt: u8, seed: u64) -> Outcome {
    let seconds = 30;
    let rough = Duration::from_secs(20);
    let sent = network(codec, pt, seconds, rough, seed);
    let losses = seconds as usize * 50 - sent.len();
    let base = epoch();
    let mut s = MediaSession::new(config(codec, pt), base).unwrap();
    let from: SocketAddr = "198.51.100.7:40000".parse().unwrap();
    let mut next = 0;
    let mut frames = 0;
    let mut run = 0;
    let mut max_run = 0;
    let mut last_concealed = 0;
    let mut max_depth = 0;
    let mut depth_after_calm = 0;
    let end = base + Duration::from_secs(u64::from(seconds)) + Duration::from_millis(200);
    let mut at = base;
    while at < end {
        // Deliver every packet that arrived by now, then run the tick.
        while next < sent.len() && base + sent[next].arrival <= at {
            s.handle_receive(base + sent[next].arrival, from, &sent[next].packet);
            next += 1;
        }
        s.handle_timeout(at);
        loop {
            match s.poll_output() {
                Output::Timeout(t) => {
                    at = t;
                    break;
                }
                Output::Transmit(_) | Output::Event(_) => {}
            }
        }
        while s.pop_frame().is_some() {
            frames += 1;
            let st = s.stats();
            if st.concealed_frames > last_concealed {
                run += (st.concealed_frames - last_concealed) as usize;
                max_run = max_run.max(run);
            } else {
                run = 0;
            }
            last_concealed = st.concealed_frames;
            max_depth = max_depth.max(st.jitter_depth_frames);
            if at > base + rough + Duration::from_secs(8) {
                depth_after_calm = depth_after_calm.max(st.jitter_depth_frames);
            }
        }
    }
    Outcome {
        frames,
        max_concealed_run: max_run,
        concealed: s.stats().concealed_frames,
        depth_after_calm,
        max_depth,
        losses,
    }
}

#[test]
fn bad_network_gives_continuous_frames_and_the_buffer_calms_down() {
    for (codec, pt, seed) in [
        (CodecKind::Pcmu, 0, 1),
        (CodecKind::Opus, 96, 2),
        (CodecKind::G722, 9, 3),
    ] {
        let o = run(codec, pt, seed);
        eprintln!(
            "{codec:?}: {} frames, {} packets lost, {} concealed, longest concealed run {} frames, \
             max depth {} frames, depth after calm {} frames",
            o.frames, o.losses, o.concealed, o.max_concealed_run, o.max_depth, o.depth_after_calm
        );
        // One frame per tick for 30.2 s (1510 ticks), not one missing.
        assert_eq!(o.frames, 1510, "{codec:?}: a frame every tick");
        assert!(o.losses > 20, "{codec:?}: the network did lose packets");
        // Concealment covers losses and spikes in short runs: a 60 ms burst is
        // 3 frames, a 100 ms spike on top of jitter at most ~6.
        assert!(
            o.max_concealed_run <= 8,
            "{codec:?}: concealed run of {} frames",
            o.max_concealed_run
        );
        assert!(
            o.concealed >= o.losses as u64 / 2,
            "{codec:?}: losses were concealed"
        );
        assert!(
            o.depth_after_calm <= 2,
            "{codec:?}: depth {} after calm",
            o.depth_after_calm
        );
    }
}
