//! espeak-ng, out of process.
//!
//! espeak-ng is GPL-3.0-or-later, so it is never linked: each synthesis
//! runs the `espeak-ng` command (Debian package `espeak-ng`) as a child
//! process, `espeak-ng --stdout -b 1 -v <voice> -s <wpm>`, with the text on
//! its standard input (not in its arguments, which other local users can
//! read in `/proc`). espeak-ng writes a WAV stream (16-bit mono, 22050 Hz
//! for its own voices) to its standard output as it synthesizes; a reader
//! thread parses the header and passes PCM on as it arrives, so the sink
//! gets audio long before the process ends.
//!
//! The child is killed and reaped when the sink cancels, when the timeout
//! passes, and when the sink panics; no zombie is left behind. The timeout
//! bounds the engine (until its output ends and it exits), not the sink:
//! output is read and buffered while the sink is busy.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::normalize::{has_speech, normalize_for_speech};
use crate::agent::provider::{AgentError, AudioChunk, TextToSpeech};

const PROVIDER: &str = "espeak-ng";

/// How much of the child's standard error is kept for error messages.
const STDERR_LIMIT: usize = 2048;

/// espeak-ng settings.
#[derive(Debug, Clone, PartialEq)]
pub struct EspeakConfig {
    /// The `espeak-ng` executable: a path, or a bare name looked up in
    /// `PATH`.
    pub binary: PathBuf,
    /// Voice (`-v`), e.g. `en-us`, `en-gb`, `hi`; see `espeak-ng --voices`.
    pub voice: String,
    /// Speaking rate in words per minute (`-s`), 80–450.
    pub speed_wpm: u32,
    /// How long one synthesis may run before the child is killed.
    pub timeout: Duration,
}

impl Default for EspeakConfig {
    fn default() -> Self {
        EspeakConfig {
            binary: PathBuf::from("espeak-ng"),
            voice: "en-us".to_owned(),
            speed_wpm: 165,
            timeout: Duration::from_secs(10),
        }
    }
}

/// The espeak-ng text-to-speech provider.
#[derive(Debug, Clone)]
pub struct EspeakNg {
    binary: PathBuf,
    config: EspeakConfig,
}

impl EspeakNg {
    /// Checks the configuration and finds the binary. Errors: no such
    /// executable (`Unavailable`), a bad voice name, speed or timeout
    /// (`Config`). An unknown voice is only noticed by espeak-ng itself, at
    /// the first synthesis (`Engine`).
    pub fn new(config: EspeakConfig) -> Result<Self, AgentError> {
        let voice = config.voice.trim();
        if voice.is_empty()
            || voice.starts_with('-')
            || !voice
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_+/.".contains(c))
        {
            return Err(AgentError::config(
                PROVIDER,
                format!("bad voice name {:?}", config.voice),
            ));
        }
        if !(80..=450).contains(&config.speed_wpm) {
            return Err(AgentError::config(
                PROVIDER,
                format!("speed {} wpm is outside 80–450", config.speed_wpm),
            ));
        }
        if config.timeout.is_zero() {
            return Err(AgentError::config(PROVIDER, "timeout must be positive"));
        }
        let binary = find_executable(&config.binary).ok_or_else(|| missing(&config.binary))?;
        Ok(EspeakNg {
            binary,
            config: EspeakConfig {
                voice: voice.to_owned(),
                ..config
            },
        })
    }

