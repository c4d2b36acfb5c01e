//! Calls from SIPp (the standard SIP traffic generator) against the real
//! binary, with the scenarios in `sipp-scenarios/` (see its README.md).
//!
//! Every test starts its own server, runs `sipp` as a bounded child process
//! (`-m`, `-timeout 30s -timeout_error`, and a hard kill after 60 s) from
//! its own temporary directory and local port, and requires SIPp's exit
//! status 0, which SIPp gives only when every call followed the scenario.
//! On failure the report holds the SIPp command line, its error file, log
//! file, the tail of its message trace and the server log. Each test also
//! checks the server log for panics.
//!
//! What SIPp cannot see is taken from the server: the admin `/metrics`
//! counters and its debug log.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{ChildGuard, Options, Server, free_port};
use voxtrunk_media::codec::g711::{linear_to_ulaw, ulaw_to_linear};

/// SIPp gives up after this by default (its `-timeout`, with
/// `-timeout_error`).
const SIPP_TIMEOUT: Duration = Duration::from_secs(30);
/// The test kills SIPp if it is still running this long after its own
/// timeout.
const HARD_MARGIN: Duration = Duration::from_secs(30);
/// Name of the media file `uac-echo-rtp.xml` streams (relative to SIPp's
/// working directory).
const TONE_FILE: &str = "echo-tone.ulaw";
/// The tone in that file.
const TONE_HZ: f64 = 1000.0;
const TONE_AMPLITUDE: f64 = 16384.0;

// ---------------------------------------------------------------------------
// Running SIPp
// ---------------------------------------------------------------------------

/// One SIPp run: a scenario against a server.
struct Sipp {
    scenario: PathBuf,
    service: &'static str,
    /// `u1` (UDP, one socket) or `t1` (TCP, one connection).
    transport: &'static str,
    /// `-m`, `-l` and `-r`: this many calls, at most this many at once, this
    /// many per second.
    calls: u32,
    /// More arguments.
    extra: Vec<String>,
    /// SIPp's own `-timeout` (the hard kill comes 30 s later).
    timeout: Duration,
}

impl Sipp {
    fn new(scenario_file: &str, service: &'static str) -> Sipp {
        Sipp {
            scenario: common::scenario(scenario_file),
            service,
            transport: "u1",
            calls: 1,
            extra: Vec::new(),
            timeout: SIPP_TIMEOUT,
        }
    }

    fn timeout(mut self, t: Duration) -> Sipp {
        self.timeout = t;
        self
    }

    fn transport(mut self, t: &'static str) -> Sipp {
        self.transport = t;
        self
    }

    fn calls(mut self, n: u32) -> Sipp {
        self.calls = n;
        self
    }

    fn arg(mut self, a: &str) -> Sipp {
        self.extra.push(a.to_owned());
        self
    }

    fn scenario_path(mut self, p: PathBuf) -> Sipp {
        self.scenario = p;
        self
    }

    /// Runs SIPp in `dir` to its end. A run that could not bind its local
    /// port (taken between the probe and SIPp's bind) is retried, at most
    /// three times in all.
    fn run<'a>(&self, server: &'a Server, dir: &Path) -> Run<'a> {
        for attempt in 1..=3 {
            let run = self.run_once(server, dir);
            let bind_failed = !run.succeeded() && run.output().contains("Unable to bind");
            if !bind_failed || attempt == 3 {
                return run;
            }
            eprintln!("sipp could not bind its port (attempt {attempt}); retrying");
        }
        unreachable!()
    }

    fn run_once<'a>(&self, server: &'a Server, dir: &Path) -> Run<'a> {
        let port = free_port("0.0.0.0");
        let n = self.calls.to_string();
        let f = |name: &str| dir.join(name).display().to_string();
        let mut args: Vec<String> = vec![
            server.sip.to_string(),
            "-sf".into(),
            self.scenario.display().to_string(),
            "-s".into(),
            self.service.into(),
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-t".into(),
            self.transport.into(),
            "-m".into(),
            n.clone(),
            "-l".into(),
            n.clone(),
            "-r".into(),
            n,
            "-nostdin".into(),
            "-timeout".into(),
            format!("{}s", self.timeout.as_secs()),
            "-timeout_error".into(),
            "-trace_err".into(),
            "-error_file".into(),
            f("errors.log"),
            "-trace_logs".into(),
            "-log_file".into(),
            f("logs.log"),
            "-trace_msg".into(),
            "-message_file".into(),
            f("messages.log"),
            "-trace_screen".into(),
            "-screen_file".into(),
            f("screen.log"),
        ];
        args.extend(self.extra.iter().cloned());
        for name in [
            "errors.log",
            "logs.log",
            "messages.log",
            "screen.log",
            "stdout.log",
        ] {
            let _ = std::fs::remove_file(dir.join(name));
        }
        let command_line = format!("sipp {}", args.join(" "));
        eprintln!("running: {command_line}");
        let out = std::fs::File::create(dir.join("stdout.log")).expect("stdout file");
        let child = Command::new("sipp")
            .args(&args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("stdout fd"))
            .stderr(out)
            .spawn()
            .expect("start sipp");
        let started = Instant::now();
        let mut guard = ChildGuard(Some(child));
        let status = guard.wait(self.timeout + HARD_MARGIN);
        Run {
            server,
            dir: dir.to_owned(),
            command_line,
            status,
            elapsed: started.elapsed(),
        }
    }
}

