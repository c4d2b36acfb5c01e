//! Calls through a real stateful, record-routing SIP proxy (Kamailio).
//!
//! SIPp (UAC) → Kamailio → voxtrunk, all on 127.0.0.1 over UDP. Kamailio
//! runs `tests/kamailio/proxy.cfg.in` (filled with its port and voxtrunk's
//! address): `record_route()` on the initial INVITE, `loose_route()` for
//! in-dialog requests in both directions, `t_relay()` for everything, and
//! an `xlog` line ("VOXTEST ...") for every request and reply it handles.
//! The proxy is self-contained: foreground (`-DD -E`, stderr to a file in
//! the test's temp dir), its own runtime dir (`-Y`) and pid file (`-P`),
//! no database, no DNS.
//!
//! * `kamailio_route_set_carries_server_bye_back_through_the_proxy`: the
//!   server hangs up (`playback`). Its BYE must follow the route set learnt
//!   from the proxy's Record-Route: the proxy's log must show the BYE
//!   arriving from voxtrunk with `Route: <sip:PROXY;lr;ftag=...>` and SIPp's
//!   Contact as Request-URI, loose-routed on to SIPp, and SIPp's 200
//!   relayed back; SIPp itself checks that the BYE it receives has the
//!   proxy's Via on top of voxtrunk's and no Route left (the proxy consumed
//!   its entry).
//! * `kamailio_echo_call_and_caller_bye_through_the_proxy`: the caller hangs
//!   up (`echo`). ACK and BYE carry SIPp's [routes]; the proxy's log must
//!   show both loose-routed from SIPp to voxtrunk's Contact and voxtrunk's
//!   200 for the BYE relayed back.
//!
//! In both, voxtrunk's own metrics must show the call ended the expected
//! way within a few seconds (an unanswered BYE would keep it alive for
//! 32 s of timer F), and its log must show the INVITE came from the proxy.
//!
//! On any failure the logs of Kamailio, voxtrunk and SIPp (its message
//! trace and error file) are printed.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::kamailio::Kamailio;
use common::{ChildGuard, Server, free_port, require_tool, root};

fn scenario(name: &str) -> PathBuf {
    root().join("tests").join("kamailio").join(name)
}

/// One test's processes; prints every log if the test panics.
struct Rig {
    server: Server,
    proxy: Kamailio,
    /// SIPp's files: message trace, error file, stdout/stderr.
    sipp_dir: tempfile::TempDir,
    /// SIPp's SIP address (of the last run).
    sipp: Option<SocketAddr>,
}

impl Rig {
    fn start() -> Rig {
        require_tool("kamailio");
        require_tool("sipp");
        let server = Server::start();
        let upstream = server.sip.to_string();
        let proxy = Kamailio::start("proxy.cfg.in", &|_| {
            vec![("@@UPSTREAM@@", upstream.clone())]
        });
        Rig {
            server,
            proxy,
            sipp_dir: tempfile::tempdir().expect("temp dir"),
            sipp: None,
        }
    }

    /// Runs one SIPp call of `scenario` to `service` through the proxy and
    /// returns SIPp's exit status (bounded: SIPp's own 30 s timeout, and a
    /// kill after 60 s).
    fn sipp(&mut self, scenario_name: &str, service: &str) -> ExitStatus {
        let dir = self.sipp_dir.path().to_owned();
        for attempt in 1..=3 {
            let port = free_port("127.0.0.1");
            let out = std::fs::File::create(dir.join(format!("sipp-{attempt}.out"))).unwrap();
            let err = std::fs::File::create(dir.join(format!("sipp-{attempt}.err"))).unwrap();
            let mut cmd = Command::new("sipp");
            cmd.arg(self.proxy.addr.to_string())
                .arg("-sf")
                .arg(scenario(scenario_name))
                .args(["-s", service])
                .args(["-i", "127.0.0.1", "-p", &port.to_string()])
                .args(["-t", "u1", "-m", "1", "-nostdin"])
                .args(["-timeout", "30s", "-timeout_error"])
                .arg("-trace_err")
                .arg("-error_file")
                .arg(dir.join("sipp-errors.log"))
                .arg("-trace_msg")
                .arg("-message_file")
                .arg(dir.join("sipp-messages.log"))
                .args(["-set", "proxy_addr", &self.proxy.addr.to_string()])
                .args(["-set", "server_addr", &self.server.sip.to_string()])
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err);
            let mut guard = ChildGuard(Some(cmd.spawn().expect("start sipp")));
            self.sipp = Some(SocketAddr::from(([127, 0, 0, 1], port)));
            let deadline = Instant::now() + Duration::from_secs(60);
            let status = loop {
                if let Some(s) = guard.0.as_mut().unwrap().try_wait().expect("wait sipp") {
                    break s;
                }
                assert!(Instant::now() < deadline, "sipp still running after 60 s");
                std::thread::sleep(Duration::from_millis(50));
            };
            guard.0 = None;
            // 254 (-2): SIPp could not bind its port; take another.
            if status.code() == Some(254) && attempt < 3 {
                continue;
            }
            return status;
        }
        unreachable!()
    }

    fn sipp_addr(&self) -> SocketAddr {
        self.sipp.expect("sipp has run")
    }

    /// Waits (at most 5 s) until voxtrunk's metrics show `want`, e.g.
    /// `voxtrunk_calls_ended_total{reason="local_hangup"} 1`, and no live
    /// call is left.
    fn wait_for_metric(&self, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (_, metrics) = self.server.admin_get("/metrics");
            let (_, calls) = self.server.admin_get("/calls");
            if metrics.lines().any(|l| l.trim() == want) && calls.trim() == "[]" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "voxtrunk's metrics do not show `{want}` with no live call within 5 s;\n\
                 /calls: {calls}\n/metrics:\n{metrics}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The `incoming call` log line of voxtrunk must name the proxy as the
    /// INVITE's source.
    fn assert_invite_came_from_proxy(&self, route: &str) {
        let line = self
            .server
            .log_lines()
            .into_iter()
            .find(|l| l.contains("\"incoming call\""))
            .expect("voxtrunk logged no incoming call");
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
        assert_eq!(v["route"], route, "{line}");
        assert_eq!(
            v["source"].as_str(),
            Some(self.proxy.addr.to_string().as_str()),
            "the INVITE did not come from the proxy: {line}"
        );
    }

    /// Panics unless one of the proxy's script lines contains every piece.
    fn assert_proxy_logged(&self, what: &str, pieces: &[&str]) {
        let lines = self.proxy.tagged_lines("VOXTEST");
        assert!(
            lines.iter().any(|l| pieces.iter().all(|p| l.contains(p))),
            "the proxy's log has no line for {what} (want all of {pieces:?}); its script lines:\n{}",
            lines.join("\n")
        );
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let dir = self.sipp_dir.path();
        let mut sipp_out = String::new();
        for attempt in 1..=3 {
            for ext in ["out", "err"] {
                let name = format!("sipp-{attempt}.{ext}");
                if dir.join(&name).exists() {
                    sipp_out += &format!("--- {name}\n{}\n", common::read(dir, &name));
                }
            }
        }
        eprintln!(
            "===== kamailio ({}) log =====\n{}\n\
             ===== voxtrunk ({}) log =====\n{}\n\
             ===== SIPp message trace =====\n{}\n\
             ===== SIPp error file =====\n{}\n\
             ===== SIPp output =====\n{}",
            self.proxy.addr,
            self.proxy.log_text(),
            self.server.sip,
            self.server.log_text(),
            common::read(dir, "sipp-messages.log"),
            common::read(dir, "sipp-errors.log"),
            sipp_out,
        );
    }
}

