//! The CRM failing under the running binary: the default agent, pointed at
//! a fake REST CRM (`common::crm`) with its outbox in a temporary copy of
//! `dialplans/`.
//!
//! * The CRM is down while baresip books a site visit: the caller hears
//!   that the visit is noted and a confirmation will follow, the turn says
//!   `crm_sync` = `queued`, and once the CRM is back it gets the booking
//!   and the call summary exactly once each.
//! * Call summaries are queued while the CRM is down, the server is killed
//!   with SIGKILL, and the next server on the same outbox delivers every
//!   one of them exactly once.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::baresip::Call;
use common::crm::{FakeCrm, outbox_rows, use_fake_crm};
use common::speech::{BOOKING_CALL, caller_wav, transcribe_heard, wav_seconds, words};
use common::uac::{Uac, pcmu_offer, to_tag};
use common::{Options, Server};

/// Polls `done` every 100 ms for at most `limit`; true once it holds.
fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The agent's sentences: its greeting, the listing sentence for every row
/// of the inventory, and the booking replies — confirmed and queued — for
/// every day and opening time.
fn agent_phrases(plans: &Path) -> String {
    let inventory =
        std::fs::read_to_string(plans.join("agents/realestate/knowledge/inventory.csv")).unwrap();
    let mut rows = inventory.lines();
    let header: Vec<&str> = rows.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let mut out = vec![
        "Hello, this is Asha from Greenfield Homes. Which kind of home are you looking for?"
            .to_owned(),
        "Would you like to book a site visit?".to_owned(),
    ];
    for row in rows.filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = row.split(',').collect();
        out.push(format!(
            "{} in {} has a {} bedroom {} at {}, {}.",
            f[col("project")],
            f[col("locality")],
            f[col("bedrooms")],
            f[col("property_type")],
            f[col("price")],
            f[col("status")]
        ));
    }
    let days = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    for day in days {
        for time in ["10 AM", "11 AM", "12 PM", "2 PM", "4 PM"] {
            out.push(format!(
                "Done. Your site visit is booked for {day} at {time}."
            ));
            out.push(format!(
                "I have noted your visit for {day} at {time}. \
                 You will get a confirmation message shortly."
            ));
        }
    }
    out.join("\n")
}

/// The turn records written so far.
fn turns(var: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(var.join("turns.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a turn record is JSON"))
        .collect()
}

