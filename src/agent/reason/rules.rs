//! The deterministic reasoner: the agent definition's intents, slots and
//! reply templates, filled from retrieval results, tool results and memory.
//!
//! For a turn it picks the intent the pipeline detected; if that intent has
//! a tool whose required slots are all known and no tool result is in the
//! context yet, it asks for the tool call; otherwise it answers with the
//! first reply whose `when` conditions hold and whose placeholders all have
//! values. Output streams word by word like a model's tokens, so the rest
//! of the pipeline cannot tell it from one.

use std::collections::BTreeMap;

use serde_json::Value;
use tokio::sync::mpsc;

use super::super::definition::{AgentDefinition, IntentSection};
use super::super::nlu::{date_words, money_words};
use super::super::provider::{
    Document, FinishReason, REASON_STREAM_CAPACITY, ReasonEvent, ReasonRequest, ReasonStream,
    Reasoner, Role, SlotValue, ToolCall,
};
use super::super::template::Template;

#[derive(Debug, Clone)]
struct Reply {
    when: Vec<String>,
    text: Template,
}

#[derive(Debug, Clone)]
struct Intent {
    tool: Option<String>,
    requires: Vec<String>,
    replies: Vec<Reply>,
}

/// The rules reasoner of one agent.
#[derive(Debug, Clone)]
pub struct RulesReasoner {
    intents: BTreeMap<String, Intent>,
    fallback: String,
}

impl RulesReasoner {
    /// Compiles the intents of a checked definition.
    pub fn new(def: &AgentDefinition) -> Self {
        let intents = def
            .intent
            .iter()
            .map(|i: &IntentSection| {
                let replies = i
                    .reply
                    .iter()
                    .filter_map(|r| {
                        Some(Reply {
                            when: r.when.iter().map(|w| w.get_ref().clone()).collect(),
                            // Checked by `AgentDefinition::load`.
                            text: Template::parse(r.text.get_ref()).ok()?,
                        })
                    })
                    .collect();
                (
                    i.name.clone(),
                    Intent {
                        tool: i.tool.as_ref().map(|t| t.get_ref().clone()),
                        requires: i.requires.clone(),
                        replies,
                    },
                )
            })
            .collect();
        RulesReasoner {
            intents,
            fallback: def.agent.fallback_line.clone(),
        }
    }

    /// The reply (or tool call) for a request, computed at once.
    pub fn decide(&self, req: &ReasonRequest) -> Decision {
        let Some(intent) = req.intent.as_ref().and_then(|i| self.intents.get(i)) else {
            return Decision::Say(self.fallback.clone());
        };
        let tool_result = req
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::Tool)
            .and_then(|m| serde_json::from_str::<Value>(&m.content).ok());
        if let (Some(tool), None) = (&intent.tool, &tool_result) {
            if intent.requires.iter().all(|r| req.slots.contains_key(r)) {
                let mut keys: Vec<&str> = intent.requires.iter().map(String::as_str).collect();
                for k in ["property_id", "date", "time", "name"] {
                    if !keys.contains(&k) {
                        keys.push(k);
                    }
                }
                // The visit time travels as the tool's `slot` argument.
                let args: serde_json::Map<String, Value> = keys
                    .into_iter()
                    .filter_map(|k| {
                        let key = if k == "time" { "slot" } else { k };
                        req.slots
                            .get(k)
                            .map(|v| (key.to_owned(), Value::String(v.as_text())))
                    })
                    .collect();
                return Decision::Call(ToolCall {
                    id: "call-1".into(),
                    name: tool.clone(),
                    arguments: Value::Object(args),
                });
            }
        }
        for reply in &intent.replies {
            if !reply
                .when
                .iter()
                .all(|w| condition(w, req, tool_result.as_ref()))
            {
                continue;
            }
            if let Some(text) = reply.text.render(|f| lookup(f, req, tool_result.as_ref())) {
                return Decision::Say(text);
            }
        }
        Decision::Say(self.fallback.clone())
    }
}

/// What the rules reasoner decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Speak this.
    Say(String),
    /// Call a tool first.
    Call(ToolCall),
}