    /// Runs one synthesis; `on_spawn` learns the child's process id.
    fn run(
        &self,
        text: &str,
        sink: &mut dyn FnMut(AudioChunk) -> bool,
        on_spawn: &mut dyn FnMut(u32),
    ) -> Result<(), AgentError> {
        let deadline = Instant::now() + self.config.timeout;
        let mut child = Command::new(&self.binary)
            .arg("--stdout")
            .args(["-b", "1"])
            .args(["-v", &self.config.voice])
            .args(["-s", &self.config.speed_wpm.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied => missing(&self.binary),
                _ => AgentError::engine(
                    PROVIDER,
                    format!("cannot start {}: {e}", self.binary.display()),
                ),
            })?;
        on_spawn(child.id());
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let mut child = Reaper(Some(child));
        let (Some(stdin), Some(stdout), Some(stderr)) = (stdin, stdout, stderr) else {
            return Err(AgentError::engine(PROVIDER, "child has no pipes"));
        };

        // Helper threads: one feeds the text and then collects standard
        // error; one reads the WAV stream. Both end when the child's pipes
        // close, which killing it guarantees.
        let text = text.to_owned();
        let errors = spawn_helper("espeak-ng-stderr", move || {
            feed_and_drain(stdin, &text, stderr)
        })?;
        let (tx, rx) = mpsc::channel();
        let output_ended = Arc::new(AtomicBool::new(false));
        let ended = Arc::clone(&output_ended);
        let reader = spawn_helper("espeak-ng-stdout", move || {
            read_wav(stdout, &tx);
            ended.store(true, Ordering::Release);
        })?;

        // The deadline is for the engine: audio it finished in time is
        // still handed over to a slow sink.
        let outcome = loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Ok(chunk)) => {
                    if Instant::now() >= deadline && !output_ended.load(Ordering::Acquire) {
                        break Outcome::TimedOut;
                    }
                    if !sink(chunk) {
                        break Outcome::Cancelled;
                    }
                }
                Ok(Err(reason)) => break Outcome::Failed(reason),
                Err(mpsc::RecvTimeoutError::Disconnected) => break Outcome::Ended,
                Err(mpsc::RecvTimeoutError::Timeout) => break Outcome::TimedOut,
            }
        };
        let status = match outcome {
            // Once its output has ended, espeak-ng exits at once; allow a
            // moment for that even when the deadline is near.
            Outcome::Ended => {
                child.wait_until(deadline.max(Instant::now() + Duration::from_millis(200)))
            }
            _ => {
                child.kill();
                None
            }
        };
        let _ = reader.join();
        let stderr = errors.join().unwrap_or_default();
        let stderr = stderr.trim();
        match (outcome, status) {
            (Outcome::Cancelled, _) => Ok(()),
            (Outcome::TimedOut, _) | (Outcome::Ended, None) => {
                Err(AgentError::Timeout(PROVIDER.to_owned()))
            }
            (Outcome::Failed(reason), _) => Err(AgentError::engine(
                PROVIDER,
                if stderr.is_empty() {
                    reason
                } else {
                    format!("{reason}: {stderr}")
                },
            )),
            (Outcome::Ended, Some(status)) if status.success() => Ok(()),
            (Outcome::Ended, Some(status)) => Err(AgentError::engine(
                PROVIDER,
                if stderr.is_empty() {
                    format!("exited with {status}")
                } else {
                    format!("exited with {status}: {stderr}")
                },
            )),
        }
    }
}

impl TextToSpeech for EspeakNg {
    fn name(&self) -> &str {
        PROVIDER
    }

    /// Normalizes the text and streams espeak-ng's audio (mono, the
    /// voice's rate: 22050 Hz for espeak-ng's own voices) in chunks as
    /// they are read from the pipe. Returns `Ok` when the sink cancels.
    fn synthesize(
        &self,
        text: &str,
        sink: &mut dyn FnMut(AudioChunk) -> bool,
    ) -> Result<(), AgentError> {
        let text = normalize_for_speech(text);
        if !has_speech(&text) {
            return Ok(());
        }
        self.run(&text, sink, &mut |_| {})
    }
}

enum Outcome {
    Ended,
    Cancelled,
    TimedOut,
    Failed(String),
}

fn missing(binary: &Path) -> AgentError {
    AgentError::unavailable(
        PROVIDER,
        format!(
            "no executable {} (install the Debian package espeak-ng: apt-get install espeak-ng)",
            binary.display()
        ),
    )
}

/// Resolves a path, or a bare name through `PATH`, to an executable file.
fn find_executable(binary: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if binary.components().count() > 1 || binary.is_absolute() {
        return executable(binary).then(|| binary.to_owned());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(binary))
        .find(|p| executable(p))
}

fn spawn_helper<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>, AgentError> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .map_err(|e| AgentError::engine(PROVIDER, format!("cannot start a thread: {e}")))
}

