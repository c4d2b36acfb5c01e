//! End-to-end media check with a real SIP softphone: baresip calls the
//! `echo` route with synthesized speech as its microphone, records what
//! comes back, and the recording must match what was sent.
//!
//! baresip runs headless from a private config directory (nothing from
//! `$HOME`): the `aufile` module is the audio source (a WAV made with flite
//! and sox at test time), no audio player is loaded, and the `sndfile`
//! filter writes both the encoded-side audio (what baresip sends, after its
//! resampler, at the codec's rate) and the decoded received audio to WAV
//! files. When the source file runs out baresip hangs up by itself (aufile
//! reports end of file, which closes the call); the test then stops it with
//! SIGINT so the WAV headers are finalized.
//!
//! The check is the normalized cross-correlation between the sent and the
//! received recording, searched over lags from -0.5 s to +1 s at a common
//! analysis rate (8 kHz for G.711, 16 kHz for the wideband codecs). Both
//! recordings start when baresip installs its encoder and decoder, so the
//! lag at the peak is the echo delay as seen in the RTP streams: our
//! receive → decode → 16 kHz queue → paced re-encode path (plus loopback
//! transit), without baresip's own jitter buffer.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ChildGuard, Server, free_port, require_tool};

/// SIGINT (baresip shuts down cleanly, closing its WAV files), then a kill
/// if it has not exited within `grace`.
fn stop(baresip: &mut ChildGuard, grace: Duration) {
    if !baresip.exited() {
        baresip.signal("INT");
    }
    baresip.wait(grace);
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// "One. Two. Three. Four. Five." spoken slowly (3.4 s, pauses between the
/// words) as 16 kHz mono 16-bit WAV (`aufile` needs exactly the configured
/// `ausrc_srate`/`ausrc_channels` and S16LE), with 0.3 s of leading and
/// 0.8 s of trailing silence so the echo of the last word is back before the
/// end of the file ends the call: 4.5 s in all.
fn make_speech(dir: &Path) -> PathBuf {
    let raw = dir.join("flite.wav");
    let wav = dir.join("speech.wav");
    run(Command::new("flite")
        .args(["-voice", "slt", "--setf", "duration_stretch=1.3"])
        .args(["-t", "One. Two. Three. Four. Five."])
        .arg("-o")
        .arg(&raw));
    run(Command::new("sox")
        .arg(&raw)
        .args(["-r", "16000", "-c", "1", "-b", "16", "-e", "signed-integer"])
        .arg(&wav)
        .args(["pad", "0.3", "0.8"]));
    wav
}

/// The baresip `config` file: loopback only, no DNS beyond 127.0.0.1, no
/// STUN/TURN/ICE, no audio device, no UI on stdin.
fn baresip_config(sip_port: u16, source: &Path, rec: &Path) -> String {
    format!(
        "\
poll_method\t\tepoll
sip_listen\t\t127.0.0.1:{sip_port}
call_local_timeout\t10
call_max_calls\t\t1
audio_source\t\taufile,{source}
ausrc_srate\t\t16000
ausrc_channels\t\t1
audio_buffer\t\t20-160
audio_level\t\tno
ausrc_format\t\ts16
auplay_format\t\ts16
auenc_format\t\ts16
audec_format\t\ts16
rtp_tos\t\t\t0
rtp_ports\t\t10000-19999
rtcp_mux\t\tno
jitter_buffer_delay\t1-5
rtp_stats\t\tno
dns_server\t\t127.0.0.1:53
net_interface\t\t127.0.0.1
module_path\t\t/usr/lib/baresip/modules
module\t\t\tg711.so
module\t\t\tg722.so
module\t\t\topus.so
module\t\t\tsndfile.so
module\t\t\taufile.so
module_tmp\t\taccount.so
module_app\t\tmenu.so
snd_path\t\t{rec}
opus_bitrate\t\t64000
opus_stereo\t\tno
opus_sprop_stereo\tno
opus_inbandfec\t\tno
opus_dtx\t\tno
",
        source = source.display(),
        rec = rec.display(),
    )
}

/// A recording: mono samples (channels averaged) and their rate.
struct Recording {
    rate: u32,
    samples: Vec<f32>,
}

fn read_wav(path: &Path) -> Recording {
    let mut r = hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let spec = r.spec();
    assert_eq!(spec.bits_per_sample, 16, "{}: {spec:?}", path.display());
    let ch = usize::from(spec.channels);
    let all: Vec<i16> = r.samples::<i16>().map(|s| s.expect("WAV sample")).collect();
    let samples = all
        .chunks_exact(ch)
        .map(|f| f.iter().map(|&s| f32::from(s)).sum::<f32>() / ch as f32)
        .collect();
    Recording {
        rate: spec.sample_rate,
        samples,
    }
}

/// Integer-factor decimation behind a Hann-windowed sinc low-pass.
fn decimate(x: &[f32], factor: usize) -> Vec<f32> {
    if factor == 1 {
        return x.to_vec();
    }
    let half = 8 * factor as isize;
    let cutoff = 0.45 / factor as f32; // cycles per input sample
    let taps: Vec<f32> = (-half..=half)
        .map(|k| {
            let t = k as f32;
            let sinc = if k == 0 {
                2.0 * cutoff
            } else {
                (2.0 * std::f32::consts::PI * cutoff * t).sin() / (std::f32::consts::PI * t)
            };
            let w = 0.5 + 0.5 * (std::f32::consts::PI * t / (half as f32 + 1.0)).cos();
            sinc * w
        })
        .collect();
    (0..x.len() / factor)
        .map(|i| {
            let c = (i * factor) as isize;
            taps.iter()
                .enumerate()
                .map(|(j, &h)| {
                    let n = c + j as isize - half;
                    if n >= 0 && (n as usize) < x.len() {
                        h * x[n as usize]
                    } else {
                        0.0
                    }
                })
                .sum()
        })
        .collect()
}

/// Normalized cross-correlation of `sent` and `received` at `lag` samples
/// (received[n + lag] against sent[n]), normalized by the energies of the
/// overlapping parts.
fn ncc_at(sent: &[f32], received: &[f32], lag: isize) -> f64 {
    let start = 0.max(-lag) as usize;
    let end = (sent.len() as isize).min(received.len() as isize - lag);
    if end <= start as isize {
        return 0.0;
    }
    let (mut sr, mut ss, mut rr) = (0f64, 0f64, 0f64);
    for n in start..end as usize {
        let s = f64::from(sent[n]);
        let r = f64::from(received[(n as isize + lag) as usize]);
        sr += s * r;
        ss += s * s;
        rr += r * r;
    }
    if ss == 0.0 || rr == 0.0 {
        0.0
    } else {
        sr / (ss * rr).sqrt()
    }
}

/// The peak of the normalized cross-correlation over lags in
/// `[min_lag, max_lag]`: a coarse search on 8x-decimated copies, then the
/// exact search around the coarse peak (debug builds stay fast).
fn ncc_peak(sent: &[f32], received: &[f32], min_lag: isize, max_lag: isize) -> (f64, isize) {
    const COARSE: usize = 8;
    let s8 = decimate(sent, COARSE);
    let r8 = decimate(received, COARSE);
    let c = COARSE as isize;
    let coarse = (min_lag / c..=max_lag / c)
        .map(|l| (ncc_at(&s8, &r8, l), l))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap();
    let centre = coarse.1 * c;
    (centre - 2 * c..=centre + 2 * c)
        .map(|l| (ncc_at(sent, received, l), l))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap()
}

fn rms(x: &[f32]) -> f64 {
    (x.iter().map(|&s| f64::from(s) * f64::from(s)).sum::<f64>() / x.len().max(1) as f64).sqrt()
}

/// The one file in `dir` whose name ends with `suffix`.
fn find_dump(dir: &Path, suffix: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(suffix))
        })
}

