//! The provider traits of the agent pipeline, and the types that flow
//! between the stages.
//!
//! Speech-to-text and text-to-speech engines are CPU-bound and synchronous:
//! they run on worker threads, never on a call's media task. Retrieval,
//! reasoning and tools are I/O-bound and asynchronous; reasoning streams its
//! output over a bounded channel (dropping the receiver cancels it).
//! Every trait has a scripted fake in [`super::fake`] for tests.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// A boxed future, for object-safe async trait methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What can go wrong in a provider. The pipeline maps each to a fallback
/// (issue-level policy lives in the turn logic, not in the providers).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The provider missed its deadline.
    #[error("{0} timed out")]
    Timeout(String),
    /// The provider (or the service behind it) cannot be reached or refused.
    #[error("{provider} unavailable: {reason}")]
    Unavailable {
        /// Which provider.
        provider: String,
        /// Why.
        reason: String,
    },
    /// The engine failed on this input.
    #[error("{provider} failed: {reason}")]
    Engine {
        /// Which provider.
        provider: String,
        /// Why.
        reason: String,
    },
    /// The provider's configuration or model files are wrong.
    #[error("{provider} misconfigured: {reason}")]
    Config {
        /// Which provider.
        provider: String,
        /// Why.
        reason: String,
    },
    /// The work was cancelled (barge-in, hang-up).
    #[error("cancelled")]
    Cancelled,
}

impl AgentError {
    /// An engine failure.
    pub fn engine(provider: &str, reason: impl Into<String>) -> Self {
        AgentError::Engine {
            provider: provider.to_owned(),
            reason: reason.into(),
        }
    }

    /// An unavailable provider.
    pub fn unavailable(provider: &str, reason: impl Into<String>) -> Self {
        AgentError::Unavailable {
            provider: provider.to_owned(),
            reason: reason.into(),
        }
    }

    /// A configuration problem.
    pub fn config(provider: &str, reason: impl Into<String>) -> Self {
        AgentError::Config {
            provider: provider.to_owned(),
            reason: reason.into(),
        }
    }
}

// --- speech to text ------------------------------------------------------

/// A transcript, partial or final.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    /// The words recognised so far (partial) or in the whole utterance.
    pub text: String,
    /// 0–1; engines without a calibrated score give their best estimate.
    pub confidence: f32,
    /// BCP 47 language tag, e.g. `en-US`.
    pub language: String,
    /// True for the final transcript of an utterance.
    pub is_final: bool,
}

/// What the recogniser should expect in this utterance.
#[derive(Debug, Clone, Default)]
pub struct SttHints {
    /// The agent's language.
    pub language: String,
}

/// Recognition of one utterance, fed frame by frame.
pub trait SttStream: Send {
    /// Feeds one 20 ms frame of 16 kHz mono PCM. Returns a partial
    /// transcript when the hypothesis changed.
    fn push(&mut self, frame: &[i16]) -> Result<Option<Transcript>, AgentError>;
    /// Ends the utterance and returns the final transcript.
    fn finish(self: Box<Self>) -> Result<Transcript, AgentError>;
}

/// A speech-to-text engine (shared by all calls of an agent).
pub trait SpeechToText: Send + Sync {
    /// Provider name for logs and telemetry.
    fn name(&self) -> &str;
    /// Starts recognising one utterance.
    fn start(&self, hints: &SttHints) -> Result<Box<dyn SttStream>, AgentError>;
}

// --- text to speech ------------------------------------------------------

/// A piece of synthesized audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioChunk {
    /// Sample rate of `samples`.
    pub rate: u32,
    /// Mono PCM.
    pub samples: Vec<i16>,
}

/// A text-to-speech engine.
pub trait TextToSpeech: Send + Sync {
    /// Provider name.
    fn name(&self) -> &str;
    /// Synthesizes `text` (a sentence or so), handing PCM to `sink` as it is
    /// made; stops early when `sink` returns false (cancelled).
    fn synthesize(
        &self,
        text: &str,
        sink: &mut dyn FnMut(AudioChunk) -> bool,
    ) -> Result<(), AgentError>;
}

// --- retrieval -----------------------------------------------------------

/// A value extracted from the caller's words.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum SlotValue {
    /// A plain number (e.g. bedrooms).
    Number(f64),
    /// An amount of money in the agent's currency (minor units ignored).
    Money(f64),
    /// A calendar date, `YYYY-MM-DD`.
    Date(String),
    /// Free text (a place, a property type, a name).
    Text(String),
}

impl SlotValue {
    /// The value as text, for templates and queries.
    pub fn as_text(&self) -> String {
        match self {
            SlotValue::Number(n) | SlotValue::Money(n) => {
                if n.fract() == 0.0 {
                    format!("{n:.0}")
                } else {
                    format!("{n}")
                }
            }
            SlotValue::Date(d) | SlotValue::Text(d) => d.clone(),
        }
    }
}

/// What the agent wants to know.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Query {
    /// The caller's words (or a rewrite of them).
    pub text: String,
    /// The intent detected so far.
    pub intent: Option<String>,
    /// Slots known so far (from this turn and session memory).
    pub slots: BTreeMap<String, SlotValue>,
    /// The caller's number, for CRM lookups.
    pub caller: Option<String>,
    /// How many documents per source at most.
    pub limit: usize,
}

/// One piece of knowledge.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Document {
    /// The knowledge source it came from (`inventory`, `policies`, `crm`...).
    pub source: String,
    /// Its id within the source (file#section, CSV row key, CRM record id).
    pub id: String,
    /// A title or heading.
    pub title: String,
    /// The text.
    pub text: String,
    /// Structured fields (CSV columns, JSON keys, CRM columns).
    pub fields: BTreeMap<String, String>,
    /// Version or modification time of the source (for drift checks).
    pub version: String,
    /// Relevance score within its source.
    pub score: f32,
}