fn assert_success(status: ExitStatus) {
    assert!(status.success(), "sipp exited with {status} (logs below)");
}

#[test]
fn kamailio_route_set_carries_server_bye_back_through_the_proxy() {
    let mut rig = Rig::start();
    let started = Instant::now();
    // The scenario checks the 200's Record-Route (the proxy's address, lr),
    // then that the BYE has the proxy's Via on top of voxtrunk's and no
    // Route, and answers it 200.
    let status = rig.sipp("uac-playback-server-bye.xml", "playback");
    assert_success(status);
    // The prompt is 3.7 s long: the BYE came after it, not as a rejection.
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "call over after {:?}",
        started.elapsed()
    );

    let proxy = rig.proxy.addr.to_string();
    let server = rig.server.sip.to_string();
    let sipp = rig.sipp_addr().to_string();
    rig.assert_invite_came_from_proxy("playback");
    rig.assert_proxy_logged(
        "the Record-Routed INVITE relayed to voxtrunk",
        &["VOXTEST initial INVITE relayed to sip:playback@", &server],
    );
    // voxtrunk sent its BYE to the proxy (the first route) with the route
    // set as a Route header and SIPp's Contact as Request-URI...
    rig.assert_proxy_logged(
        "voxtrunk's BYE arriving with the route set",
        &[
            &format!("VOXTEST request BYE sip:sipp@{sipp} from {server} "),
            &format!("route=[<sip:{proxy};lr;ftag="),
        ],
    );
    // ...the proxy found its own Route entry and forwarded the BYE to
    // SIPp's Contact...
    rig.assert_proxy_logged(
        "voxtrunk's BYE, loose-routed to SIPp",
        &[
            "VOXTEST in-dialog BYE loose-routed",
            &format!("from {server} "),
            &format!("to sip:sipp@{sipp} "),
        ],
    );
    // ...and relayed SIPp's 200 back to voxtrunk.
    rig.assert_proxy_logged(
        "SIPp's 200 for the BYE",
        &["VOXTEST reply 200 ", "for BYE", &format!("from {sipp} ")],
    );
    // voxtrunk's BYE transaction completed (a lost 200 would leave the
    // call up for 32 s).
    rig.wait_for_metric(r#"voxtrunk_calls_ended_total{reason="local_hangup"} 1"#);
    assert!(rig.server.log_has_no_panic(), "voxtrunk panicked");
}

#[test]
fn kamailio_echo_call_and_caller_bye_through_the_proxy() {
    let mut rig = Rig::start();
    // The scenario checks the 200's Record-Route (the proxy) and Contact
    // (voxtrunk), sends ACK and BYE with the route set, and wants the 200
    // for the BYE with only its own Via left.
    let status = rig.sipp("uac-echo-caller-bye.xml", "echo");
    assert_success(status);

    let server = rig.server.sip.to_string();
    let sipp = rig.sipp_addr().to_string();
    rig.assert_invite_came_from_proxy("echo");
    rig.assert_proxy_logged(
        "the caller's ACK, loose-routed to voxtrunk",
        &[
            "VOXTEST in-dialog ACK loose-routed",
            &format!("from {sipp} "),
            &format!("@{server} "),
        ],
    );
    rig.assert_proxy_logged(
        "the caller's BYE, loose-routed to voxtrunk",
        &[
            "VOXTEST in-dialog BYE loose-routed",
            &format!("from {sipp} "),
            &format!("@{server} "),
        ],
    );
    rig.assert_proxy_logged(
        "voxtrunk's 200 for the BYE",
        &["VOXTEST reply 200 ", "for BYE", &format!("from {server} ")],
    );
    rig.wait_for_metric(r#"voxtrunk_calls_ended_total{reason="remote_bye"} 1"#);
    assert!(rig.server.log_has_no_panic(), "voxtrunk panicked");
}
