//! The embedded CRM: one SQLite file.
//!
//! The database is opened in WAL mode (readers never block the writer; other
//! processes, e.g. `sqlite3` for an operator, can read while the server
//! runs) with `synchronous = FULL`, so a booking the caller was told about
//! survives a power cut, and a 5 s busy timeout for other writers. The
//! schema is created and migrated on open, tracked by `PRAGMA user_version`;
//! a file from a newer build is refused rather than misread.
//!
//! ## Threading
//!
//! One dedicated thread owns the connection and runs the queries sent to it
//! over a channel; each caller awaits its answer on a oneshot. Compared to
//! `spawn_blocking` with a `Mutex<Connection>`: SQLite takes one writer at a
//! time anyway, so the mutex would only park blocking-pool threads behind
//! each other; a single owner keeps its statement cache warm, runs the
//! requests in arrival order and never holds a lock across an await. The
//! handle is cheap to share (`Arc<SqliteCrm>`), and the thread ends when the
//! last handle is dropped. Queries take microseconds; the visible cost is
//! the fsync of each booking commit.
//!
//! ## Schema (version 1)
//!
//! ```sql
//! CREATE TABLE contacts (
//!     phone      TEXT PRIMARY KEY,
//!     name       TEXT,
//!     notes      TEXT NOT NULL DEFAULT '',
//!     updated_at TEXT NOT NULL);
//! CREATE TABLE calls (
//!     call_id    TEXT PRIMARY KEY,
//!     phone      TEXT NOT NULL,
//!     started_at TEXT NOT NULL,
//!     summary    TEXT NOT NULL DEFAULT '');
//! CREATE INDEX calls_by_phone ON calls (phone, started_at);
//! CREATE TABLE bookings (
//!     booking_id      TEXT PRIMARY KEY,
//!     idempotency_key TEXT NOT NULL UNIQUE,
//!     phone           TEXT NOT NULL,
//!     name            TEXT,
//!     property_id     TEXT NOT NULL,
//!     date            TEXT NOT NULL,   -- YYYY-MM-DD
//!     slot            TEXT NOT NULL,   -- HH:MM
//!     notes           TEXT NOT NULL DEFAULT '',
//!     status          TEXT NOT NULL DEFAULT 'confirmed',
//!     created_at      TEXT NOT NULL);
//! CREATE UNIQUE INDEX bookings_one_per_slot ON bookings (property_id, date, slot)
//!     WHERE status = 'confirmed';
//! CREATE INDEX bookings_by_phone ON bookings (phone, date);
//! ```
//!
//! One visit per property and slot: a second booking of a taken slot is
//! [`CrmError::Rejected`]. Slots are the configured [`VisitingHours`] (by
//! default 10:00–18:00, hourly: 10:00 … 17:00) minus confirmed bookings;
//! the CRM does not know the inventory, so any property id is accepted.
//! Dates more than a day before today (UTC) are refused.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::SystemTime;

use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::{Booking, BookingConfirmation, CallRecord, Contact, Crm, CrmError, Slot, check_date};
use crate::agent::provider::BoxFuture;
use crate::agent::retrieve::{parse_date, rfc3339_utc, today_utc};

/// Schema migrations; `PRAGMA user_version` is how many have run.
const MIGRATIONS: &[&str] = &["
CREATE TABLE contacts (
    phone      TEXT PRIMARY KEY,
    name       TEXT,
    notes      TEXT NOT NULL DEFAULT '',
    updated_at TEXT NOT NULL);
CREATE TABLE calls (
    call_id    TEXT PRIMARY KEY,
    phone      TEXT NOT NULL,
    started_at TEXT NOT NULL,
    summary    TEXT NOT NULL DEFAULT '');
CREATE INDEX calls_by_phone ON calls (phone, started_at);
CREATE TABLE bookings (
    booking_id      TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    phone           TEXT NOT NULL,
    name            TEXT,
    property_id     TEXT NOT NULL,
    date            TEXT NOT NULL,
    slot            TEXT NOT NULL,
    notes           TEXT NOT NULL DEFAULT '',
    status          TEXT NOT NULL DEFAULT 'confirmed',
    created_at      TEXT NOT NULL);
CREATE UNIQUE INDEX bookings_one_per_slot ON bookings (property_id, date, slot)
    WHERE status = 'confirmed';
CREATE INDEX bookings_by_phone ON bookings (phone, date);
"];

/// When site visits happen: slots of `step` minutes from `open` until
/// `close` (the last slot ends at or before `close`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VisitingHours {
    /// First slot start, minutes after midnight.
    pub open: u32,
    /// End of the last slot, minutes after midnight.
    pub close: u32,
    /// Slot length, minutes.
    pub step: u32,
}

