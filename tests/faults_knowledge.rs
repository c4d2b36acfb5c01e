//! A knowledge source slower than its deadline, against the running binary.
//!
//! The agent (`tests/data/knowledge/agent.toml`) asks an HTTP search
//! service for its inventory, with a 150 ms deadline, a 1 s cache TTL and a
//! one-hour `max_age_s`. The service, run by the test on loopback, answers
//! the queries of the caller's first question at once and every later one
//! only after 2 s; its data says it was updated two hours ago. baresip asks
//! the same question twice in one call, several seconds apart: the second
//! answer must still name the listing (the cached answer, past its TTL,
//! standing in for the slow service), the turn must have waited no longer
//! than the deadline plus a small margin, and the call trace must mark that
//! retrieval stale and the data too old.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;

use common::baresip::Call;
use common::speech::{caller_wav, trace_of, wav_seconds};
use common::{Options, Server};

const QUESTION: &str = "I am looking for a three bedroom apartment in Whitefield.";
/// Silence before the first question (the greeting) and after each (the
/// agent's reply).
const GREETING_SECS: f32 = 3.0;
const REPLY_SECS: f32 = 6.0;

const DEADLINE_MS: f64 = 150.0;
/// Scheduling slack on top of the deadline for the turn's wait.
const MARGIN_MS: f64 = 100.0;
/// How long the service answers at once after its first query; every
/// query of the first question falls in it, none of the second's.
const FAST_WINDOW: Duration = Duration::from_secs(4);
const SLOW: Duration = Duration::from_secs(2);

/// The search service: when its data changed, when it was first asked and
/// what.
struct Service {
    updated_at: String,
    first: Mutex<Option<Instant>>,
    queries: Mutex<Vec<(Duration, String)>>,
}

