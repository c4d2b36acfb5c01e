//! A real Kamailio for tests: started from a config template in
//! `tests/kamailio/` on a free loopback port, in the foreground (`-DD -E`,
//! its output in a file), with its own runtime dir and pid file, no
//! database and no DNS; ready once it answers an OPTIONS; stopped with all
//! its workers (its own process group) when dropped.

use std::net::{SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, root};

/// A running Kamailio.
pub struct Kamailio {
    child: Option<Child>,
    /// Where it listens (UDP).
    pub addr: SocketAddr,
    /// Its output.
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// Sends `signal` to every process of the group `pgid` (a group the test
/// created: the kamailio main process leads it and its workers are in it).
fn kill_group(signal: &str, pgid: u32) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl Kamailio {
    /// Starts `tests/kamailio/TEMPLATE` with `@@LISTEN_PORT@@` and the
    /// placeholders `fill` returns filled in (`fill` gets the proxy's own
    /// temp dir, for files the config names), and waits (bounded) until it
    /// answers an OPTIONS. Retries with another port if the one probed was
    /// taken in the meantime.
    pub fn start(template: &str, fill: &dyn Fn(&Path) -> Vec<(&'static str, String)>) -> Kamailio {
        let mut last = String::new();
        for _ in 0..3 {
            match Kamailio::try_start(template, fill) {
                Ok(k) => return k,
                Err(why) if why.contains("Address already in use") => last = why,
                Err(why) => panic!("{why}"),
            }
        }
        panic!("kamailio could not bind a port three times:\n{last}");
    }

    fn try_start(
        template: &str,
        fill: &dyn Fn(&Path) -> Vec<(&'static str, String)>,
    ) -> Result<Kamailio, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port("127.0.0.1");
        let path = root().join("tests").join("kamailio").join(template);
        let mut cfg_text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .replace("@@LISTEN_PORT@@", &port.to_string());
        for (placeholder, value) in fill(dir.path()) {
            cfg_text = cfg_text.replace(placeholder, &value);
        }
        assert!(
            !cfg_text.contains("@@"),
            "unfilled placeholder in the kamailio config"
        );
        let cfg = dir.path().join("kamailio.cfg");
        std::fs::write(&cfg, cfg_text).expect("write kamailio.cfg");
        let run = dir.path().join("run");
        std::fs::create_dir(&run).expect("run dir");
        let log = dir.path().join("kamailio.log");
        let file = std::fs::File::create(&log).expect("kamailio log file");

        let mut cmd = Command::new("kamailio");
        cmd.arg("-f")
            .arg(&cfg)
            .args(["-DD", "-E"])
            .arg("-Y")
            .arg(&run)
            .arg("-P")
            .arg(dir.path().join("kamailio.pid"))
            .args(["-m", "32", "-M", "8"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log fd"))
            .stderr(file)
            // Its own process group, so drop can stop the workers too even
            // if the main process dies first.
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start kamailio: {e}"))?;
        let mut k = Kamailio {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
            _dir: dir,
        };

        let probe = UdpSocket::bind("127.0.0.1:0").expect("probe socket");
        probe
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let local = probe.local_addr().unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut n = 0;
        loop {
            if let Ok(Some(status)) = k.child.as_mut().unwrap().try_wait() {
                return Err(format!(
                    "kamailio exited with {status} before answering:\n{}",
                    k.log_text()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "kamailio did not answer a keepalive OPTIONS within 15 s:\n{}",
                    k.log_text()
                ));
            }
            n += 1;
            let options = format!(
                "OPTIONS sip:{addr} SIP/2.0\r\n\
                 Via: SIP/2.0/UDP {local};branch=z9hG4bK-ready-{n}\r\n\
                 Max-Forwards: 70\r\n\
                 From: <sip:probe@{local}>;tag=ready\r\n\
                 To: <sip:{addr}>\r\n\
                 Call-ID: ready-{port}-{n}@127.0.0.1\r\n\
                 CSeq: {n} OPTIONS\r\n\
                 Content-Length: 0\r\n\r\n",
                addr = k.addr,
            );
            let _ = probe.send_to(options.as_bytes(), k.addr);
            let mut buf = [0u8; 2048];
            if let Ok((len, from)) = probe.recv_from(&mut buf) {
                if from == k.addr && buf[..len].starts_with(b"SIP/2.0 200 ") {
                    return Ok(k);
                }
            }
        }
    }

    /// Everything it has written.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The script's own log lines that carry `tag` (an `xlog` prefix such
    /// as "VOXTEST"), from the tag on.
    pub fn tagged_lines(&self, tag: &str) -> Vec<String> {
        let tag = format!("{tag} ");
        self.log_text()
            .lines()
            .filter_map(|l| l.find(&tag).map(|i| l[i..].to_owned()))
            .collect()
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pgid = child.id();
        // SIGTERM: the main process stops its workers and exits.
        kill_group("TERM", pgid);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Whatever is left of the group (nothing, normally).
        kill_group("KILL", pgid);
        let _ = child.kill();
        let _ = child.wait();
    }
}
