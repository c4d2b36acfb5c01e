//! End to end with real peers and real engines: baresip calls the default
//! agent (`sip:agent@…`) with synthesized caller speech as its microphone —
//! a 3-bedroom apartment in Whitefield, then a site visit for tomorrow —
//! over G.711 µ-law. The agent's side is recorded by baresip, cut at its
//! pauses and transcribed with pocketsphinx (`voxtrunk transcribe`); the
//! transcript must carry the facts of the knowledge files, the CRM must hold
//! the booking it announced, and every turn record must have every field.
//!
//! The agent runs from a copy of `dialplans/` in a temporary directory, so
//! its CRM, turn records and traces start empty and are the test's own.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::baresip::Call;
use common::speech::{BOOKING_CALL, caller_wav, trace_of, transcribe_heard, wav_seconds, words};
use common::{Options, Server};

/// A row of the inventory file as field → value.
fn inventory(plans: &Path) -> Vec<BTreeMap<String, String>> {
    let text =
        std::fs::read_to_string(plans.join("agents/realestate/knowledge/inventory.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            header
                .iter()
                .map(|h| h.to_string())
                .zip(l.split(',').map(str::to_owned))
                .collect()
        })
        .collect()
}

/// Every sentence the agent could say about any listing (the template of
/// `search_property` filled with each row), its greeting and its booking
/// lines: the recogniser's language model. Other listings' sentences are
/// there so that recognising this one's names means the audio said them.
fn agent_phrases(rows: &[BTreeMap<String, String>], booking_ids: &[String]) -> String {
    let mut out = vec![
        "Hello, this is Asha from Greenfield Homes. Which kind of home are you looking for?"
            .to_owned(),
        "Would you like to book a site visit?".to_owned(),
    ];
    for r in rows {
        out.push(format!(
            "{} in {} has a {} bedroom {} at {}, {}.",
            r["project"], r["locality"], r["bedrooms"], r["property_type"], r["price"], r["status"]
        ));
    }
    for day in [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ] {
        for time in ["10 AM", "11 AM", "12 PM", "2 PM", "4 PM"] {
            out.push(format!(
                "Done. Your site visit is booked for {day} at {time}."
            ));
        }
    }
    for id in booking_ids {
        out.push(format!("Your booking number is {id}."));
    }
    out.join("\n")
}

