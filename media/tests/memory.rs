//! Heap held by one call's media session: the budget is 128 KB per call.
//! glibc's allocator statistics (`mallinfo2`) measure what a session keeps
//! after it has run for a while (buffers at their working size) — Rust's
//! allocations and libopus's own `malloc`s alike — per codec, with turn
//! detection (VAD, echo guard, endpointer) and RTCP on.

use std::time::{Duration, Instant};

use voxtrunk_media::clock::WallClock;
use voxtrunk_media::codec::{CodecKind, Encoder};
use voxtrunk_media::rtp::{MediaTime, RtpPacket, SeqNo, Ssrc};
use voxtrunk_media::session::{MediaConfig, MediaSession, Output, RtcpConfig, TurnConfig};

/// Bytes currently allocated from the C heap (Rust's allocator on Linux is
/// `malloc` too).
fn heap_in_use() -> isize {
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    let info = unsafe { libc::mallinfo2() };
    info.uordblks as isize
}

#[allow(clippy::disallowed_methods)] // the origin of virtual time
fn epoch() -> Instant {
    Instant::now()
}

/// Bytes held by a session of `codec` after 10 s of two-way audio.
fn held(codec: CodecKind, pt: u8, turn: bool) -> isize {
    let base = epoch();
    let mut enc = Encoder::new(codec).unwrap();
    let frame: Vec<i16> = (0..codec.samples_per_frame())
        .map(|i| ((i as f32 * 0.2).sin() * 6000.0) as i16)
        .collect();
    let mut payload = Vec::new();
    enc.encode(&frame, &mut payload).unwrap();
    let from = "198.51.100.7:40000".parse().unwrap();
    let before = heap_in_use();
    let mut s = MediaSession::new(
        MediaConfig {
            codec,
            payload_type: pt,
            telephone_event: Some(101),
            remote: Some(from),
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
            turn: turn.then(TurnConfig::default),
            rtcp: Some(RtcpConfig {
                cname: "leg-1@192.0.2.1".into(),
                clock: WallClock::new(base, Duration::from_secs(1_700_000_000)),
                seed: 1,
            }),
        },
        base,
    )
    .unwrap();
    let agent = vec![3000i16; 320];
    for n in 0..500u32 {
        let now = base + Duration::from_millis(20 * u64::from(n));
        let mut pkt = Vec::new();
        RtpPacket {
            marker: n == 0,
            payload_type: pt,
            seq: SeqNo(n as u16),
            timestamp: MediaTime(n * codec.rtp_timestamp_step()),
            ssrc: Ssrc(9),
            payload: &payload,
        }
        .write(&mut pkt);
        s.handle_receive(now, from, &pkt);
        s.push_audio(&agent);
        s.handle_timeout(now);
        while !matches!(s.poll_output(), Output::Timeout(_)) {}
        while s.pop_frame().is_some() {}
    }
    let held = heap_in_use() - before;
    drop(s);
    held
}

#[test]
fn a_media_session_holds_at_most_128_kib() {
    let mut report = Vec::new();
    for (codec, pt) in [
        (CodecKind::Pcmu, 0),
        (CodecKind::G722, 9),
        (CodecKind::Opus, 96),
    ] {
        for turn in [false, true] {
            let bytes = held(codec, pt, turn);
            report.push(format!(
                "{codec:?} turn={turn}: {:.1} KiB",
                bytes as f64 / 1024.0
            ));
            assert!(bytes <= 128 * 1024, "{codec:?} turn={turn}: {bytes} bytes");
        }
    }
    eprintln!("{}", report.join("\n"));
}
