//! The outbox against a scripted CRM, on paused time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::*;
use crate::agent::crm::{CallRecord, Contact, Slot};

/// A CRM in memory that can be down for the next N bookings, or refuse.
#[derive(Default)]
struct ScriptedCrm {
    bookings: Mutex<HashMap<String, BookingConfirmation>>,
    /// Booking requests received.
    calls: AtomicUsize,
    /// Answer this many more requests with `Unavailable`.
    down_for: AtomicUsize,
    /// Down until switched off.
    down: AtomicBool,
    /// Refuse every booking.
    refuse: AtomicBool,
    /// Call records received, with the key they came with.
    records: Mutex<Vec<(String, CallRecord)>>,
    /// Contacts by phone.
    contacts: Mutex<HashMap<String, Contact>>,
    /// Call and contact requests received (reads and writes).
    other_calls: AtomicUsize,
    /// Keyed contact writes received, by key.
    contact_writes: Mutex<Vec<String>>,
}

impl ScriptedCrm {
    /// Counts the request in `counter` and says whether the CRM is down
    /// for it.
    fn is_down(&self, counter: &AtomicUsize) -> bool {
        counter.fetch_add(1, Ordering::SeqCst);
        self.down.load(Ordering::SeqCst)
            || self
                .down_for
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
    }
}

fn unavailable() -> CrmError {
    CrmError::Unavailable("503 Service Unavailable".into())
}

impl Crm for ScriptedCrm {
    fn name(&self) -> &str {
        "scripted"
    }
    fn find_contact<'a>(
        &'a self,
        phone: &'a str,
    ) -> BoxFuture<'a, Result<Option<Contact>, CrmError>> {
        Box::pin(async move {
            if self.is_down(&self.other_calls) {
                return Err(unavailable());
            }
            Ok(self.contacts.lock().unwrap().get(phone).cloned())
        })
    }
    fn upsert_contact(&self, c: Contact) -> BoxFuture<'_, Result<Contact, CrmError>> {
        Box::pin(async move {
            if self.is_down(&self.other_calls) {
                return Err(unavailable());
            }
            self.contacts
                .lock()
                .unwrap()
                .insert(c.phone.clone(), c.clone());
            Ok(c)
        })
    }
    fn upsert_contact_keyed<'a>(
        &'a self,
        key: &'a str,
        c: Contact,
    ) -> BoxFuture<'a, Result<Contact, CrmError>> {
        Box::pin(async move {
            let stored = self.upsert_contact(c).await?;
            self.contact_writes.lock().unwrap().push(key.to_owned());
            Ok(stored)
        })
    }
    fn recent_calls<'a>(
        &'a self,
        _: &'a str,
        _: usize,
    ) -> BoxFuture<'a, Result<Vec<CallRecord>, CrmError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn record_call(&self, r: CallRecord) -> BoxFuture<'_, Result<(), CrmError>> {
        Box::pin(async move { self.record_call_keyed("", r).await })
    }
    fn record_call_keyed<'a>(
        &'a self,
        key: &'a str,
        r: CallRecord,
    ) -> BoxFuture<'a, Result<(), CrmError>> {
        Box::pin(async move {
            if self.is_down(&self.other_calls) {
                return Err(unavailable());
            }
            self.records.lock().unwrap().push((key.to_owned(), r));
            Ok(())
        })
    }
    fn book_visit(&self, b: Booking) -> BoxFuture<'_, Result<BookingConfirmation, CrmError>> {
        Box::pin(async move {
            if self.is_down(&self.calls) {
                return Err(unavailable());
            }
            if self.refuse.load(Ordering::SeqCst) {
                return Err(CrmError::Rejected("slot taken".into()));
            }
            let mut all = self.bookings.lock().unwrap();
            let n = all.len();
            Ok(all
                .entry(b.idempotency_key.clone())
                .or_insert_with(|| BookingConfirmation {
                    booking_id: format!("BK{n}"),
                    phone: b.phone,
                    name: b.name,
                    property_id: b.property_id,
                    date: b.date,
                    slot: b.slot,
                    status: "confirmed".into(),
                    created_at: String::new(),
                })
                .clone())
        })
    }
    fn bookings_for<'a>(
        &'a self,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Vec<BookingConfirmation>, CrmError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn availability<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Slot>, CrmError>> {
        Box::pin(async {
            if self.down.load(Ordering::SeqCst) {
                return Err(CrmError::Unavailable("503 Service Unavailable".into()));
            }
            Ok(vec![Slot {
                start: "11:00".into(),
                end: "12:00".into(),
            }])
        })
    }
}