fn docs<'a>(req: &'a ReasonRequest, source: &str) -> impl Iterator<Item = &'a Document> {
    let source = source.to_owned();
    req.retrieval
        .documents
        .iter()
        .filter(move |d| d.source == source)
}

fn sync_of(tool: Option<&Value>) -> Option<&str> {
    tool?.get("sync")?.as_str()
}

fn condition(w: &str, req: &ReasonRequest, tool: Option<&Value>) -> bool {
    let (kind, arg) = w.split_once(':').unwrap_or((w, ""));
    match kind {
        "hits" => docs(req, arg).next().is_some(),
        "no_hits" => docs(req, arg).next().is_none(),
        "slot" => req.slots.contains_key(arg),
        "missing" => !req.slots.contains_key(arg),
        "partial" => req.retrieval.partial,
        "tool" => match arg {
            "ok" => sync_of(tool) == Some("success"),
            "queued" => sync_of(tool) == Some("queued"),
            "failed" => sync_of(tool) == Some("failed"),
            _ => false,
        },
        _ => false,
    }
}

fn slot_text(name: &str, v: &SlotValue) -> String {
    match v {
        SlotValue::Money(m) => money_words(*m),
        SlotValue::Date(d) => date_words(d).unwrap_or_else(|| d.clone()),
        SlotValue::Text(t) if name == "time" => time_words(t),
        other => other.as_text(),
    }
}

/// "16:00" → "4 PM", "10:30" → "10:30 AM".
fn time_words(t: &str) -> String {
    let Some((h, m)) = t
        .split_once(':')
        .and_then(|(h, m)| Some((h.parse::<u32>().ok()?, m.parse::<u32>().ok()?)))
    else {
        return t.to_owned();
    };
    let (h12, half) = match h {
        0 => (12, "AM"),
        1..=11 => (h, "AM"),
        12 => (12, "PM"),
        _ => (h - 12, "PM"),
    };
    if m == 0 {
        format!("{h12} {half}")
    } else {
        format!("{h12}:{m:02} {half}")
    }
}

fn lookup(field: &str, req: &ReasonRequest, tool: Option<&Value>) -> Option<String> {
    let (head, rest) = field.split_once('.')?;
    match head {
        "slot" => req.slots.get(rest).map(|v| slot_text(rest, v)),
        "booking" => {
            let v = tool?.get("content").unwrap_or(tool?).get(rest)?;
            let s = v
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string());
            Some(match rest {
                "date" => date_words(&s).unwrap_or(s),
                "slot" => time_words(&s),
                _ => s,
            })
        }
        source => {
            let mut hits = docs(req, source);
            match rest {
                "count" => Some(docs(req, source).count().to_string()),
                "text" => hits.next().map(|d| d.text.clone()),
                "title" => hits.next().map(|d| d.title.clone()),
                field => hits.next().and_then(|d| {
                    d.fields
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(field))
                        .map(|(_, v)| v.clone())
                        .filter(|v| !v.trim().is_empty())
                }),
            }
        }
    }
}

impl Reasoner for RulesReasoner {
    fn name(&self) -> &str {
        "rules"
    }

