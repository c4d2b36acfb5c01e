//! Scripted fakes of every provider, for tests of the pipeline.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use super::provider::{
    AgentError, AudioChunk, BoxFuture, Document, FinishReason, Query, REASON_STREAM_CAPACITY,
    ReasonEvent, ReasonRequest, ReasonStream, Reasoner, Retriever, SpeechToText, SttHints,
    SttStream, SyncState, TextToSpeech, Tool, ToolCall, ToolContext, ToolResult, ToolSpec,
    Transcript,
};

/// Speech-to-text that "recognises" scripted sentences, one per utterance,
/// revealing a word every `frames_per_word` frames as partials.
#[derive(Debug)]
pub struct FakeStt {
    script: Mutex<VecDeque<String>>,
    frames_per_word: usize,
    /// Utterances started.
    pub started: AtomicUsize,
}

impl FakeStt {
    /// Utterances will be recognised as `script`, in order (then empty);
    /// `"!fail"` makes that utterance's recognition fail.
    pub fn new(script: &[&str]) -> Self {
        FakeStt {
            script: Mutex::new(script.iter().map(|s| s.to_string()).collect()),
            frames_per_word: 10,
            started: AtomicUsize::new(0),
        }
    }
}

struct FakeSttStream {
    words: Vec<String>,
    frames: usize,
    frames_per_word: usize,
    shown: usize,
}

fn transcript(text: String, is_final: bool) -> Transcript {
    Transcript {
        text,
        confidence: 0.9,
        language: "en-US".into(),
        is_final,
    }
}

impl SttStream for FakeSttStream {
    fn push(&mut self, _frame: &[i16]) -> Result<Option<Transcript>, AgentError> {
        self.frames += 1;
        let show = (self.frames / self.frames_per_word).min(self.words.len());
        if show > self.shown {
            self.shown = show;
            return Ok(Some(transcript(self.words[..show].join(" "), false)));
        }
        Ok(None)
    }

    fn finish(self: Box<Self>) -> Result<Transcript, AgentError> {
        if self.words == ["!fail"] {
            return Err(AgentError::engine("fake-stt", "scripted failure"));
        }
        Ok(transcript(self.words.join(" "), true))
    }
}

impl SpeechToText for FakeStt {
    fn name(&self) -> &str {
        "fake-stt"
    }

    fn start(&self, _hints: &SttHints) -> Result<Box<dyn SttStream>, AgentError> {
        self.started.fetch_add(1, Ordering::Relaxed);
        let text = self
            .script
            .lock()
            .map_err(|_| AgentError::engine("fake-stt", "poisoned"))?
            .pop_front()
            .unwrap_or_default();
        Ok(Box::new(FakeSttStream {
            words: text.split_whitespace().map(str::to_owned).collect(),
            frames: 0,
            frames_per_word: self.frames_per_word,
            shown: 0,
        }))
    }
}

/// Text-to-speech making a tone: 60 ms per character at 16 kHz, handed
/// over in 100 ms chunks; can be told to fail.
#[derive(Debug, Default)]
pub struct FakeTts {
    /// Its name (`fake-tts` when `None`).
    pub label: Option<&'static str>,
    /// Fail every synthesis.
    pub fail: bool,
    /// Sentences synthesized.
    pub calls: AtomicUsize,
}

impl TextToSpeech for FakeTts {
    fn name(&self) -> &str {
        self.label.unwrap_or("fake-tts")
    }

    fn synthesize(
        &self,
        text: &str,
        sink: &mut dyn FnMut(AudioChunk) -> bool,
    ) -> Result<(), AgentError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if self.fail {
            return Err(AgentError::engine("fake-tts", "scripted failure"));
        }
        let total = text.trim().chars().count() * 960;
        let mut n = 0;
        while n < total {
            let len = 1600.min(total - n);
            let samples: Vec<i16> = (n..n + len)
                .map(|i| {
                    ((i as f32 * 2.0 * std::f32::consts::PI * 300.0 / 16_000.0).sin() * 8000.0)
                        as i16
                })
                .collect();
            if !sink(AudioChunk {
                rate: 16_000,
                samples,
            }) {
                return Ok(());
            }
            n += len;
        }
        Ok(())
    }
}

/// A scripted reasoner step.
#[derive(Debug, Clone)]
pub enum Step {
    /// Stream this text.
    Say(String),
    /// Ask for a tool call (name, JSON arguments), then stop.
    Call(String, serde_json::Value),
    /// Never answer (to test deadlines).
    Hang,
    /// Fail.
    Fail,
}

