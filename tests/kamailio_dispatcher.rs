//! Scale-out behind a SIP proxy: every call stays on one voxtrunk node.
//!
//! Two voxtrunk instances (each on 127.0.0.1 with its own SIP port, admin
//! port, RTP range and copy of the dialplans) sit behind Kamailio running
//! `tests/kamailio/dispatcher.cfg.in`: the `dispatcher` module with one
//! destination set holding both instances (a list file written by the
//! test), algorithm 0 (hash over the Call-ID), `record_route()` on the
//! initial INVITE, `loose_route()` for in-dialog requests, `t_relay()`, and
//! a failure route that sends the INVITE to the next destination of the
//! set when the chosen one answers 503 or not at all. The proxy logs one
//! line per request it sends (`VOXSEND <method> <call-id> -> <ip:port>`)
//! and one per reply it receives (`VOXREPLY <status> <method> <call-id>
//! from <ip:port>`); the tests read those. SIPp runs short `echo` calls
//! (`sipp-scenarios/uac-signalling-only.xml`: INVITE, 200, ACK, pause,
//! BYE, 200) through the proxy, every call with its own Call-ID.
//!
//! * `dispatcher_keeps_every_call_on_one_instance`: 40 calls, all must
//!   succeed. Then, per Call-ID, the INVITE, ACK and BYE were all sent to
//!   the same instance, which answered INVITE and BYE with 200 (no 481, no
//!   other failure anywhere); both instances got calls; each instance's log
//!   names exactly the Call-IDs the proxy sent it; each instance's
//!   `voxtrunk_calls_offered_total` equals its
//!   `voxtrunk_calls_ended_total{reason="remote_bye"}` and the proxy's count
//!   for it, and the two sum to 40.
//! * `dispatcher_moves_new_calls_off_a_draining_instance`: 20 long calls
//!   are spread over both instances; one instance gets SIGTERM and drains
//!   (new INVITEs get 503 with Retry-After). 20 new short calls then all
//!   succeed on the other instance: each one the proxy first sent to the
//!   draining instance was answered 503 and retried on the survivor, and at
//!   least one was. The draining instance took no new call. The long calls
//!   on both instances go on to end normally by the caller's BYE, each on
//!   the instance it started on, and the drained instance exits by itself
//!   once its last call is over.
//!
//! Everything is on loopback; every process (voxtrunk, Kamailio with its
//! workers, SIPp) is stopped when the test ends, whatever the outcome, and
//! every wait is bounded. On failure the logs of Kamailio, both instances
//! and SIPp are printed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::kamailio::Kamailio;
use common::{ChildGuard, Options, Server, copy_dialplans, free_port, require_tool};

/// Calls of the affinity test.
const CALLS: usize = 40;
/// Long calls up while an instance drains.
const LONG_CALLS: usize = 20;
/// New calls made while an instance drains.
const NEW_CALLS: usize = 20;

/// The last `max` lines of `text`.
fn tail(text: &str, max: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(max)..].join("\n")
}

// ---------------------------------------------------------------------------
// Kamailio with the dispatcher
// ---------------------------------------------------------------------------

/// A request the proxy sent: `VOXSEND <method> <call-id> -> <ip:port>`.
#[derive(Debug)]
struct Sent {
    method: String,
    call_id: String,
    to: SocketAddr,
}

/// A reply the proxy received: `VOXREPLY <status> <method> <call-id> from
/// <ip:port>`.
#[derive(Debug)]
struct Reply {
    status: u16,
    method: String,
    call_id: String,
    from: SocketAddr,
}

/// Kamailio dispatching to a set of instances (`dispatcher.cfg.in`, the
/// set written to `dispatcher.list` in its own directory).
struct Dispatcher(Kamailio);

impl Dispatcher {
    fn start(nodes: &[SocketAddr]) -> Dispatcher {
        let entries: String = nodes.iter().map(|n| format!("1 sip:{n}\n")).collect();
        Dispatcher(Kamailio::start("dispatcher.cfg.in", &|dir| {
            let list = dir.join("dispatcher.list");
            std::fs::write(&list, &entries).expect("write dispatcher.list");
            vec![(
                "@@DISPATCHER_LIST@@",
                list.to_str().expect("UTF-8 path").to_owned(),
            )]
        }))
    }

