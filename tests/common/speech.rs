//! Speech in and out of agent calls: the caller's words synthesized with
//! flite, what the caller heard cut at its pauses and transcribed with
//! `voxtrunk transcribe`, and the records an agent call leaves behind.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::baresip::{Call, flite_wav, read_wav, run};

/// The caller of the booking conversation: a 3-bedroom apartment in
/// Whitefield, then a site visit for tomorrow, after 7 s of greeting, each
/// followed by the silence in which the agent answers.
pub const BOOKING_CALL: [(&str, (f32, f32)); 2] = [
    (
        "I am looking for a three bedroom apartment in Whitefield.",
        (7.0, 13.0),
    ),
    ("Book a site visit for tomorrow.", (0.0, 12.0)),
];

/// The caller's microphone: each sentence in flite's `kal` voice (not the
/// agent's) with its (before, after) silence, one after the other, as
/// `dir/caller.wav` (16 kHz).
pub fn caller_wav(dir: &Path, parts: &[(&str, (f32, f32))]) -> PathBuf {
    let mut files = Vec::new();
    for (i, (text, pad)) in parts.iter().enumerate() {
        let part = dir.join(format!("caller-{i}.wav"));
        flite_wav(dir, "kal", 1.1, text, &part, *pad);
        files.push(part);
    }
    let out = dir.join("caller.wav");
    run(Command::new("sox").args(&files).arg(&out));
    out
}

/// How long a WAV file plays, in seconds.
pub fn wav_seconds(path: &Path) -> f64 {
    let r = read_wav(path);
    r.samples.len() as f64 / f64::from(r.rate)
}

/// Stretches of a recording with sound, split at pauses of at least
/// 600 ms (20 ms windows, energy threshold relative to the loudest);
/// stretches under 500 ms are dropped.
pub fn segments(samples: &[f32], rate: u32) -> Vec<(usize, usize)> {
    let win = rate as usize / 50;
    let energy: Vec<f64> = samples
        .chunks(win)
        .map(|c| (c.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / c.len() as f64).sqrt())
        .collect();
    let loudest = energy.iter().copied().fold(0.0, f64::max);
    let on = loudest * 0.03;
    let mut out = Vec::new();
    let (mut start, mut quiet) = (None, 0);
    for (i, &e) in energy.iter().enumerate() {
        if e > on {
            start.get_or_insert(i);
            quiet = 0;
        } else if let Some(s) = start {
            quiet += 1;
            if quiet >= 30 {
                out.push((s * win, (i + 1 - quiet) * win));
                start = None;
            }
        }
    }
    if let Some(s) = start {
        out.push((s * win, samples.len()));
    }
    out.retain(|(a, b)| b - a > rate as usize / 2);
    out
}

fn write_wav(path: &Path, rate: u32, samples: &[f32]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for &s in samples {
        w.write_sample(s.round().clamp(-32768.0, 32767.0) as i16)
            .unwrap();
    }
    w.finalize().unwrap();
}

/// What the caller of a baresip call heard, cut at its pauses: the number
/// of stretches of sound and each one's transcript, recognised with a
/// language model of `phrases` (one sentence per line).
pub fn transcribe_heard(call: &Call, work: &Path, phrases: &str) -> (usize, Vec<String>) {
    let dec = call
        .dump("-dec.wav")
        .expect("baresip's received-audio dump");
    let heard = read_wav(&dec);
    let cuts = segments(&heard.samples, heard.rate);
    assert!(!cuts.is_empty(), "nothing heard");
    let mut files = Vec::new();
    for (i, (a, b)) in cuts.iter().enumerate() {
        let f = work.join(format!("heard-{i}.wav"));
        write_wav(&f, heard.rate, &heard.samples[*a..*b]);
        files.push(f);
    }
    let phrases_file = work.join("phrases.txt");
    std::fs::write(&phrases_file, phrases).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_voxtrunk"))
        .arg("transcribe")
        .arg("--phrases")
        .arg(&phrases_file)
        .args(&files)
        .output()
        .expect("voxtrunk transcribe");
    assert!(
        out.status.success(),
        "transcribe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let transcripts = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            v["text"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    (cuts.len(), transcripts)
}

/// Lower-case words, without punctuation.
pub fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The trace of `session_id` in `dir`, waiting at most `limit` for it
/// (traces are written when the call's agent session ends).
pub fn trace_of(dir: &Path, session_id: &str, limit: Duration) -> Option<serde_json::Value> {
    let deadline = Instant::now() + limit;
    loop {
        let found = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .filter_map(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .find(|t| t["session_id"] == session_id);
        if found.is_some() || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