    fn reason(&self, request: ReasonRequest) -> ReasonStream {
        let (tx, rx) = mpsc::channel(REASON_STREAM_CAPACITY);
        let decision = self.decide(&request);
        tokio::spawn(async move {
            match decision {
                Decision::Call(call) => {
                    let _ = tx.send(Ok(ReasonEvent::ToolCall(call))).await;
                    let _ = tx
                        .send(Ok(ReasonEvent::Done(FinishReason::ToolCalls)))
                        .await;
                }
                Decision::Say(text) => {
                    for (i, word) in text.split(' ').enumerate() {
                        let token = if i == 0 {
                            word.to_owned()
                        } else {
                            format!(" {word}")
                        };
                        if tx.send(Ok(ReasonEvent::Token(token))).await.is_err() {
                            return; // cancelled
                        }
                    }
                    let _ = tx.send(Ok(ReasonEvent::Done(FinishReason::Stop))).await;
                }
            }
        });
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::provider::{Message, Retrieval};

    fn def() -> AgentDefinition {
        toml::from_str(
            r#"
[agent]
name = "t"
greeting = "hi"
fallback_line = "Sorry?"
[[knowledge]]
name = "inventory"
kind = "documents"
paths = ["x.csv"]
[[intent]]
name = "search"
examples = ["three bedroom in whitefield"]
retrieve = ["inventory"]
[[intent.reply]]
when = ["hits:inventory"]
text = "{inventory.name} in {inventory.locality} is {inventory.price_words}."
[[intent.reply]]
when = ["missing:location"]
text = "Which area would you like?"
[[intent.reply]]
text = "Nothing in {slot.location} right now."
[[intent]]
name = "book"
examples = ["book a visit tomorrow"]
tool = "book_site_visit"
requires = ["property_id", "date"]
[[intent.reply]]
when = ["tool:ok"]
text = "Booked for {booking.date} at {booking.slot}."
[[intent.reply]]
when = ["missing:date"]
text = "Which day suits you?"
"#,
        )
        .unwrap()
    }

    fn doc(name: &str) -> Document {
        Document {
            source: "inventory".into(),
            id: "1".into(),
            title: name.into(),
            text: name.into(),
            fields: [
                ("name", name),
                ("locality", "Whitefield"),
                ("price_words", "1.18 crore"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            version: "v1".into(),
            score: 1.0,
        }
    }

    fn req(intent: &str, slots: &[(&str, SlotValue)], docs: Vec<Document>) -> ReasonRequest {
        ReasonRequest {
            intent: Some(intent.into()),
            slots: slots
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            retrieval: Retrieval {
                documents: docs,
                ..Retrieval::default()
            },
            ..ReasonRequest::default()
        }
    }

    #[test]
    fn first_reply_whose_conditions_and_fields_hold() {
        let r = RulesReasoner::new(&def());
        assert_eq!(
            r.decide(&req("search", &[], vec![doc("Prestige Lakeside")])),
            Decision::Say("Prestige Lakeside in Whitefield is 1.18 crore.".into())
        );
        assert_eq!(
            r.decide(&req("search", &[], vec![])),
            Decision::Say("Which area would you like?".into())
        );
        assert_eq!(
            r.decide(&req(
                "search",
                &[("location", SlotValue::Text("Hebbal".into()))],
                vec![]
            )),
            Decision::Say("Nothing in Hebbal right now.".into())
        );
        assert_eq!(
            r.decide(&req("unknown", &[], vec![])),
            Decision::Say("Sorry?".into())
        );
    }

    #[test]
    fn tool_called_when_required_slots_are_known_then_confirmed() {
        let r = RulesReasoner::new(&def());
        let slots = [
            ("property_id", SlotValue::Text("P1".into())),
            ("date", SlotValue::Date("2026-11-25".into())),
            ("time", SlotValue::Text("11:00".into())),
        ];
        let mut q = req("book", &slots, vec![]);
        match r.decide(&q) {
            Decision::Call(c) => {
                assert_eq!(c.name, "book_site_visit");
                assert_eq!(c.arguments["property_id"], "P1");
                assert_eq!(c.arguments["date"], "2026-11-25");
                assert_eq!(c.arguments["slot"], "11:00");
            }
            other => panic!("{other:?}"),
        }
        q.messages.push(Message {
            role: Role::Tool,
            content: r#"{"sync":"success","content":{"booking_id":"B1","date":"2026-11-25","slot":"11:00"}}"#.into(),
        });
        assert_eq!(
            r.decide(&q),
            Decision::Say("Booked for Wednesday, November 25 at 11 AM.".into())
        );
        assert_eq!(
            r.decide(&req("book", &[], vec![])),
            Decision::Say("Which day suits you?".into())
        );
    }

    #[tokio::test]
    async fn streams_words_then_done() {
        let r = RulesReasoner::new(&def());
        let mut s = r.reason(req("search", &[], vec![doc("Prestige Lakeside")]));
        let mut text = String::new();
        let mut done = None;
        while let Some(e) = s.recv().await {
            match e.unwrap() {
                ReasonEvent::Token(t) => text.push_str(&t),
                ReasonEvent::Done(f) => done = Some(f),
                ReasonEvent::ToolCall(_) => unreachable!(),
            }
        }
        assert_eq!(text, "Prestige Lakeside in Whitefield is 1.18 crore.");
        assert_eq!(done, Some(FinishReason::Stop));
    }
}