#[test]
fn baresip_books_a_site_visit_with_the_default_agent() {
    let started = Instant::now();
    let work = tempfile::tempdir().expect("temp dir");
    let plans = common::copy_dialplans(work.path());
    let var = plans.join("agents/realestate/var");

    let server = Server::start_with(Options {
        dialplans: Some(plans.clone()),
        ..Options::default()
    });
    let speech = caller_wav(work.path(), &BOOKING_CALL);
    let (cpu_before, rss_idle_kb) = (server.cpu_seconds(), server.rss_kb());
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
    let (call_cpu, rss_kb) = (server.cpu_seconds() - cpu_before, server.rss_kb());
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
    assert!(
        server.log_has_no_panic(),
        "voxtrunk panicked\n{}",
        context()
    );

    // The turn records: one JSON object per line, each with every field,
    // written as each reply finishes playing.
    let turns_path = var.join("turns.jsonl");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut turns: Vec<serde_json::Value> = Vec::new();
    while Instant::now() < deadline {
        turns = std::fs::read_to_string(&turns_path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a turn record is JSON"))
            .collect();
        if turns.len() >= BOOKING_CALL.len() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        turns.len() >= BOOKING_CALL.len(),
        "{} turn records in {}\n{}",
        turns.len(),
        turns_path.display(),
        context()
    );
    let fields = [
        "session_id",
        "turn",
        "latency_ms",
        "stt_ms",
        "retrieval_ms",
        "llm_ms",
        "tts_ms",
        "server_overhead_ms",
        "language",
        "intent",
        "crm_sync",
    ];
    for t in &turns {
        for f in fields {
            assert!(
                t.get(f).is_some_and(|v| !v.is_null()),
                "turn record without {f}: {t}"
            );
        }
        assert_eq!(t["language"], "en-US", "{t}");
    }
    let intents: Vec<&str> = turns.iter().filter_map(|t| t["intent"].as_str()).collect();
    let find = |intent: &str| {
        turns
            .iter()
            .find(|t| t["intent"] == intent)
            .unwrap_or_else(|| panic!("no {intent} turn; intents {intents:?}\n{}", context()))
    };
    let search = find("search_property");
    let book = find("book_visit");

    // The answer comes from the inventory: a 3-bedroom apartment in
    // Whitefield, with its price, as the knowledge file says.
    let rows = inventory(&plans);
    let reply = search["reply"].as_str().unwrap_or_default();
    let row = rows
        .iter()
        .find(|r| reply.contains(&r["project"]))
        .unwrap_or_else(|| panic!("the reply names no listing: {reply:?}"));
    assert_eq!(row["locality"], "Whitefield", "{reply}");
    assert_eq!(row["bedrooms"], "3", "{reply}");
    assert_eq!(row["property_type"], "apartment", "{reply}");
    assert!(reply.contains(&row["price"]), "price missing: {reply}");

    // The CRM holds the booking it announced: that listing, tomorrow.
    let db = rusqlite::Connection::open(var.join("crm.sqlite")).expect("CRM database");
    let bookings: Vec<(String, String, String, String, String)> = db
        .prepare("SELECT booking_id, property_id, date, slot, status FROM bookings")
        .unwrap()
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(bookings.len(), 1, "bookings: {bookings:?}");
    let (booking_id, property_id, date, _slot, status) = &bookings[0];
    assert_eq!(property_id, &row["id"], "booked another listing");
    assert_eq!(status, "confirmed");
    let tomorrow = (chrono::Local::now().date_naive() + chrono::Days::new(1)).to_string();
    assert_eq!(date, &tomorrow, "booked for another day");
    let book_reply = book["reply"].as_str().unwrap_or_default();
    assert!(
        book_reply.contains(booking_id.as_str()),
        "the caller was not told the booking id {booking_id}: {book_reply:?}"
    );
    assert_eq!(book["crm_sync"], "success", "{book}");

    // The call's trace: both sides of the conversation, the retrievals,
    // the booking tool's call and result, the contexts sent to reasoning.
    let session_id = search["session_id"].as_str().unwrap_or_default();
    let trace = trace_of(&var.join("traces"), session_id, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no trace of {session_id} in {}", var.display()));
    let events = trace["events"].as_array().expect("trace events");
    let has = |kind: &str, test: &dyn Fn(&serde_json::Value) -> bool| {
        events.iter().any(|e| e["event"] == kind && test(e))
    };
    assert!(has("transcript", &|e| e["who"] == "caller"
        && e["final"] == true));
    assert!(has("transcript", &|e| e["who"] == "agent"));
    assert!(has("retrieval", &|_| true), "no retrieval in the trace");
    assert!(has("tool_call", &|e| e["name"] == "book_site_visit"));
    assert!(has("tool_result", &|e| e["sync"] == "success"));
    assert!(
        has("context", &|_| true),
        "no context snapshot in the trace"
    );

    // What the caller heard: cut at the pauses and transcribed.
    let (stretches, transcripts) = transcribe_heard(
        &call,
        work.path(),
        &agent_phrases(&rows, std::slice::from_ref(booking_id)),
    );
    assert!(
        stretches >= 3,
        "expected the greeting and two replies, heard {stretches} stretches of sound"
    );
    let all = transcripts.join(" | ");
    let heard_words = words(&all);
    let said = |text: &str| {
        let w = words(text);
        heard_words.windows(w.len()).any(|win| win == w.as_slice())
    };
    for fact in [
        row["project"].as_str(),
        "whitefield",
        "three bedroom apartment",
        "site visit is booked",
    ] {
        assert!(
            said(fact),
            "{fact:?} not heard; transcripts: {all}\n{}",
            context()
        );
    }

    eprintln!(
        "agent call: {speech_secs:.1} s; server CPU {call_cpu:.2} s ({:.1} ms per call-second); \
         RSS {:.1} MiB idle with the agent loaded, {:.1} MiB after the call; test took {:.1} s",
        call_cpu * 1000.0 / speech_secs,
        rss_idle_kb as f64 / 1024.0,
        rss_kb as f64 / 1024.0,
        started.elapsed().as_secs_f64()
    );
    eprintln!("heard: {all}");
    for t in &turns {
        eprintln!(
            "turn {} {}: latency {} ms (stt {}, retrieval {}, llm {}, tts {}, overhead {}), crm_sync {}",
            t["turn"],
            t["intent"],
            t["latency_ms"],
            t["stt_ms"],
            t["retrieval_ms"],
            t["llm_ms"],
            t["tts_ms"],
            t["server_overhead_ms"],
            t["crm_sync"]
        );
    }
}
