//! The agent's memory of one call, in three layers:
//!
//! * **working memory** — the last few turns, as the caller said them and
//!   as the caller actually heard the agent (a barged-in reply is recorded
//!   up to where it was cut);
//! * **session memory** — structured facts extracted during the call
//!   (budget, bedrooms, property type, location, name, the property on
//!   offer, the date asked for), latest value wins;
//! * **long-term memory** — what the knowledge sources know, the caller's
//!   history by phone number among them, fetched per turn by retrieval and
//!   summarised here in a bounded profile line.
//!
//! The context handed to a reasoner is rebuilt from these each turn, every
//! part capped, so its size has a fixed upper bound however long the call
//! runs ([`Memory::context_bound`]).

use std::collections::{BTreeMap, VecDeque};

use super::provider::{Message, Retrieval, Role, SlotValue};

/// Longest caller or agent utterance kept, in characters.
pub const MAX_UTTERANCE_CHARS: usize = 400;
/// Longest fact value kept.
pub const MAX_FACT_CHARS: usize = 80;
/// Most facts kept (the oldest set is evicted first).
pub const MAX_FACTS: usize = 24;
/// Longest long-term profile line.
pub const MAX_PROFILE_CHARS: usize = 300;
/// Documents per source in the context.
pub const DOCS_PER_SOURCE: usize = 3;
/// Sources in the context.
pub const MAX_SOURCES: usize = 4;
/// Longest document excerpt in the context.
pub const MAX_DOC_CHARS: usize = 300;

/// Cuts `s` to at most `n` characters on a word boundary, marking the cut.
pub fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_owned();
    }
    let cut: String = s.chars().take(n.saturating_sub(1)).collect();
    let cut = match cut.rfind(' ') {
        Some(i) if i > n / 2 => cut[..i].to_owned(),
        _ => cut,
    };
    format!("{cut}…")
}

/// One remembered turn.
#[derive(Debug, Clone, PartialEq)]
pub struct RememberedTurn {
    /// What the caller said (final transcript).
    pub caller: String,
    /// What the caller heard of the agent's reply.
    pub agent: String,
    /// The intent of the turn.
    pub intent: Option<String>,
}

/// Memory of one call.
#[derive(Debug, Clone)]
pub struct Memory {
    capacity: usize,
    recent: VecDeque<RememberedTurn>,
    facts: BTreeMap<String, (u64, SlotValue)>,
    profile: Option<String>,
    turns: u64,
}

impl Memory {
    /// Memory keeping `recent_turns` turns in working memory.
    pub fn new(recent_turns: usize) -> Self {
        Memory {
            capacity: recent_turns.max(1),
            recent: VecDeque::new(),
            facts: BTreeMap::new(),
            profile: None,
            turns: 0,
        }
    }

    /// Turns completed.
    pub fn turns(&self) -> u64 {
        self.turns
    }

    /// Session facts (latest value of each).
    pub fn facts(&self) -> BTreeMap<String, SlotValue> {
        self.facts
            .iter()
            .map(|(k, (_, v))| (k.clone(), v.clone()))
            .collect()
    }