/// Calls the echo route with the given codec forced in baresip's account;
/// asserts the echoed speech correlates at least `min_peak` with what was
/// sent, with the peak less than 200 ms late.
fn echo_matches_sent_speech(codec: &str, rtpmap: &str, min_peak: f64) {
    require_tool("baresip");
    require_tool("flite");
    require_tool("sox");
    let started = Instant::now();

    let server = Server::start();
    let work = tempfile::tempdir().expect("temp dir");
    let cfg = work.path().join("baresip");
    let rec = work.path().join("rec");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::create_dir_all(&rec).unwrap();
    let speech = make_speech(work.path());

    let log = work.path().join("baresip.log");
    let mut guard = None;
    for attempt in 1..=3 {
        let sip_port = free_port("127.0.0.1");
        std::fs::write(cfg.join("config"), baresip_config(sip_port, &speech, &rec)).unwrap();
        std::fs::write(
            cfg.join("accounts"),
            format!("<sip:baresip@127.0.0.1>;regint=0;audio_codecs={rtpmap}\n"),
        )
        .unwrap();
        let file = std::fs::File::create(&log).expect("baresip log");
        let child = Command::new("baresip")
            .arg("-4")
            .arg("-f")
            .arg(&cfg)
            .args(["-e", &format!("/dial sip:echo@{}", server.sip)])
            // Safety net: quits by itself even if the call never ends.
            .args(["-t", "30"])
            .current_dir(&rec)
            .env("HOME", work.path())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start baresip");
        let mut g = ChildGuard(Some(child));
        // A lost race for the SIP port shows as an early init failure.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut failed_init = false;
        while Instant::now() < deadline {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("baresip is ready") {
                break;
            }
            if text.contains("init failed") || g.exited() {
                failed_init = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if failed_init && attempt < 3 {
            stop(&mut g, Duration::from_secs(2));
            continue;
        }
        guard = Some(g);
        break;
    }
    let mut guard = guard.unwrap();
    let baresip_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // aufile closes the call at most a second after the file (4.5 s) ends;
    // a rejected or failed call shows as "session closed".
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = baresip_log();
        if text.contains(" terminated") || text.contains("session closed") || guard.exited() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the call did not end in time\n--- baresip ---\n{text}\n--- voxtrunk ---\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    stop(&mut guard, Duration::from_secs(5));
    let text = baresip_log();
    let context = || {
        format!(
            "--- baresip ---\n{}\n--- voxtrunk ---\n{}",
            baresip_log(),
            server.log_text()
        )
    };

    assert!(
        text.contains("Call established"),
        "the call was not answered\n{}",
        context()
    );
    let codec_line = format!("Set audio encoder: {codec}");
    assert!(
        text.contains(&codec_line),
        "baresip did not use {codec}\n{}",
        context()
    );
    let media_up = format!("\"codec\":\"{}\"", codec.to_lowercase());
    assert!(
        server
            .log_lines()
            .iter()
            .any(|l| l.contains("\"media up\"") && l.to_lowercase().contains(&media_up)),
        "voxtrunk did not set up {codec} media\n{}",
        context()
    );
    assert!(
        server.log_has_no_panic(),
        "voxtrunk panicked\n{}",
        context()
    );

    let enc =
        find_dump(&rec, "-enc.wav").unwrap_or_else(|| panic!("no sent-audio dump\n{}", context()));
    let dec = find_dump(&rec, "-dec.wav")
        .unwrap_or_else(|| panic!("no received-audio dump\n{}", context()));
    let sent = read_wav(&enc);
    let received = read_wav(&dec);
    assert_eq!(
        sent.rate, received.rate,
        "both dumps are at the codec's audio rate"
    );

    // Compare at 8 kHz for G.711 and at 16 kHz for G.722 and Opus (48 kHz
    // dumps); the speech itself is 16 kHz, so nothing is lost above that.
    let analysis_rate = sent.rate.min(16_000);
    assert_eq!(
        sent.rate % analysis_rate,
        0,
        "unexpected dump rate {}",
        sent.rate
    );
    let factor = (sent.rate / analysis_rate) as usize;
    let s = decimate(&sent.samples, factor);
    let r = decimate(&received.samples, factor);
    let secs = |n: usize| n as f64 / f64::from(analysis_rate);
    assert!(
        secs(s.len()) > 3.0 && secs(r.len()) > 3.0,
        "recordings too short: sent {:.2} s, received {:.2} s\n{}",
        secs(s.len()),
        secs(r.len()),
        context()
    );
    assert!(
        rms(&s) > 300.0,
        "sent recording is (nearly) silent: rms {:.1}",
        rms(&s)
    );
    assert!(
        rms(&r) > 100.0,
        "received recording is (nearly) silent: rms {:.1}\n{}",
        rms(&r),
        context()
    );

    let per_ms = analysis_rate as isize / 1000;
    let (peak, lag) = ncc_peak(&s, &r, -500 * per_ms, 1000 * per_ms);
    let delay_ms = lag as f64 * 1000.0 / f64::from(analysis_rate);
    let stats = server
        .log_lines()
        .into_iter()
        .find(|l| l.contains("\"call task done\""))
        .and_then(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
        .and_then(|v| v["stats"].as_str().map(str::to_owned))
        .unwrap_or_default();
    eprintln!(
        "baresip echo {codec}: sent {:.2} s, received {:.2} s at {} Hz (analysed at {analysis_rate} Hz); \
         correlation peak {peak:.4} at {delay_ms:.1} ms; test took {:.1} s; server {stats}",
        secs(s.len()),
        secs(r.len()),
        sent.rate,
        started.elapsed().as_secs_f64()
    );
    assert!(
        peak >= min_peak,
        "{codec}: correlation peak {peak:.3} < {min_peak} (at {delay_ms:.1} ms)\n{}",
        context()
    );
    assert!(
        (0.0..200.0).contains(&delay_ms),
        "{codec}: echo delay {delay_ms:.1} ms outside 0..200 ms (peak {peak:.3})\n{}",
        context()
    );
}

// Thresholds. The correlation coefficient relates to the signal-to-error
// ratio as NCC = 1 / sqrt(1 + E/S): 0.95 means the error is 10 dB below the
// speech, 0.8 about 4 dB. For calibration, on this path (loopback, no loss):
// the echo measures 0.9999 for PCMU and G.722 and 0.916 for Opus; unrelated
// speech (a different sentence) measures about 0.2 and the time-reversed
// sent signal about 0.18; one 20 ms frame dropped from the middle of the
// echo brings the peak down to 0.70 (PCMU) / 0.67 (Opus). So the thresholds
// below fail on garbled, wrong or slipped audio but leave wide margin for
// codec noise.

/// G.711 µ-law twice (baresip's encoder, ours after the 8 → 16 → 8 kHz
/// round trip): about 38 dB SNR per pass, so anything below 0.95 is damage,
/// not quantization.
#[test]
fn baresip_echo_pcmu_matches_sent_speech() {
    echo_matches_sent_speech("PCMU", "PCMU/8000/1", 0.95);
}

/// G.722 at 64 kbit/s is a waveform (SB-ADPCM) coder like G.711; same bar.
#[test]
fn baresip_echo_g722_matches_sent_speech() {
    echo_matches_sent_speech("G722", "G722/16000/1", 0.95);
}

/// Opus is not waveform-exact: our encoder runs SILK wideband at 32 kbit/s,
/// complexity 0, and baresip's encoder (mono, 64 kbit/s) runs first; the
/// echo measures 0.916, so the bar is 0.8 (still above a frame slip).
/// baresip registers the codec as opus/48000/1 when `opus_stereo no`; the
/// SDP still says opus/48000/2 as RFC 7587 requires.
#[test]
fn baresip_echo_opus_matches_sent_speech() {
    echo_matches_sent_speech("opus", "opus/48000/1", 0.8);
}