#[test]
fn a_booking_made_while_the_crm_is_down_arrives_once_when_it_recovers() {
    let started = Instant::now();
    let work = tempfile::tempdir().expect("temp dir");
    let crm = FakeCrm::start();
    crm.set_down(true);
    let plans = common::copy_dialplans(work.path());
    let var = use_fake_crm(&plans, &crm.url);
    let outbox = var.join("outbox.sqlite");
    let server = Server::start_with(Options {
        dialplans: Some(plans.clone()),
        ..Options::default()
    });

    let speech = caller_wav(work.path(), &BOOKING_CALL);
    let speech_secs = wav_seconds(&speech);
    let mut call = Call::dial(
        work.path(),
        server.sip,
        "agent",
        &speech,
        "PCMU/8000/1",
        (speech_secs + 30.0) as u32,
    );
    let ended = call.wait_end(Duration::from_secs_f64(speech_secs + 20.0));
    call.stop(Duration::from_secs(5));
    let context = || {
        format!(
            "--- baresip ---\n{}\n--- voxtrunk ---\n{}",
            call.log_text(),
            server.log_text()
        )
    };
    assert!(ended, "the call did not end in time\n{}", context());
    assert!(
        call.log_text().contains("Call established"),
        "the call was not answered\n{}",
        context()
    );

    // The booking turn: queued, and said so.
    let mut records = Vec::new();
    wait_for(Duration::from_secs(10), || {
        records = turns(&var);
        records.iter().any(|t| t["intent"] == "book_visit")
    });
    let intents: Vec<&str> = records
        .iter()
        .filter_map(|t| t["intent"].as_str())
        .collect();
    let book = records
        .iter()
        .find(|t| t["intent"] == "book_visit")
        .unwrap_or_else(|| panic!("no book_visit turn; intents {intents:?}\n{}", context()));
    assert_eq!(book["crm_sync"], "queued", "{book}\n{}", context());
    let reply = book["reply"].as_str().unwrap_or_default();
    assert!(
        reply.contains("I have noted your visit") && reply.contains("confirmation"),
        "reply {reply:?}"
    );
    let session_id = book["session_id"].as_str().unwrap_or_default().to_owned();

    // The caller heard it.
    let heard = transcribe_heard(&call, work.path(), &agent_phrases(&plans))
        .1
        .join(" | ");
    let heard_words = words(&heard);
    for phrase in ["noted your visit", "confirmation message"] {
        let w = words(phrase);
        assert!(
            heard_words.windows(w.len()).any(|win| win == w.as_slice()),
            "{phrase:?} not heard; transcripts: {heard}\n{}",
            context()
        );
    }

    // Both writes are on disk, waiting; the CRM has refused every try.
    let call_key = format!("call:{session_id}");
    let mut rows = Vec::new();
    let queued = wait_for(Duration::from_secs(10), || {
        rows = outbox_rows(&outbox);
        rows.iter().any(|r| r.key == call_key)
    });
    assert!(queued, "the call summary is not in the outbox: {rows:?}");
    let pending: Vec<(&str, &str)> = rows
        .iter()
        .filter(|r| r.state == "pending")
        .map(|r| (r.kind.as_str(), r.key.as_str()))
        .collect();
    assert_eq!(pending.len(), 2, "pending rows: {rows:?}");
    assert!(pending.contains(&("call", call_key.as_str())), "{rows:?}");
    let booking_key = pending
        .iter()
        .find(|(kind, _)| *kind == "booking")
        .map(|(_, key)| key.to_string())
        .unwrap_or_else(|| panic!("no pending booking: {rows:?}"));
    assert!(crm.delivered("booking").is_empty() && crm.delivered("call").is_empty());
    let refused_bookings = crm.refused("booking");
    assert!(refused_bookings >= 1, "{:?}", crm.writes());

    // The CRM comes back: each write arrives once.
    crm.set_down(false);
    let recovered = Instant::now();
    let arrived = wait_for(Duration::from_secs(30), || {
        !crm.delivered("booking").is_empty() && !crm.delivered("call").is_empty()
    });
    let delivery = recovered.elapsed();
    assert!(
        arrived,
        "not delivered within 30 s: {:?}\n{}",
        crm.writes(),
        server.log_text()
    );
    // Nothing more comes in the next few seconds.
    std::thread::sleep(Duration::from_secs(3));
    let bookings = crm.delivered_keys("booking");
    assert_eq!(
        bookings.into_iter().collect::<Vec<_>>(),
        [(booking_key.clone(), 1)],
        "{:?}",
        crm.writes()
    );
    assert_eq!(crm.bookings().len(), 1);
    let calls = crm.delivered_keys("call");
    assert_eq!(
        calls.into_iter().collect::<Vec<_>>(),
        [(call_key.clone(), 1)],
        "{:?}",
        crm.writes()
    );
    let summaries = crm.calls();
    assert_eq!(summaries.len(), 1);
    assert_eq!(summaries[0]["call_id"], session_id.as_str());
    assert!(
        crm.delivered("contact").is_empty(),
        "no name was given, so no contact update"
    );
    let rows = outbox_rows(&outbox);
    assert!(
        rows.iter().all(|r| r.state == "delivered"),
        "outbox after delivery: {rows:?}"
    );
    assert!(server.log_has_no_panic(), "{}", context());

    eprintln!(
        "booking refused {refused_bookings} times, call summary {} times while the CRM was down; \
         both delivered {} ms after it recovered; test took {:.1} s",
        crm.refused("call"),
        delivery.as_millis(),
        started.elapsed().as_secs_f64()
    );
    eprintln!("reply: {reply}\nheard: {heard}");
}

/// One short call from the raw UAC: INVITE, 200, ACK, a moment of the
/// greeting, BYE, 200.
fn short_call(uac: &Uac, call_id: &str, rtp_port: u16) {
    let invite = uac.request("INVITE", "agent", call_id, 1, "", &pcmu_offer(rtp_port));
    uac.send(&invite);
    let ok = uac
        .final_response(call_id)
        .unwrap_or_else(|| panic!("no final response to INVITE {call_id}"));
    assert_eq!(ok.status, 200, "INVITE {call_id}");
    let tag = to_tag(&ok);
    uac.send(&uac.request("ACK", "agent", call_id, 1, &tag, ""));
    std::thread::sleep(Duration::from_millis(300));
    uac.send(&uac.request("BYE", "agent", call_id, 2, &tag, ""));
    let bye = uac
        .final_response(call_id)
        .unwrap_or_else(|| panic!("no final response to BYE {call_id}"));
    assert_eq!(bye.status, 200, "BYE {call_id}");
}

