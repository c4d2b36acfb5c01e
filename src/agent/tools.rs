//! Tools: actions the agent takes on the caller's behalf.
//!
//! [`BookSiteVisit`] (`book_site_visit`) books a site visit for the caller.
//! Writes go through a [`BookingWriter`]: [`CrmWriter`] straight to the CRM
//! (`sync: Success` or `Failed`), or the durable outbox
//! (`super::outbox`), which accepts the write when the CRM is down and
//! reports `Queued`.
//!
//! Idempotency: the booking's key is a hash of (session id, property id,
//! date, requested slot — empty when none was asked for), so a turn that is
//! retried (a timeout, a repeated tool call, a replayed reasoner step)
//! returns the first booking instead of booking again. It is the requested
//! slot, not the one chosen, that goes into the key: a retried "any time
//! that day" finds the booking it made.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::agent::crm::{Booking, BookingConfirmation, Crm, CrmError};
use crate::agent::provider::{
    AgentError, BoxFuture, SlotValue, SyncState, Tool, ToolCall, ToolContext, ToolResult, ToolSpec,
};
use crate::agent::retrieve::{parse_date, stable_hash};

/// How a booking write ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BookingWrite {
    /// The system of record confirmed it.
    Confirmed(BookingConfirmation),
    /// Accepted durably, to be written later (a queue's reference).
    Queued {
        /// What the caller can quote.
        reference: String,
    },
}

/// Where bookings are written: the CRM, or the durable outbox in front of
/// it.
pub trait BookingWriter: Send + Sync {
    /// Writes one booking (idempotent by its key).
    fn write<'a>(&'a self, booking: &'a Booking) -> BoxFuture<'a, Result<BookingWrite, CrmError>>;
}

/// Writes bookings straight to a CRM.
pub struct CrmWriter(pub Arc<dyn Crm>);

impl BookingWriter for CrmWriter {
    fn write<'a>(&'a self, booking: &'a Booking) -> BoxFuture<'a, Result<BookingWrite, CrmError>> {
        Box::pin(async move {
            self.0
                .book_visit(booking.clone())
                .await
                .map(BookingWrite::Confirmed)
        })
    }
}

/// The idempotency key of a booking made in `session_id` (see the module
/// doc): `sv-` and 32 hex digits, stable across builds.
pub fn idempotency_key(
    session_id: &str,
    property_id: &str,
    date: &str,
    slot: Option<&str>,
) -> String {
    let parts: [&[u8]; 4] = [
        session_id.as_bytes(),
        property_id.as_bytes(),
        date.as_bytes(),
        slot.unwrap_or("").as_bytes(),
    ];
    let a = stable_hash(&parts);
    let b = stable_hash(&[
        b"voxtrunk-site-visit",
        &a.to_le_bytes(),
        parts[0],
        parts[1],
        parts[2],
        parts[3],
    ]);
    format!("sv-{a:016x}{b:016x}")
}

