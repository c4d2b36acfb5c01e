//! The CRM as retrieval sources.
//!
//! - [`CrmSource`] (source `crm`): for `Query::caller`, the contact, their
//!   site-visit bookings (upcoming first) and their recent calls, as
//!   documents `contact:<phone>`, `booking:<id>`, `call:<id>`. No caller, no
//!   documents. If any of the three lookups fails the whole answer fails
//!   (an answer without bookings would read as "you have no booking"); the
//!   orchestrator then serves its cached answer or reports the failure.
//! - [`AvailabilitySource`] (source `booking`): with the slots `property_id`
//!   (text) and `date` (`YYYY-MM-DD`, as a date or text slot), one document
//!   per free visiting slot (`<property>/<date>/<HH:MM>`, in time order, not
//!   cut by `Query::limit`: a caller choosing a time should hear them all),
//!   or a single document saying none is free. Without both slots, or with a
//!   date that is not `YYYY-MM-DD`, no documents.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{BookingConfirmation, Crm};
use crate::agent::provider::{AgentError, BoxFuture, Document, Query, Retriever, SlotValue};
use crate::agent::retrieve::docs::DEFAULT_LIMIT;
use crate::agent::retrieve::{parse_date, today_utc};

fn fields<const N: usize>(pairs: [(&str, &str); N]) -> BTreeMap<String, String> {
    pairs
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The caller's history (see the module doc).
pub struct CrmSource {
    crm: Arc<dyn Crm>,
    recent_calls: usize,
    name: String,
}

impl CrmSource {
    /// The caller's history from `crm`, with their last 3 calls.
    pub fn new(crm: Arc<dyn Crm>) -> Self {
        CrmSource {
            crm,
            recent_calls: 3,
            name: "crm".to_owned(),
        }
    }

    /// Names the source (as the agent's definition calls it).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    async fn history(&self, query: &Query) -> Result<Vec<Document>, AgentError> {
        let Some(phone) = query
            .caller
            .as_deref()
            .map(str::trim)
            .filter(|p| !p.is_empty())
        else {
            return Ok(Vec::new());
        };
        let (contact, bookings, calls) = tokio::join!(
            self.crm.find_contact(phone),
            self.crm.bookings_for(phone),
            self.crm.recent_calls(phone, self.recent_calls),
        );
        let (contact, mut bookings, calls) = (contact?, bookings?, calls?);
        let mut docs = Vec::new();
        let doc =
            |id: String, title: String, text: String, fields, version: &str, score| Document {
                source: self.name.clone(),
                id,
                title,
                text,
                fields,
                version: version.to_owned(),
                score,
            };
        if let Some(c) = contact {
            let name = c.name.clone().unwrap_or_default();
            let mut text = if name.is_empty() {
                format!("The caller ({}) is a known contact.", c.phone)
            } else {
                format!("The caller is {name} ({}).", c.phone)
            };
            if !c.notes.trim().is_empty() {
                text.push_str(&format!(" Notes: {}", c.notes.trim()));
            }
            let f = fields([
                ("phone", &c.phone),
                ("name", &name),
                ("notes", &c.notes),
                ("updated_at", &c.updated_at),
            ]);
            docs.push(doc(
                format!("contact:{}", c.phone),
                "Caller".into(),
                text,
                f,
                &c.updated_at,
                1.0,
            ));
        }
        // Upcoming visits first (soonest first), then past ones (latest first).
        let today = today_utc();
        let upcoming = |b: &BookingConfirmation| parse_date(&b.date).is_none_or(|d| d >= today - 1);
        bookings.sort_by(|a, b| match (upcoming(a), upcoming(b)) {
            (true, true) => (&a.date, &a.slot).cmp(&(&b.date, &b.slot)),
            (false, false) => (&b.date, &b.slot).cmp(&(&a.date, &a.slot)),
            (true, false) => std::cmp::Ordering::Less,
            (false, true) => std::cmp::Ordering::Greater,
        });
        for b in &bookings {
            let when = if upcoming(b) { "upcoming" } else { "past" };
            let text = format!(
                "{} site visit ({}) to property {} on {} at {}, booking {}.",
                if upcoming(b) { "Upcoming" } else { "Past" },
                b.status,
                b.property_id,
                b.date,
                b.slot,
                b.booking_id
            );
            let f = fields([
                ("booking_id", &b.booking_id),
                ("property_id", &b.property_id),
                ("date", &b.date),
                ("slot", &b.slot),
                ("status", &b.status),
                ("when", when),
            ]);
            docs.push(doc(
                format!("booking:{}", b.booking_id),
                format!("Site visit booking {}", b.booking_id),
                text,
                f,
                &b.created_at,
                0.9,
            ));
        }
        for c in &calls {
            let text = if c.summary.trim().is_empty() {
                format!("Previous call on {}.", c.started_at)
            } else {
                format!("Previous call on {}: {}", c.started_at, c.summary.trim())
            };
            let f = fields([
                ("call_id", &c.call_id),
                ("started_at", &c.started_at),
                ("summary", &c.summary),
            ]);
            docs.push(doc(
                format!("call:{}", c.call_id),
                format!("Previous call on {}", c.started_at),
                text,
                f,
                &c.started_at,
                0.8,
            ));
        }
        docs.truncate(if query.limit == 0 {
            DEFAULT_LIMIT
        } else {
            query.limit
        });
        Ok(docs)
    }
}