impl Default for VisitingHours {
    /// 10:00–18:00, hourly.
    fn default() -> Self {
        VisitingHours {
            open: 600,
            close: 1080,
            step: 60,
        }
    }
}

impl VisitingHours {
    /// From `HH:MM` bounds and a slot length in minutes.
    pub fn new(open: &str, close: &str, step_minutes: u32) -> Result<Self, CrmError> {
        let parse = |s: &str| {
            parse_hhmm(s).ok_or_else(|| CrmError::Invalid(format!("{s:?} is not an HH:MM time")))
        };
        let (open, close) = (parse(open)?, parse(close)?);
        if step_minutes == 0 || open + step_minutes > close {
            return Err(CrmError::Invalid(
                "visiting hours hold no slot (open + slot length must not pass close)".into(),
            ));
        }
        Ok(VisitingHours {
            open,
            close,
            step: step_minutes,
        })
    }

    /// Every slot of a day.
    pub fn slots(&self) -> Vec<Slot> {
        let step = self.step.max(1);
        (0..)
            .map(|i| self.open + i * step)
            .take_while(|start| start + step <= self.close)
            .map(|start| Slot {
                start: hhmm(start),
                end: hhmm(start + step),
            })
            .collect()
    }
}

fn parse_hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 24 && m < 60 && h * 60 + m <= 1440 && s.trim().len() <= 5).then_some(h * 60 + m)
}

fn hhmm(minutes: u32) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// Where the embedded CRM lives and when visits happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteCrmConfig {
    /// The database file (created if missing).
    pub path: PathBuf,
    /// Visiting slots.
    pub visiting_hours: VisitingHours,
}

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// The embedded CRM (see the module doc).
#[derive(Debug)]
pub struct SqliteCrm {
    jobs: mpsc::Sender<Job>,
    hours: VisitingHours,
    path: PathBuf,
}

fn db_error(e: rusqlite::Error) -> CrmError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::ConstraintViolation => {
            CrmError::Rejected(format!("conflicts with an existing record ({e})"))
        }
        _ => CrmError::Unavailable(format!("database: {e}")),
    }
}

fn now() -> String {
    rfc3339_utc(SystemTime::now())
}

impl SqliteCrm {
    /// Opens (creating and migrating) the database and starts its thread.
    /// Blocking: call at startup or from `spawn_blocking`.
    pub fn open(config: &SqliteCrmConfig) -> Result<SqliteCrm, CrmError> {
        let mut conn = open_connection(&config.path)?;
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("crm-sqlite".into())
            .spawn(move || {
                while let Ok(job) = queue.recv() {
                    // A panicking query must not take the CRM down with it.
                    let _ =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut conn)));
                }
            })
            .map_err(|e| CrmError::Unavailable(format!("cannot start the CRM thread: {e}")))?;
        Ok(SqliteCrm {
            jobs,
            hours: config.visiting_hours,
            path: config.path.clone(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the database thread.
    async fn run<T, F>(&self, f: F) -> Result<T, CrmError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, CrmError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let _ = reply.send(f(conn));
        });
        self.jobs
            .send(job)
            .map_err(|_| CrmError::Unavailable("the CRM database thread has stopped".into()))?;
        answer
            .await
            .map_err(|_| CrmError::Unavailable("the CRM database query failed".into()))?
    }
}

