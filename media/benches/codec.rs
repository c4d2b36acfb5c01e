//! Per-frame cost of the codec and resampling layer: one 20 ms frame per
//! iteration, so the reported time is the CPU cost per 20 ms of one
//! direction of one call.

use std::cell::RefCell;
use std::f64::consts::PI;
use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use voxtrunk_media::codec::{CodecKind, Decoder, Encoder, EncoderOptions};
use voxtrunk_media::resample::Resampler;

/// A second of voice-like audio (harmonics of 140 Hz under a syllabic
/// envelope) at `rate`, so the adaptive codecs do representative work.
fn voice(rate: u32) -> Vec<i16> {
    (0..rate)
        .map(|n| {
            let t = f64::from(n) / f64::from(rate);
            let env = 0.55 - 0.45 * (2.0 * PI * 4.0 * t).cos();
            let v: f64 = (1..=20)
                .filter(|h| 140.0 * f64::from(*h) < f64::from(rate) / 2.0)
                .map(|h| (2.0 * PI * 140.0 * f64::from(h) * t + f64::from(h)).sin() / f64::from(h))
                .sum();
            (8000.0 * env * v).round() as i16
        })
        .collect()
}

fn codecs(c: &mut Criterion) {
    for kind in [
        CodecKind::Pcmu,
        CodecKind::Pcma,
        CodecKind::G722,
        CodecKind::Opus,
    ] {
        let spf = kind.samples_per_frame();
        let pcm = voice(kind.native_rate());
        let frames: Vec<&[i16]> = pcm.chunks_exact(spf).collect();

        let mut group = c.benchmark_group(format!("{kind}"));

        let mut enc = Encoder::new(kind).unwrap();
        let mut payload = Vec::with_capacity(1500);
        let mut i = 0;
        group.bench_function("encode_20ms", |b| {
            b.iter(|| {
                payload.clear();
                enc.encode(black_box(frames[i % frames.len()]), &mut payload)
                    .unwrap();
                i += 1;
                black_box(&payload);
            })
        });

        // Decode a real stream in order, so stateful decoders see the
        // packets they would in a call.
        let mut enc = Encoder::new(kind).unwrap();
        let packets: Vec<Vec<u8>> = frames
            .iter()
            .map(|f| {
                let mut p = Vec::new();
                enc.encode(f, &mut p).unwrap();
                p
            })
            .collect();
        let mut dec = Decoder::new(kind).unwrap();
        let mut out = Vec::with_capacity(2000);
        let mut i = 0;
        group.bench_function("decode_20ms", |b| {
            b.iter(|| {
                out.clear();
                dec.decode(black_box(&packets[i % packets.len()]), &mut out)
                    .unwrap();
                i += 1;
                black_box(&out);
            })
        });

        // Concealment of a single lost frame right after a good one (the
        // common case): each timed call is preceded by an untimed decode,
        // so the decoder is never already deep into a fade.
        let dec = RefCell::new(dec);
        let mut out = Vec::with_capacity(2000);
        let mut i = 0;
        group.bench_function("conceal_20ms", |b| {
            b.iter_batched(
                || {
                    let mut scratch = Vec::with_capacity(2000);
                    dec.borrow_mut()
                        .decode(&packets[i % packets.len()], &mut scratch)
                        .unwrap();
                    i += 1;
                },
                |()| {
                    out.clear();
                    dec.borrow_mut().conceal(&mut out).unwrap();
                    black_box(&out);
                },
                BatchSize::PerIteration,
            )
        });
        group.finish();
    }
}

/// Opus encode cost at each libopus complexity we measured for the default
/// (see `EncoderOptions::with_opus_complexity`); the `opus/encode_20ms`
/// entry above runs at the default.
fn opus_complexity(c: &mut Criterion) {
    let pcm = voice(16_000);
    let frames: Vec<&[i16]> = pcm.chunks_exact(320).collect();
    let mut group = c.benchmark_group("opus_complexity");
    for complexity in [0, 1, 2, 3, 5, 9] {
        let options = EncoderOptions::default().with_opus_complexity(complexity);
        let mut enc = Encoder::with_options(CodecKind::Opus, options).unwrap();
        let mut payload = Vec::with_capacity(1500);
        let mut i = 0;
        group.bench_function(format!("encode_20ms_c{complexity}"), |b| {
            b.iter(|| {
                payload.clear();
                enc.encode(black_box(frames[i % frames.len()]), &mut payload)
                    .unwrap();
                i += 1;
                black_box(&payload);
            })
        });
    }
    group.finish();
}

fn resampling(c: &mut Criterion) {
    let mut group = c.benchmark_group("resample");
    for (from, to) in [(8000, 16000), (16000, 8000), (48000, 16000)] {
        let pcm = voice(from);
        let frames: Vec<&[i16]> = pcm.chunks_exact(from as usize / 50).collect();
        let mut r = Resampler::new(from, to).unwrap();
        let mut out = Vec::with_capacity(2000);
        let mut i = 0;
        group.bench_function(format!("{}k_to_{}k_20ms", from / 1000, to / 1000), |b| {
            b.iter(|| {
                out.clear();
                r.process(black_box(frames[i % frames.len()]), &mut out);
                i += 1;
                black_box(&out);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, codecs, opus_complexity, resampling, plc_loss_burst);
criterion_main!(benches);

/// Concealment over a whole 60 ms loss burst at 16 kHz (G.722, the costlier
/// rate for the G.711 Appendix I style PLC): three concealed frames (the
/// first with its pitch search, then the longer cycles and the fade) and
/// the decode of the packet that ends the burst, with its recovery
/// cross-fade. Four 20 ms frames per iteration; `*/conceal_20ms` above is
/// the first concealed frame alone.
fn plc_loss_burst(c: &mut Criterion) {
    let kind = CodecKind::G722;
    let pcm = voice(kind.native_rate());
    let mut enc = Encoder::new(kind).unwrap();
    let packets: Vec<Vec<u8>> = pcm
        .chunks_exact(kind.samples_per_frame())
        .map(|f| {
            let mut p = Vec::new();
            enc.encode(f, &mut p).unwrap();
            p
        })
        .collect();
    let dec = RefCell::new(Decoder::new(kind).unwrap());
    let mut out = Vec::with_capacity(2000);
    let mut i = 0;
    c.bench_function("G722/loss_burst_60ms_and_recovery", |b| {
        b.iter_batched(
            || {
                // Untimed: a good packet before the burst; the one after it
                // is timed.
                let mut scratch = Vec::with_capacity(2000);
                dec.borrow_mut()
                    .decode(&packets[i % packets.len()], &mut scratch)
                    .unwrap();
                i += 4;
                &packets[i % packets.len()]
            },
            |next| {
                out.clear();
                let mut dec = dec.borrow_mut();
                for _ in 0..3 {
                    dec.conceal(&mut out).unwrap();
                }
                dec.decode(black_box(next), &mut out).unwrap();
                black_box(&out);
            },
            BatchSize::PerIteration,
        )
    });
}