impl Retriever for CrmSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn retrieve<'a>(
        &'a self,
        query: &'a Query,
    ) -> BoxFuture<'a, Result<Vec<Document>, AgentError>> {
        Box::pin(self.history(query))
    }
}

/// Free visiting slots (see the module doc).
pub struct AvailabilitySource {
    crm: Arc<dyn Crm>,
    name: String,
}

impl AvailabilitySource {
    /// Availability from `crm`.
    pub fn new(crm: Arc<dyn Crm>) -> Self {
        AvailabilitySource {
            crm,
            name: "booking".to_owned(),
        }
    }

    /// Names the source (as the agent's definition calls it).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    async fn slots(&self, query: &Query) -> Result<Vec<Document>, AgentError> {
        let text = |key: &str| match query.slots.get(key) {
            Some(SlotValue::Text(t) | SlotValue::Date(t)) => Some(t.trim().to_owned()),
            Some(other) => Some(other.as_text()),
            None => None,
        };
        let (Some(property), Some(date)) = (text("property_id"), text("date")) else {
            return Ok(Vec::new());
        };
        if property.is_empty() || parse_date(&date).is_none() {
            return Ok(Vec::new());
        }
        let slots = self.crm.availability(&property, &date).await?;
        let doc = |id: String, title: String, text: String, fields, score| Document {
            source: self.name.clone(),
            id,
            title,
            text,
            fields,
            version: String::new(),
            score,
        };
        if slots.is_empty() {
            return Ok(vec![doc(
                format!("{property}/{date}"),
                "No free visit slots".into(),
                format!("No site-visit slot is free for property {property} on {date}."),
                fields([
                    ("property_id", &property),
                    ("date", &date),
                    ("available", "0"),
                ]),
                1.0,
            )]);
        }
        Ok(slots
            .iter()
            .enumerate()
            .map(|(i, s)| {
                doc(
                    format!("{property}/{date}/{}", s.start),
                    format!("Free visit slot {}", s.start),
                    format!(
                        "A site visit to property {property} on {date} can be booked at {}–{}.",
                        s.start, s.end
                    ),
                    fields([
                        ("property_id", &property),
                        ("date", &date),
                        ("start", &s.start),
                        ("end", &s.end),
                    ]),
                    1.0 - i as f32 * 0.01,
                )
            })
            .collect())
    }
}

impl Retriever for AvailabilitySource {
    fn name(&self) -> &str {
        &self.name
    }