/// The outcome of a SIPp run, with everything needed to explain a failure.
struct Run<'a> {
    server: &'a Server,
    dir: PathBuf,
    command_line: String,
    /// `None`: killed after its timeout and [`HARD_MARGIN`].
    status: Option<ExitStatus>,
    elapsed: Duration,
}

fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

impl Run<'_> {
    fn file(&self, name: &str) -> String {
        common::read(&self.dir, name)
    }

    /// SIPp's stdout and stderr.
    fn output(&self) -> String {
        self.file("stdout.log")
    }

    /// The `<log>` lines of the scenario.
    fn logs(&self) -> String {
        self.file("logs.log")
    }

    /// The screens dumped on SIGUSR2 and at exit.
    fn screen(&self) -> String {
        self.file("screen.log")
    }

    fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// Everything about the run, for a failure message.
    fn report(&self) -> String {
        let mut r = String::new();
        let _ = writeln!(
            r,
            "\n=== sipp command (in {}):\n{}",
            self.dir.display(),
            self.command_line
        );
        match self.status {
            Some(s) => {
                let _ = writeln!(
                    r,
                    "=== exit status: {s} after {:.1} s",
                    self.elapsed.as_secs_f64()
                );
            }
            None => {
                let _ = writeln!(r, "=== sipp killed: still running long after its timeout");
            }
        }
        let _ = writeln!(
            r,
            "=== sipp error file:\n{}",
            tail(&self.file("errors.log"), 12_000)
        );
        let _ = writeln!(r, "=== sipp log file:\n{}", tail(&self.logs(), 4_000));
        let _ = writeln!(r, "=== sipp output:\n{}", tail(&self.output(), 6_000));
        let _ = writeln!(
            r,
            "=== sipp message trace (tail):\n{}",
            tail(&self.file("messages.log"), 12_000)
        );
        let _ = writeln!(
            r,
            "=== server log (tail):\n{}",
            tail(&self.server.log_text(), 20_000)
        );
        r
    }

    /// Fails the test with `why` and the full report.
    #[track_caller]
    fn fail(&self, why: &str) -> ! {
        panic!("{why}{}", self.report());
    }

    #[track_caller]
    fn check(&self, ok: bool, why: impl FnOnce() -> String) {
        if !ok {
            self.fail(&why());
        }
    }

    /// SIPp exited 0 (all calls successful) and the server did not panic.
    #[track_caller]
    fn assert_success(&self) {
        self.check(self.succeeded(), || {
            "SIPp did not complete every call successfully".into()
        });
        self.assert_no_panic();
    }

    #[track_caller]
    fn assert_no_panic(&self) {
        self.check(self.server.log_has_no_panic(), || {
            "the server log has a panic".into()
        });
    }

    /// A counter from SIPp's screen dumps: the largest `<number> <label>`.
    /// (The PCAP-play line "0 Total RTP pckts sent" precedes the RTP-stream
    /// one of the same name; counters only grow, so the largest is the
    /// latest and the right one.)
    fn screen_counter(&self, label: &str) -> Option<u64> {
        self.screen()
            .lines()
            .filter_map(|l| {
                let (num, text) = l.trim_start().split_once(' ')?;
                text.starts_with(label).then(|| num.parse().ok()).flatten()
            })
            .max()
    }

    /// Waits until the server's /metrics satisfy `ready`, at most 10 s;
    /// returns the last metrics read.
    fn metrics_when(&self, ready: impl Fn(&Metrics) -> bool) -> Metrics {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let m = Metrics::get(self.server);
            if ready(&m) {
                return m;
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "the server's metrics never reached the expected state:\n{}",
                    m.text
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

// ---------------------------------------------------------------------------
// Server-side evidence
// ---------------------------------------------------------------------------

/// The server's Prometheus text, by series (`name{labels}` → value).
struct Metrics {
    text: String,
    series: BTreeMap<String, f64>,
}

impl Metrics {
    fn get(server: &Server) -> Metrics {
        let (status, text) = server.admin_get("/metrics");
        assert_eq!(status, 200, "GET /metrics: {text}");
        let series = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect();
        Metrics { text, series }
    }

    /// A series' value; 0 when absent (counters appear on first increment).
    fn value(&self, series: &str) -> f64 {
        self.series.get(series).copied().unwrap_or(0.0)
    }

    fn has(&self, series: &str) -> bool {
        self.series.contains_key(series)
    }

    /// No call in progress and `n` calls ended, whatever the reason.
    fn calls_done(&self, n: u32) -> bool {
        let ended: f64 = self
            .series
            .iter()
            .filter(|(k, _)| k.starts_with("voxtrunk_calls_ended_total"))
            .map(|(_, v)| v)
            .sum();
        ended >= f64::from(n) && self.value("voxtrunk_calls_active") == 0.0
    }
}

/// The media counters the server logs when a call task ends ("call task
/// done", `stats` = the Debug form of `MediaStats`), one map per call.
fn media_stats(server: &Server) -> Vec<BTreeMap<String, u64>> {
    server
        .log_lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "call task done")
        .map(|v| {
            v.as_object()
                .into_iter()
                .flatten()
                .filter_map(|(k, x)| Some((k.clone(), x.as_u64()?)))
                .collect()
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Audio helpers: the test tone, G.711 mu-law, RTP
// ---------------------------------------------------------------------------

/// Writes the file `uac-echo-rtp.xml` streams: 1 s of a 1 kHz tone at
/// -6 dBFS, raw 8 kHz mu-law (what `sox -n -r 8000 -c 1 -t ul echo-tone.ulaw
/// synth 1 sine 1000 vol 0.5` makes). A whole number of periods, so SIPp's
/// loop is seamless.
fn write_tone(dir: &Path) {
    let bytes: Vec<u8> = (0..8000)
        .map(|n| {
            let x = TONE_AMPLITUDE
                * (2.0 * std::f64::consts::PI * TONE_HZ * f64::from(n) / 8000.0).sin();
            linear_to_ulaw(x.round() as i16)
        })
        .collect();
    std::fs::write(dir.join(TONE_FILE), bytes).expect("write tone file");
}

/// One received RTP packet.
struct RtpPacket {
    at: Instant,
    marker: bool,
    payload_type: u8,
    seq: u16,
    timestamp: u32,
    ssrc: u32,
    payload: Vec<u8>,
}

fn parse_rtp(at: Instant, b: &[u8]) -> Option<RtpPacket> {
    let p = voxtrunk_media::rtp::RtpPacket::parse(b).ok()?;
    Some(RtpPacket {
        at,
        marker: p.marker,
        payload_type: p.payload_type,
        seq: p.seq.0,
        timestamp: p.timestamp.0,
        ssrc: p.ssrc.0,
        payload: p.payload.to_vec(),
    })
}

/// RMS of a mu-law payload and the share of its power in the tone's DFT
/// bin (1 kHz is bin 20 of a 160-sample frame: no leakage for a clean tone).
fn tone_measure(payload: &[u8]) -> (f64, f64) {
    let x: Vec<f64> = payload
        .iter()
        .map(|&u| f64::from(ulaw_to_linear(u)))
        .collect();
    let n = x.len() as f64;
    let power = x.iter().map(|v| v * v).sum::<f64>() / n;
    if power == 0.0 {
        return (0.0, 0.0);
    }
    let w = 2.0 * std::f64::consts::PI * TONE_HZ / 8000.0;
    let (re, im) = x.iter().enumerate().fold((0.0, 0.0), |(re, im), (i, v)| {
        (re + v * (w * i as f64).cos(), im - v * (w * i as f64).sin())
    });
    let tone_power = 2.0 * (re * re + im * im) / (n * n);
    (power.sqrt(), tone_power / power)
}

/// A UDP socket on 127.0.0.1 that records every datagram until stopped.
struct RtpTap {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<RtpPacket>>>,
}

impl RtpTap {
    fn start() -> RtpTap {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind RTP tap");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let port = socket.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut packets = Vec::new();
            let mut buf = [0u8; 2048];
            // Bounded: at most 100 000 datagrams, and only until stopped.
            while !flag.load(Ordering::Relaxed) && packets.len() < 100_000 {
                if let Ok((n, _)) = socket.recv_from(&mut buf) {
                    if let Some(p) = parse_rtp(Instant::now(), &buf[..n]) {
                        packets.push(p);
                    }
                }
            }
            packets
        });
        RtpTap {
            port,
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<RtpPacket> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().expect("tap thread")
    }
}

impl Drop for RtpTap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Duration of a PCM WAV file, from its header.
fn wav_duration(path: &Path) -> Duration {
    let d = std::fs::read(path).expect("read WAV");
    assert_eq!(&d[0..4], b"RIFF", "{} is not a RIFF file", path.display());
    let (mut pos, mut byte_rate, mut data) = (12, 0u32, 0u32);
    while pos + 8 <= d.len() {
        let size = u32::from_le_bytes(d[pos + 4..pos + 8].try_into().unwrap());
        match &d[pos..pos + 4] {
            b"fmt " => byte_rate = u32::from_le_bytes(d[pos + 16..pos + 20].try_into().unwrap()),
            b"data" => data = size,
            _ => {}
        }
        pos += 8 + size as usize + (size as usize & 1);
    }
    assert!(
        byte_rate > 0 && data > 0,
        "no fmt/data chunk in {}",
        path.display()
    );
    Duration::from_secs_f64(f64::from(data) / f64::from(byte_rate))
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// The echo call, over UDP or TCP, with SIPp's and the server's RTP
/// counters compared.
///
/// How this proves RTP flowed both ways:
/// * SIPp -> server: SIPp's screen says it streamed N packets (phase 1);
///   the server's `voxtrunk_rtp_packets_received_total` counts packets it
///   decoded as the negotiated PCMU (other payload types and junk are
///   counted apart, as `rx_ignored`, which must be 0). The server must have
///   decoded at least N: all of SIPp's stream (phase 2 reflections add more).
/// * server -> SIPp: SIPp's reflector (phase 2, `-rtp_echo`) counted K > 0
///   packets arriving at the port named in SIPp's own SDP, so the server
///   sends to the right place; `voxtrunk_rtp_packets_sent_total` shows the
///   server sent a paced stream for the whole call (50 packets/s).
///
/// SIPp cannot look inside what it receives; that the server sends back the
/// caller's own audio is shown by `sipp_echo_returns_the_callers_audio`.
fn echo_call(transport: &'static str) {
    common::require_tool("sipp");
    let server = Server::start();
    let dir = temp_dir();
    write_tone(dir.path());
    let run = Sipp::new("uac-echo-rtp.xml", "echo")
        .transport(transport)
        .arg("-rtp_echo")
        .run(&server, dir.path());
    run.assert_success();
    run.check(run.logs().contains("answer: m=audio"), || {
        "the scenario did not log the SDP answer".into()
    });

    let sent_by_sipp = run
        .screen_counter("Total RTP pckts sent")
        .filter(|&n| n > 0)
        .unwrap_or_else(|| run.fail("SIPp's screen dump has no \"Total RTP pckts sent\" count"));
    let reflected = run
        .screen_counter("Total echo RTP pckts 1st stream")
        .unwrap_or_else(|| run.fail("SIPp's screen dump has no \"Total echo RTP pckts\" count"));
    let m = run.metrics_when(|m| m.has("voxtrunk_rtp_packets_received_total") && m.calls_done(1));
    let received = m.value("voxtrunk_rtp_packets_received_total") as u64;
    let sent = m.value("voxtrunk_rtp_packets_sent_total") as u64;
    let stats = media_stats(&server);
    eprintln!(
        "SIPp streamed {sent_by_sipp} and reflected {reflected}; server received {received}, sent {sent}; call stats {stats:?}"
    );
    // 3 s at 50 packets/s.
    run.check(sent_by_sipp >= 140, || {
        format!("SIPp streamed only {sent_by_sipp} RTP packets in 3 s")
    });
    run.check(received >= sent_by_sipp, || {
        format!(
            "the server decoded {received} RTP packets, fewer than the {sent_by_sipp} SIPp streamed"
        )
    });
    // Phase 2 lasts 0.9 s before the count is taken: about 45 packets.
    run.check(reflected >= 20, || {
        format!("SIPp's reflector got only {reflected} RTP packets from the server in 0.9 s")
    });
    // The call lasted about 4 s: about 200 packets.
    run.check(sent >= 150, || {
        format!("the server sent only {sent} RTP packets in a 4 s call")
    });
    run.check(stats.len() == 1, || {
        format!("expected one finished call task, got {stats:?}")
    });
    let s = &stats[0];
    run.check(
        s.get("rx_ignored") == Some(&0) && s.get("rx_decode_errors") == Some(&0),
        || format!("the server ignored or failed to decode some of SIPp's RTP: {s:?}"),
    );
    run.check(
        m.value("voxtrunk_calls_ended_total{reason=\"remote_bye\"}") == 1.0,
        || format!("the call did not end by our BYE:\n{}", m.text),
    );
}

#[test]
fn sipp_echo_call_with_rtp_both_ways() {
    echo_call("u1");
}

#[test]
fn sipp_echo_call_over_tcp() {
    echo_call("t1");
}

/// The audio the echo application sends back is the caller's: SIPp streams
/// a 1 kHz tone, and the server's RTP is captured by the test itself and
/// analysed. To capture it, the SDP offer names the test's UDP socket
/// instead of SIPp's media port (the scenario file with that one line
/// changed), and the server runs with `rtp.symmetric = false` so it sends
/// to the SDP address rather than latching onto SIPp's source port.
#[test]
fn sipp_echo_returns_the_callers_audio() {
    common::require_tool("sipp");
    let server = Server::start_with(Options {
        config: Some("[rtp]\nsymmetric = false\n".into()),
        ..Options::default()
    });
    let dir = temp_dir();
    write_tone(dir.path());
    let tap = RtpTap::start();
    let original =
        std::fs::read_to_string(common::scenario("uac-echo-rtp.xml")).expect("read scenario");
    assert!(
        original.contains("m=audio [media_port] "),
        "uac-echo-rtp.xml changed: no m=audio [media_port] line"
    );
    let patched = dir.path().join("uac-echo-rtp-tap.xml");
    std::fs::write(
        &patched,
        original.replace("m=audio [media_port] ", &format!("m=audio {} ", tap.port)),
    )
    .expect("write scenario");
    let run = Sipp::new("uac-echo-rtp.xml", "echo")
        .scenario_path(patched)
        .run(&server, dir.path());
    run.assert_success();
    let packets = tap.finish();
    let sent_by_sipp = run
        .screen_counter("Total RTP pckts sent")
        .unwrap_or_else(|| run.fail("SIPp's screen dump has no \"Total RTP pckts sent\" count"));

    // The stream: PCMU, one SSRC, consecutive sequence numbers, timestamps
    // in steps of 160 samples (more where the server skipped a late tick),
    // one packet every 20 ms.
    run.check(packets.len() >= 150, || {
        format!("the tap got only {} RTP packets", packets.len())
    });
    let first = &packets[0];
    for (i, w) in packets.windows(2).enumerate() {
        let (a, b) = (&w[0], &w[1]);
        run.check(
            b.payload_type == 0 && b.ssrc == first.ssrc && b.payload.len() == 160,
            || {
                format!(
                    "packet {}: PT {} SSRC {:#x} {} bytes; expected PT 0, SSRC {:#x}, 160 bytes",
                    i + 1,
                    b.payload_type,
                    b.ssrc,
                    b.payload.len(),
                    first.ssrc
                )
            },
        );
        run.check(b.seq == a.seq.wrapping_add(1), || {
            format!("packet {}: sequence {} after {}", i + 1, b.seq, a.seq)
        });
        let step = b.timestamp.wrapping_sub(a.timestamp);
        run.check(step > 0 && step % 160 == 0 && step < 160 * 50, || {
            format!("packet {}: timestamp step {step}", i + 1)
        });
    }
    let mut gaps: Vec<Duration> = packets.windows(2).map(|w| w[1].at - w[0].at).collect();
    gaps.sort();
    let median = gaps[gaps.len() / 2];
    run.check((15..=25).contains(&median.as_millis()), || {
        format!("median packet spacing {median:?}, not 20 ms")
    });

    // The content: packets that carry the tone at its level (within 6 dB)
    // and nearly all their power at 1 kHz. There must be about as many as
    // SIPp sent: every frame that came in went back out.
    let source_rms = TONE_AMPLITUDE / 2f64.sqrt();
    let measures: Vec<(f64, f64)> = packets.iter().map(|p| tone_measure(&p.payload)).collect();
    let is_tone = |&(rms, purity): &(f64, f64)| {
        rms > source_rms / 2.0 && rms < source_rms * 2.0 && purity > 0.9
    };
    let tone = measures.iter().filter(|m| is_tone(m)).count() as u64;
    let silent = measures.iter().filter(|(rms, _)| *rms < 50.0).count();
    let first_tone = measures.iter().position(is_tone);
    let last_tone = measures.iter().rposition(is_tone);
    eprintln!(
        "tap: {} packets, {tone} with the tone (packets {first_tone:?}..={last_tone:?}), {silent} silent; SIPp sent {sent_by_sipp}",
        packets.len()
    );
    run.check(
        tone * 10 >= sent_by_sipp * 9 && tone <= sent_by_sipp + 2,
        || format!("{tone} packets carried the 1 kHz tone back; SIPp sent {sent_by_sipp}"),
    );
    // The echo is one block: the tone packets are contiguous (a few boundary
    // packets may be partly tone), and the rest is the server's silence —
    // except the end of SIPp's stream, which the jitter buffer treats as
    // loss until it stalls: G.711 concealment repeats and fades the last
    // frame over up to 6 frames (ITU-T G.711 Appendix I style).
    let (a, b) = (first_tone.unwrap(), last_tone.unwrap());
    run.check((b - a + 1) as u64 <= tone + 4, || {
        format!("the tone is scattered over packets {a}..={b} ({tone} tone packets)")
    });
    run.check(silent + tone as usize + 4 + 6 >= packets.len(), || {
        format!(
            "{} packets are neither the tone nor silence",
            packets.len() - silent - tone as usize
        )
    });
    // The server sends encoded silence until the echo starts; the first
    // packet with sound starts a talkspurt and carries the marker bit.
    let onset = measures.iter().position(|(rms, _)| *rms >= 50.0).unwrap();
    run.check(packets[onset].marker, || {
        format!("packet {onset}, the first with sound, has no marker bit")
    });
}

#[test]
fn sipp_cancel_before_answer() {
    common::require_tool("sipp");
    let server = Server::start();
    let dir = temp_dir();
    let calls = 10;
    let run = Sipp::new("uac-cancel.xml", "echo")
        .calls(calls)
        .run(&server, dir.path());
    run.assert_success();
    let logs = run.logs();
    let cancelled = logs.matches("outcome=cancelled").count() as u32;
    let answered = logs.matches("outcome=answered").count() as u32;
    eprintln!("CANCEL race: {cancelled} cancelled (487), {answered} answered first (BYE)");
    run.check(cancelled + answered == calls, || {
        format!("expected {calls} outcomes in the SIPp log")
    });
    // The server saw the same: each call ended cancelled or by our BYE.
    let m = run.metrics_when(|m| m.calls_done(calls));
    run.check(
        m.value("voxtrunk_calls_ended_total{reason=\"cancelled\"}") == f64::from(cancelled)
            && m.value("voxtrunk_calls_ended_total{reason=\"remote_bye\"}") == f64::from(answered),
        || {
            format!(
                "server's call ends do not match SIPp's outcomes:\n{}",
                m.text
            )
        },
    );
}

#[test]
fn sipp_hold_unhold() {
    common::require_tool("sipp");
    let server = Server::start();
    let dir = temp_dir();
    let run = Sipp::new("uac-hold-unhold.xml", "echo").run(&server, dir.path());
    run.assert_success();
    let logs = run.logs();
    for line in [
        "re-INVITE a=sendonly: answer a=recvonly",
        "re-INVITE a=sendrecv: answer a=sendrecv",
        "re-INVITE a=inactive: answer a=inactive",
    ] {
        run.check(logs.contains(line), || format!("SIPp log lacks \"{line}\""));
    }
    let m = run.metrics_when(|m| m.calls_done(1));
    run.check(
        m.value("voxtrunk_calls_ended_total{reason=\"remote_bye\"}") == 1.0,
        || format!("the call did not end by our BYE:\n{}", m.text),
    );
}

#[test]
fn sipp_server_hangs_up_after_playback() {
    common::require_tool("sipp");
    let server = Server::start();
    let dir = temp_dir();
    let prompt = wav_duration(&common::root().join("dialplans/prompts/welcome.wav"));
    let frames = (prompt.as_secs_f64() / 0.020).floor() as u64;
    let run = Sipp::new("uac-playback-bye.xml", "playback")
        .arg("-rtp_echo")
        .run(&server, dir.path());
    run.assert_success();
    let bye_after_ms: f64 = run
        .logs()
        .lines()
        .find_map(|l| l.strip_prefix("bye_after_ms=")?.trim().parse().ok())
        .unwrap_or_else(|| run.fail("SIPp did not log bye_after_ms"));
    let reflected = run
        .screen_counter("Total echo RTP pckts 1st stream")
        .unwrap_or_else(|| run.fail("SIPp's screen dump has no \"Total echo RTP pckts\" count"));
    let m = run.metrics_when(|m| m.has("voxtrunk_rtp_packets_sent_total") && m.calls_done(1));
    let sent = m.value("voxtrunk_rtp_packets_sent_total") as u64;
    eprintln!(
        "prompt {prompt:?} = {frames} frames; BYE {bye_after_ms:.0} ms after the ACK; server sent {sent} RTP packets, SIPp received {reflected}"
    );
    // The BYE comes once the whole prompt is out: not before its length
    // (less one frame of slack for the ACK's own delay), and not long after.
    let prompt_ms = prompt.as_secs_f64() * 1000.0;
    run.check(
        bye_after_ms >= prompt_ms - 60.0 && bye_after_ms <= prompt_ms + 2000.0,
        || {
            format!(
                "BYE came {bye_after_ms:.0} ms after the ACK; the prompt lasts {prompt_ms:.0} ms"
            )
        },
    );
    // Every frame of the prompt was sent, and SIPp received most of them on
    // the port of its SDP.
    run.check(sent >= frames, || {
        format!("the server sent {sent} RTP packets for a {frames}-frame prompt")
    });
    run.check(reflected * 10 >= frames * 8, || {
        format!("SIPp received only {reflected} of the prompt's {frames} RTP packets")
    });
    run.check(
        m.value("voxtrunk_calls_ended_total{reason=\"local_hangup\"}") == 1.0,
        || format!("the call did not end by the server's hangup:\n{}", m.text),
    );
}

#[test]
fn sipp_no_common_codec_gets_488() {
    common::require_tool("sipp");
    let server = Server::start();
    let dir = temp_dir();
    let run = Sipp::new("uac-no-codec-488.xml", "echo").run(&server, dir.path());
    run.assert_success();
    run.check(run.logs().contains("488 received | Warning: 3"), || {
        "SIPp did not log the 488's Warning".into()
    });
    let m = run.metrics_when(|m| m.calls_done(1));
    run.check(
        m.value("voxtrunk_calls_ended_total{reason=\"rejected\"}") == 1.0,
        || format!("the server did not count a rejected call:\n{}", m.text),
    );
}

fn options(transport: &'static str) {
    common::require_tool("sipp");
    let server = Server::start();
    let dir = temp_dir();
    let run = Sipp::new("uac-options.xml", "echo")
        .transport(transport)
        .run(&server, dir.path());
    run.assert_success();
    let logs = run.logs();
    run.check(logs.contains("OPTIONS answered 200 | Allow: "), || {
        "SIPp did not log the OPTIONS answer".into()
    });
    eprintln!("{}", logs.trim());
}

#[test]
fn sipp_options() {
    options("u1");
}

#[test]
fn sipp_options_over_tcp() {
    options("t1");
}

/// The scenario of `bench/load signalling`, as a short burst: 100 calls at
/// 100 calls per second, INVITE to BYE back to back.
#[test]
fn sipp_signalling_only_burst() {
    common::require_tool("sipp");
    let server = Server::start();
    let dir = temp_dir();
    let calls = 100;
    let run = Sipp::new("uac-signalling-only.xml", "echo")
        .calls(calls)
        .arg("-d")
        .arg("0")
        .run(&server, dir.path());
    run.assert_success();
    let m = run.metrics_when(|m| m.calls_done(calls));
    run.check(
        m.value("voxtrunk_calls_offered_total") == f64::from(calls)
            && m.value("voxtrunk_calls_ended_total{reason=\"remote_bye\"}") == f64::from(calls),
        || {
            format!(
                "the server did not see {calls} calls ended by BYE:\n{}",
                m.text
            )
        },
    );
}

/// SIPp sends the digits 1, 2, 3 as RFC 2833/4733 telephone-events (the
/// captures that ship with sip-tester) in an echo call; the call task
/// reports each digit once.
#[test]
fn sipp_dtmf_digits_reach_the_call() {
    common::require_tool("sipp");
    let server = Server::start();
    let dir = temp_dir();
    let run = Sipp::new("uac-dtmf.xml", "echo").run(&server, dir.path());
    run.assert_success();
    let digits: Vec<String> = server
        .log_lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "dtmf")
        .map(|v| {
            format!(
                "{}/{}",
                v["digit"].as_str().unwrap_or("?"),
                v["via"].as_str().unwrap_or("?")
            )
        })
        .collect();
    run.check(digits == ["1/rfc4733", "2/rfc4733", "3/rfc4733"], || {
        format!("digits logged: {digits:?}")
    });
}

// ---------------------------------------------------------------------------
// Escalation to a person
// ---------------------------------------------------------------------------

/// The default agent's call traces in a copied dialplan tree, joined, once
/// one mentions `needle` (the trace is written when the call's agent
/// session ends, just after the BYE; at most 10 s).
fn trace_with(dialplans: &Path, needle: &str) -> String {
    let dir = dialplans.join("agents/realestate/var/traces");
    let mut all = String::new();
    for _ in 0..200 {
        all.clear();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                all.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        if all.contains(needle) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    all
}

/// Checks that the call trace holds every needle, once it holds the last.
fn check_trace(run: &Run<'_>, dialplans: &Path, needles: &[&str]) {
    let trace = trace_with(dialplans, needles.last().expect("a needle"));
    for needle in needles {
        run.check(trace.contains(needle), || {
            format!("{needle:?} missing from the call trace:\n{trace}")
        });
    }
}

/// The caller presses the agent's escalation key (SIP INFO `Signal=0`)
/// after the greeting; the agent says its escalation line and sends REFER
/// to the caller's side, which accepts (202), reports the transfer done in
/// NOTIFYs (100 Trying, then 200 OK, subscription terminated) and gets the
/// agent's BYE. SIPp checks the REFER's Refer-To and Referred-By.
#[test]
fn sipp_escalation_key_refer_accepted() {
    common::require_tool("sipp");
    let dir = temp_dir();
    let dialplans = common::copy_dialplans(dir.path());
    let server = Server::start_with(Options {
        dialplans: Some(dialplans.clone()),
        ..Options::default()
    });
    let run = Sipp::new("uac-escalate-refer-accept.xml", "agent")
        .timeout(Duration::from_secs(45))
        .run(&server, dir.path());
    run.assert_success();
    run.check(
        run.logs().contains("Refer-To sip:sales@127.0.0.1:5070"),
        || "the REFER named another target".into(),
    );
    check_trace(
        &run,
        &dialplans,
        &[
            "dtmf 0",
            "escalate",
            "REFER sent",
            "REFER accepted",
            "transferred",
        ],
    );
}

/// The agent's essential inventory service is down (connection refused),
/// the caller asks for an apartment, and the agent escalates; the caller's
/// side refuses the REFER (603). The agent then calls the person itself
/// (a second leg, from the caller's number) and relays the media: the
/// person hears the caller's speech, the caller gets the person's tone,
/// and when the person hangs up the agent ends the caller's leg with BYE.
#[test]
fn sipp_inventory_down_escalates_and_a_refused_refer_is_bridged() {
    common::require_tool("sipp");
    let dir = temp_dir();
    let dialplans = common::copy_dialplans(dir.path());
    let person = common::uas::Person::new();
    let dead = free_port("127.0.0.1");
    let agent = dialplans.join("agents/realestate/agent.toml");
    let text = std::fs::read_to_string(&agent).expect("agent definition");
    let edited = text
        .replace(
            "kind = \"documents\"\npaths = [\"knowledge/inventory.csv\"]",
            &format!("kind = \"http\"\nurl = \"http://127.0.0.1:{dead}/inventory\""),
        )
        .replace(
            "sip:sales@127.0.0.1:5070",
            &format!("sip:sales@{}", person.sip_addr()),
        );
    assert!(edited.contains("kind = \"http\"") && edited != text);
    std::fs::write(&agent, edited).expect("write agent definition");

    // The caller: silence while the greeting plays, the question, silence
    // while the agent answers, then talk for the person to hear.
    let parts = [
        (
            "I am looking for a three bedroom apartment in Whitefield.",
            (7.0, 7.0),
        ),
        (
            "Hello, is anybody there? I would like to see the apartment this week, \
             and I want to know about the loan and the payment plan.",
            (0.0, 0.5),
        ),
        (
            "Can you hear me? I am still here, waiting for somebody to help me.",
            (0.0, 3.0),
        ),
    ];
    // SIPp streams `caller.wav` as 8 kHz mu-law.
    let wide = common::speech::caller_wav(dir.path(), &parts);
    let narrow = dir.path().join("caller-8k.wav");
    common::baresip::run(
        Command::new("sox")
            .arg(&wide)
            .args(["-r", "8000", "-c", "1", "-e", "u-law"])
            .arg(&narrow),
    );
    std::fs::rename(&narrow, &wide).expect("replace caller.wav");

    let server = Server::start_with(Options {
        dialplans: Some(dialplans.clone()),
        ..Options::default()
    });
    let answering = std::thread::spawn(move || {
        person.answer_once(Duration::from_secs(60), Duration::from_secs(8))
    });
    let run = Sipp::new("uac-escalate-refer-reject.xml", "agent")
        .timeout(Duration::from_secs(60))
        .arg("-mp")
        .arg(&free_port("127.0.0.1").to_string())
        .run(&server, dir.path());
    let seen = answering.join().expect("the person's thread");
    run.assert_success();
    let invite = seen.invite.clone().unwrap_or_default();
    run.check(invite.contains("+919800000043"), || {
        format!("the person was not called with the caller's number: {seen:?}")
    });
    run.check(seen.loud_packets >= 25 && seen.bye_answered, || {
        format!("the person did not hear the caller, or the BYE failed: {seen:?}")
    });
    let to_caller = server
        .log_lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "the person hung up: ending the call")
        .and_then(|v| v["to_caller"].as_u64());
    eprintln!(
        "person: {} RTP packets in, {} loud, {} sent; frames with sound to the caller: {to_caller:?}",
        seen.rtp_packets, seen.loud_packets, seen.sent
    );
    run.check(to_caller.is_some_and(|n| n >= 50), || {
        format!("frames with sound relayed to the caller: {to_caller:?}")
    });
    check_trace(
        &run,
        &dialplans,
        &[
            "essential source inventory failed",
            "escalation line",
            "REFER failed",
            "603",
            "bridged",
        ],
    );
}

/// AI-aware admission: with the target utilization set to almost nothing,
/// the first agent call is admitted (nothing measured yet) and once its
/// caller talks and the recogniser works, a new agent call gets 503 with
/// Retry-After and a Warning saying why, while the first call goes on to
/// its normal end and an echo call (no inference) is still admitted.
#[test]
fn sipp_agent_call_past_the_inference_target_gets_503() {
    use common::uac::{Uac, header, pcmu_offer, to_tag};
    use voxtrunk_sip::msg::HeaderName;

    common::require_tool("sipp");
    let dir = temp_dir();
    let dialplans = common::copy_dialplans(dir.path());
    let wide = common::speech::caller_wav(
        dir.path(),
        &[(
            "Do you have a two bedroom apartment in Whitefield?",
            (0.5, 12.0),
        )],
    );
    let narrow = dir.path().join("caller-8k.wav");
    common::baresip::run(
        Command::new("sox")
            .arg(&wide)
            .args(["-r", "8000", "-c", "1", "-e", "u-law"])
            .arg(&narrow),
    );
    std::fs::copy(&narrow, dir.path().join("caller-2.wav")).expect("second question");
    std::fs::rename(&narrow, &wide).expect("replace caller.wav");
    let server = Server::start_with(Options {
        dialplans: Some(dialplans),
        config: Some(
            "[limits]\nretry_after_s = 9\n[inference]\ntarget_utilization = 0.001\n".into(),
        ),
        ..Options::default()
    });
    // Synthesizing the prompts at start-up kept the TTS pool busy; the
    // first call comes once that has faded from its utilization.
    let deadline = Instant::now() + Duration::from_secs(30);
    while pool_utilization(&server).iter().any(|(_, u)| *u >= 0.001) {
        assert!(Instant::now() < deadline, "the pools never went idle");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::scope(|scope| {
        let caller = scope.spawn(|| {
            Sipp::new("load-agent.xml", "agent")
                .timeout(Duration::from_secs(60))
                .arg("-mp")
                .arg(&free_port("127.0.0.1").to_string())
                .run(&server, dir.path())
        });
        // Wait until the recogniser has measurably worked for that call.
        let deadline = Instant::now() + Duration::from_secs(40);
        let busy = loop {
            let u = pool_utilization(&server)
                .into_iter()
                .find(|(pool, _)| pool == "stt")
                .map_or(0.0, |(_, u)| u);
            if u > 0.002 || Instant::now() > deadline || caller.is_finished() {
                break u;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        if busy <= 0.002 && caller.is_finished() {
            caller.join().expect("SIPp thread").assert_success();
            panic!("the caller's call ended before the recogniser worked");
        }
        assert!(
            busy > 0.002,
            "the recogniser never worked:\n{}",
            server.log_text()
        );
        let uac = Uac::new(server.sip);
        let sent = Instant::now();
        uac.send(&uac.request("INVITE", "agent", "second-agent", 1, "", &pcmu_offer(45040)));
        let refused = uac.final_response("second-agent").expect("an answer");
        eprintln!(
            "second agent call: {} after {:?}, stt utilization {busy:.4}: {}",
            refused.status,
            sent.elapsed(),
            header(&refused, HeaderName::Warning)
        );
        assert_eq!(refused.status, 503, "{}", server.log_text());
        assert_eq!(header(&refused, HeaderName::RetryAfter), "9");
        let warning = header(&refused, HeaderName::Warning);
        assert!(
            warning.contains("agents at capacity: the stt pool would be")
                && warning.contains("(target 0%)"),
            "{warning}"
        );
        uac.send(&uac.request("ACK", "agent", "second-agent", 1, &to_tag(&refused), ""));
        // Calls without an agent do not depend on the pools.
        uac.send(&uac.request("INVITE", "echo", "echo-call", 1, "", &pcmu_offer(45042)));
        let ok = uac.final_response("echo-call").expect("an answer");
        assert_eq!(ok.status, 200);
        uac.send(&uac.request("ACK", "echo", "echo-call", 1, &to_tag(&ok), ""));
        uac.send(&uac.request("BYE", "echo", "echo-call", 2, &to_tag(&ok), ""));
        assert_eq!(uac.final_response("echo-call").map(|r| r.status), Some(200));
        // The admitted call went on to its own end.
        let run = caller.join().expect("SIPp thread");
        run.assert_success();
    });
    let (_, metrics) = server.admin_get("/metrics");
    assert!(
        metrics.contains("voxtrunk_calls_refused_total{why=\"inference\"} 1"),
        "{metrics}"
    );
    assert!(server.log_has_no_panic());
}

/// `voxtrunk_pool_utilization` of each pool, from the server's metrics.
fn pool_utilization(server: &Server) -> Vec<(String, f64)> {
    let (_, metrics) = server.admin_get("/metrics");
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("voxtrunk_pool_utilization{pool=\""))
        .filter_map(|l| {
            let (pool, rest) = l.split_once('"')?;
            Some((pool.to_owned(), rest.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}
