//! The outbox: CRM writes kept on disk until the CRM has them.
//!
//! Every write the agent makes to the CRM goes through here: site-visit
//! bookings (kind `booking`), the call summary written at hang-up (`call`,
//! key `call:<session id>`) and the contact update made then (`contact`,
//! key `contact:<session id>`: the name the caller gave). A write is
//! committed to a SQLite file (its idempotency key is the primary key)
//! *before* anything depends on it: a booking before the caller hears
//! about it, a call summary before the call's task ends.
//!
//! A booking is then tried at once, within
//! [`OutboxConfig::attempt_timeout`]: if the CRM confirms, the caller hears
//! the booking id (`crm_sync` = `success`); if it is unreachable or slow,
//! the caller hears that the visit is noted and a confirmation will follow
//! (`queued`). Call summaries and contact updates are not waited for: the
//! delivery task is woken. [`Outbox::run`] delivers what is queued with
//! exponential backoff and jitter — also after a restart, since the rows
//! are on disk. A write the CRM refuses (the slot is taken) is not retried:
//! a booking's caller is told at once (`failed`). After
//! [`OutboxConfig::give_up_after`] without success a row becomes *dead*: it
//! stays in the file, is logged as an error and counted in the
//! `voxtrunk_outbox_dead_total` metric for a person to follow up. Metrics
//! carry the write's kind as the label `kind`.
//!
//! The CRM sees each write once: deliveries of one key never overlap, and
//! the key travels with the request, so a CRM that got a request whose
//! answer was lost can recognise the retry.
//!
//! ```sql
//! PRAGMA user_version = 1;            -- 0: before `kind` (bookings only)
//! CREATE TABLE outbox (
//!     key         TEXT PRIMARY KEY,   -- the idempotency key
//!     payload     TEXT NOT NULL,      -- the write, JSON (Booking, CallRecord, ContactUpdate)
//!     state       TEXT NOT NULL,      -- pending | delivered | rejected | dead
//!     attempts    INTEGER NOT NULL,
//!     created_ms  INTEGER NOT NULL,   -- Unix time
//!     next_ms     INTEGER NOT NULL,   -- next attempt, Unix time
//!     last_error  TEXT NOT NULL,
//!     result      TEXT,               -- the CRM's answer, JSON
//!     kind        TEXT NOT NULL DEFAULT 'booking'); -- booking | call | contact
//! ```
//!
//! A file made before `kind` existed (`user_version` 0) gets the column on
//! opening; its rows are bookings.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tracing::{error, info, warn};

use super::crm::{Booking, BookingConfirmation, CallRecord, Contact, Crm, CrmError};
use super::provider::BoxFuture;
use super::tools::{BookingWrite, BookingWriter};

/// Milliseconds since the Unix epoch, injectable for tests.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    })
}

/// The schema version this build writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;

/// Where the outbox lives and how it retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxConfig {
    /// The SQLite file (created if missing).
    pub path: PathBuf,
    /// Wait before the first retry; it doubles with every failure.
    pub first_retry: Duration,
    /// The longest wait between retries.
    pub max_retry: Duration,
    /// A write still undelivered this long after it was made is dead.
    pub give_up_after: Duration,
    /// The longest one delivery may take.
    pub attempt_timeout: Duration,
}

impl OutboxConfig {
    /// Retries from 1 s up to 5 min apart, for a day; 1.5 s per attempt.
    #[cfg(test)]
    pub fn new(path: impl Into<PathBuf>) -> Self {
        OutboxConfig {
            path: path.into(),
            first_retry: Duration::from_secs(1),
            max_retry: Duration::from_secs(300),
            give_up_after: Duration::from_secs(86_400),
            attempt_timeout: Duration::from_millis(1500),
        }
    }
}

/// How many rows are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    /// Waiting for the CRM.
    pub pending: u64,
    /// Confirmed by the CRM.
    pub delivered: u64,
    /// Refused by the CRM (the caller was told).
    pub rejected: u64,
    /// Given up on.
    pub dead: u64,
}