/// Writes the text to the child and closes its input, then keeps the
/// start of its standard error.
fn feed_and_drain(mut stdin: impl Write, text: &str, mut stderr: ChildStderr) -> String {
    let _ = stdin.write_all(text.as_bytes());
    let _ = stdin.write_all(b"\n");
    drop(stdin);
    let mut kept = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match stderr.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let room = STDERR_LIMIT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// Reads a RIFF/WAVE stream and sends its PCM on as it arrives. Ends
/// (dropping the sender) at the end of the stream or when the receiver is
/// gone; a malformed stream sends an error.
fn read_wav(stdout: ChildStdout, tx: &mpsc::Sender<Result<AudioChunk, String>>) {
    let mut wav = WavStream::new(stdout);
    loop {
        match wav.next_chunk() {
            Ok(Some(chunk)) => {
                if tx.send(Ok(chunk)).is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(reason) => {
                let _ = tx.send(Err(reason));
                return;
            }
        }
    }
}

/// Incremental reader of a 16-bit PCM WAV stream whose data size may be
/// a placeholder (espeak-ng writes 0x7ffff000 when streaming).
struct WavStream<R> {
    input: R,
    /// Sample rate, once the header is read.
    rate: Option<u32>,
    /// Data bytes still expected according to the header.
    remaining: u64,
    /// An odd byte left over from the previous read.
    carry: Option<u8>,
    buf: Vec<u8>,
}

impl<R: Read> WavStream<R> {
    fn new(input: R) -> Self {
        WavStream {
            input,
            rate: None,
            remaining: 0,
            carry: None,
            buf: vec![0; 8192],
        }
    }

    /// Reads exactly `buf.len()` bytes; `Ok(false)` at a clean end of
    /// stream before the first byte.
    fn fill(&mut self, buf: &mut [u8]) -> Result<bool, String> {
        let mut got = 0;
        while got < buf.len() {
            match self.input.read(&mut buf[got..]) {
                Ok(0) if got == 0 => return Ok(false),
                Ok(0) => return Err("WAV stream ends inside its header".to_owned()),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("reading espeak-ng output: {e}")),
            }
        }
        Ok(true)
    }

    /// Parses the header up to the start of the `data` chunk.
    fn read_header(&mut self) -> Result<Option<u32>, String> {
        let mut riff = [0u8; 12];
        if !self.fill(&mut riff)? {
            return Ok(None);
        }
        if &riff[0..4] != b"RIFF" || &riff[8..12] != b"WAVE" {
            return Err("output is not a WAV stream".to_owned());
        }
        let mut format: Option<(u16, u16, u32, u16)> = None;
        loop {
            let mut head = [0u8; 8];
            if !self.fill(&mut head)? {
                return Err("WAV stream has no data chunk".to_owned());
            }
            let size = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
            match &head[0..4] {
                b"fmt " => {
                    if !(16..=1024).contains(&size) {
                        return Err(format!("bad WAV fmt chunk size {size}"));
                    }
                    let mut fmt = vec![0u8; (size + size % 2) as usize];
                    if !self.fill(&mut fmt)? {
                        return Err("WAV stream ends inside its header".to_owned());
                    }
                    let u16_at = |i: usize| u16::from_le_bytes([fmt[i], fmt[i + 1]]);
                    let rate = u32::from_le_bytes([fmt[4], fmt[5], fmt[6], fmt[7]]);
                    format = Some((u16_at(0), u16_at(2), rate, u16_at(14)));
                }
                b"data" => {
                    let Some((tag, channels, rate, bits)) = format else {
                        return Err("WAV data before its format".to_owned());
                    };
                    if tag != 1 || channels != 1 || bits != 16 || rate == 0 {
                        return Err(format!(
                            "unsupported WAV format: tag {tag}, {channels} channels, {bits} bits, {rate} Hz"
                        ));
                    }
                    self.remaining = u64::from(size);
                    return Ok(Some(rate));
                }
                _ => {
                    // Skip any other chunk.
                    let mut skip = (u64::from(size) + u64::from(size % 2)).min(1 << 20);
                    let mut scratch = [0u8; 512];
                    while skip > 0 {
                        let n = skip.min(scratch.len() as u64) as usize;
                        if !self.fill(&mut scratch[..n])? {
                            return Err("WAV stream ends inside its header".to_owned());
                        }
                        skip -= n as u64;
                    }
                }
            }
        }
    }

    /// The next run of samples as they come from the pipe; `None` at the
    /// end of the stream.
    fn next_chunk(&mut self) -> Result<Option<AudioChunk>, String> {
        let rate = match self.rate {
            Some(rate) => rate,
            None => match self.read_header()? {
                Some(rate) => {
                    self.rate = Some(rate);
                    rate
                }
                None => return Ok(None),
            },
        };
        loop {
            if self.remaining == 0 {
                return Ok(None);
            }
            let want = (self.buf.len() as u64).min(self.remaining) as usize;
            let n = match self.input.read(&mut self.buf[..want]) {
                Ok(0) => return Ok(None),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("reading espeak-ng output: {e}")),
            };
            self.remaining -= n as u64;
            let mut bytes = &self.buf[..n];
            let mut samples = Vec::with_capacity(n / 2 + 1);
            if let Some(low) = self.carry.take() {
                samples.push(i16::from_le_bytes([low, bytes[0]]));
                bytes = &bytes[1..];
            }
            let pairs = bytes.chunks_exact(2);
            if let [odd] = pairs.remainder() {
                self.carry = Some(*odd);
            }
            samples.extend(pairs.map(|p| i16::from_le_bytes([p[0], p[1]])));
            if !samples.is_empty() {
                return Ok(Some(AudioChunk { rate, samples }));
            }
        }
    }
}

