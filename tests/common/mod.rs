//! Starting and stopping the real `voxtrunk` binary for integration tests.
//!
//! Every server listens on 127.0.0.1 with a kernel-chosen SIP port and its
//! own RTP port range, logs JSON lines to a file the test can read, and is
//! killed when the [`Server`] is dropped, so a failing test never leaves a
//! process behind.

#![allow(dead_code)]

pub mod baresip;
pub mod crm;
pub mod kamailio;
pub mod speech;
pub mod uac;
pub mod uas;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// A running server.
pub struct Server {
    child: Option<Child>,
    /// SIP address (UDP and TCP).
    pub sip: SocketAddr,
    /// Admin HTTP address.
    pub admin: SocketAddr,
    /// The JSON log file.
    pub log: PathBuf,
    /// Scratch directory for the test (removed on drop).
    pub dir: tempfile::TempDir,
}

/// Distinct RTP port ranges per server within one test binary; the base
/// differs per test binary (by process id) so parallel binaries rarely meet,
/// and the pool skips ports that are taken anyway.
fn rtp_range() -> (u16, u16) {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let slot = NEXT.fetch_add(1, Ordering::Relaxed) % 40;
    let base = 20_000 + (std::process::id() % 10) as u16 * 4_000 + slot * 100;
    (base, base + 99)
}

/// The repository root (where `dialplans/` lives).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Options for starting a server.
#[derive(Default)]
pub struct Options {
    /// Dialplan directory (default: the repository's `dialplans/`).
    pub dialplans: Option<PathBuf>,
    /// Extra config file text.
    pub config: Option<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
}

impl Server {
    /// Starts the default configuration.
    pub fn start() -> Server {
        Server::start_with(Options::default())
    }

    /// Starts with options and waits until it listens (at most 20 s).
    pub fn start_with(opts: Options) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("voxtrunk.log");
        let (low, high) = rtp_range();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_voxtrunk"));
        cmd.arg("run")
            .args(["--sip-listen", "127.0.0.1:0"])
            .args(["--rtp-ports", &format!("{low}-{high}")])
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(["--log-format", "json"])
            .arg("--dialplans")
            .arg(opts.dialplans.unwrap_or_else(|| root().join("dialplans")));
        if let Some(text) = opts.config {
            let p = dir.path().join("voxtrunk.toml");
            std::fs::write(&p, text).expect("write config");
            cmd.arg("--config").arg(p);
        }
        cmd.env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info,voxtrunk=debug".into()),
        );
        for (k, v) in opts.env {
            cmd.env(k, v);
        }
        let file = std::fs::File::create(&log).expect("log file");
        cmd.stdout(file.try_clone().expect("log fd"))
            .stderr(file)
            .stdin(Stdio::null());
        let child = cmd.spawn().expect("start voxtrunk");
        let mut server = Server {
            child: Some(child),
            sip: "0.0.0.0:0".parse().unwrap(),
            admin: "0.0.0.0:0".parse().unwrap(),
            log,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(line) = server
                .log_lines()
                .into_iter()
                .find(|l| l.contains("\"listening\""))
            {
                let v: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
                server.sip = v["udp"].as_str().unwrap().parse().unwrap();
                server.admin = v["admin"].as_str().unwrap().parse().unwrap();
                return server;
            }
            if let Some(status) = server.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "voxtrunk exited with {status} before listening:\n{}",
                    server.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "voxtrunk did not start:\n{}",
                server.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log so far, line by line.
    pub fn log_lines(&self) -> Vec<String> {
        match std::fs::File::open(&self.log) {
            Ok(f) => BufReader::new(f).lines().map_while(Result::ok).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Resident set size in kB, from /proc.
    pub fn rss_kb(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// CPU time the process has used (user + system), from /proc.
    pub fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Fields after the command name (which may hold spaces): state is
        // the 3rd field of the whole line, utime the 14th, stime the 15th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = [11, 12]
            .iter()
            .filter_map(|&i| f.get(i)?.parse::<u64>().ok())
            .sum();
        ticks as f64 / 100.0
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().unwrap().try_wait(), Ok(None))
    }

    /// Sends a signal and waits (at most `timeout`) for the exit status.
    pub fn signal_and_wait(
        &mut self,
        signal: &str,
        timeout: Duration,
    ) -> Option<std::process::ExitStatus> {
        let pid = self.pid().to_string();
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status();
        self.wait_exit(timeout)
    }

    /// Waits (at most `timeout`) for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.as_mut().unwrap().try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// GET on the admin API; returns (status, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(self.admin).expect("admin connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let status = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    /// True when the log has no panic.
    pub fn log_has_no_panic(&self) -> bool {
        let t = self.log_text();
        !t.contains("panicked") && !t.contains("RUST_BACKTRACE")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Path of a file in `sipp-scenarios/`.
pub fn scenario(name: &str) -> PathBuf {
    root().join("sipp-scenarios").join(name)
}

/// Fails with a clear message when a required external tool is missing.
pub fn require_tool(name: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{name}` is not installed; run scripts/setup.sh (installs the test peers)"
    );
}

/// Reads a file relative to a directory, for messages.
pub fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

/// A child process (a SIP peer, a proxy) that is killed when dropped, so a
/// failing test never leaves one behind.
pub struct ChildGuard(pub Option<Child>);

impl ChildGuard {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.0.as_ref().expect("child").id()
    }

    /// True once it has exited.
    pub fn exited(&mut self) -> bool {
        match self.0.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(Some(_))),
            None => true,
        }
    }

    /// Sends a signal (`"INT"`, `"TERM"`...).
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Waits at most `limit` for the exit status; `None` if still running.
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let child = self.0.as_mut()?;
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.0 = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A port free for both UDP and TCP on `ip` right now. Another process can
/// still take it before the caller binds it; callers retry on a bind error.
pub fn free_port(ip: &str) -> u16 {
    for _ in 0..50 {
        let udp = std::net::UdpSocket::bind((ip, 0)).expect("bind a UDP probe");
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP after 50 tries");
}

/// A copy of the repository's `dialplans/` at `dir/dialplans` (without
/// the state a local run of the server leaves in `var/` directories), so
/// that a test's agent starts with an empty CRM and its own records.
pub fn copy_dialplans(dir: &Path) -> PathBuf {
    fn copy_tree(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("create a directory");
        for entry in std::fs::read_dir(from).expect("read a directory") {
            let entry = entry.expect("a directory entry");
            let (src, dst) = (entry.path(), to.join(entry.file_name()));
            if entry.file_type().expect("file type").is_dir() {
                if entry.file_name() != "var" {
                    copy_tree(&src, &dst);
                }
            } else {
                std::fs::copy(&src, &dst).expect("copy a file");
            }
        }
    }
    let out = dir.join("dialplans");
    copy_tree(&root().join("dialplans"), &out);
    out
}