impl OutboxCounts {
    fn add(&mut self, state: &str, n: u64) {
        match state {
            "pending" => self.pending += n,
            "delivered" => self.delivered += n,
            "rejected" => self.rejected += n,
            _ => self.dead += n,
        }
    }
}

/// What a queued write is, as stored in the `kind` column and given as
/// the `kind` label of the outbox's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteKind {
    /// A site-visit booking.
    Booking,
    /// The summary of a call, written at hang-up.
    Call,
    /// A contact (lead) update, written at hang-up.
    Contact,
}

impl WriteKind {
    /// Every kind.
    pub const ALL: [WriteKind; 3] = [WriteKind::Booking, WriteKind::Call, WriteKind::Contact];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            WriteKind::Booking => "booking",
            WriteKind::Call => "call",
            WriteKind::Contact => "contact",
        }
    }

    fn parse(s: &str) -> Option<WriteKind> {
        WriteKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A change to a contact made by a call: the name the caller gave. It is
/// applied when delivered: the contact is read, and written back with
/// this name only if its name differs (its notes stay).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactUpdate {
    /// The contact's number.
    pub phone: String,
    /// The name to set.
    pub name: String,
}

/// One write to the CRM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrmWrite {
    /// [`Crm::book_visit`]; the key is the booking's own.
    Booking(Booking),
    /// [`Crm::record_call_keyed`].
    Call(CallRecord),
    /// [`Crm::find_contact`], then [`Crm::upsert_contact_keyed`].
    Contact(ContactUpdate),
}

impl CrmWrite {
    /// Its kind.
    pub fn kind(&self) -> WriteKind {
        match self {
            CrmWrite::Booking(_) => WriteKind::Booking,
            CrmWrite::Call(_) => WriteKind::Call,
            CrmWrite::Contact(_) => WriteKind::Contact,
        }
    }

    /// The number the write is about (for logs).
    fn phone(&self) -> &str {
        match self {
            CrmWrite::Booking(b) => &b.phone,
            CrmWrite::Call(c) => &c.phone,
            CrmWrite::Contact(c) => &c.phone,
        }
    }

    fn payload(&self) -> Result<String, CrmError> {
        match self {
            CrmWrite::Booking(b) => serde_json::to_string(b),
            CrmWrite::Call(c) => serde_json::to_string(c),
            CrmWrite::Contact(c) => serde_json::to_string(c),
        }
        .map_err(|e| CrmError::Invalid(format!("write not serializable: {e}")))
    }

    fn from_row(kind: &str, payload: &str) -> Result<CrmWrite, String> {
        let bad = |e: serde_json::Error| e.to_string();
        match WriteKind::parse(kind) {
            Some(WriteKind::Booking) => serde_json::from_str(payload)
                .map(CrmWrite::Booking)
                .map_err(bad),
            Some(WriteKind::Call) => serde_json::from_str(payload)
                .map(CrmWrite::Call)
                .map_err(bad),
            Some(WriteKind::Contact) => serde_json::from_str(payload)
                .map(CrmWrite::Contact)
                .map_err(bad),
            None => Err(format!("unknown kind {kind:?}")),
        }
    }
}

/// The idempotency key of the summary of call `session_id`.
pub fn call_key(session_id: &str) -> String {
    format!("call:{session_id}")
}

/// The idempotency key of the contact update made by call `session_id`.
pub fn contact_key(session_id: &str) -> String {
    format!("contact:{session_id}")
}

/// The wait before retry number `attempt` (1 for the first retry): the
/// doubled base capped at `max`, then a uniform draw from its upper half
/// ("equal jitter"), so that writes queued together do not retry together.
pub fn backoff(attempt: u32, first: Duration, max: Duration, unit: f64) -> Duration {
    let exp = first
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(30))
        .min(max);
    exp.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
}