/// A reasoner that plays a script, one step per request, and records the
/// requests it got.
#[derive(Debug)]
pub struct FakeReasoner {
    script: Mutex<VecDeque<Step>>,
    /// Requests received.
    pub requests: Mutex<Vec<ReasonRequest>>,
}

impl FakeReasoner {
    /// Replies in order (then "ok").
    pub fn new(script: Vec<Step>) -> Self {
        FakeReasoner {
            script: Mutex::new(script.into()),
            requests: Mutex::new(Vec::new()),
        }
    }
}

impl Reasoner for FakeReasoner {
    fn name(&self) -> &str {
        "fake-reasoner"
    }

    fn reason(&self, request: ReasonRequest) -> ReasonStream {
        let step = self
            .script
            .lock()
            .ok()
            .and_then(|mut s| s.pop_front())
            .unwrap_or_else(|| Step::Say("ok".into()));
        if let Ok(mut r) = self.requests.lock() {
            r.push(request);
        }
        let (tx, rx) = mpsc::channel(REASON_STREAM_CAPACITY);
        tokio::spawn(async move {
            match step {
                Step::Say(text) => {
                    for (i, w) in text.split(' ').enumerate() {
                        let t = if i == 0 {
                            w.to_owned()
                        } else {
                            format!(" {w}")
                        };
                        if tx.send(Ok(ReasonEvent::Token(t))).await.is_err() {
                            return;
                        }
                    }
                    let _ = tx.send(Ok(ReasonEvent::Done(FinishReason::Stop))).await;
                }
                Step::Call(name, arguments) => {
                    let call = ToolCall {
                        id: format!("call-{name}"),
                        name,
                        arguments,
                    };
                    let _ = tx.send(Ok(ReasonEvent::ToolCall(call))).await;
                    let _ = tx
                        .send(Ok(ReasonEvent::Done(FinishReason::ToolCalls)))
                        .await;
                }
                Step::Hang => {
                    tx.closed().await;
                }
                Step::Fail => {
                    let _ = tx
                        .send(Err(AgentError::unavailable(
                            "fake-reasoner",
                            "scripted failure",
                        )))
                        .await;
                }
            }
        });
        rx
    }
}

/// A knowledge source with fixed documents, an optional delay and failure.
#[derive(Debug)]
pub struct FakeRetriever {
    /// Source name.
    pub name: String,
    /// What it returns.
    pub documents: Vec<Document>,
    /// How long it takes.
    pub delay: Duration,
    /// Fail instead.
    pub fail: bool,
    /// Queries served.
    pub queries: AtomicUsize,
}

impl Retriever for FakeRetriever {
    fn name(&self) -> &str {
        &self.name
    }

    fn retrieve<'a>(
        &'a self,
        _query: &'a Query,
    ) -> BoxFuture<'a, Result<Vec<Document>, AgentError>> {
        Box::pin(async move {
            self.queries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(self.delay).await;
            if self.fail {
                return Err(AgentError::unavailable(&self.name, "scripted failure"));
            }
            Ok(self.documents.clone())
        })
    }
}

/// A tool that records its calls and answers with a fixed result.
#[derive(Debug)]
pub struct FakeTool {
    /// Its name.
    pub name: String,
    /// What it answers.
    pub content: serde_json::Value,
    /// The sync state it reports.
    pub sync: Option<SyncState>,
    /// Calls received, with the slots known at the time.
    pub calls: Mutex<Vec<(ToolCall, ToolContext)>>,
}

impl FakeTool {
    /// A tool answering `content` with `sync`.
    pub fn new(name: &str, content: serde_json::Value, sync: Option<SyncState>) -> Self {
        FakeTool {
            name: name.to_owned(),
            content,
            sync,
            calls: Mutex::new(Vec::new()),
        }
    }
}

impl Tool for FakeTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: self.name.clone(),
            description: "scripted tool".into(),
            parameters: serde_json::json!({ "type": "object" }),
        }
    }

    fn call<'a>(
        &'a self,
        call: &'a ToolCall,
        context: &'a ToolContext,
    ) -> BoxFuture<'a, Result<ToolResult, AgentError>> {
        Box::pin(async move {
            if let Ok(mut calls) = self.calls.lock() {
                calls.push((call.clone(), context.clone()));
            }
            Ok(ToolResult {
                call_id: call.id.clone(),
                content: self.content.clone(),
                sync: self.sync,
            })
        })
    }
}