fn booking(key: &str) -> Booking {
    Booking {
        idempotency_key: key.into(),
        phone: "+919800000001".into(),
        name: None,
        property_id: "P001".into(),
        date: "2026-11-25".into(),
        slot: "10:00".into(),
        notes: String::new(),
    }
}

/// Unix ms that follow tokio's (paused) clock.
fn test_clock() -> Clock {
    let start = tokio::time::Instant::now();
    Arc::new(move || 1_800_000_000_000 + start.elapsed().as_millis() as u64)
}

fn config(dir: &Path) -> OutboxConfig {
    OutboxConfig {
        give_up_after: Duration::from_secs(600),
        ..OutboxConfig::new(dir.join("outbox.sqlite"))
    }
}

#[test]
fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
    let (first, max) = (Duration::from_secs(1), Duration::from_secs(60));
    assert_eq!(backoff(1, first, max, 1.0), Duration::from_secs(1));
    assert_eq!(backoff(1, first, max, 0.0), Duration::from_millis(500));
    assert_eq!(backoff(4, first, max, 1.0), Duration::from_secs(8));
    assert_eq!(backoff(30, first, max, 1.0), max);
    assert_eq!(backoff(u32::MAX, first, max, 0.0), max / 2);
}

#[tokio::test(start_paused = true)]
async fn a_crm_that_answers_confirms_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let crm = Arc::new(ScriptedCrm::default());
    let outbox = Outbox::open(config(dir.path()), crm.clone(), test_clock()).unwrap();
    let Ok(BookingWrite::Confirmed(c)) = outbox.write(&booking("k1")).await else {
        panic!("not confirmed");
    };
    assert_eq!(c.booking_id, "BK0");
    // The same key again: the stored confirmation, the CRM not asked.
    let Ok(BookingWrite::Confirmed(again)) = outbox.write(&booking("k1")).await else {
        panic!("not confirmed");
    };
    assert_eq!(again, c);
    assert_eq!(crm.calls.load(Ordering::SeqCst), 1);
    assert_eq!(outbox.counts().unwrap().delivered, 1);
}

#[tokio::test(start_paused = true)]
async fn a_crm_that_is_down_gets_the_write_once_it_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let crm = Arc::new(ScriptedCrm::default());
    crm.down_for.store(4, Ordering::SeqCst);
    let outbox = Arc::new(Outbox::open(config(dir.path()), crm.clone(), test_clock()).unwrap());
    let written = outbox.write(&booking("k1")).await.unwrap();
    assert_eq!(
        written,
        BookingWrite::Queued {
            reference: "k1".into()
        }
    );
    let worker = tokio::spawn(Arc::clone(&outbox).run());
    // Retries after ~1, 2, 4 s (with jitter): delivered within a minute.
    for _ in 0..600 {
        if outbox.counts().unwrap().delivered == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    worker.abort();
    assert_eq!(outbox.counts().unwrap().delivered, 1);
    assert_eq!(
        crm.calls.load(Ordering::SeqCst),
        5,
        "four failures, one success"
    );
    assert_eq!(crm.bookings.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn queued_writes_survive_a_restart_and_arrive_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let down = Arc::new(ScriptedCrm::default());
    down.down.store(true, Ordering::SeqCst);
    {
        // The first process: the CRM is down; three bookings are queued,
        // then the process is gone (nothing is flushed on the way out).
        let outbox = Outbox::open(config(dir.path()), down.clone(), test_clock()).unwrap();
        for k in ["a", "b", "c"] {
            let w = outbox.write(&booking(k)).await.unwrap();
            assert!(matches!(w, BookingWrite::Queued { .. }), "{w:?}");
        }
        std::mem::forget(outbox);
    }
    // The next process, the CRM back.
    let up = Arc::new(ScriptedCrm::default());
    let outbox = Arc::new(Outbox::open(config(dir.path()), up.clone(), test_clock()).unwrap());
    assert_eq!(outbox.counts().unwrap().pending, 3);
    let worker = tokio::spawn(Arc::clone(&outbox).run());
    for _ in 0..100 {
        if outbox.counts().unwrap().delivered == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the worker run on: nothing is sent again.
    tokio::time::sleep(Duration::from_secs(30)).await;
    worker.abort();
    assert_eq!(outbox.counts().unwrap().delivered, 3);
    assert_eq!(up.calls.load(Ordering::SeqCst), 3);
    let mut keys: Vec<String> = up.bookings.lock().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["a", "b", "c"]);
}

#[tokio::test(start_paused = true)]
async fn a_refused_write_fails_at_once_and_is_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let crm = Arc::new(ScriptedCrm::default());
    crm.refuse.store(true, Ordering::SeqCst);
    let outbox = Arc::new(Outbox::open(config(dir.path()), crm.clone(), test_clock()).unwrap());
    let err = outbox.write(&booking("k1")).await.unwrap_err();
    assert!(matches!(err, CrmError::Rejected(_)), "{err}");
    let worker = tokio::spawn(Arc::clone(&outbox).run());
    tokio::time::sleep(Duration::from_secs(60)).await;
    worker.abort();
    assert_eq!(crm.calls.load(Ordering::SeqCst), 1);
    assert_eq!(outbox.counts().unwrap().rejected, 1);
}