    fn retrieve<'a>(
        &'a self,
        query: &'a Query,
    ) -> BoxFuture<'a, Result<Vec<Document>, AgentError>> {
        Box::pin(self.slots(query))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::crm::{
        Booking, CallRecord, Contact, SqliteCrm, SqliteCrmConfig, VisitingHours,
    };

    async fn crm(dir: &tempfile::TempDir) -> Arc<SqliteCrm> {
        let crm = Arc::new(
            SqliteCrm::open(&SqliteCrmConfig {
                path: dir.path().join("crm.db"),
                visiting_hours: VisitingHours::new("10:00", "13:00", 60).unwrap(),
            })
            .unwrap(),
        );
        crm.upsert_contact(Contact {
            phone: "+919800000001".into(),
            name: Some("Asha Rao".into()),
            notes: "Prefers Whitefield, 3 BHK".into(),
            updated_at: String::new(),
        })
        .await
        .unwrap();
        crm.record_call(CallRecord {
            call_id: "c1".into(),
            phone: "+919800000001".into(),
            started_at: "2026-01-02T10:00:00Z".into(),
            summary: "Asked about Prestige Lakeside Habitat".into(),
        })
        .await
        .unwrap();
        crm.book_visit(Booking {
            idempotency_key: "k1".into(),
            phone: "+919800000001".into(),
            name: Some("Asha Rao".into()),
            property_id: "P001".into(),
            date: "2099-01-10".into(),
            slot: "11:00".into(),
            notes: String::new(),
        })
        .await
        .unwrap();
        crm
    }

    #[tokio::test]
    async fn caller_history_becomes_documents() {
        let dir = tempfile::tempdir().unwrap();
        let source = CrmSource::new(crm(&dir).await);
        let mut query = Query {
            text: "when is my visit".into(),
            limit: 5,
            ..Query::default()
        };
        assert!(source.retrieve(&query).await.unwrap().is_empty());
        query.caller = Some("+919800000001".into());
        let docs = source.retrieve(&query).await.unwrap();
        let ids: Vec<&str> = docs.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids[0], "contact:+919800000001");
        assert!(ids[1].starts_with("booking:BK-"));
        assert_eq!(ids[2], "call:c1");
        assert!(docs.iter().all(|d| d.source == "crm"));
        assert!(docs[0].text.contains("Asha Rao") && docs[0].text.contains("Prefers Whitefield"));
        assert!(
            docs[1].text.contains("P001 on 2099-01-10 at 11:00"),
            "{}",
            docs[1].text
        );
        assert_eq!(docs[1].fields["when"], "upcoming");
        assert!(docs[2].text.contains("Prestige Lakeside"));
        query.caller = Some("+919800000009".into());
        assert!(source.retrieve(&query).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn availability_becomes_documents() {
        let dir = tempfile::tempdir().unwrap();
        let crm = crm(&dir).await;
        let source = AvailabilitySource::new(crm.clone());
        let mut query = Query {
            text: "can I visit on the 10th".into(),
            limit: 1,
            ..Query::default()
        };
        assert!(source.retrieve(&query).await.unwrap().is_empty());
        query
            .slots
            .insert("property_id".into(), SlotValue::Text("P001".into()));
        query
            .slots
            .insert("date".into(), SlotValue::Date("2099-01-10".into()));
        let docs = source.retrieve(&query).await.unwrap();
        let starts: Vec<&str> = docs.iter().map(|d| d.fields["start"].as_str()).collect();
        assert_eq!(starts, ["10:00", "12:00"]);
        assert_eq!(docs[0].id, "P001/2099-01-10/10:00");
        assert_eq!(docs[0].source, "booking");

        for (key, slot) in [("k2", "10:00"), ("k3", "12:00")] {
            crm.book_visit(Booking {
                idempotency_key: key.into(),
                phone: "+919800000002".into(),
                name: None,
                property_id: "P001".into(),
                date: "2099-01-10".into(),
                slot: slot.into(),
                notes: String::new(),
            })
            .await
            .unwrap();
        }
        let docs = source.retrieve(&query).await.unwrap();
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].fields["available"], "0");

        query
            .slots
            .insert("date".into(), SlotValue::Text("next Saturday".into()));
        assert!(source.retrieve(&query).await.unwrap().is_empty());
    }
}