/// Books a site visit for the caller.
pub struct BookSiteVisit {
    crm: Arc<dyn Crm>,
    writer: Arc<dyn BookingWriter>,
    default_slot: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    property_id: String,
    date: String,
    #[serde(default)]
    slot: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

/// `10:00`, `9:30`, `10`, `10 am`, `2pm`, `2:30 PM` → `HH:MM`.
fn normalise_slot(slot: &str) -> Option<String> {
    let s = slot.trim().to_ascii_lowercase().replace([' ', '.'], "");
    let (s, offset) = if let Some(t) = s.strip_suffix("am") {
        (t.to_owned(), Some(0))
    } else if let Some(t) = s.strip_suffix("pm") {
        (t.to_owned(), Some(12))
    } else {
        (s, None)
    };
    let (h, m) = s.split_once(':').unwrap_or((&s, "00"));
    if h.is_empty()
        || h.len() > 2
        || m.len() != 2
        || !(h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let (mut h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    if let Some(offset) = offset {
        if !(1..=12).contains(&h) {
            return None;
        }
        h = h % 12 + offset;
    }
    (h < 24 && m < 60).then(|| format!("{h:02}:{m:02}"))
}

fn failed(call: &ToolCall, content: Value) -> ToolResult {
    ToolResult {
        call_id: call.id.clone(),
        content,
        sync: Some(SyncState::Failed),
    }
}

impl BookSiteVisit {
    /// The tool's name.
    pub const NAME: &'static str = "book_site_visit";

    /// Books through `crm` directly.
    pub fn new(crm: Arc<dyn Crm>) -> Self {
        let writer = Arc::new(CrmWriter(crm.clone()));
        BookSiteVisit {
            crm,
            writer,
            default_slot: None,
        }
    }

    /// Reads availability from `crm` and writes through `writer`.
    pub fn with_writer(crm: Arc<dyn Crm>, writer: Arc<dyn BookingWriter>) -> Self {
        BookSiteVisit {
            crm,
            writer,
            default_slot: None,
        }
    }

    /// The slot to ask for (`HH:MM`, e.g. the opening hour) when the
    /// caller named none and the CRM cannot say which are free: the write
    /// is then queued and the CRM confirms or refuses it later.
    pub fn with_default_slot(mut self, slot: String) -> Self {
        self.default_slot = Some(slot);
        self
    }

    async fn run(&self, call: &ToolCall, ctx: &ToolContext) -> ToolResult {
        // Some reasoners send the arguments as a JSON string.
        let arguments = match &call.arguments {
            Value::String(s) => serde_json::from_str(s).unwrap_or(Value::Null),
            other => other.clone(),
        };
        let args: Args = match serde_json::from_value(arguments) {
            Ok(args) => args,
            Err(e) => {
                return failed(
                    call,
                    json!({"status": "invalid", "error": format!("bad arguments: {e}")}),
                );
            }
        };
        let property_id = args.property_id.trim().to_owned();
        let date = args.date.trim().to_owned();
        if property_id.is_empty() {
            return failed(
                call,
                json!({"status": "invalid", "error": "property_id is empty"}),
            );
        }
        if parse_date(&date).is_none() {
            return failed(
                call,
                json!({"status": "invalid", "error": format!("date {date:?} is not YYYY-MM-DD")}),
            );
        }
        let requested = match args
            .slot
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            None => None,
            Some(s) => match normalise_slot(s) {
                Some(slot) => Some(slot),
                None => {
                    return failed(
                        call,
                        json!({"status": "invalid", "error": format!("slot {s:?} is not a time like 10:00")}),
                    );
                }
            },
        };
        let Some(phone) = ctx
            .caller
            .as_deref()
            .map(str::trim)
            .filter(|p| !p.is_empty())
        else {
            return failed(
                call,
                json!({"status": "failed", "reason": "the caller's number is unknown", "retryable": false}),
            );
        };
        let name = args
            .name
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .or_else(|| match ctx.slots.get("name") {
                Some(SlotValue::Text(n)) if !n.trim().is_empty() => Some(n.trim().to_owned()),
                _ => None,
            });
        let key = idempotency_key(&ctx.session_id, &property_id, &date, requested.as_deref());

        let slot = match requested {
            Some(slot) => slot,
            None => match self.crm.availability(&property_id, &date).await {
                Ok(slots) if !slots.is_empty() => slots[0].start.clone(),
                Ok(_) => {
                    // Full: maybe by our own earlier booking (a retry).
                    if let Ok(bookings) = self.crm.bookings_for(phone).await
                        && let Some(b) = bookings.into_iter().find(|b| {
                            b.property_id == property_id
                                && b.date == date
                                && b.status == "confirmed"
                        })
                    {
                        return booked(call, &b);
                    }
                    return failed(
                        call,
                        json!({"status": "no_slots", "reason": format!("no visiting slot is free on {date}"), "retryable": false}),
                    );
                }
                Err(e) => match &self.default_slot {
                    Some(slot) if e.is_retryable() => slot.clone(),
                    _ => return crm_failed(call, &e, Vec::new()),
                },
            },
        };
        let booking = Booking {
            idempotency_key: key,
            phone: phone.to_owned(),
            name,
            property_id: property_id.clone(),
            date: date.clone(),
            slot: slot.clone(),
            notes: format!("Booked by the voice agent in call {}", ctx.session_id),
        };
        match self.writer.write(&booking).await {
            Ok(BookingWrite::Confirmed(c)) => booked(call, &c),
            Ok(BookingWrite::Queued { reference }) => ToolResult {
                call_id: call.id.clone(),
                content: json!({
                    "status": "queued",
                    "reference": reference,
                    "property_id": property_id,
                    "date": date,
                    "slot": slot,
                }),
                sync: Some(SyncState::Queued),
            },
            Err(e) => {
                let alternatives = if matches!(e, CrmError::Rejected(_)) {
                    match self.crm.availability(&property_id, &date).await {
                        Ok(slots) => slots.into_iter().map(|s| s.start).collect(),
                        Err(_) => Vec::new(),
                    }
                } else {
                    Vec::new()
                };
                tracing::warn!(session = %ctx.session_id, error = %e, "site visit booking failed");
                crm_failed(call, &e, alternatives)
            }
        }
    }
}

fn booked(call: &ToolCall, c: &BookingConfirmation) -> ToolResult {
    ToolResult {
        call_id: call.id.clone(),
        content: json!({
            "status": "booked",
            "booking_id": c.booking_id,
            "property_id": c.property_id,
            "date": c.date,
            "slot": c.slot,
            "name": c.name,
        }),
        sync: Some(SyncState::Success),
    }
}

fn crm_failed(call: &ToolCall, e: &CrmError, available: Vec<String>) -> ToolResult {
    let (status, reason) = match e {
        CrmError::Rejected(m) => ("rejected", m.clone()),
        CrmError::Invalid(m) => ("invalid", m.clone()),
        CrmError::Unavailable(m) => ("failed", m.clone()),
    };
    let mut content = json!({"status": status, "reason": reason, "retryable": e.is_retryable()});
    if !available.is_empty() {
        content["available_slots"] = json!(available);
    }
    failed(call, content)
}

impl Tool for BookSiteVisit {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: Self::NAME.to_owned(),
            description: "Book a site visit to a property for the caller. Only call it once the caller \
                          has agreed to the property and the date; tell them the booking id and time \
                          from the result, and never say it is booked unless status is \"booked\"."
                .to_owned(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "property_id": {
                        "type": "string",
                        "description": "The inventory id of the property or project (the `id` field)."
                    },
                    "date": {
                        "type": "string",
                        "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
                        "description": "Visit date, YYYY-MM-DD."
                    },
                    "slot": {
                        "type": "string",
                        "pattern": "^[0-9]{1,2}:[0-9]{2}$",
                        "description": "Slot start time, HH:MM (24 h), e.g. 10:00. Omit to book the earliest free slot that day."
                    },
                    "name": {
                        "type": "string",
                        "description": "The visitor's name, if the caller gave it."
                    }
                },
                "required": ["property_id", "date"],
                "additionalProperties": false
            }),
        }
    }

    fn call<'a>(
        &'a self,
        call: &'a ToolCall,
        context: &'a ToolContext,
    ) -> BoxFuture<'a, Result<ToolResult, AgentError>> {
        Box::pin(async move { Ok(self.run(call, context).await) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::crm::{SqliteCrm, SqliteCrmConfig, VisitingHours};
    use std::sync::Mutex;

    struct Kit {
        _dir: tempfile::TempDir,
        crm: Arc<SqliteCrm>,
        tool: BookSiteVisit,
    }

    fn kit() -> Kit {
        let dir = tempfile::tempdir().unwrap();
        let crm = Arc::new(
            SqliteCrm::open(&SqliteCrmConfig {
                path: dir.path().join("crm.db"),
                visiting_hours: VisitingHours::new("10:00", "13:00", 60).unwrap(),
            })
            .unwrap(),
        );
        let tool = BookSiteVisit::new(crm.clone());
        Kit {
            _dir: dir,
            crm,
            tool,
        }
    }

    fn call(arguments: Value) -> ToolCall {
        ToolCall {
            id: "call-1".into(),
            name: BookSiteVisit::NAME.into(),
            arguments,
        }
    }

    fn context(session: &str, caller: &str) -> ToolContext {
        ToolContext {
            session_id: session.into(),
            caller: Some(caller.into()),
            ..ToolContext::default()
        }
    }

    #[test]
    fn spec_describes_the_arguments() {
        let spec = kit().tool.spec();
        assert_eq!(spec.name, "book_site_visit");
        assert_eq!(spec.parameters["required"], json!(["property_id", "date"]));
        for p in ["property_id", "date", "slot", "name"] {
            assert!(spec.parameters["properties"][p].is_object(), "{p}");
        }
    }

    #[test]
    fn keys_are_stable_and_distinct() {
        let k = idempotency_key("s1", "P001", "2099-01-10", Some("10:00"));
        assert_eq!(
            k,
            idempotency_key("s1", "P001", "2099-01-10", Some("10:00"))
        );
        assert_eq!(k.len(), 35);
        assert_ne!(
            k,
            idempotency_key("s2", "P001", "2099-01-10", Some("10:00"))
        );
        assert_ne!(
            k,
            idempotency_key("s1", "P001", "2099-01-10", Some("11:00"))
        );
        assert_ne!(k, idempotency_key("s1", "P001", "2099-01-10", None));
        assert_eq!(normalise_slot("9:30").as_deref(), Some("09:30"));
        assert_eq!(normalise_slot("2 pm").as_deref(), Some("14:00"));
        assert_eq!(normalise_slot("12 am").as_deref(), Some("00:00"));
        assert_eq!(normalise_slot("10").as_deref(), Some("10:00"));
        assert_eq!(normalise_slot("noon"), None);
        assert_eq!(normalise_slot("25:00"), None);
    }

    #[tokio::test]
    async fn a_retried_turn_never_double_books() {
        let kit = kit();
        let ctx = context("call-abc", "+919800000001");
        let args = json!({"property_id": "P001", "date": "2099-01-10", "slot": "11:00", "name": "Asha Rao"});
        let first = kit.tool.call(&call(args.clone()), &ctx).await.unwrap();
        assert_eq!(first.sync, Some(SyncState::Success));
        assert_eq!(first.call_id, "call-1");
        assert_eq!(first.content["status"], "booked");
        assert_eq!(first.content["slot"], "11:00");
        assert_eq!(first.content["date"], "2099-01-10");
        let id = first.content["booking_id"].as_str().unwrap().to_owned();
        assert!(id.starts_with("BK-"));

        // The same turn again (also with arguments as a JSON string and the
        // slot spelt differently): the same booking.
        let again = kit.tool.call(&call(args.clone()), &ctx).await.unwrap();
        assert_eq!(again, first);
        let as_string = json!(
            json!({"property_id": "P001", "date": "2099-01-10", "slot": "11 am"}).to_string()
        );
        let again = kit.tool.call(&call(as_string), &ctx).await.unwrap();
        assert_eq!(again.content["booking_id"], id.as_str());
        assert_eq!(
            kit.crm.bookings_for("+919800000001").await.unwrap().len(),
            1
        );

        // Another call wanting the same slot: refused, with what is left.
        let other = kit
            .tool
            .call(&call(args), &context("call-def", "+919800000002"))
            .await
            .unwrap();
        assert_eq!(other.sync, Some(SyncState::Failed));
        assert_eq!(other.content["status"], "rejected");
        assert_eq!(other.content["retryable"], false);
        assert_eq!(other.content["available_slots"], json!(["10:00", "12:00"]));
    }

    #[tokio::test]
    async fn without_a_slot_the_earliest_is_booked_once() {
        let kit = kit();
        let ctx = context("call-abc", "+919800000001");
        let args = json!({"property_id": "P003", "date": "2099-01-11"});
        let first = kit.tool.call(&call(args.clone()), &ctx).await.unwrap();
        assert_eq!(first.content["slot"], "10:00");
        let again = kit.tool.call(&call(args.clone()), &ctx).await.unwrap();
        assert_eq!(again, first);
        assert_eq!(
            kit.crm.bookings_for("+919800000001").await.unwrap().len(),
            1
        );

        // The day fills up; a retry still finds our booking.
        for (i, slot) in ["11:00", "12:00"].iter().enumerate() {
            let other = context(&format!("other-{i}"), "+919800000002");
            let r = kit
                .tool
                .call(
                    &call(json!({"property_id": "P003", "date": "2099-01-11", "slot": slot})),
                    &other,
                )
                .await
                .unwrap();
            assert_eq!(r.sync, Some(SyncState::Success));
        }
        let again = kit.tool.call(&call(args.clone()), &ctx).await.unwrap();
        assert_eq!(again, first);
        let full = kit
            .tool
            .call(&call(args), &context("late", "+919800000003"))
            .await
            .unwrap();
        assert_eq!(full.sync, Some(SyncState::Failed));
        assert_eq!(full.content["status"], "no_slots");
    }

    #[tokio::test]
    async fn bad_requests_fail_without_booking() {
        let kit = kit();
        let ctx = context("s", "+919800000001");
        for args in [
            json!({"date": "2099-01-10"}),
            json!({"property_id": "P001", "date": "10 January"}),
            json!({"property_id": "P001", "date": "2099-01-10", "slot": "noonish"}),
            json!({"property_id": "P001", "date": "2099-01-10", "colour": "blue"}),
            json!("not json"),
        ] {
            let r = kit.tool.call(&call(args.clone()), &ctx).await.unwrap();
            assert_eq!(r.sync, Some(SyncState::Failed), "{args}");
            assert_eq!(r.content["status"], "invalid", "{args}");
        }
        // A slot outside visiting hours: the CRM says invalid.
        let r = kit
            .tool
            .call(
                &call(json!({"property_id": "P001", "date": "2099-01-10", "slot": "19:00"})),
                &ctx,
            )
            .await
            .unwrap();
        assert_eq!(
            (r.sync, r.content["status"].as_str()),
            (Some(SyncState::Failed), Some("invalid"))
        );
        // No caller number.
        let anonymous = ToolContext {
            session_id: "s".into(),
            ..ToolContext::default()
        };
        let r = kit
            .tool
            .call(
                &call(json!({"property_id": "P001", "date": "2099-01-10", "slot": "10:00"})),
                &anonymous,
            )
            .await
            .unwrap();
        assert_eq!(r.sync, Some(SyncState::Failed));
        assert!(
            kit.crm
                .bookings_for("+919800000001")
                .await
                .unwrap()
                .is_empty()
        );
    }

    /// A writer standing in for the CRM or a queue.
    struct Scripted {
        answer: Result<BookingWrite, CrmError>,
        seen: Mutex<Vec<Booking>>,
    }

    impl BookingWriter for Scripted {
        fn write<'a>(
            &'a self,
            booking: &'a Booking,
        ) -> BoxFuture<'a, Result<BookingWrite, CrmError>> {
            self.seen.lock().unwrap().push(booking.clone());
            let answer = self.answer.clone();
            Box::pin(async move { answer })
        }
    }

    #[tokio::test]
    async fn the_writer_decides_the_sync_state() {
        let kit = kit();
        let ctx = context("call-abc", "+919800000001");
        let args = json!({"property_id": "P001", "date": "2099-01-10", "slot": "10:00"});

        let down = Arc::new(Scripted {
            answer: Err(CrmError::Unavailable("timed out".into())),
            seen: Mutex::new(Vec::new()),
        });
        let tool = BookSiteVisit::with_writer(kit.crm.clone(), down.clone());
        let r = tool.call(&call(args.clone()), &ctx).await.unwrap();
        assert_eq!(r.sync, Some(SyncState::Failed));
        assert_eq!(
            (
                r.content["status"].as_str(),
                r.content["retryable"].as_bool()
            ),
            (Some("failed"), Some(true))
        );
        let key = down.seen.lock().unwrap()[0].idempotency_key.clone();
        assert_eq!(
            key,
            idempotency_key("call-abc", "P001", "2099-01-10", Some("10:00"))
        );

        let queue = Arc::new(Scripted {
            answer: Ok(BookingWrite::Queued {
                reference: "Q-1".into(),
            }),
            seen: Mutex::new(Vec::new()),
        });
        let tool = BookSiteVisit::with_writer(kit.crm.clone(), queue.clone());
        let r = tool.call(&call(args), &ctx).await.unwrap();
        assert_eq!(r.sync, Some(SyncState::Queued));
        assert_eq!(r.content["status"], "queued");
        // The queue gets the same key: its later write stays idempotent.
        assert_eq!(queue.seen.lock().unwrap()[0].idempotency_key, key);
    }
}