#[tokio::test(start_paused = true)]
async fn a_write_undelivered_for_too_long_is_dead() {
    let dir = tempfile::tempdir().unwrap();
    let crm = Arc::new(ScriptedCrm::default());
    crm.down.store(true, Ordering::SeqCst);
    let outbox = Arc::new(Outbox::open(config(dir.path()), crm.clone(), test_clock()).unwrap());
    outbox.write(&booking("k1")).await.unwrap();
    let worker = tokio::spawn(Arc::clone(&outbox).run());
    tokio::time::sleep(Duration::from_secs(700)).await;
    worker.abort();
    let counts = outbox.counts().unwrap();
    assert_eq!((counts.pending, counts.dead), (0, 1), "{counts:?}");
    // Retries were spaced out: 1, 2, 4 ... capped at 300 s, not a busy loop.
    let calls = crm.calls.load(Ordering::SeqCst);
    assert!((5..=14).contains(&calls), "{calls} attempts in 600 s");
}

/// The booking tool with the CRM down: the caller is told the visit is
/// noted (queued, at the opening hour since free slots cannot be read),
/// and the CRM gets it exactly once when it is back.
#[tokio::test(start_paused = true)]
async fn the_booking_tool_queues_while_the_crm_is_down() {
    use crate::agent::provider::{SyncState, Tool, ToolCall, ToolContext};
    use crate::agent::tools::BookSiteVisit;

    let dir = tempfile::tempdir().unwrap();
    let crm = Arc::new(ScriptedCrm::default());
    crm.down.store(true, Ordering::SeqCst);
    let outbox = Arc::new(Outbox::open(config(dir.path()), crm.clone(), test_clock()).unwrap());
    let tool =
        BookSiteVisit::with_writer(crm.clone(), outbox.clone()).with_default_slot("10:00".into());
    let call = ToolCall {
        id: "c1".into(),
        name: BookSiteVisit::NAME.into(),
        arguments: serde_json::json!({"property_id": "P001", "date": "2026-11-25"}),
    };
    let ctx = ToolContext {
        session_id: "call-1".into(),
        caller: Some("+919800000001".into()),
        ..ToolContext::default()
    };
    let result = tool.call(&call, &ctx).await.unwrap();
    assert_eq!(result.sync, Some(SyncState::Queued), "{result:?}");
    assert_eq!(result.content["status"], "queued");
    assert_eq!(result.content["slot"], "10:00");

    let worker = tokio::spawn(Arc::clone(&outbox).run());
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(crm.bookings.lock().unwrap().len(), 0, "nothing while down");
    crm.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(120)).await;
    worker.abort();
    let bookings = crm.bookings.lock().unwrap();
    assert_eq!(bookings.len(), 1);
    let b = bookings.values().next().unwrap();
    assert_eq!((b.property_id.as_str(), b.slot.as_str()), ("P001", "10:00"));
    assert_eq!(outbox.counts().unwrap().delivered, 1);
}

