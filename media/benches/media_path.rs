//! The whole per-call media path per 20 ms tick, as the call task runs it:
//! one RTP packet in (jitter buffer, decode, resample, VAD, endpointing),
//! one frame out (resample, encode, RTP), drained outputs — plus the VAD
//! alone. Socket syscalls are not included.
//!
//! Scenarios per codec: both talking (worst case), caller talking while the
//! agent is silent, agent talking while the caller is silent, both silent.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use voxtrunk_media::codec::{CodecKind, Encoder};
use voxtrunk_media::resample::resample_all;
use voxtrunk_media::rtp::{MediaTime, RtpPacket, SeqNo, Ssrc};
use voxtrunk_media::session::{FRAME_SAMPLES, MediaConfig, MediaSession, Output, TurnConfig};
use voxtrunk_media::vad::{VadConfig, VoiceDetector};

const CALLER: &[u8] = include_bytes!("../tests/data/caller_speech.wav");
const AGENT: &[u8] = include_bytes!("../tests/data/agent_speech.wav");

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

#[allow(clippy::disallowed_methods)] // the origin of virtual time
fn epoch() -> Instant {
    Instant::now()
}

/// The caller's speech as RTP packets of `codec` (one per 20 ms).
fn packets(codec: CodecKind, pt: u8, speech: bool) -> Vec<Vec<u8>> {
    let pcm16 = if speech {
        wav(CALLER)
    } else {
        vec![0; 16_000 * 4]
    };
    let native = resample_all(&pcm16, 16_000, codec.native_rate()).unwrap();
    let mut enc = Encoder::new(codec).unwrap();
    native
        .chunks_exact(codec.samples_per_frame())
        .enumerate()
        .map(|(n, chunk)| {
            let mut payload = Vec::new();
            enc.encode(chunk, &mut payload).unwrap();
            let mut pkt = Vec::new();
            RtpPacket {
                marker: n == 0,
                payload_type: pt,
                seq: SeqNo(n as u16),
                timestamp: MediaTime(n as u32 * codec.rtp_timestamp_step()),
                ssrc: Ssrc(9),
                payload: &payload,
            }
            .write(&mut pkt);
            pkt
        })
        .collect()
}

fn session(codec: CodecKind, pt: u8, now: Instant) -> MediaSession {
    MediaSession::new(
        MediaConfig {
            codec,
            payload_type: pt,
            telephone_event: Some(101),
            remote: Some("198.51.100.7:40000".parse().unwrap()),
            send: true,
            receive: true,
            symmetric_rtp: true,
            inactivity_timeout: Some(Duration::from_secs(30)),
            send_silence: true,
            ssrc: Ssrc(1),
            first_seq: SeqNo(1),
            first_timestamp: MediaTime(0),
            playout_frames: 10,
            jitter_max_frames: 10,
            turn: Some(TurnConfig::default()),
            rtcp: None,
        },
        now,
    )
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let speech = wav(CALLER);
    let frames: Vec<[i16; FRAME_SAMPLES]> = speech
        .chunks_exact(FRAME_SAMPLES)
        .map(|c| c.try_into().unwrap())
        .collect();
    let mut g = c.benchmark_group("vad");
    let mut vad = VoiceDetector::new(VadConfig::default());
    let mut i = 0;
    g.bench_function("speech_frame", |b| {
        b.iter(|| {
            i = (i + 1) % frames.len();
            black_box(vad.process(&frames[i]))
        })
    });
    let silent = [0i16; FRAME_SAMPLES];
    g.bench_function("silent_frame", |b| {
        b.iter(|| black_box(vad.process(&silent)))
    });
    g.finish();

    let agent = wav(AGENT);
    let from: SocketAddr = "198.51.100.7:40000".parse().unwrap();
    let mut g = c.benchmark_group("path_per_tick");
    for (codec, pt) in [
        (CodecKind::Pcmu, 0u8),
        (CodecKind::G722, 9),
        (CodecKind::Opus, 96),
    ] {
        for (name, caller_talks, agent_talks) in [
            ("both_talk", true, true),
            ("caller_talks", true, false),
            ("agent_talks", false, true),
            ("both_silent", false, false),
        ] {
            let pkts = packets(codec, pt, caller_talks);
            let base = epoch();
            let mut s = session(codec, pt, base);
            let mut n = 0usize;
            let mut agent_pos = 0usize;
            g.bench_function(format!("{codec:?}/{name}"), |b| {
                b.iter(|| {
                    let now = base + Duration::from_millis(20 * n as u64);
                    let k = n % pkts.len();
                    // Rewrite seq/timestamp so the stream stays continuous
                    // while the recording loops.
                    let mut pkt = pkts[k].clone();
                    pkt[2..4].copy_from_slice(&(n as u16).to_be_bytes());
                    pkt[4..8].copy_from_slice(
                        &((n as u32).wrapping_mul(codec.rtp_timestamp_step())).to_be_bytes(),
                    );
                    s.handle_receive(now, from, &pkt);
                    if agent_talks && s.playout_room() > 0 {
                        let end = (agent_pos + FRAME_SAMPLES).min(agent.len());
                        s.push_audio(&agent[agent_pos..end]);
                        agent_pos = if end == agent.len() { 0 } else { end };
                    }
                    s.handle_timeout(now);
                    while !matches!(s.poll_output(), Output::Timeout(_)) {}
                    while let Some(f) = s.pop_frame() {
                        black_box(f);
                    }
                    n += 1;
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
