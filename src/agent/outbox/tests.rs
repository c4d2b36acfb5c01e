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
}

impl Crm for ScriptedCrm {
    fn name(&self) -> &str {
        "scripted"
    }
    fn find_contact<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Option<Contact>, CrmError>> {
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
        Box::pin(async { Ok(()) })
    }
    fn book_visit(&self, b: Booking) -> BoxFuture<'_, Result<BookingConfirmation, CrmError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst)
                || self
                    .down_for
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
            {
                return Err(CrmError::Unavailable("503 Service Unavailable".into()));
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