fn call_record(session: &str) -> CallRecord {
    CallRecord {
        call_id: session.into(),
        phone: "+919800000001".into(),
        started_at: "2026-11-24T10:00:00Z".into(),
        summary: "2 turns; name=Ravi".into(),
    }
}

fn name_update(name: &str) -> CrmWrite {
    CrmWrite::Contact(ContactUpdate {
        phone: "+919800000001".into(),
        name: name.into(),
    })
}

/// Steps the paused clock until `done` holds (at most `limit`).
async fn until(limit: Duration, done: impl Fn() -> bool) {
    let steps = limit.as_millis() / 100;
    for _ in 0..steps {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A call's summary and its contact update, queued at hang-up while the
/// CRM is down: on disk at once, retried with backoff (not in a busy
/// loop), delivered once each with their keys when the CRM is back.
#[tokio::test(start_paused = true)]
async fn call_summaries_and_contact_updates_wait_for_the_crm_and_arrive_once() {
    let dir = tempfile::tempdir().unwrap();
    let crm = Arc::new(ScriptedCrm::default());
    crm.down.store(true, Ordering::SeqCst);
    crm.contacts.lock().unwrap().insert(
        "+919800000001".into(),
        Contact {
            phone: "+919800000001".into(),
            name: None,
            notes: "prefers mornings".into(),
            updated_at: String::new(),
        },
    );
    let outbox = Arc::new(Outbox::open(config(dir.path()), crm.clone(), test_clock()).unwrap());
    outbox
        .enqueue(&call_key("s1"), &CrmWrite::Call(call_record("s1")))
        .unwrap();
    outbox
        .enqueue(&contact_key("s1"), &name_update("Ravi"))
        .unwrap();
    // Committed before anything was sent.
    assert_eq!(crm.other_calls.load(Ordering::SeqCst), 0);
    assert_eq!(outbox.counts_of(WriteKind::Call).unwrap().pending, 1);
    assert_eq!(outbox.counts_of(WriteKind::Contact).unwrap().pending, 1);
    assert_eq!(outbox.counts_of(WriteKind::Booking).unwrap().pending, 0);

    let worker = tokio::spawn(Arc::clone(&outbox).run());
    tokio::time::sleep(Duration::from_secs(20)).await;
    let tried = crm.other_calls.load(Ordering::SeqCst);
    // Each write at 0 s and after about 1, 2, 4, 8 s (with jitter).
    assert!((6..=14).contains(&tried), "{tried} requests in 20 s");
    assert!(crm.records.lock().unwrap().is_empty());
    crm.down.store(false, Ordering::SeqCst);
    until(Duration::from_secs(120), || {
        outbox.counts().unwrap().delivered == 2
    })
    .await;
    // Let the worker run on: nothing is sent again.
    tokio::time::sleep(Duration::from_secs(60)).await;
    worker.abort();

    let records = crm.records.lock().unwrap().clone();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0], ("call:s1".to_owned(), call_record("s1")));
    assert_eq!(*crm.contact_writes.lock().unwrap(), ["contact:s1"]);
    let contact = crm.contacts.lock().unwrap()["+919800000001"].clone();
    assert_eq!(contact.name.as_deref(), Some("Ravi"));
    assert_eq!(contact.notes, "prefers mornings", "notes are kept");
    assert_eq!(outbox.counts_of(WriteKind::Call).unwrap().delivered, 1);
    assert_eq!(outbox.counts_of(WriteKind::Contact).unwrap().delivered, 1);
    assert_eq!(outbox.counts().unwrap().pending, 0);
}

