//! baresip as a headless test caller.
//!
//! baresip runs from a private config directory (nothing from `$HOME`):
//! the `aufile` module is its microphone (a WAV made at test time), no
//! audio player is loaded, and the `sndfile` filter writes both the
//! encoded-side audio (what baresip sends, after its resampler, at the
//! codec's rate) and the decoded received audio to WAV files in the
//! recording directory. When the source file runs out baresip hangs up by
//! itself (aufile reports end of file, which closes the call); [`Call`]
//! then stops it with SIGINT so the WAV headers are finalized.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{ChildGuard, free_port, require_tool};

/// Runs a command to completion; panics with its output if it fails.
pub fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The baresip `config` file: loopback only, no DNS beyond 127.0.0.1, no
/// STUN/TURN/ICE, no audio device, no UI on stdin. `aufile` needs the
/// source WAV to be exactly 16 kHz mono S16LE.
fn config(sip_port: u16, source: &Path, rec: &Path) -> String {
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

/// One call placed by baresip.
pub struct Call {
    guard: ChildGuard,
    log: PathBuf,
    /// Where the `-enc.wav` and `-dec.wav` dumps go.
    pub rec: PathBuf,
}

impl Call {
    /// Dials `sip:{user}@{server}` from a fresh baresip in `work` with
    /// `source` (16 kHz mono S16LE WAV) as the microphone, offering only
    /// `rtpmap` (e.g. `PCMU/8000/1`). baresip quits by itself after
    /// `max_secs` whatever happens. Retries when another process took the
    /// SIP port first.
    pub fn dial(
        work: &Path,
        server: SocketAddr,
        user: &str,
        source: &Path,
        rtpmap: &str,
        max_secs: u32,
    ) -> Call {
        require_tool("baresip");
        let cfg = work.join("baresip");
        let rec = work.join("rec");
        std::fs::create_dir_all(&cfg).unwrap();
        std::fs::create_dir_all(&rec).unwrap();
        let log = work.join("baresip.log");
        for attempt in 1..=3 {
            let sip_port = free_port("127.0.0.1");
            std::fs::write(cfg.join("config"), config(sip_port, source, &rec)).unwrap();
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
                .args(["-e", &format!("/dial sip:{user}@{server}")])
                .args(["-t", &max_secs.to_string()])
                .current_dir(&rec)
                .env("HOME", work)
                .stdin(Stdio::null())
                .stdout(file.try_clone().unwrap())
                .stderr(file)
                .spawn()
                .expect("start baresip");
            let mut call = Call {
                guard: ChildGuard(Some(child)),
                log: log.clone(),
                rec: rec.clone(),
            };
            // A lost race for the SIP port shows as an early init failure.
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut failed_init = false;
            while Instant::now() < deadline {
                let text = call.log_text();
                if text.contains("baresip is ready") {
                    break;
                }
                if text.contains("init failed") || call.guard.exited() {
                    failed_init = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if failed_init && attempt < 3 {
                call.stop(Duration::from_secs(2));
                continue;
            }
            return call;
        }
        unreachable!("the last attempt returns")
    }

    /// baresip's output so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (at most `limit`) until the call is over: hung up by either
    /// side, refused, or baresip gone. False if it is still up.
    pub fn wait_end(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let text = self.log_text();
            if text.contains(" terminated")
                || text.contains("session closed")
                || self.guard.exited()
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// SIGINT (baresip shuts down cleanly, closing its WAV files), then a
    /// kill if it has not exited within `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if !self.guard.exited() {
            self.guard.signal("INT");
        }
        self.guard.wait(grace);
    }

    /// The dump whose name ends with `suffix` (`-enc.wav`, `-dec.wav`).
    pub fn dump(&self, suffix: &str) -> Option<PathBuf> {
        std::fs::read_dir(&self.rec)
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(suffix))
            })
    }
}

/// A recording: mono samples (channels averaged) and their rate.
pub struct Recording {
    /// Samples per second.
    pub rate: u32,
    /// The samples.
    pub samples: Vec<f32>,
}

/// Reads a 16-bit WAV file.
pub fn read_wav(path: &Path) -> Recording {
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

/// Speech from flite (`voice`, slowed by `stretch`) as a 16 kHz mono S16LE
/// WAV at `out`, with `pad_before`/`pad_after` seconds of silence.
pub fn flite_wav(dir: &Path, voice: &str, stretch: f32, text: &str, out: &Path, pad: (f32, f32)) {
    require_tool("flite");
    require_tool("sox");
    let raw = dir.join(format!(
        "flite-{}.wav",
        out.file_stem().unwrap().to_string_lossy()
    ));
    run(Command::new("flite")
        .args([
            "-voice",
            voice,
            "--setf",
            &format!("duration_stretch={stretch}"),
        ])
        .args(["-t", text])
        .arg("-o")
        .arg(&raw));
    run(Command::new("sox")
        .arg(&raw)
        .args(["-r", "16000", "-c", "1", "-b", "16", "-e", "signed-integer"])
        .arg(out)
        .args(["pad", &pad.0.to_string(), &pad.1.to_string()]));
}
