//! The command line: `check` reports where a config is wrong; `run` logs
//! JSON lines on request and drains on SIGTERM before exiting 0.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::uac::{Uac, pcmu_offer, to_tag};
use common::{Options, Server};
use voxtrunk_sip::msg::HeaderName;

fn voxtrunk(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_voxtrunk"))
        .args(args)
        .current_dir(common::root())
        .output()
        .expect("run voxtrunk")
}

#[test]
fn check_accepts_the_shipped_dialplans() {
    let out = voxtrunk(&["check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: "));
}

#[test]
fn check_reports_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("voxtrunk.toml");
    std::fs::write(
        &cfg,
        "[sip]\nlisten = \"127.0.0.1:5060\"\n\n[rtp]\nports = \"9000-8000\"\n",
    )
    .unwrap();
    let out = voxtrunk(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:5:9: rtp.ports: range 9000-8000",
            cfg.display()
        )),
        "{err}"
    );

    let plans = dir.path().join("plans");
    std::fs::create_dir(&plans).unwrap();
    std::fs::write(
        plans.join("a.toml"),
        "[[route]]\nname = \"x\"\napp = \"playback\"\nfile = \"nope.wav\"\n",
    )
    .unwrap();
    std::fs::write(
        plans.join("b.toml"),
        "[[route]]\nname = \"y\"\napp = \"reject\"\nstatus = 99\n",
    )
    .unwrap();
    let out = voxtrunk(&["check", "--dialplans", plans.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("a.toml:4:8: route[0].file: "), "{err}");
    assert!(
        err.contains("b.toml:4:10: route[0].status: must be a final non-2xx status"),
        "{err}"
    );
    assert!(err.contains("2 error(s)"), "{err}");
}

#[test]
fn run_refuses_a_bad_config_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("voxtrunk.toml");
    std::fs::write(&cfg, "[sip]\nlisten = \"127.0.0.1:0\"\nbogus = 1\n").unwrap();
    let out = voxtrunk(&["run", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(":3:1: sip.bogus: unknown field `bogus`")
    );
}

#[test]
fn sigterm_drains_with_503_then_hangs_up_and_exits_zero() {
    let mut server = Server::start_with(Options {
        config: Some("[shutdown]\ndrain_timeout_s = 2\n".into()),
        ..Options::default()
    });
    let uac = Uac::new(server.sip);
    uac.send(&uac.request("INVITE", "echo", "live-call", 1, "", &pcmu_offer(49170)));
    let ok = uac
        .final_response("live-call")
        .expect("200 for the live call");
    assert_eq!(ok.status, 200);
    let tag = to_tag(&ok);
    uac.send(&uac.request("ACK", "echo", "live-call", 1, &tag, ""));
    assert_eq!(server.admin_get("/healthz").0, 200);

    let start = Instant::now();
    let _ = Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        server.admin_get("/healthz").0,
        503,
        "draining is visible to load balancers"
    );
    uac.send(&uac.request("INVITE", "echo", "late-call", 1, "", &pcmu_offer(49172)));
    let refused = uac
        .final_response("late-call")
        .expect("an answer while draining");
    assert_eq!(refused.status, 503);
    assert!(refused.headers.contains(&HeaderName::RetryAfter));
    uac.send(&uac.request("ACK", "echo", "late-call", 1, &to_tag(&refused), ""));

    // After the drain time the live call gets a BYE; answer it.
    let bye = uac
        .incoming("BYE", Duration::from_secs(10))
        .expect("BYE for the live call after the drain time");
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "not before the drain time"
    );
    uac.respond(&bye, 200);
    let status = server.wait_exit(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "exit status {status:?}\n{}",
        server.log_text()
    );
    assert!(server.log_has_no_panic());
}

#[test]
fn sigint_without_calls_exits_zero_at_once() {
    let mut server = Server::start();
    let status = server.signal_and_wait("INT", Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        server.log_text()
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    let mut server = Server::start();
    let _ = server.signal_and_wait("INT", Duration::from_secs(5));
    let lines = server.log_lines();
    assert!(lines.len() >= 3);
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string() && v["message"].is_string(),
            "{l}"
        );
    }
}