/// Queuing one key again (a hang-up handled twice) neither duplicates the
/// row nor restarts its backoff; after a restart it is delivered once.
#[tokio::test(start_paused = true)]
async fn a_call_summary_queued_twice_and_across_a_restart_arrives_once() {
    let dir = tempfile::tempdir().unwrap();
    let down = Arc::new(ScriptedCrm::default());
    down.down.store(true, Ordering::SeqCst);
    {
        let outbox =
            Arc::new(Outbox::open(config(dir.path()), down.clone(), test_clock()).unwrap());
        let worker = tokio::spawn(Arc::clone(&outbox).run());
        for s in ["s1", "s2"] {
            let write = CrmWrite::Call(call_record(s));
            outbox.enqueue(&call_key(s), &write).unwrap();
            outbox.enqueue(&call_key(s), &write).unwrap();
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        worker.abort();
        assert_eq!(outbox.counts_of(WriteKind::Call).unwrap().pending, 2);
        // The process dies: nothing flushed on the way out.
        std::mem::forget(outbox);
    }
    let up = Arc::new(ScriptedCrm::default());
    let outbox = Arc::new(Outbox::open(config(dir.path()), up.clone(), test_clock()).unwrap());
    assert_eq!(outbox.counts_of(WriteKind::Call).unwrap().pending, 2);
    let worker = tokio::spawn(Arc::clone(&outbox).run());
    until(Duration::from_secs(30), || {
        outbox.counts().unwrap().delivered == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    worker.abort();
    let mut keys: Vec<String> = up
        .records
        .lock()
        .unwrap()
        .iter()
        .map(|(k, _)| k.clone())
        .collect();
    keys.sort();
    assert_eq!(keys, ["call:s1", "call:s2"]);
    assert_eq!(up.other_calls.load(Ordering::SeqCst), 2);
}

/// A contact update whose name the CRM already has writes nothing.
#[tokio::test(start_paused = true)]
async fn a_contact_update_with_the_same_name_only_reads() {
    let dir = tempfile::tempdir().unwrap();
    let crm = Arc::new(ScriptedCrm::default());
    crm.contacts.lock().unwrap().insert(
        "+919800000001".into(),
        Contact {
            phone: "+919800000001".into(),
            name: Some("Ravi".into()),
            notes: String::new(),
            updated_at: String::new(),
        },
    );
    let outbox = Arc::new(Outbox::open(config(dir.path()), crm.clone(), test_clock()).unwrap());
    outbox
        .enqueue(&contact_key("s1"), &name_update("Ravi"))
        .unwrap();
    assert_eq!(outbox.deliver_due().await, 1);
    assert_eq!(outbox.counts_of(WriteKind::Contact).unwrap().delivered, 1);
    assert!(crm.contact_writes.lock().unwrap().is_empty());
    assert_eq!(crm.other_calls.load(Ordering::SeqCst), 1, "one read");
}

/// Call summaries the CRM never takes die after `give_up_after`, like
/// bookings, and are counted under their own kind.
#[tokio::test(start_paused = true)]
async fn call_summaries_undelivered_for_too_long_are_dead() {
    let dir = tempfile::tempdir().unwrap();
    let crm = Arc::new(ScriptedCrm::default());
    crm.down.store(true, Ordering::SeqCst);
    let outbox = Arc::new(Outbox::open(config(dir.path()), crm.clone(), test_clock()).unwrap());
    outbox
        .enqueue(&call_key("s1"), &CrmWrite::Call(call_record("s1")))
        .unwrap();
    outbox.write(&booking("k1")).await.unwrap();
    let worker = tokio::spawn(Arc::clone(&outbox).run());
    tokio::time::sleep(Duration::from_secs(700)).await;
    worker.abort();
    let calls = outbox.counts_of(WriteKind::Call).unwrap();
    let bookings = outbox.counts_of(WriteKind::Booking).unwrap();
    assert_eq!((calls.pending, calls.dead), (0, 1), "{calls:?}");
    assert_eq!((bookings.pending, bookings.dead), (0, 1), "{bookings:?}");
    let tried = crm.other_calls.load(Ordering::SeqCst);
    assert!((5..=14).contains(&tried), "{tried} attempts in 600 s");
}

/// The CRM refusing a call summary (a 4xx) is final: not retried.
#[tokio::test(start_paused = true)]
async fn a_refused_call_summary_is_not_retried() {
    struct Refusing(AtomicUsize);
    impl Crm for Refusing {
        fn name(&self) -> &str {
            "refusing"
        }
        fn find_contact<'a>(
            &'a self,
            _: &'a str,
        ) -> BoxFuture<'a, Result<Option<Contact>, CrmError>> {
            Box::pin(async { Ok(None) })
        }
        fn upsert_contact(&self, c: Contact) -> BoxFuture<'_, Result<Contact, CrmError>> {
            Box::pin(async move { Ok(c) })
        }
        fn recent_calls<'a>(
            &'a self,
            _: &'a str,
            _: usize,
        ) -> BoxFuture<'a, Result<Vec<CallRecord>, CrmError>> {
            Box::pin(async { Ok(Vec::new()) })
        }
        fn record_call(&self, _: CallRecord) -> BoxFuture<'_, Result<(), CrmError>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Err(CrmError::Invalid("HTTP 422: no such phone".into())) })
        }
        fn book_visit(&self, _: Booking) -> BoxFuture<'_, Result<BookingConfirmation, CrmError>> {
            Box::pin(async { Err(unavailable()) })
        }
        fn bookings_for<'a>(
            &'a self,
            _: &'a str,
        ) -> BoxFuture<'a, Result<Vec<BookingConfirmation>, CrmError>> {
            Box::pin(async { Ok(Vec::new()) })
        }
        fn availability<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
        ) -> BoxFuture<'a, Result<Vec<Slot>, CrmError>> {
            Box::pin(async { Ok(Vec::new()) })
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let crm = Arc::new(Refusing(AtomicUsize::new(0)));
    let outbox = Arc::new(Outbox::open(config(dir.path()), crm.clone(), test_clock()).unwrap());
    outbox
        .enqueue(&call_key("s1"), &CrmWrite::Call(call_record("s1")))
        .unwrap();
    let worker = tokio::spawn(Arc::clone(&outbox).run());
    tokio::time::sleep(Duration::from_secs(60)).await;
    worker.abort();
    assert_eq!(crm.0.load(Ordering::SeqCst), 1);
    assert_eq!(outbox.counts_of(WriteKind::Call).unwrap().rejected, 1);
}