/// What one source did for one query.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceReport {
    /// Source name.
    pub source: String,
    /// Documents returned.
    pub hits: usize,
    /// Time spent, ms.
    pub elapsed_ms: f64,
    /// It missed its deadline.
    pub timed_out: bool,
    /// Served from the cache.
    pub cached: bool,
    /// Served from the cache because the source failed or missed its
    /// deadline (stale-while-error).
    pub stale: bool,
    /// It failed (message).
    pub error: Option<String>,
    /// Version of the data served, when the source reports one.
    pub version: Option<String>,
    /// When the data served was last updated (RFC 3339), when known.
    pub updated_at: Option<String>,
    /// Age of the data served, seconds, when known.
    pub age_s: Option<u64>,
    /// The data is older than the source's `max_age_s`.
    pub too_old: bool,
}

/// How current a source's data is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freshness {
    /// An opaque version (content hash, or what the source calls it).
    pub version: String,
    /// When the data last changed, when known.
    pub updated_at: Option<std::time::SystemTime>,
}

/// The result of a retrieval across sources.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Retrieval {
    /// Documents from every source that answered, best first per source.
    pub documents: Vec<Document>,
    /// Some source missed its deadline or failed: the answer may be
    /// incomplete and must say so.
    pub partial: bool,
    /// Per-source reports.
    pub sources: Vec<SourceReport>,
}

/// A knowledge source.
pub trait Retriever: Send + Sync {
    /// Source name.
    fn name(&self) -> &str;
    /// Finds documents for a query.
    fn retrieve<'a>(&'a self, query: &'a Query)
    -> BoxFuture<'a, Result<Vec<Document>, AgentError>>;
    /// The version and update time of the data the last answer came from;
    /// `None` when the source does not know.
    fn freshness(&self) -> Option<Freshness> {
        None
    }
}

// --- reasoning -----------------------------------------------------------

/// Who said something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions.
    System,
    /// The caller.
    User,
    /// The agent.
    Assistant,
    /// A tool result.
    Tool,
}

/// One message of the context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Who.
    pub role: Role,
    /// What.
    pub content: String,
}

/// A tool the reasoner may call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolSpec {
    /// Name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// JSON Schema of its arguments.
    pub parameters: serde_json::Value,
}

/// A tool call requested by the reasoner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Call id (echoed in the result).
    pub id: String,
    /// Tool name.
    pub name: String,
    /// Arguments (JSON object).
    pub arguments: serde_json::Value,
}

/// Everything the reasoner gets for one turn. Built from compressed state,
/// so its size does not grow with the length of the call.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReasonRequest {
    /// The messages: instructions, memory summary, recent turns, retrieved
    /// knowledge, the caller's last words.
    pub messages: Vec<Message>,
    /// Tools on offer.
    pub tools: Vec<ToolSpec>,
    /// The intent the turn logic detected, if any.
    pub intent: Option<String>,
    /// Slots known (session memory).
    pub slots: BTreeMap<String, SlotValue>,
    /// Retrieved knowledge.
    pub retrieval: Retrieval,
    /// Give up if the first token is later than this.
    pub first_token_deadline: Duration,
}

/// Why the reasoner stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The reply is complete.
    Stop,
    /// It wants tool results before going on.
    ToolCalls,
    /// Cut by a length limit.
    Length,
}

/// Streamed reasoner output.
#[derive(Debug, Clone, PartialEq)]
pub enum ReasonEvent {
    /// More reply text.
    Token(String),
    /// A tool call.
    ToolCall(ToolCall),
    /// The end of this reasoning step.
    Done(FinishReason),
}

/// Capacity of a reasoning stream; a slow consumer back-pressures the
/// reasoner (its task waits), nothing is dropped.
pub const REASON_STREAM_CAPACITY: usize = 64;

/// A stream of reasoner output; dropping it cancels the reasoning.
pub type ReasonStream = mpsc::Receiver<Result<ReasonEvent, AgentError>>;

/// A reasoner (rules, a local model, an API).
pub trait Reasoner: Send + Sync {
    /// Provider name.
    fn name(&self) -> &str;
    /// Starts reasoning on a request; the output streams back.
    fn reason(&self, request: ReasonRequest) -> ReasonStream;
}

// --- tools ---------------------------------------------------------------

/// How a side effect reached its system of record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncState {
    /// Written and acknowledged.
    Success,
    /// Accepted durably, to be written later.
    Queued,
    /// Lost or refused (the caller must not be told it worked).
    Failed,
}

/// The result of a tool call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolResult {
    /// The call it answers.
    pub call_id: String,
    /// Result for the reasoner (JSON).
    pub content: serde_json::Value,
    /// For writes: how they reached the CRM.
    pub sync: Option<SyncState>,
}

/// An action the agent can take.
pub trait Tool: Send + Sync {
    /// Its spec for the reasoner.
    fn spec(&self) -> ToolSpec;
    /// Runs it.
    fn call<'a>(
        &'a self,
        call: &'a ToolCall,
        context: &'a ToolContext,
    ) -> BoxFuture<'a, Result<ToolResult, AgentError>>;
}

/// Who a tool call is for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ToolContext {
    /// The call (session) id.
    pub session_id: String,
    /// The caller's number.
    pub caller: Option<String>,
    /// Slots known so far.
    pub slots: BTreeMap<String, SlotValue>,
}