/// The outbox (see the module doc).
pub struct Outbox {
    db: Mutex<Connection>,
    crm: Arc<dyn Crm>,
    config: OutboxConfig,
    clock: Clock,
    in_flight: Mutex<HashSet<String>>,
    wake: Notify,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("path", &self.config.path)
            .finish_non_exhaustive()
    }
}

fn db_error(e: rusqlite::Error) -> CrmError {
    CrmError::Unavailable(format!("outbox: {e}"))
}

/// A row as `store` finds it.
struct Stored {
    state: String,
    result: Option<String>,
    last_error: String,
    attempts: u32,
}

/// A row due for delivery.
struct Due {
    key: String,
    write: CrmWrite,
    attempts: u32,
    created_ms: u64,
}

/// What the CRM answered to a delivered write.
enum Delivered {
    Booking(BookingConfirmation),
    Done,
}

/// Creates the table, or brings a file from an earlier version up to
/// [`SCHEMA_VERSION`], in one transaction.
fn migrate(db: &mut Connection) -> Result<(), CrmError> {
    let version: i64 = db
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db_error)?;
    if version > SCHEMA_VERSION {
        return Err(CrmError::Invalid(format!(
            "outbox file has schema version {version}; this build knows up to {SCHEMA_VERSION}"
        )));
    }
    if version == SCHEMA_VERSION {
        // Up to date: no write, so servers sharing the file start at once.
        return Ok(());
    }
    let tx = db.transaction().map_err(db_error)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS outbox (
             key         TEXT PRIMARY KEY,
             payload     TEXT NOT NULL,
             state       TEXT NOT NULL,
             attempts    INTEGER NOT NULL,
             created_ms  INTEGER NOT NULL,
             next_ms     INTEGER NOT NULL,
             last_error  TEXT NOT NULL,
             result      TEXT);
         CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_ms);",
    )
    .map_err(db_error)?;
    // Version 0 had no `kind`: every row was a booking.
    let has_kind = tx
        .prepare("SELECT 1 FROM pragma_table_info('outbox') WHERE name = 'kind'")
        .and_then(|mut s| s.exists([]))
        .map_err(db_error)?;
    if !has_kind {
        tx.execute_batch("ALTER TABLE outbox ADD COLUMN kind TEXT NOT NULL DEFAULT 'booking'")
            .map_err(db_error)?;
    }
    tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
        .map_err(db_error)?;
    tx.commit().map_err(db_error)
}

impl Outbox {
    /// Opens (creating, or migrating a file of an earlier version) the
    /// outbox in front of `crm`. Blocking.
    ///
    /// # Errors
    /// The file cannot be opened, created or migrated.
    pub fn open(config: OutboxConfig, crm: Arc<dyn Crm>, clock: Clock) -> Result<Outbox, CrmError> {
        let mut db = Connection::open(&config.path).map_err(db_error)?;
        // Another process may hold the file's write lock for a moment
        // (its own delivery, or its start-up): wait for it.
        db.busy_timeout(Duration::from_secs(5)).map_err(db_error)?;
        db.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")
            .map_err(db_error)?;
        migrate(&mut db)?;
        let outbox = Outbox {
            db: Mutex::new(db),
            crm,
            config,
            clock,
            in_flight: Mutex::new(HashSet::new()),
            wake: Notify::new(),
        };
        let counts = outbox.counts()?;
        if counts.pending > 0 {
            info!(
                pending = counts.pending,
                path = %outbox.config.path.display(),
                "outbox: writes from before the restart will be delivered"
            );
        }
        outbox.publish_pending();
        Ok(outbox)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.config.path
    }

    fn with_db<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, CrmError> {
        let db = self.db.lock().unwrap_or_else(|e| e.into_inner());
        f(&db).map_err(db_error)
    }