async fn search(
    State(service): State<Arc<Service>>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> impl IntoResponse {
    let since_first = {
        let mut first = service.first.lock().unwrap();
        first.get_or_insert_with(Instant::now).elapsed()
    };
    service
        .queries
        .lock()
        .unwrap()
        .push((since_first, query.unwrap_or_default()));
    if since_first > FAST_WINDOW {
        tokio::time::sleep(SLOW).await;
    }
    axum::Json(serde_json::json!({
        "version": "listings-7",
        "updated_at": service.updated_at,
        "documents": [{
            "id": "P001",
            "title": "Lakeview Greens",
            "text": "Lakeview Greens, Whitefield, 3 BHK apartment, 1.15 crore, ready to move",
            "fields": {
                "project": "Lakeview Greens",
                "locality": "Whitefield",
                "bedrooms": 3,
                "property_type": "apartment",
                "price": "1.15 crore"
            }
        }]
    }))
}

/// Reads JSON lines until `enough` holds or `limit` passes.
fn turn_records(path: &Path, limit: Duration, enough: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + limit;
    loop {
        let turns: Vec<serde_json::Value> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|t: &serde_json::Value| t["intent"] == "search_property")
            .collect();
        if turns.len() >= enough || Instant::now() > deadline {
            return turns;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_slow_knowledge_source_is_answered_from_the_stale_cache_within_its_deadline() {
    let started = Instant::now();
    let work = tempfile::tempdir().expect("temp dir");

    let updated = SystemTime::now() - Duration::from_secs(2 * 3600);
    let service = Arc::new(Service {
        updated_at: chrono::DateTime::<chrono::Utc>::from(updated)
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string(),
        first: Mutex::new(None),
        queries: Mutex::new(Vec::new()),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}/search", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/search", get(search))
        .with_state(Arc::clone(&service));
    rt.spawn(async move { axum::serve(listener, app).await });

    let plans = common::copy_dialplans(work.path());
    let agent_dir = plans.join("agents/realestate");
    let definition =
        std::fs::read_to_string(common::root().join("tests/data/knowledge/agent.toml"))
            .unwrap()
            .replace("@INVENTORY_URL@", &url);
    std::fs::write(agent_dir.join("agent.toml"), definition).unwrap();
    let var = agent_dir.join("var");

    let server = Server::start_with(Options {
        dialplans: Some(plans.clone()),
        ..Options::default()
    });
    // The question twice: after the greeting, and after the first answer.
    let speech = caller_wav(
        work.path(),
        &[
            (QUESTION, (GREETING_SECS, REPLY_SECS)),
            (QUESTION, (0.0, REPLY_SECS)),
        ],
    );
    let speech_secs = wav_seconds(&speech);
    let mut call = Call::dial(
        work.path(),
        server.sip,
        "agent",
        &speech,
        "PCMU/8000/1",
        (speech_secs + 15.0) as u32,
    );
    let ended = call.wait_end(Duration::from_secs_f64(speech_secs + 10.0));
    call.stop(Duration::from_secs(5));
    let context = || {
        format!(
            "--- queries ---\n{:?}\n--- baresip ---\n{}\n--- voxtrunk ---\n{}",
            service.queries.lock().unwrap(),
            call.log_text(),
            server.log_text()
        )
    };
    assert!(ended, "the call did not end in time\n{}", context());
    assert!(
        server.log_has_no_panic(),
        "voxtrunk panicked\n{}",
        context()
    );

    let turns = turn_records(&var.join("turns.jsonl"), Duration::from_secs(10), 2);
    assert_eq!(
        turns.len(),
        2,
        "expected two search turns: {turns:#?}\n{}",
        context()
    );
    let (first, second) = (&turns[0], &turns[1]);
    for t in [first, second] {
        let reply = t["reply"].as_str().unwrap_or_default();
        assert!(
            reply.contains("Lakeview Greens") && reply.contains("1.15 crore"),
            "turn {} does not name the listing: {t}\n{}",
            t["turn"],
            context()
        );
        assert_eq!(t["partial"], false, "{t}");
    }
    assert_eq!(first["stale"], false, "{first}");
    assert_eq!(
        second["stale"], true,
        "the second answer came from the cache: {second}"
    );
    let waited = second["retrieval_ms"].as_f64().expect("retrieval_ms");
    assert!(
        waited <= DEADLINE_MS + MARGIN_MS,
        "the second turn waited {waited} ms for a source with a {DEADLINE_MS} ms deadline: {second}"
    );

    // The trace: the second question's retrieval timed out and was served
    // from the cache, marked stale, with the data's version and age.
    let session_id = second["session_id"].as_str().unwrap_or_default();
    let trace = trace_of(&var.join("traces"), session_id, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no trace of {session_id}\n{}", context()));
    let reports: Vec<&serde_json::Value> = trace["events"]
        .as_array()
        .expect("trace events")
        .iter()
        .filter(|e| e["event"] == "retrieval")
        .flat_map(|e| e["sources"].as_array().into_iter().flatten())
        .filter(|r| r["source"] == "inventory")
        .collect();
    let stale = reports
        .iter()
        .find(|r| r["stale"] == true)
        .unwrap_or_else(|| panic!("no stale retrieval in the trace: {reports:#?}"));
    assert_eq!(stale["timed_out"], true, "{stale}");
    assert_eq!(stale["cached"], true, "{stale}");
    assert_eq!(stale["hits"], 1, "{stale}");
    assert_eq!(stale["version"], "listings-7", "{stale}");
    assert_eq!(stale["too_old"], true, "{stale}");
    // The retrieval itself (often a prefetch on a partial transcript, which
    // is why the turn may not have waited at all) gave up at the deadline.
    let elapsed = stale["elapsed_ms"].as_f64().expect("elapsed_ms");
    assert!(
        (DEADLINE_MS - 5.0..=DEADLINE_MS + MARGIN_MS).contains(&elapsed),
        "{stale}"
    );
    let age = stale["age_s"].as_u64().expect("age_s");
    assert!((7200..7200 + 120).contains(&age), "{stale}");
    assert!(
        reports
            .iter()
            .any(|r| r["stale"] == false && r["hits"] == 1),
        "the first question was answered by the service: {reports:#?}"
    );

    // Metrics and the warning.
    let (status, metrics) = server.admin_get("/metrics");
    assert_eq!(status, 200);
    for name in [
        "voxtrunk_knowledge_too_old_total{source=\"inventory\"}",
        "voxtrunk_knowledge_age_seconds{source=\"inventory\"}",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
    let warnings = server
        .log_lines()
        .into_iter()
        .filter(|l| l.contains("older than its max_age_s"))
        .count();
    assert_eq!(warnings, 1, "one warning for one version\n{}", context());

    drop(server);
    rt.shutdown_timeout(Duration::from_secs(1));
    eprintln!(
        "retrieval_ms: first turn {}, second (stale) {waited}; stale retrieval took {elapsed:.1} ms; \
         service queried {} times; test took {:.1} s",
        first["retrieval_ms"],
        service.queries.lock().unwrap().len(),
        started.elapsed().as_secs_f64()
    );
}