fn open_connection(path: &Path) -> Result<Connection, CrmError> {
    let open_err =
        |e: rusqlite::Error| CrmError::Unavailable(format!("cannot open {}: {e}", path.display()));
    let mut conn = Connection::open(path).map_err(open_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(open_err)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(open_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(CrmError::Unavailable(format!(
            "{}: cannot switch to WAL mode (got {mode})",
            path.display()
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(open_err)?;
    migrate(&mut conn).map_err(|e| match e {
        CrmError::Unavailable(m) => CrmError::Unavailable(format!("{}: {m}", path.display())),
        other => other,
    })?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), CrmError> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db_error)?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(CrmError::Invalid(format!(
            "the CRM database has schema version {version}, newer than this build's {known}"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_error)?;
        tx.execute_batch(sql).map_err(db_error)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(db_error)?;
        tx.commit().map_err(db_error)?;
    }
    Ok(())
}

const BOOKING_COLUMNS: &str =
    "booking_id, phone, name, property_id, date, slot, status, created_at";

fn booking_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BookingConfirmation> {
    Ok(BookingConfirmation {
        booking_id: r.get(0)?,
        phone: r.get(1)?,
        name: r.get(2)?,
        property_id: r.get(3)?,
        date: r.get(4)?,
        slot: r.get(5)?,
        status: r.get(6)?,
        created_at: r.get(7)?,
    })
}

fn new_booking_id() -> String {
    // No 0/O or 1/I: it may be read out on the phone.
    const ALPHABET: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ";
    let code: String = (0..8)
        .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
        .collect();
    format!("BK-{code}")
}

fn book(
    conn: &mut Connection,
    hours: VisitingHours,
    b: Booking,
) -> Result<BookingConfirmation, CrmError> {
    if b.idempotency_key.trim().is_empty() {
        return Err(CrmError::Invalid(
            "a booking needs an idempotency key".into(),
        ));
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_error)?;
    // A repeated key: the first booking, whatever this request says.
    let existing = tx
        .query_row(
            &format!("SELECT {BOOKING_COLUMNS} FROM bookings WHERE idempotency_key = ?1"),
            params![b.idempotency_key],
            booking_row,
        )
        .optional()
        .map_err(db_error)?;
    if let Some(confirmation) = existing {
        return Ok(confirmation);
    }

    if b.phone.trim().is_empty() {
        return Err(CrmError::Invalid(
            "a booking needs the visitor's phone number".into(),
        ));
    }
    if b.property_id.trim().is_empty() {
        return Err(CrmError::Invalid("a booking needs a property id".into()));
    }
    check_date(&b.date)?;
    if parse_date(&b.date).is_some_and(|d| d < today_utc() - 1) {
        return Err(CrmError::Invalid(format!("{} is in the past", b.date)));
    }
    if !hours.slots().iter().any(|s| s.start == b.slot) {
        let starts: Vec<String> = hours.slots().into_iter().map(|s| s.start).collect();
        return Err(CrmError::Invalid(format!(
            "{:?} is not a visiting slot (slots start at {})",
            b.slot,
            starts.join(", ")
        )));
    }
    let taken: bool = tx
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM bookings
               WHERE property_id = ?1 AND date = ?2 AND slot = ?3 AND status = 'confirmed')",
            params![b.property_id, b.date, b.slot],
            |r| r.get(0),
        )
        .map_err(db_error)?;
    if taken {
        return Err(CrmError::Rejected(format!(
            "the {} slot on {} for {} is already booked",
            b.slot, b.date, b.property_id
        )));
    }
    let created_at = now();
    let mut attempt = 0;
    let booking_id = loop {
        let id = new_booking_id();
        let inserted = tx.execute(
            "INSERT INTO bookings
               (booking_id, idempotency_key, phone, name, property_id, date, slot, notes, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (booking_id) DO NOTHING",
            params![id, b.idempotency_key, b.phone, b.name, b.property_id, b.date, b.slot, b.notes, created_at],
        );
        match inserted.map_err(db_error)? {
            1 => break id,
            _ if attempt < 5 => attempt += 1,
            _ => return Err(CrmError::Unavailable("cannot allocate a booking id".into())),
        }
    };
    tx.commit().map_err(db_error)?;
    Ok(BookingConfirmation {
        booking_id,
        phone: b.phone,
        name: b.name,
        property_id: b.property_id,
        date: b.date,
        slot: b.slot,
        status: "confirmed".into(),
        created_at,
    })
}

impl Crm for SqliteCrm {
    fn name(&self) -> &str {
        "sqlite"
    }

    fn find_contact<'a>(
        &'a self,
        phone: &'a str,
    ) -> BoxFuture<'a, Result<Option<Contact>, CrmError>> {
        let phone = phone.to_owned();
        Box::pin(self.run(move |conn| {
            conn.query_row(
                "SELECT phone, name, notes, updated_at FROM contacts WHERE phone = ?1",
                params![phone],
                |r| {
                    Ok(Contact {
                        phone: r.get(0)?,
                        name: r.get(1)?,
                        notes: r.get(2)?,
                        updated_at: r.get(3)?,
                    })
                },
            )
            .optional()
            .map_err(db_error)
        }))
    }

    fn upsert_contact(&self, contact: Contact) -> BoxFuture<'_, Result<Contact, CrmError>> {
        Box::pin(self.run(move |conn| {
            if contact.phone.trim().is_empty() {
                return Err(CrmError::Invalid("a contact needs a phone number".into()));
            }
            // A contact without a name keeps the name already known.
            conn.query_row(
                "INSERT INTO contacts (phone, name, notes, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (phone) DO UPDATE SET
                   name = COALESCE(excluded.name, contacts.name),
                   notes = excluded.notes,
                   updated_at = excluded.updated_at
                 RETURNING phone, name, notes, updated_at",
                params![contact.phone, contact.name, contact.notes, now()],
                |r| {
                    Ok(Contact {
                        phone: r.get(0)?,
                        name: r.get(1)?,
                        notes: r.get(2)?,
                        updated_at: r.get(3)?,
                    })
                },
            )
            .map_err(db_error)
        }))
    }

    fn recent_calls<'a>(
        &'a self,
        phone: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<CallRecord>, CrmError>> {
        let phone = phone.to_owned();
        Box::pin(self.run(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT call_id, phone, started_at, summary FROM calls
                     WHERE phone = ?1 ORDER BY started_at DESC LIMIT ?2",
                )
                .map_err(db_error)?;
            let rows = stmt
                .query_map(params![phone, limit as i64], |r| {
                    Ok(CallRecord {
                        call_id: r.get(0)?,
                        phone: r.get(1)?,
                        started_at: r.get(2)?,
                        summary: r.get(3)?,
                    })
                })
                .map_err(db_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_error)
        }))
    }

    fn record_call(&self, record: CallRecord) -> BoxFuture<'_, Result<(), CrmError>> {
        Box::pin(self.run(move |conn| {
            if record.call_id.trim().is_empty() {
                return Err(CrmError::Invalid("a call record needs a call id".into()));
            }
            conn.execute(
                "INSERT INTO calls (call_id, phone, started_at, summary) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (call_id) DO UPDATE SET
                   phone = excluded.phone, started_at = excluded.started_at, summary = excluded.summary",
                params![record.call_id, record.phone, record.started_at, record.summary],
            )
            .map(|_| ())
            .map_err(db_error)
        }))
    }

    fn book_visit(&self, booking: Booking) -> BoxFuture<'_, Result<BookingConfirmation, CrmError>> {
        let hours = self.hours;
        Box::pin(self.run(move |conn| book(conn, hours, booking)))
    }

    fn bookings_for<'a>(
        &'a self,
        phone: &'a str,
    ) -> BoxFuture<'a, Result<Vec<BookingConfirmation>, CrmError>> {
        let phone = phone.to_owned();
        Box::pin(self.run(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {BOOKING_COLUMNS} FROM bookings WHERE phone = ?1 ORDER BY date, slot"
                ))
                .map_err(db_error)?;
            let rows = stmt
                .query_map(params![phone], booking_row)
                .map_err(db_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_error)
        }))
    }

    fn availability<'a>(
        &'a self,
        property_id: &'a str,
        date: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Slot>, CrmError>> {
        let (property_id, date) = (property_id.to_owned(), date.to_owned());
        let hours = self.hours;
        Box::pin(async move {
            check_date(&date)?;
            let booked: Vec<String> = self
                .run(move |conn| {
                    let mut stmt = conn
                        .prepare_cached(
                            "SELECT slot FROM bookings
                             WHERE property_id = ?1 AND date = ?2 AND status = 'confirmed'",
                        )
                        .map_err(db_error)?;
                    let rows = stmt
                        .query_map(params![property_id, date], |r| r.get(0))
                        .map_err(db_error)?;
                    rows.collect::<Result<Vec<String>, _>>().map_err(db_error)
                })
                .await?;
            Ok(hours
                .slots()
                .into_iter()
                .filter(|s| !booked.contains(&s.start))
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn config(dir: &tempfile::TempDir) -> SqliteCrmConfig {
        SqliteCrmConfig {
            path: dir.path().join("crm.sqlite3"),
            visiting_hours: VisitingHours::default(),
        }
    }

    fn booking(key: &str, phone: &str, slot: &str) -> Booking {
        Booking {
            idempotency_key: key.into(),
            phone: phone.into(),
            name: Some("Asha Rao".into()),
            property_id: "P001".into(),
            date: "2099-01-10".into(),
            slot: slot.into(),
            notes: "3 BHK, budget 1.2 crore".into(),
        }
    }

    fn count_bookings(path: &Path) -> i64 {
        let conn = Connection::open(path).unwrap();
        conn.query_row("SELECT COUNT(*) FROM bookings", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn visiting_hours_make_slots() {
        let slots = VisitingHours::default().slots();
        assert_eq!(slots.len(), 8);
        assert_eq!(
            (slots[0].start.as_str(), slots[0].end.as_str()),
            ("10:00", "11:00")
        );
        assert_eq!(slots[7].start, "17:00");
        let half = VisitingHours::new("09:30", "11:00", 30).unwrap().slots();
        let starts: Vec<&str> = half.iter().map(|s| s.start.as_str()).collect();
        assert_eq!(starts, ["09:30", "10:00", "10:30"]);
        assert!(VisitingHours::new("18:00", "10:00", 60).is_err());
        assert!(VisitingHours::new("25:00", "26:00", 60).is_err());
    }

    #[tokio::test]
    async fn contacts_upsert_and_find() {
        let dir = tempfile::tempdir().unwrap();
        let crm = SqliteCrm::open(&config(&dir)).unwrap();
        assert_eq!(crm.find_contact("+919800000001").await.unwrap(), None);
        let stored = crm
            .upsert_contact(Contact {
                phone: "+919800000001".into(),
                name: Some("Asha Rao".into()),
                notes: "wants 3 BHK in Whitefield".into(),
                updated_at: String::new(),
            })
            .await
            .unwrap();
        assert!(!stored.updated_at.is_empty());
        assert_eq!(
            crm.find_contact("+919800000001").await.unwrap(),
            Some(stored)
        );
        // No name: the known one stays; notes are replaced.
        let updated = crm
            .upsert_contact(Contact {
                phone: "+919800000001".into(),
                name: None,
                notes: "budget 1.2 crore".into(),
                updated_at: String::new(),
            })
            .await
            .unwrap();
        assert_eq!(updated.name.as_deref(), Some("Asha Rao"));
        assert_eq!(updated.notes, "budget 1.2 crore");
    }

    #[tokio::test]
    async fn calls_are_recorded_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let crm = SqliteCrm::open(&config(&dir)).unwrap();
        for (id, at) in [
            ("c1", "2026-01-01T10:00:00Z"),
            ("c2", "2026-01-03T10:00:00Z"),
            ("c3", "2026-01-02T10:00:00Z"),
        ] {
            crm.record_call(CallRecord {
                call_id: id.into(),
                phone: "+919800000001".into(),
                started_at: at.into(),
                summary: format!("call {id}"),
            })
            .await
            .unwrap();
        }
        let calls = crm.recent_calls("+919800000001", 2).await.unwrap();
        let ids: Vec<&str> = calls.iter().map(|c| c.call_id.as_str()).collect();
        assert_eq!(ids, ["c2", "c3"]);
        assert!(
            crm.recent_calls("+919800000002", 5)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn bookings_are_idempotent_exclusive_and_shrink_availability() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(&dir);
        let crm = Arc::new(SqliteCrm::open(&cfg).unwrap());
        let first = crm
            .book_visit(booking("k1", "+919800000001", "10:00"))
            .await
            .unwrap();
        assert!(first.booking_id.starts_with("BK-"));
        assert_eq!(first.status, "confirmed");

        // Same key again (even with a different slot): the same booking.
        let again = crm
            .book_visit(booking("k1", "+919800000001", "10:00"))
            .await
            .unwrap();
        assert_eq!(again, first);
        let again = crm
            .book_visit(booking("k1", "+919800000001", "11:00"))
            .await
            .unwrap();
        assert_eq!(again.booking_id, first.booking_id);
        assert_eq!(count_bookings(&cfg.path), 1);

        // Concurrent retries of one key: still one booking.
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let crm = crm.clone();
                tokio::spawn(async move {
                    crm.book_visit(booking("k2", "+919800000002", "12:00"))
                        .await
                })
            })
            .collect();
        let mut ids = Vec::new();
        for t in tasks {
            ids.push(t.await.unwrap().unwrap().booking_id);
        }
        ids.dedup();
        assert_eq!(ids.len(), 1);
        assert_eq!(count_bookings(&cfg.path), 2);

        // Another caller, taken slot: rejected.
        let taken = crm
            .book_visit(booking("k3", "+919800000003", "10:00"))
            .await
            .unwrap_err();
        assert!(matches!(taken, CrmError::Rejected(_)), "{taken}");
        assert!(!taken.is_retryable());

        // Invalid requests.
        let bad_slot = crm
            .book_visit(booking("k4", "+919800000003", "10:30"))
            .await
            .unwrap_err();
        assert!(matches!(bad_slot, CrmError::Invalid(_)), "{bad_slot}");
        let mut bad_date = booking("k5", "+919800000003", "13:00");
        bad_date.date = "2099-02-30".into();
        assert!(matches!(
            crm.book_visit(bad_date).await,
            Err(CrmError::Invalid(_))
        ));
        let mut past = booking("k6", "+919800000003", "13:00");
        past.date = "2001-01-01".into();
        assert!(matches!(
            crm.book_visit(past).await,
            Err(CrmError::Invalid(_))
        ));

        let free = crm.availability("P001", "2099-01-10").await.unwrap();
        let starts: Vec<&str> = free.iter().map(|s| s.start.as_str()).collect();
        assert_eq!(
            starts,
            ["11:00", "13:00", "14:00", "15:00", "16:00", "17:00"]
        );
        assert_eq!(
            crm.availability("P002", "2099-01-10").await.unwrap().len(),
            8
        );
        assert!(matches!(
            crm.availability("P001", "tomorrow").await,
            Err(CrmError::Invalid(_))
        ));

        let mine = crm.bookings_for("+919800000001").await.unwrap();
        assert_eq!(mine, [first]);
    }

    #[tokio::test]
    async fn data_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(&dir);
        let first = {
            let crm = SqliteCrm::open(&cfg).unwrap();
            crm.upsert_contact(Contact {
                phone: "+919800000001".into(),
                name: Some("Asha Rao".into()),
                notes: String::new(),
                updated_at: String::new(),
            })
            .await
            .unwrap();
            crm.book_visit(booking("k1", "+919800000001", "15:00"))
                .await
                .unwrap()
        };
        let crm = SqliteCrm::open(&cfg).unwrap();
        let contact = crm.find_contact("+919800000001").await.unwrap().unwrap();
        assert_eq!(contact.name.as_deref(), Some("Asha Rao"));
        assert_eq!(
            crm.bookings_for("+919800000001").await.unwrap(),
            std::slice::from_ref(&first)
        );
        assert_eq!(
            crm.book_visit(booking("k1", "+919800000001", "15:00"))
                .await
                .unwrap(),
            first
        );
        let conn = Connection::open(&cfg.path).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(&dir);
        Connection::open(&cfg.path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = SqliteCrm::open(&cfg).unwrap_err();
        assert!(matches!(err, CrmError::Invalid(_)), "{err}");
    }
}
