//! The outbox: CRM writes the caller was promised, kept on disk until the
//! CRM has them.
//!
//! A booking is committed to a SQLite file (its idempotency key is the
//! primary key) *before* anything is said to the caller. Then one delivery
//! is tried at once, within [`OutboxConfig::attempt_timeout`]: if the CRM
//! confirms, the caller hears the booking id (`crm_sync` = `success`); if it
//! is unreachable or slow, the caller hears that the visit is noted and a
//! confirmation will follow (`queued`), and [`Outbox::run`] keeps trying in
//! the background with exponential backoff and jitter — also after a
//! restart, since the rows are on disk. A booking the CRM refuses (the slot
//! is taken) is not retried: the caller is told at once (`failed`). After
//! [`OutboxConfig::give_up_after`] without success a row becomes *dead*: it
//! stays in the file, is logged as an error and counted in the
//! `voxtrunk_outbox_dead_total` metric for a person to follow up.
//!
//! The CRM sees each booking once: deliveries of one key never overlap,
//! and the key travels with the request, so a CRM that got a request whose
//! answer was lost returns the first confirmation again.
//!
//! ```sql
//! CREATE TABLE outbox (
//!     key         TEXT PRIMARY KEY,   -- the idempotency key
//!     payload     TEXT NOT NULL,      -- the booking, JSON
//!     state       TEXT NOT NULL,      -- pending | delivered | rejected | dead
//!     attempts    INTEGER NOT NULL,
//!     created_ms  INTEGER NOT NULL,   -- Unix time
//!     next_ms     INTEGER NOT NULL,   -- next attempt, Unix time
//!     last_error  TEXT NOT NULL,
//!     result      TEXT);              -- the confirmation, JSON
//! ```

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::Notify;
use tracing::{error, info, warn};

use super::crm::{Booking, BookingConfirmation, Crm, CrmError};
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

/// A row as `write` finds it.
struct Stored {
    state: String,
    result: Option<String>,
    last_error: String,
    attempts: u32,
}

/// A row due for delivery.
struct Due {
    key: String,
    booking: Booking,
    attempts: u32,
    created_ms: u64,
}

impl Outbox {
    /// Opens (creating) the outbox in front of `crm`. Blocking.
    ///
    /// # Errors
    /// The file cannot be opened or created.
    pub fn open(config: OutboxConfig, crm: Arc<dyn Crm>, clock: Clock) -> Result<Outbox, CrmError> {
        let db = Connection::open(&config.path).map_err(db_error)?;
        db.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS outbox (
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
        metrics::gauge!("voxtrunk_outbox_pending").set(counts.pending as f64);
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
        self.with_db(|db| {
            let mut counts = OutboxCounts::default();
            let mut stmt = db.prepare("SELECT state, COUNT(*) FROM outbox GROUP BY state")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?)))?;
            for row in rows {
                let (state, n) = row?;
                match state.as_str() {
                    "pending" => counts.pending = n,
                    "delivered" => counts.delivered = n,
                    "rejected" => counts.rejected = n,
                    _ => counts.dead += n,
                }
            }
            Ok(counts)
        })
    }

    /// Stores the booking (once per key); returns the row as it stands.
    fn store(&self, booking: &Booking) -> Result<Stored, CrmError> {
        let payload = serde_json::to_string(booking)
            .map_err(|e| CrmError::Invalid(format!("booking not serializable: {e}")))?;
        let now = (self.clock)();
        self.with_db(|db| {
            db.execute(
                "INSERT OR IGNORE INTO outbox
                     (key, payload, state, attempts, created_ms, next_ms, last_error)
                 VALUES (?1, ?2, 'pending', 0, ?3, ?3, '')",
                params![booking.idempotency_key, payload, now],
            )?;
            db.query_row(
                "SELECT state, result, last_error, attempts FROM outbox WHERE key = ?1",
                params![booking.idempotency_key],
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

    /// One delivery of `key`, unless one is under way. `None`: skipped.
    async fn attempt(
        &self,
        key: &str,
        booking: &Booking,
        attempts: u32,
    ) -> Option<Result<BookingConfirmation, CrmError>> {
        {
            let mut busy = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            if !busy.insert(key.to_owned()) {
                return None;
            }
        }
        let result = match tokio::time::timeout(
            self.config.attempt_timeout,
            self.crm.book_visit(booking.clone()),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(CrmError::Unavailable(format!(
                "no answer within {} ms",
                self.config.attempt_timeout.as_millis()
            ))),
        };
        let now = (self.clock)();
        let attempts = attempts + 1;
        let recorded = match &result {
            Ok(c) => {
                let json = serde_json::to_string(c).unwrap_or_default();
                metrics::counter!("voxtrunk_outbox_delivered_total").increment(1);
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
                metrics::counter!("voxtrunk_outbox_retries_total").increment(1);
                warn!(key, attempts, retry_in_ms = wait.as_millis() as u64, error = %e, "outbox: CRM write failed; will retry");
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
                warn!(key, error = %e, "outbox: CRM refused the write");
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
            error!(key, error = %e, "outbox: cannot record a delivery attempt");
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
                "SELECT key, payload, attempts, created_ms FROM outbox
                 WHERE state = 'pending' AND next_ms <= ?1 ORDER BY next_ms LIMIT 64",
            )?;
            let rows = stmt.query_map(params![now], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, u32>(2)?,
                    r.get::<_, u64>(3)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (key, payload, attempts, created_ms) = row?;
                match serde_json::from_str(&payload) {
                    Ok(booking) => out.push(Due {
                        key,
                        booking,
                        attempts,
                        created_ms,
                    }),
                    Err(e) => error!(key, error = %e, "outbox: unreadable row skipped"),
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
                metrics::counter!("voxtrunk_outbox_dead_total").increment(1);
                error!(
                    key = %d.key,
                    attempts = d.attempts,
                    phone = %d.booking.phone,
                    property = %d.booking.property_id,
                    date = %d.booking.date,
                    "outbox: gave up on a CRM write; it needs a person"
                );
                let marked = self.with_db(|db| {
                    db.execute(
                        "UPDATE outbox SET state = 'dead' WHERE key = ?1",
                        params![d.key],
                    )
                });
                if let Err(e) = marked {
                    error!(key = %d.key, error = %e, "outbox: cannot mark a row dead");
                }
                continue;
            }
            let _ = self.attempt(&d.key, &d.booking, d.attempts).await;
        }
        if let Ok(c) = self.counts() {
            metrics::gauge!("voxtrunk_outbox_pending").set(c.pending as f64);
        }
        tried
    }

    /// Delivers queued writes until the task is dropped: wakes when the
    /// next row is due (at least once a second, to notice the clock).
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
            let row = self.store(booking)?;
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
            match self.attempt(&key, booking, row.attempts).await {
                Some(Ok(c)) => Ok(BookingWrite::Confirmed(c)),
                Some(Err(e)) if !e.is_retryable() => Err(e),
                _ => {
                    self.wake.notify_one();
                    Ok(BookingWrite::Queued { reference: key })
                }
            }
        })
    }
}

#[cfg(test)]
mod tests;