/// Owns the child; kills and reaps it unless it was waited for, so that
/// no exit path (cancel, timeout, error, a panicking sink) leaves a
/// running process or a zombie.
struct Reaper(Option<Child>);

impl Reaper {
    /// Waits for the child to exit until `deadline`; kills it after that.
    fn wait_until(&mut self, deadline: Instant) -> Option<ExitStatus> {
        let child = self.0.as_mut()?;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.0 = None;
                    return Some(status);
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                Ok(None) | Err(_) => {
                    self.kill();
                    return None;
                }
            }
        }
    }

    /// Kills and reaps the child.
    fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn espeak() -> EspeakNg {
        EspeakNg::new(EspeakConfig::default())
            .expect("espeak-ng installed (apt-get install espeak-ng)")
    }

    /// Whether the process is gone from the process table (exited and
    /// reaped: no zombie).
    fn gone(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            // A reused pid would be another program.
            Ok(stat) => !stat.contains("(espeak-ng)"),
        }
    }

    #[test]
    fn produces_audio() {
        let tts = espeak();
        let start = Instant::now();
        let mut first = None;
        let mut chunks = Vec::new();
        let mut pid = 0;
        tts.run(
            &normalize_for_speech(
                "Your site visit is booked for tomorrow morning at the new tower.",
            ),
            &mut |chunk| {
                first.get_or_insert_with(|| start.elapsed());
                chunks.push(chunk);
                true
            },
            &mut |p| pid = p,
        )
        .unwrap();
        let total = start.elapsed();
        assert!(gone(pid));
        assert!(chunks.iter().all(|c| c.rate == 22_050));
        let samples: Vec<i16> = chunks
            .iter()
            .flat_map(|c| c.samples.iter().copied())
            .collect();
        let seconds = samples.len() as f64 / 22_050.0;
        assert!((1.5..6.0).contains(&seconds), "{seconds} s");
        let peak = samples.iter().map(|&s| i32::from(s).abs()).max().unwrap();
        assert!(peak > 3000, "silent: peak {peak}");
        println!(
            "espeak-ng: {seconds:.2} s of audio in {} chunks; first chunk after {:.1} ms, all after \
             {:.1} ms ({:.0}x real time)",
            chunks.len(),
            first.unwrap().as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3,
            seconds / total.as_secs_f64()
        );
    }

    #[test]
    fn cancellation_kills_the_child() {
        let tts = espeak();
        // Long enough that espeak-ng is still busy after the first chunk.
        let text = "Book a site visit for tomorrow morning at the new tower near the station. "
            .repeat(300);
        let start = Instant::now();
        let mut calls = 0;
        let mut pid = 0;
        tts.run(
            &text,
            &mut |_| {
                calls += 1;
                false
            },
            &mut |p| pid = p,
        )
        .unwrap();
        let cancelled_after = start.elapsed();
        assert_eq!(calls, 1);
        assert!(pid > 0);
        assert!(gone(pid), "espeak-ng {pid} still in the process table");
        // The whole text, for comparison.
        let start = Instant::now();
        let mut samples = 0;
        tts.run(
            &text,
            &mut |chunk| {
                samples += chunk.samples.len();
                true
            },
            &mut |_| {},
        )
        .unwrap();
        println!(
            "espeak-ng: cancelled after the first chunk in {:.1} ms; the whole text ({:.0} s of audio) \
             takes {:.1} ms",
            cancelled_after.as_secs_f64() * 1e3,
            samples as f64 / 22_050.0,
            start.elapsed().as_secs_f64() * 1e3
        );
    }

    #[test]
    fn timeout_kills_the_child() {
        let tts = EspeakNg::new(EspeakConfig {
            timeout: Duration::from_millis(1),
            ..EspeakConfig::default()
        })
        .unwrap();
        let text = "Book a site visit for tomorrow morning. ".repeat(2000);
        let mut pid = 0;
        let err = tts.run(&text, &mut |_| true, &mut |p| pid = p).unwrap_err();
        assert_eq!(err, AgentError::Timeout("espeak-ng".to_owned()));
        assert!(gone(pid));
    }

    #[test]
    fn slow_sink_is_not_a_timeout() {
        // espeak-ng finishes within the timeout; the sink takes longer than
        // that to consume the audio, which still arrives complete.
        let tts = EspeakNg::new(EspeakConfig {
            timeout: Duration::from_secs(1),
            ..EspeakConfig::default()
        })
        .unwrap();
        let start = Instant::now();
        let mut samples = 0;
        let mut pid = 0;
        tts.run(
            "Your site visit is booked for tomorrow morning at the new tower.",
            &mut |chunk| {
                samples += chunk.samples.len();
                std::thread::sleep(Duration::from_millis(100));
                true
            },
            &mut |p| pid = p,
        )
        .unwrap();
        assert!(start.elapsed() > Duration::from_secs(1));
        assert!(samples > 22_050 * 3 / 2, "{samples}");
        assert!(gone(pid));
    }

    #[test]
    fn missing_binary_is_unavailable() {
        for binary in ["/nonexistent/espeak-ng", "no-such-espeak-ng-binary"] {
            let err = EspeakNg::new(EspeakConfig {
                binary: PathBuf::from(binary),
                ..EspeakConfig::default()
            })
            .unwrap_err();
            assert!(matches!(err, AgentError::Unavailable { .. }), "{err}");
            assert!(err.to_string().contains("package espeak-ng"), "{err}");
        }
        // Removed after start-up: found out at synthesis.
        let mut tts = espeak();
        tts.binary = PathBuf::from("/nonexistent/espeak-ng");
        let err = tts.synthesize("hello", &mut |_| true).unwrap_err();
        assert!(matches!(err, AgentError::Unavailable { .. }), "{err}");
    }

    #[test]
    fn unknown_voice_is_an_engine_error() {
        let tts = EspeakNg::new(EspeakConfig {
            voice: "xx-nosuchvoice".to_owned(),
            ..EspeakConfig::default()
        })
        .unwrap();
        let err = tts.synthesize("hello", &mut |_| true).unwrap_err();
        match err {
            AgentError::Engine { reason, .. } => assert!(reason.contains("voice"), "{reason}"),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn bad_config() {
        for config in [
            EspeakConfig {
                voice: "-x".to_owned(),
                ..EspeakConfig::default()
            },
            EspeakConfig {
                speed_wpm: 10,
                ..EspeakConfig::default()
            },
            EspeakConfig {
                timeout: Duration::ZERO,
                ..EspeakConfig::default()
            },
        ] {
            let err = EspeakNg::new(config).unwrap_err();
            assert!(matches!(err, AgentError::Config { .. }), "{err}");
        }
    }

    #[test]
    fn empty_text_gives_no_audio() {
        let tts = espeak();
        for text in ["", "  \n", " ... , !"] {
            let mut calls = 0;
            tts.synthesize(text, &mut |_| {
                calls += 1;
                true
            })
            .unwrap();
            assert_eq!(calls, 0, "{text:?}");
        }
    }

    #[test]
    fn text_that_looks_like_options_is_spoken() {
        let tts = espeak();
        let mut samples = 0;
        tts.synthesize("--help -v -s 80", &mut |c| {
            samples += c.samples.len();
            true
        })
        .unwrap();
        assert!(samples > 22_050 / 2, "{samples}");
    }

    #[test]
    fn wav_parser() {
        let mut wav = Vec::new();
        wav.extend_from_slice(b"RIFF\x24\xf0\xff\x7fWAVE");
        wav.extend_from_slice(b"LIST\x03\x00\x00\x00abc\x00");
        wav.extend_from_slice(b"fmt \x10\x00\x00\x00");
        wav.extend_from_slice(&[1, 0, 1, 0, 0x40, 0x1f, 0, 0, 0x80, 0x3e, 0, 0, 2, 0, 16, 0]);
        wav.extend_from_slice(b"data\x00\xf0\xff\x7f");
        for s in [1i16, -2, 300, -32768, 32767] {
            wav.extend_from_slice(&s.to_le_bytes());
        }
        wav.push(0x05); // a torn last sample is dropped
        // Deliver one byte per read, to exercise partial reads.
        struct Trickle(Cursor<Vec<u8>>);
        impl Read for Trickle {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = buf.len().min(1);
                self.0.read(&mut buf[..n])
            }
        }
        let mut stream = WavStream::new(Trickle(Cursor::new(wav)));
        let mut samples = Vec::new();
        while let Some(chunk) = stream.next_chunk().unwrap() {
            assert_eq!(chunk.rate, 8000);
            samples.extend(chunk.samples);
        }
        assert_eq!(samples, [1, -2, 300, -32768, 32767]);

        let mut stream = WavStream::new(Cursor::new(b"not a wav file at all".to_vec()));
        assert!(stream.next_chunk().is_err());
        let mut stream = WavStream::new(Cursor::new(Vec::new()));
        assert_eq!(stream.next_chunk().unwrap(), None);
    }
}
