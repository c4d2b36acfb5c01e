//! The CRM: who called, what was said, which site visits are booked, and
//! which visiting slots are free.
//!
//! [`Crm`] is the interface; [`SqliteCrm`] is the default, embedded in one
//! SQLite file; [`HttpCrm`] talks to an external CRM over REST. The
//! [`source`] module turns a CRM into retrieval sources: the caller's
//! history (`crm`) and visit availability (`booking`).
//!
//! Bookings are idempotent: [`Crm::book_visit`] with an
//! [`idempotency_key`](Booking::idempotency_key) already used returns the
//! confirmation of the first booking and books nothing (whatever the rest
//! of the request says), so a retried turn or a retried HTTP request never
//! books twice.

pub mod http;
pub mod source;
pub mod sqlite;

// Unused until the pipeline is wired to them.
#[allow(unused_imports)]
pub use http::{HttpCrm, HttpCrmConfig};
#[allow(unused_imports)]
pub use source::{AvailabilitySource, CrmSource};
#[allow(unused_imports)]
pub use sqlite::{SqliteCrm, SqliteCrmConfig, VisitingHours};

use serde::{Deserialize, Serialize};

use crate::agent::provider::{AgentError, BoxFuture};

/// A known caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// Phone number as received (E.164 preferred: `+919876543210`).
    pub phone: String,
    /// Name, when known.
    #[serde(default)]
    pub name: Option<String>,
    /// Free notes (preferences, remarks).
    #[serde(default)]
    pub notes: String,
    /// Last change, RFC 3339 (set by the CRM on upsert).
    #[serde(default)]
    pub updated_at: String,
}

/// One past call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// The call (session) id; recording it again replaces it.
    pub call_id: String,
    /// The caller.
    pub phone: String,
    /// Start of the call, RFC 3339.
    pub started_at: String,
    /// What the call was about.
    #[serde(default)]
    pub summary: String,
}

/// A site-visit booking request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Booking {
    /// Repeating a key returns the first booking's confirmation.
    pub idempotency_key: String,
    /// The visitor's number.
    pub phone: String,
    /// The visitor's name, when known.
    #[serde(default)]
    pub name: Option<String>,
    /// The inventory id of the property or project.
    pub property_id: String,
    /// `YYYY-MM-DD`.
    pub date: String,
    /// Slot start, `HH:MM` (e.g. `10:00`).
    pub slot: String,
    /// Notes for the relationship manager.
    #[serde(default)]
    pub notes: String,
}

/// A booked visit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookingConfirmation {
    /// The CRM's booking reference.
    pub booking_id: String,
    /// The visitor's number.
    pub phone: String,
    /// The visitor's name.
    #[serde(default)]
    pub name: Option<String>,
    /// The property.
    pub property_id: String,
    /// `YYYY-MM-DD`.
    pub date: String,
    /// Slot start, `HH:MM`.
    pub slot: String,
    /// `confirmed` (or whatever an external CRM says).
    #[serde(default = "confirmed")]
    pub status: String,
    /// When it was booked, RFC 3339.
    #[serde(default)]
    pub created_at: String,
}

fn confirmed() -> String {
    "confirmed".to_owned()
}

/// A visiting slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// Start, `HH:MM`.
    pub start: String,
    /// End, `HH:MM`.
    pub end: String,
}

/// What can go wrong with a CRM call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CrmError {
    /// The CRM cannot be reached, timed out, is overloaded or failed
    /// internally: retrying later may work.
    #[error("CRM unavailable: {0}")]
    Unavailable(String),
    /// The CRM refused the request (the slot is taken, not authorised):
    /// retrying the same request will not work.
    #[error("CRM rejected the request: {0}")]
    Rejected(String),
    /// The request is malformed (bad date, unknown slot).
    #[error("invalid CRM request: {0}")]
    Invalid(String),
}

impl CrmError {
    /// Worth retrying later (a durable queue may hold the write).
    pub fn is_retryable(&self) -> bool {
        matches!(self, CrmError::Unavailable(_))
    }
}

impl From<CrmError> for AgentError {
    fn from(e: CrmError) -> Self {
        match e {
            CrmError::Unavailable(reason) => AgentError::unavailable("crm", reason),
            other => AgentError::engine("crm", other.to_string()),
        }
    }
}

/// A CRM (shared by all calls).
pub trait Crm: Send + Sync {
    /// Name for logs.
    fn name(&self) -> &str;

    /// The contact with this number, if known.
    fn find_contact<'a>(
        &'a self,
        phone: &'a str,
    ) -> BoxFuture<'a, Result<Option<Contact>, CrmError>>;

    /// Creates or replaces the contact with `contact.phone`; returns it as
    /// stored (with `updated_at` set).
    fn upsert_contact(&self, contact: Contact) -> BoxFuture<'_, Result<Contact, CrmError>>;

    /// The last `limit` calls from this number, newest first.
    fn recent_calls<'a>(
        &'a self,
        phone: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<CallRecord>, CrmError>>;

    /// Records a call (again: replaces it).
    fn record_call(&self, record: CallRecord) -> BoxFuture<'_, Result<(), CrmError>>;

    /// [`record_call`](Crm::record_call) on behalf of a queued write with
    /// this idempotency key (the outbox's `call:<session id>`). A CRM that
    /// can deduplicate by key (the REST connector sends it as a header)
    /// should; the default ignores it, since recording a call again
    /// replaces it anyway.
    fn record_call_keyed<'a>(
        &'a self,
        key: &'a str,
        record: CallRecord,
    ) -> BoxFuture<'a, Result<(), CrmError>> {
        let _ = key;
        self.record_call(record)
    }

    /// [`upsert_contact`](Crm::upsert_contact) on behalf of a queued write
    /// with this idempotency key (the outbox's `contact:<session id>`);
    /// the default ignores the key (an upsert of the same contact is
    /// idempotent).
    fn upsert_contact_keyed<'a>(
        &'a self,
        key: &'a str,
        contact: Contact,
    ) -> BoxFuture<'a, Result<Contact, CrmError>> {
        let _ = key;
        self.upsert_contact(contact)
    }

    /// Books a visit, idempotently by `booking.idempotency_key`. A taken
    /// slot is [`CrmError::Rejected`]; a malformed date or a slot outside
    /// visiting hours [`CrmError::Invalid`].
    fn book_visit(&self, booking: Booking) -> BoxFuture<'_, Result<BookingConfirmation, CrmError>>;

    /// Visits booked by this number, soonest first.
    fn bookings_for<'a>(
        &'a self,
        phone: &'a str,
    ) -> BoxFuture<'a, Result<Vec<BookingConfirmation>, CrmError>>;

    /// Free visiting slots for a property on a date, in time order.
    fn availability<'a>(
        &'a self,
        property_id: &'a str,
        date: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Slot>, CrmError>>;
}

/// Checks a `YYYY-MM-DD` date.
pub(crate) fn check_date(date: &str) -> Result<(), CrmError> {
    match crate::agent::retrieve::parse_date(date) {
        Some(_) => Ok(()),
        None => Err(CrmError::Invalid(format!(
            "date {date:?} is not a YYYY-MM-DD date"
        ))),
    }
}