    /// The words of every script line starting with `tag`, after the tag.
    fn script_lines(&self, tag: &str) -> Vec<Vec<String>> {
        self.0
            .tagged_lines(tag)
            .iter()
            .map(|l| l.split_whitespace().skip(1).map(str::to_owned).collect())
            .collect()
    }

    /// Every request the proxy sent, in order.
    fn sent(&self) -> Vec<Sent> {
        self.script_lines("VOXSEND")
            .into_iter()
            .map(|w| match w.as_slice() {
                [method, call_id, arrow, to] if arrow == "->" => Sent {
                    method: method.clone(),
                    call_id: call_id.clone(),
                    to: to.parse().unwrap_or_else(|_| panic!("VOXSEND {w:?}")),
                },
                _ => panic!("unexpected VOXSEND line: {w:?}"),
            })
            .collect()
    }

    /// Every reply the proxy received, in order.
    fn replies(&self) -> Vec<Reply> {
        self.script_lines("VOXREPLY")
            .into_iter()
            .map(|w| match w.as_slice() {
                [status, method, call_id, word, from] if word == "from" => Reply {
                    status: status.parse().unwrap_or_else(|_| panic!("VOXREPLY {w:?}")),
                    method: method.clone(),
                    call_id: call_id.clone(),
                    from: from.parse().unwrap_or_else(|_| panic!("VOXREPLY {w:?}")),
                },
                _ => panic!("unexpected VOXREPLY line: {w:?}"),
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------
// The instances
// ---------------------------------------------------------------------------

/// One voxtrunk instance with its own copy of the dialplans (so that each
/// has its own agent state, outbox included).
struct Node {
    server: Server,
    _dialplans: tempfile::TempDir,
}

impl Node {
    fn start() -> Node {
        let dialplans = tempfile::tempdir().expect("temp dir");
        let server = Server::start_with(Options {
            dialplans: Some(copy_dialplans(dialplans.path())),
            ..Options::default()
        });
        Node {
            server,
            _dialplans: dialplans,
        }
    }

    /// The value of one series of `/metrics` (0 if absent: a counter that
    /// was never incremented).
    fn metric(&self, series: &str) -> u64 {
        let (_, body) = self.server.admin_get("/metrics");
        metric(&body, series)
    }

    /// Call-IDs of the calls this instance logged as incoming.
    fn incoming_call_ids(&self) -> BTreeSet<String> {
        self.server
            .log_lines()
            .into_iter()
            .filter(|l| l.contains("\"incoming call\""))
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(&l).expect("JSON log line");
                v["call_id"].as_str().expect("call_id").to_owned()
            })
            .collect()
    }
}

/// The value of `series` (`name` or `name{labels}`) in Prometheus text.
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name.trim() == series).then(|| value.trim().parse::<f64>().ok())?
        })
        .map_or(0, |v| v as u64)
}

const OFFERED: &str = "voxtrunk_calls_offered_total";
const ENDED_BY_BYE: &str = r#"voxtrunk_calls_ended_total{reason="remote_bye"}"#;
const ACTIVE: &str = "voxtrunk_calls_active";

// ---------------------------------------------------------------------------
// The rig: two instances, the proxy, SIPp
// ---------------------------------------------------------------------------

/// One SIPp run in the background.
struct SippRun {
    label: &'static str,
    pid: u32,
    guard: ChildGuard,
}

impl SippRun {
    /// True if `call_id` is one of this run's calls: SIPp's Call-IDs are
    /// `<call number>-<pid>@<local ip>`.
    fn owns(&self, call_id: &str) -> bool {
        call_id.contains(&format!("-{}@", self.pid))
    }
}

/// One test's processes; prints every log if the test panics.
struct Rig {
    nodes: Vec<Node>,
    proxy: Dispatcher,
    /// SIPp's files, per run label: stdout, stderr, error file, message
    /// trace.
    sipp_dir: tempfile::TempDir,
    labels: Vec<&'static str>,
}