/// An outbox file from before `kind` existed (schema version 0, bookings
/// only) opens: the column is added, its rows are bookings and are
/// delivered, and new kinds can be queued next to them.
#[tokio::test(start_paused = true)]
async fn an_outbox_file_of_the_previous_schema_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.sqlite");
    {
        let db = Connection::open(&path).unwrap();
        db.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE outbox (
                 key         TEXT PRIMARY KEY,
                 payload     TEXT NOT NULL,
                 state       TEXT NOT NULL,
                 attempts    INTEGER NOT NULL,
                 created_ms  INTEGER NOT NULL,
                 next_ms     INTEGER NOT NULL,
                 last_error  TEXT NOT NULL,
                 result      TEXT);
             CREATE INDEX outbox_due ON outbox (state, next_ms);",
        )
        .unwrap();
        let now = test_clock()();
        db.execute(
            "INSERT INTO outbox VALUES (?1, ?2, 'pending', 3, ?3, ?3, 'HTTP 503', NULL)",
            params!["old", serde_json::to_string(&booking("old")).unwrap(), now],
        )
        .unwrap();
    }
    let crm = Arc::new(ScriptedCrm::default());
    let outbox = Arc::new(Outbox::open(config(dir.path()), crm.clone(), test_clock()).unwrap());
    assert_eq!(outbox.counts_of(WriteKind::Booking).unwrap().pending, 1);
    outbox
        .enqueue(&call_key("s1"), &CrmWrite::Call(call_record("s1")))
        .unwrap();
    assert_eq!(outbox.deliver_due().await, 2);
    assert_eq!(outbox.counts_of(WriteKind::Booking).unwrap().delivered, 1);
    assert_eq!(outbox.counts_of(WriteKind::Call).unwrap().delivered, 1);
    assert!(crm.bookings.lock().unwrap().contains_key("old"));
    drop(outbox);

    let db = Connection::open(&path).unwrap();
    let version: i64 = db
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let kinds: Vec<(String, String)> = db
        .prepare("SELECT key, kind FROM outbox ORDER BY key")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        kinds,
        [
            ("call:s1".to_owned(), "call".to_owned()),
            ("old".to_owned(), "booking".to_owned())
        ]
    );
    // Opening a migrated file again changes nothing.
    drop(db);
    let again = Outbox::open(config(dir.path()), crm, test_clock()).unwrap();
    assert_eq!(again.counts().unwrap().delivered, 2);
}

/// A file written by a newer build is not touched.
#[test]
fn an_outbox_file_of_a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.sqlite");
    Connection::open(&path)
        .unwrap()
        .execute_batch("PRAGMA user_version = 99;")
        .unwrap();
    let crm = Arc::new(ScriptedCrm::default());
    let err = Outbox::open(config(dir.path()), crm, system_clock()).unwrap_err();
    assert!(err.to_string().contains("schema version 99"), "{err}");
}