    /// Rows per state.
    pub fn counts(&self) -> Result<OutboxCounts, CrmError> {
        let mut counts = OutboxCounts::default();
        for (_, c) in self.counts_by_kind()? {
            for (state, n) in [
                ("pending", c.pending),
                ("delivered", c.delivered),
                ("rejected", c.rejected),
                ("dead", c.dead),
            ] {
                counts.add(state, n);
            }
        }
        Ok(counts)
    }

    /// Rows per state of one kind.
    #[cfg(test)]
    pub fn counts_of(&self, kind: WriteKind) -> Result<OutboxCounts, CrmError> {
        Ok(self
            .counts_by_kind()?
            .into_iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, c)| c)
            .unwrap_or_default())
    }

    /// Rows per state, for every kind (in [`WriteKind::ALL`] order).
    pub fn counts_by_kind(&self) -> Result<Vec<(WriteKind, OutboxCounts)>, CrmError> {
        let mut out: Vec<(WriteKind, OutboxCounts)> = WriteKind::ALL
            .into_iter()
            .map(|k| (k, OutboxCounts::default()))
            .collect();
        self.with_db(|db| {
            let mut stmt =
                db.prepare("SELECT kind, state, COUNT(*) FROM outbox GROUP BY kind, state")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, u64>(2)?,
                ))
            })?;
            for row in rows {
                let (kind, state, n) = row?;
                // A row of an unknown kind cannot be delivered; count it
                // as a booking's rather than hide it.
                let kind = WriteKind::parse(&kind).unwrap_or(WriteKind::Booking);
                if let Some((_, c)) = out.iter_mut().find(|(k, _)| *k == kind) {
                    c.add(&state, n);
                }
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Sets the `voxtrunk_outbox_pending` gauge of every kind.
    fn publish_pending(&self) {
        if let Ok(all) = self.counts_by_kind() {
            for (kind, c) in all {
                metrics::gauge!("voxtrunk_outbox_pending", "kind" => kind.as_str())
                    .set(c.pending as f64);
            }
        }
    }

    /// Stores the write (once per key); returns the row as it stands.
    fn store(&self, key: &str, write: &CrmWrite) -> Result<Stored, CrmError> {
        let payload = write.payload()?;
        let kind = write.kind().as_str();
        let now = (self.clock)();
        self.with_db(|db| {
            db.execute(
                "INSERT OR IGNORE INTO outbox
                     (key, payload, state, attempts, created_ms, next_ms, last_error, kind)
                 VALUES (?1, ?2, 'pending', 0, ?3, ?3, '', ?4)",
                params![key, payload, now, kind],
            )?;
            db.query_row(
                "SELECT state, result, last_error, attempts FROM outbox WHERE key = ?1",
                params![key],
                |r| {
                    Ok(Stored {
                        state: r.get(0)?,
                        result: r.get(1)?,
                        last_error: r.get(2)?,
                        attempts: r.get(3)?,
                    })
                },
            )
        })
    }

    /// Commits a write under `key` (a key already stored is left as it
    /// is) and wakes the delivery task; returns once the row is on disk.
    /// Blocking (one SQLite transaction).
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn enqueue(&self, key: &str, write: &CrmWrite) -> Result<(), CrmError> {
        let row = self.store(key, write)?;
        if row.state == "pending" {
            self.publish_pending();
            self.wake.notify_one();
        }
        Ok(())
    }

    /// One request to the CRM for `write`.
    async fn send(&self, key: &str, write: &CrmWrite) -> Result<Delivered, CrmError> {
        match write {
            CrmWrite::Booking(b) => self.crm.book_visit(b.clone()).await.map(Delivered::Booking),
            CrmWrite::Call(c) => self
                .crm
                .record_call_keyed(key, c.clone())
                .await
                .map(|()| Delivered::Done),
            CrmWrite::Contact(u) => {
                let mut contact = self.crm.find_contact(&u.phone).await?.unwrap_or(Contact {
                    phone: u.phone.clone(),
                    name: None,
                    notes: String::new(),
                    updated_at: String::new(),
                });
                if contact.name.as_deref() != Some(u.name.as_str()) {
                    contact.name = Some(u.name.clone());
                    self.crm.upsert_contact_keyed(key, contact).await?;
                }
                Ok(Delivered::Done)
            }
        }
    }

    /// One delivery of `key`, unless one is under way. `None`: skipped.
    async fn attempt(
        &self,
        key: &str,
        write: &CrmWrite,
        attempts: u32,
    ) -> Option<Result<Delivered, CrmError>> {
        {
            let mut busy = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            if !busy.insert(key.to_owned()) {
                return None;
            }
        }
        let kind = write.kind().as_str();
        let result =
            match tokio::time::timeout(self.config.attempt_timeout, self.send(key, write)).await {
                Ok(r) => r,
                Err(_) => Err(CrmError::Unavailable(format!(
                    "no answer within {} ms",
                    self.config.attempt_timeout.as_millis()
                ))),
            };
        let now = (self.clock)();
        let attempts = attempts + 1;
        let recorded = match &result {
            Ok(delivered) => {
                let json = match delivered {
                    Delivered::Booking(c) => serde_json::to_string(c).ok(),
                    Delivered::Done => None,
                };
                metrics::counter!("voxtrunk_outbox_delivered_total", "kind" => kind).increment(1);
                if attempts > 1 {
                    info!(key, kind, attempts, "outbox: CRM write delivered");
                }
                self.with_db(|db| {
                    db.execute(
                        "UPDATE outbox SET state = 'delivered', attempts = ?2, result = ?3,
                             last_error = '' WHERE key = ?1",
                        params![key, attempts, json],
                    )
                })
            }
            Err(e) if e.is_retryable() => {
                let wait = backoff(
                    attempts,
                    self.config.first_retry,
                    self.config.max_retry,
                    fastrand::f64(),
                );
                metrics::counter!("voxtrunk_outbox_retries_total", "kind" => kind).increment(1);
                warn!(key, kind, attempts, retry_in_ms = wait.as_millis() as u64, error = %e, "outbox: CRM write failed; will retry");
                // Never later than the give-up time, so that a dead write
                // is noticed when it dies.
                let give_up = self.config.give_up_after.as_millis() as u64;
                self.with_db(|db| {
                    db.execute(
                        "UPDATE outbox SET attempts = ?2, next_ms = MIN(?3, created_ms + ?5),
                             last_error = ?4
                             WHERE key = ?1 AND state = 'pending'",
                        params![
                            key,
                            attempts,
                            now + wait.as_millis() as u64,
                            e.to_string(),
                            give_up
                        ],
                    )
                })
            }
            Err(e) => {
                metrics::counter!("voxtrunk_outbox_rejected_total", "kind" => kind).increment(1);
                warn!(key, kind, error = %e, "outbox: CRM refused the write");
                self.with_db(|db| {
                    db.execute(
                        "UPDATE outbox SET state = 'rejected', attempts = ?2, last_error = ?3
                             WHERE key = ?1",
                        params![key, attempts, e.to_string()],
                    )
                })
            }
        };
        if let Err(e) = recorded {
            error!(key, kind, error = %e, "outbox: cannot record a delivery attempt");
        }
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        Some(result)
    }

    fn due(&self, now: u64) -> Result<Vec<Due>, CrmError> {
        self.with_db(|db| {
            let mut stmt = db.prepare(
                "SELECT key, kind, payload, attempts, created_ms FROM outbox
                 WHERE state = 'pending' AND next_ms <= ?1 ORDER BY next_ms LIMIT 64",
            )?;
            let rows = stmt.query_map(params![now], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, u32>(3)?,
                    r.get::<_, u64>(4)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (key, kind, payload, attempts, created_ms) = row?;
                match CrmWrite::from_row(&kind, &payload) {
                    Ok(write) => out.push(Due {
                        key,
                        write,
                        attempts,
                        created_ms,
                    }),
                    Err(e) => error!(key, kind, error = %e, "outbox: unreadable row skipped"),
                }
            }
            Ok(out)
        })
    }

    fn next_due(&self) -> Result<Option<u64>, CrmError> {
        self.with_db(|db| {
            db.query_row(
                "SELECT MIN(next_ms) FROM outbox WHERE state = 'pending'",
                [],
                |r| r.get::<_, Option<u64>>(0),
            )
            .optional()
            .map(Option::flatten)
        })
    }

    /// Marks a row dead, for a person to follow up.
    fn give_up(&self, d: &Due) {
        let kind = d.write.kind().as_str();
        metrics::counter!("voxtrunk_outbox_dead_total", "kind" => kind).increment(1);
        match &d.write {
            CrmWrite::Booking(b) => error!(
                key = %d.key,
                kind,
                attempts = d.attempts,
                phone = %b.phone,
                property = %b.property_id,
                date = %b.date,
                "outbox: gave up on a CRM write; it needs a person"
            ),
            other => error!(
                key = %d.key,
                kind,
                attempts = d.attempts,
                phone = %other.phone(),
                "outbox: gave up on a CRM write; it needs a person"
            ),
        }
        let marked = self.with_db(|db| {
            db.execute(
                "UPDATE outbox SET state = 'dead' WHERE key = ?1",
                params![d.key],
            )
        });
        if let Err(e) = marked {
            error!(key = %d.key, kind, error = %e, "outbox: cannot mark a row dead");
        }
    }

    /// Delivers what is due now; returns how many rows it tried.
    pub async fn deliver_due(&self) -> usize {
        let now = (self.clock)();
        let due = match self.due(now) {
            Ok(d) => d,
            Err(e) => {
                error!(error = %e, "outbox: cannot read the queue");
                return 0;
            }
        };
        let tried = due.len();
        for d in due {
            let age = Duration::from_millis(now.saturating_sub(d.created_ms));
            if age >= self.config.give_up_after {
                self.give_up(&d);
                continue;
            }
            let _ = self.attempt(&d.key, &d.write, d.attempts).await;
        }
        self.publish_pending();
        tried
    }

    /// Delivers queued writes until the task is dropped: wakes when the
    /// next row is due or a write is queued (at least once a second, to
    /// notice the clock).
    pub async fn run(self: Arc<Self>) {
        loop {
            self.deliver_due().await;
            let now = (self.clock)();
            let wait = match self.next_due() {
                Ok(Some(next)) => Duration::from_millis(next.saturating_sub(now)),
                _ => Duration::from_secs(1),
            }
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {}
            }
        }
    }
}

impl BookingWriter for Outbox {
    fn write<'a>(&'a self, booking: &'a Booking) -> BoxFuture<'a, Result<BookingWrite, CrmError>> {
        Box::pin(async move {
            let key = booking.idempotency_key.clone();
            let write = CrmWrite::Booking(booking.clone());
            let row = self.store(&key, &write)?;
            match row.state.as_str() {
                "delivered" => {
                    if let Some(c) = row.result.and_then(|r| serde_json::from_str(&r).ok()) {
                        return Ok(BookingWrite::Confirmed(c));
                    }
                }
                "rejected" => return Err(CrmError::Rejected(row.last_error)),
                "dead" => return Err(CrmError::Unavailable(row.last_error)),
                _ => {}
            }
            // A key written again while pending keeps its backoff.
            match self.attempt(&key, &write, row.attempts).await {
                Some(Ok(Delivered::Booking(c))) => Ok(BookingWrite::Confirmed(c)),
                Some(Err(e)) if !e.is_retryable() => Err(e),
                _ => {
                    self.publish_pending();
                    self.wake.notify_one();
                    Ok(BookingWrite::Queued { reference: key })
                }
            }
        })
    }
}

#[cfg(test)]
mod tests;