#[test]
fn writes_queued_before_a_kill_9_are_delivered_once_after_the_restart() {
    const CALLS: usize = 5;
    let started = Instant::now();
    let work = tempfile::tempdir().expect("temp dir");
    let crm = FakeCrm::start();
    crm.set_down(true);
    let plans = common::copy_dialplans(work.path());
    let var = use_fake_crm(&plans, &crm.url);
    let outbox = var.join("outbox.sqlite");
    let options = || Options {
        dialplans: Some(plans.clone()),
        ..Options::default()
    };

    let mut first = Server::start_with(options());
    let uac = Uac::new(first.sip);
    let rtp_sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let rtp_port = rtp_sink.local_addr().unwrap().port();
    let call_ids: Vec<String> = (0..CALLS)
        .map(|i| format!("crm-kill-{i}-{}", std::process::id()))
        .collect();
    for id in &call_ids {
        short_call(&uac, id, rtp_port);
    }
    let expected: BTreeSet<String> = call_ids.iter().map(|id| format!("call:{id}")).collect();

    // Every call's summary is on disk and the CRM has refused some tries.
    let mut rows = Vec::new();
    let queued = wait_for(Duration::from_secs(15), || {
        rows = outbox_rows(&outbox);
        let pending: BTreeSet<String> = rows
            .iter()
            .filter(|r| r.state == "pending")
            .map(|r| r.key.clone())
            .collect();
        pending == expected && crm.refused("call") >= CALLS
    });
    assert!(
        queued,
        "expected {expected:?} pending; rows {rows:?}; CRM saw {:?}\n{}",
        crm.writes(),
        first.log_text()
    );

    // SIGKILL: no drain, nothing flushed.
    let status = first.signal_and_wait("KILL", Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| !s.success()),
        "not killed: {status:?}"
    );
    let refused_before = crm.refused("call");
    let rows = outbox_rows(&outbox);
    let pending: BTreeSet<String> = rows
        .iter()
        .filter(|r| r.kind == "call" && r.state == "pending")
        .map(|r| r.key.clone())
        .collect();
    assert_eq!(pending, expected, "outbox after the kill: {rows:?}");
    assert_eq!(rows.len(), CALLS, "outbox after the kill: {rows:?}");
    assert!(crm.delivered("call").is_empty());

    // The CRM is back; a new server on the same outbox delivers them.
    crm.set_down(false);
    let restarted = Instant::now();
    let second = Server::start_with(options());
    let arrived = wait_for(Duration::from_secs(30), || {
        crm.delivered_keys("call").len() == CALLS
    });
    let delivery = restarted.elapsed();
    assert!(
        arrived,
        "delivered {:?} of {expected:?}\n{}",
        crm.delivered_keys("call"),
        second.log_text()
    );
    // And nothing more in the next few seconds.
    std::thread::sleep(Duration::from_secs(3));
    let delivered = crm.delivered_keys("call");
    assert_eq!(
        delivered.keys().cloned().collect::<BTreeSet<_>>(),
        expected,
        "lost or unexpected keys"
    );
    assert!(
        delivered.values().all(|&n| n == 1),
        "duplicated: {delivered:?}"
    );
    assert_eq!(crm.calls().len(), CALLS);
    assert!(
        crm.delivered("booking").is_empty() && crm.delivered("contact").is_empty(),
        "{:?}",
        crm.writes()
    );
    let rows = outbox_rows(&outbox);
    assert!(
        rows.iter().all(|r| r.state == "delivered"),
        "outbox after delivery: {rows:?}"
    );
    assert!(
        second
            .log_text()
            .contains("writes from before the restart will be delivered"),
        "{}",
        second.log_text()
    );
    assert!(second.log_has_no_panic(), "{}", second.log_text());

    eprintln!(
        "{CALLS} call summaries refused {refused_before} times in all before the kill; \
         delivered {} ms after the restart began; test took {:.1} s",
        delivery.as_millis(),
        started.elapsed().as_secs_f64()
    );
}