impl Rig {
    fn start() -> Rig {
        require_tool("kamailio");
        require_tool("sipp");
        let nodes = vec![Node::start(), Node::start()];
        let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.server.sip).collect();
        let proxy = Dispatcher::start(&addrs);
        Rig {
            nodes,
            proxy,
            sipp_dir: tempfile::tempdir().expect("temp dir"),
            labels: Vec::new(),
        }
    }

    /// Which instance (index) listens at `addr`.
    fn node_at(&self, addr: SocketAddr) -> usize {
        self.nodes
            .iter()
            .position(|n| n.server.sip == addr)
            .unwrap_or_else(|| panic!("the proxy talked to {addr}, which is no instance"))
    }

    /// Starts SIPp in the background: `calls` calls of
    /// `uac-signalling-only.xml` to `echo` through the proxy, `rate` per
    /// second, each `pause_ms` long between ACK and BYE.
    fn spawn_sipp(
        &mut self,
        label: &'static str,
        calls: usize,
        rate: u32,
        pause_ms: u64,
    ) -> SippRun {
        let dir = self.sipp_dir.path().to_owned();
        let port = free_port("127.0.0.1");
        let file = |ext: &str| {
            std::fs::File::create(dir.join(format!("{label}.{ext}"))).expect("SIPp output file")
        };
        let mut cmd = Command::new("sipp");
        cmd.arg(self.proxy.0.addr.to_string())
            .arg("-sf")
            .arg(common::scenario("uac-signalling-only.xml"))
            .args(["-s", "echo"])
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .args(["-t", "u1", "-nostdin"])
            .args(["-m", &calls.to_string()])
            .args(["-l", &calls.to_string()])
            .args(["-r", &rate.to_string()])
            .args(["-d", &pause_ms.to_string()])
            .args(["-timeout", "60s", "-timeout_error"])
            .arg("-trace_err")
            .arg("-error_file")
            .arg(dir.join(format!("{label}-errors.log")))
            .arg("-trace_msg")
            .arg("-message_file")
            .arg(dir.join(format!("{label}-messages.log")))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(file("out"))
            .stderr(file("err"));
        if !self.labels.contains(&label) {
            self.labels.push(label);
        }
        let child = cmd.spawn().expect("start sipp");
        SippRun {
            label,
            pid: child.id(),
            guard: ChildGuard(Some(child)),
        }
    }

    /// Waits for a SIPp run to end (bounded: SIPp's own 60 s timeout, and a
    /// kill after 90 s).
    fn finish(run: &mut SippRun) -> ExitStatus {
        run.guard
            .wait(Duration::from_secs(90))
            .unwrap_or_else(|| panic!("sipp ({}) still running after 90 s", run.label))
    }

    /// Runs SIPp to the end (see [`Rig::spawn_sipp`]); takes another port if
    /// SIPp could not bind the one it was given. Returns the run (for its
    /// Call-IDs) and SIPp's exit status.
    fn run_sipp(
        &mut self,
        label: &'static str,
        calls: usize,
        rate: u32,
        pause_ms: u64,
    ) -> (SippRun, ExitStatus) {
        for attempt in 1..=3 {
            let mut run = self.spawn_sipp(label, calls, rate, pause_ms);
            let status = Rig::finish(&mut run);
            // 254 (-2): SIPp could not bind its port.
            if status.code() == Some(254) && attempt < 3 {
                continue;
            }
            return (run, status);
        }
        unreachable!()
    }

    /// Starts SIPp in the background (see [`Rig::spawn_sipp`]) and waits
    /// (at most 10 s) until all its `calls` are up on the instances
    /// together; takes another port if SIPp could not bind the one it was
    /// given. Returns the run and the instances' metrics text.
    fn start_calls(
        &mut self,
        label: &'static str,
        calls: usize,
        rate: u32,
        pause_ms: u64,
    ) -> (SippRun, Vec<String>) {
        'attempt: for attempt in 1..=3 {
            let mut run = self.spawn_sipp(label, calls, rate, pause_ms);
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let texts: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|n| n.server.admin_get("/metrics").1)
                    .collect();
                if texts.iter().map(|t| metric(t, ACTIVE)).sum::<u64>() == calls as u64 {
                    return (run, texts);
                }
                let exited = run
                    .guard
                    .0
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                if let Some(status) = exited {
                    // 254 (-2): SIPp could not bind its port.
                    if status.code() == Some(254) && attempt < 3 {
                        continue 'attempt;
                    }
                    panic!("sipp ({label}) exited with {status} before its calls were up");
                }
                assert!(
                    Instant::now() < deadline,
                    "the instances do not have {calls} calls up within 10 s:\n{}",
                    texts.join("\n-----\n")
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        unreachable!()
    }

    /// Polls (at most 10 s) until `ready` holds for the instances' metrics
    /// text; returns it.
    fn metrics_when(&self, what: &str, ready: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let texts: Vec<String> = self
                .nodes
                .iter()
                .map(|n| n.server.admin_get("/metrics").1)
                .collect();
            if ready(&texts) {
                return texts;
            }
            assert!(
                Instant::now() < deadline,
                "the instances' metrics did not show {what} within 10 s:\n{}",
                texts.join("\n-----\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Requests sent per Call-ID (only the Call-IDs `keep` accepts), as
    /// (method, instance) pairs in order.
    fn sent_by_call(&self, keep: impl Fn(&str) -> bool) -> BTreeMap<String, Vec<(String, usize)>> {
        let mut by_call: BTreeMap<String, Vec<(String, usize)>> = BTreeMap::new();
        for s in self.proxy.sent() {
            if keep(&s.call_id) {
                let node = self.node_at(s.to);
                by_call.entry(s.call_id).or_default().push((s.method, node));
            }
        }
        by_call
    }

    /// Final replies received per Call-ID (only the Call-IDs `keep`
    /// accepts), as (status, method, instance) triples in order.
    fn replies_by_call(
        &self,
        keep: impl Fn(&str) -> bool,
    ) -> BTreeMap<String, Vec<(u16, String, usize)>> {
        let mut by_call: BTreeMap<String, Vec<(u16, String, usize)>> = BTreeMap::new();
        for r in self.proxy.replies() {
            if keep(&r.call_id) && r.status >= 200 {
                let node = self.node_at(r.from);
                by_call
                    .entry(r.call_id)
                    .or_default()
                    .push((r.status, r.method, node));
            }
        }
        by_call
    }

    /// Asserts that every call of `run` went to one instance after
    /// `refused_by` (if any) answered its INVITE 503: ACK and BYE to the
    /// instance that answered the INVITE 200, which also answered the BYE
    /// 200; nothing else failed. Returns the instance of each Call-ID and
    /// how many calls were retried after a 503.
    fn assert_affinity(
        &self,
        run: &SippRun,
        calls: usize,
        refused_by: Option<usize>,
    ) -> (BTreeMap<String, usize>, usize) {
        let sent = self.sent_by_call(|c| run.owns(c));
        let replies = self.replies_by_call(|c| run.owns(c));
        assert_eq!(
            sent.len(),
            calls,
            "the proxy sent requests of {} Call-IDs of SIPp run `{}`, not {calls}",
            sent.len(),
            run.label
        );
        let mut home = BTreeMap::new();
        let mut retried = 0;
        for (call_id, requests) in &sent {
            let finals = replies.get(call_id).cloned().unwrap_or_default();
            // The INVITE's 200 names the instance that took the call.
            let answered: Vec<usize> = finals
                .iter()
                .filter(|(s, m, _)| *s == 200 && m == "INVITE")
                .map(|(_, _, n)| *n)
                .collect();
            assert!(
                !answered.is_empty(),
                "{call_id}: no 200 for the INVITE; requests {requests:?}, replies {finals:?}"
            );
            let node = answered[0];
            assert!(
                answered.iter().all(|n| *n == node),
                "{call_id}: 200s for the INVITE from two instances: {finals:?}"
            );
            // Anything not to `node` is an INVITE refused 503 by the
            // draining instance.
            let elsewhere: Vec<&(String, usize)> =
                requests.iter().filter(|(_, n)| *n != node).collect();
            if !elsewhere.is_empty() {
                assert!(
                    refused_by.is_some_and(|r| r != node)
                        && elsewhere
                            .iter()
                            .all(|(m, n)| m == "INVITE" && Some(*n) == refused_by),
                    "{call_id}: requests went to another instance than the one that answered \
                     (instance {node}): {requests:?}"
                );
                let refusals = finals
                    .iter()
                    .filter(|(s, m, n)| *s == 503 && m == "INVITE" && Some(*n) == refused_by)
                    .count();
                assert!(
                    refusals >= 1,
                    "{call_id}: INVITE sent to the draining instance without its 503: {finals:?}"
                );
                retried += 1;
            }
            for method in ["INVITE", "ACK", "BYE"] {
                assert!(
                    requests.iter().any(|(m, n)| m == method && *n == node),
                    "{call_id}: no {method} sent to instance {node}: {requests:?}"
                );
            }
            assert!(
                finals
                    .iter()
                    .any(|(s, m, n)| *s == 200 && m == "BYE" && *n == node),
                "{call_id}: no 200 for the BYE from instance {node}: {finals:?}"
            );
            // No 481 (a request reaching an instance without the dialog)
            // nor any other failure, except the draining instance's 503s.
            let failures: Vec<&(u16, String, usize)> = finals
                .iter()
                .filter(|(s, m, n)| {
                    *s >= 300 && !(*s == 503 && m == "INVITE" && Some(*n) == refused_by)
                })
                .collect();
            assert!(
                failures.is_empty(),
                "{call_id}: failure replies {failures:?}"
            );
            home.insert(call_id.clone(), node);
        }
        (home, retried)
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let dir = self.sipp_dir.path();
        let mut text = format!(
            "===== kamailio ({}) log =====\n{}\n",
            self.proxy.0.addr,
            self.proxy.0.log_text()
        );
        for (i, node) in self.nodes.iter().enumerate() {
            text += &format!(
                "===== voxtrunk instance {i} ({}) log, last 300 lines =====\n{}\n",
                node.server.sip,
                tail(&node.server.log_text(), 300)
            );
        }
        for label in &self.labels {
            for name in [
                format!("{label}.out"),
                format!("{label}.err"),
                format!("{label}-errors.log"),
            ] {
                text += &format!("===== SIPp {name} =====\n{}\n", common::read(dir, &name));
            }
            let name = format!("{label}-messages.log");
            text += &format!(
                "===== SIPp {name}, last 300 lines =====\n{}\n",
                tail(&common::read(dir, &name), 300)
            );
        }
        eprintln!("{text}");
    }
}

fn assert_success(run: &SippRun, status: ExitStatus) {
    assert!(
        status.success(),
        "sipp ({}) exited with {status}: not every call succeeded (logs below)",
        run.label
    );
}

/// Sends SIGTERM to an instance without waiting: it starts draining.
fn terminate(node: &Node) {
    let status = Command::new("kill")
        .args(["-TERM", &node.server.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM {} failed", node.server.pid());
}

#[test]
fn dispatcher_keeps_every_call_on_one_instance() {
    let mut rig = Rig::start();
    let (run, status) = rig.run_sipp("calls", CALLS, 20, 500);
    assert_success(&run, status);

    let (home, retried) = rig.assert_affinity(&run, CALLS, None);
    assert_eq!(retried, 0, "no instance drains, yet calls were retried");
    let per_node: Vec<usize> = (0..rig.nodes.len())
        .map(|i| home.values().filter(|n| **n == i).count())
        .collect();
    // The Call-ID hash spread the calls (both instances empty-handed
    // would take 40 coin flips landing the same way).
    assert!(
        per_node.iter().all(|c| *c > 0),
        "the proxy sent every call to one instance: {per_node:?}"
    );

    // Each instance saw exactly the calls the proxy sent it.
    for (i, node) in rig.nodes.iter().enumerate() {
        let expected: BTreeSet<String> = home
            .iter()
            .filter(|(_, n)| **n == i)
            .map(|(c, _)| c.clone())
            .collect();
        assert_eq!(
            node.incoming_call_ids(),
            expected,
            "instance {i} logged other calls than the proxy sent it"
        );
    }

    // Every call an instance was offered ended by the caller's BYE there.
    let texts = rig.metrics_when("every offered call ended by BYE", |texts| {
        texts
            .iter()
            .all(|t| metric(t, OFFERED) == metric(t, ENDED_BY_BYE) && metric(t, ACTIVE) == 0)
    });
    let offered: Vec<u64> = texts.iter().map(|t| metric(t, OFFERED)).collect();
    for (i, t) in texts.iter().enumerate() {
        assert_eq!(
            offered[i], per_node[i] as u64,
            "instance {i}: offered {} calls, the proxy sent it {}:\n{t}",
            offered[i], per_node[i]
        );
    }
    assert_eq!(offered.iter().sum::<u64>(), CALLS as u64, "{offered:?}");
    for node in &rig.nodes {
        assert!(node.server.log_has_no_panic(), "voxtrunk panicked");
    }
}

#[test]
fn dispatcher_moves_new_calls_off_a_draining_instance() {
    let mut rig = Rig::start();

    // Long calls on both instances (10 s between ACK and BYE; started at
    // 40 per second, so all are up after about half a second).
    let (mut long, texts) = rig.start_calls("long", LONG_CALLS, 40, 10_000);
    let up: Vec<u64> = texts.iter().map(|t| metric(t, ACTIVE)).collect();
    assert!(
        up.iter().all(|c| *c > 0),
        "the proxy sent every long call to one instance: {up:?}"
    );

    // Instance 0 drains: new INVITEs (and OPTIONS) get 503, its calls go on.
    let (drained, survivor) = (0, 1);
    let offered_before = metric(&texts[drained], OFFERED);
    terminate(&rig.nodes[drained]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while rig.nodes[drained].server.admin_get("/healthz").0 != 503 {
        assert!(
            Instant::now() < deadline,
            "instance {drained} does not report draining 5 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // New calls: every one ends up on the survivor.
    let (short, status) = rig.run_sipp("short", NEW_CALLS, 20, 200);
    assert_success(&short, status);
    // The long calls are still up: the drained instance is still there to
    // answer 503 (not gone, which would mean timeouts instead).
    assert!(
        rig.nodes[drained].server.is_running(),
        "instance {drained} exited while its long calls should be up"
    );
    assert!(
        !long.guard.exited(),
        "sipp (long) ended before the new calls"
    );
    assert_eq!(
        rig.nodes[drained].metric(OFFERED),
        offered_before,
        "the draining instance took new calls"
    );
    let (home, retried) = rig.assert_affinity(&short, NEW_CALLS, Some(drained));
    assert!(
        home.values().all(|n| *n == survivor),
        "new calls answered by the draining instance: {home:?}"
    );
    assert!(
        retried > 0,
        "no new call was sent to the draining instance first (so no failover was seen)"
    );

    // The long calls end normally, each on the instance it started on,
    // the drained instance's ones included.
    let status = Rig::finish(&mut long);
    assert_success(&long, status);
    let (long_home, long_retried) = rig.assert_affinity(&long, LONG_CALLS, None);
    assert_eq!(long_retried, 0);
    let on_survivor = long_home.values().filter(|n| **n == survivor).count();
    assert_eq!(
        on_survivor as u64, up[survivor],
        "long calls on the survivor per proxy vs. metrics"
    );

    // With its last call over, the drained instance exits by itself.
    let exit = rig.nodes[drained]
        .server
        .wait_exit(Duration::from_secs(10))
        .expect("the drained instance still runs 10 s after its last call");
    assert!(exit.success(), "the drained instance exited with {exit}");
    assert!(
        rig.nodes[drained]
            .server
            .log_text()
            .contains("all calls finished"),
        "the drained instance did not log the end of its calls"
    );

    // The survivor: its long calls plus every new call, all ended by BYE.
    let want = on_survivor as u64 + NEW_CALLS as u64;
    let survivor_node = &rig.nodes[survivor];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, t) = survivor_node.server.admin_get("/metrics");
        if metric(&t, OFFERED) == want
            && metric(&t, ENDED_BY_BYE) == want
            && metric(&t, ACTIVE) == 0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the survivor's metrics do not show {want} calls offered and ended by BYE:\n{t}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for node in &rig.nodes {
        assert!(node.server.log_has_no_panic(), "voxtrunk panicked");
    }
}