    /// Merges slots from a turn (or from retrieval, e.g. the property on
    /// offer) into session memory.
    pub fn remember(&mut self, slots: &BTreeMap<String, SlotValue>) {
        for (k, v) in slots {
            let v = match v {
                SlotValue::Text(t) => SlotValue::Text(truncate(t, MAX_FACT_CHARS)),
                SlotValue::Date(d) => SlotValue::Date(truncate(d, MAX_FACT_CHARS)),
                other => other.clone(),
            };
            self.facts.insert(truncate(k, 32), (self.turns, v));
        }
        while self.facts.len() > MAX_FACTS {
            let oldest = self
                .facts
                .iter()
                .min_by_key(|(_, (t, _))| *t)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => self.facts.remove(&k),
                None => break,
            };
        }
    }

    /// Sets the long-term profile line (from the caller's history).
    pub fn set_profile(&mut self, profile: &str) {
        self.profile = Some(truncate(profile, MAX_PROFILE_CHARS));
    }

    /// Records a finished turn: what was said and what was heard.
    pub fn record_turn(&mut self, caller: &str, agent_heard: &str, intent: Option<&str>) {
        if self.recent.len() == self.capacity {
            self.recent.pop_front();
        }
        self.recent.push_back(RememberedTurn {
            caller: truncate(caller, MAX_UTTERANCE_CHARS),
            agent: truncate(agent_heard, MAX_UTTERANCE_CHARS),
            intent: intent.map(str::to_owned),
        });
        self.turns += 1;
    }

    /// Working memory, oldest first.
    #[cfg(test)]
    pub fn recent(&self) -> impl Iterator<Item = &RememberedTurn> {
        self.recent.iter()
    }

    /// The messages for a reasoner: instructions, facts, profile, recent
    /// turns, retrieved knowledge, the caller's new words. Every part is
    /// capped.
    pub fn context(&self, system: &str, retrieval: &Retrieval, user: &str) -> Vec<Message> {
        let mut out = vec![Message {
            role: Role::System,
            content: system.to_owned(),
        }];
        let mut notes = String::new();
        if !self.facts.is_empty() {
            notes.push_str("Known about the caller: ");
            let facts: Vec<String> = self
                .facts
                .iter()
                .map(|(k, (_, v))| format!("{k}={}", v.as_text()))
                .collect();
            notes.push_str(&facts.join("; "));
            notes.push('\n');
        }
        if let Some(p) = &self.profile {
            notes.push_str("History: ");
            notes.push_str(p);
            notes.push('\n');
        }
        let mut sources: Vec<&str> = Vec::new();
        for d in &retrieval.documents {
            if !sources.contains(&d.source.as_str()) {
                if sources.len() == MAX_SOURCES {
                    continue;
                }
                sources.push(&d.source);
            }
        }
        for src in sources {
            let docs: Vec<String> = retrieval
                .documents
                .iter()
                .filter(|d| d.source == src)
                .take(DOCS_PER_SOURCE)
                .map(|d| {
                    format!(
                        "[{src}:{}] {}",
                        truncate(&d.id, 40),
                        truncate(&d.text, MAX_DOC_CHARS)
                    )
                })
                .collect();
            notes.push_str(&docs.join("\n"));
            notes.push('\n');
        }
        if retrieval.partial {
            notes.push_str("Some knowledge sources did not answer in time: say the information may be incomplete.\n");
        }
        if !notes.is_empty() {
            out.push(Message {
                role: Role::System,
                content: notes,
            });
        }
        for t in &self.recent {
            out.push(Message {
                role: Role::User,
                content: t.caller.clone(),
            });
            out.push(Message {
                role: Role::Assistant,
                content: t.agent.clone(),
            });
        }
        out.push(Message {
            role: Role::User,
            content: truncate(user, MAX_UTTERANCE_CHARS),
        });
        out
    }

    /// The largest context (in characters) [`Memory::context`] can build
    /// for a system prompt of `system_chars` characters.
    #[cfg(test)]
    pub fn context_bound(&self, system_chars: usize) -> usize {
        let facts = MAX_FACTS * (32 + 1 + MAX_FACT_CHARS + 2) + 64;
        let profile = MAX_PROFILE_CHARS + 16;
        let docs = MAX_SOURCES * DOCS_PER_SOURCE * (MAX_DOC_CHARS + 64);
        let turns = self.capacity * 2 * (MAX_UTTERANCE_CHARS + 1);
        system_chars + facts + profile + docs + 128 + turns + MAX_UTTERANCE_CHARS + 1
    }
}

/// Total characters of a context.
pub fn context_chars(messages: &[Message]) -> usize {
    messages.iter().map(|m| m.content.chars().count()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::provider::Document;

    fn retrieval(n: usize) -> Retrieval {
        Retrieval {
            documents: (0..n)
                .map(|i| Document {
                    source: format!("s{}", i % 6),
                    id: format!("doc-{i}"),
                    title: "t".into(),
                    text: "x".repeat(1000),
                    fields: Default::default(),
                    version: "v".into(),
                    score: 1.0,
                })
                .collect(),
            partial: true,
            sources: Vec::new(),
        }
    }

    #[test]
    fn context_stays_bounded_after_1000_turns() {
        let mut m = Memory::new(6);
        let system = "You are a booking agent.";
        let mut largest = 0;
        for t in 0..1000 {
            let mut slots = BTreeMap::new();
            slots.insert(format!("fact{}", t % 40), SlotValue::Text("y".repeat(500)));
            m.remember(&slots);
            m.set_profile(&"h".repeat(5000));
            m.record_turn(&"c".repeat(3000), &"a".repeat(3000), Some("search"));
            let ctx = m.context(system, &retrieval(50), &"u".repeat(2000));
            largest = largest.max(context_chars(&ctx));
        }
        assert_eq!(m.turns(), 1000);
        assert_eq!(m.recent().count(), 6);
        assert!(m.facts().len() <= MAX_FACTS);
        let bound = m.context_bound(system.len());
        assert!(largest <= bound, "{largest} > {bound}");
        assert!(bound < 16_000, "the bound itself is small: {bound}");
    }

    #[test]
    fn heard_text_and_latest_facts_win() {
        let mut m = Memory::new(2);
        let mut s = BTreeMap::new();
        s.insert("location".to_owned(), SlotValue::Text("Whitefield".into()));
        m.remember(&s);
        s.insert("location".to_owned(), SlotValue::Text("Sarjapur".into()));
        m.remember(&s);
        assert_eq!(m.facts()["location"], SlotValue::Text("Sarjapur".into()));
        m.record_turn(
            "three bedroom please",
            "We have three options. Prestige",
            Some("search"),
        );
        let ctx = m.context("sys", &Retrieval::default(), "book it");
        assert_eq!(ctx.last().unwrap().content, "book it");
        assert!(
            ctx.iter()
                .any(|c| c.content == "We have three options. Prestige")
        );
        assert!(ctx[1].content.contains("location=Sarjapur"));
    }

    #[test]
    fn truncation_on_word_boundaries() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("one two three four five", 12), "one two…");
    }
}
