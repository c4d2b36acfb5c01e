//! Cost of the jitter buffer per 20 ms frame of one inbound stream: one
//! `put` and one `pop` in steady state with mild jitter (each packet 0–6 ms
//! late, the pop 10 ms after the frame's nominal time), payload buffers
//! recycled as the media session does.
//!
//! After criterion's figures, prints µs per frame and ms of CPU per
//! call-second (× 50 / 1000) from a plain timed loop.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use voxtrunk_media::codec::CodecKind;
use voxtrunk_media::jitter::{
    DepthPolicy, FixedDepth, JitterBuffer, JitterConfig, PercentileDepth, Pop,
};
use voxtrunk_media::rtp::{MediaTime, SeqNo, Ssrc};

/// Packets per jitter table cycle.
const TABLE: usize = 4096;

/// The origin of the bench's virtual time.
#[allow(clippy::disallowed_methods)] // a bench may read the clock
fn epoch() -> Instant {
    Instant::now()
}

struct Stream {
    jb: JitterBuffer,
    base: Instant,
    k: u64,
    jitter: Vec<Duration>,
    payload: Vec<u8>,
    frame_ts: u32,
}

impl Stream {
    fn new(kind: CodecKind, policy: Box<dyn DepthPolicy>, payload_len: usize) -> Self {
        let config = JitterConfig::for_codec(kind);
        let frame_ts = config.frame_ts;
        let mut rng = fastrand::Rng::with_seed(0x1177);
        let mut s = Stream {
            jb: JitterBuffer::new(config, policy),
            base: epoch(),
            k: 0,
            jitter: (0..TABLE)
                .map(|_| Duration::from_micros(rng.u64(0..6_000)))
                .collect(),
            payload: (0..payload_len).map(|_| rng.u8(..)).collect(),
            frame_ts,
        };
        // Prefill and let the policy see a full window.
        for _ in 0..1000 {
            s.frame();
        }
        s
    }

    /// One 20 ms frame: the packet arrives, then the decoder pops.
    fn frame(&mut self) {
        let k = self.k;
        self.k += 1;
        let nominal = self.base + Duration::from_millis(20 * k);
        let outcome = self.jb.put(
            nominal + self.jitter[k as usize % TABLE],
            Ssrc(0x5eed),
            SeqNo(k as u16),
            MediaTime((k as u32).wrapping_mul(self.frame_ts)),
            false,
            black_box(&self.payload),
            self.frame_ts,
        );
        black_box(outcome);
        match self.jb.pop(nominal + Duration::from_millis(10)) {
            Pop::Packet(p) => self.jb.recycle(black_box(p).payload),
            other => {
                black_box(other);
            }
        }
    }
}

type Case = (&'static str, CodecKind, fn() -> Box<dyn DepthPolicy>, usize);

const CASES: [Case; 3] = [
    ("pcmu_percentile", CodecKind::Pcmu, percentile, 160),
    ("opus_percentile", CodecKind::Opus, percentile, 60),
    ("pcmu_fixed", CodecKind::Pcmu, fixed, 160),
];

fn percentile() -> Box<dyn DepthPolicy> {
    Box::new(PercentileDepth::new(JitterConfig::MAX_DEPTH_FRAMES))
}

fn fixed() -> Box<dyn DepthPolicy> {
    Box::new(FixedDepth::new(3))
}

fn jitter(c: &mut Criterion) {
    let mut group = c.benchmark_group("jitter");
    for (name, kind, policy, len) in CASES {
        let mut s = Stream::new(kind, policy(), len);
        group.bench_function(format!("{name}/put_pop_20ms"), |b| b.iter(|| s.frame()));
    }
    group.finish();
}

criterion_group!(benches, jitter);

/// µs per frame and CPU per call-second from a plain timed loop.
#[allow(clippy::disallowed_methods)] // a bench may read the clock
fn report() {
    const FRAMES: u32 = 500_000;
    println!();
    for (name, kind, policy, len) in CASES {
        let mut s = Stream::new(kind, policy(), len);
        let before = s.jb.stats();
        let start = Instant::now();
        for _ in 0..FRAMES {
            s.frame();
        }
        let us = start.elapsed().as_secs_f64() * 1e6 / f64::from(FRAMES);
        let st = s.jb.stats();
        println!(
            "jitter/{name}: {us:.3} µs per 20 ms frame = {:.4} ms CPU per call-second \
             (target {} frames, lost {}, late {})",
            us * 50.0 / 1000.0,
            s.jb.target_frames(),
            st.lost_frames - before.lost_frames,
            st.late - before.late,
        );
    }
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    if !std::env::args().any(|a| a == "--list" || a == "--test") {
        report();
    }
}
