//! Per-turn telemetry records and per-call traces.
//!
//! A [`TurnRecord`] is written for every turn as one JSON line to the
//! agent's `telemetry.turns` file and logged (target `voxtrunk::turn`).
//! Lines are handed to a writer thread over a bounded channel (1024
//! records); when it is full the record is dropped, counted and logged,
//! never blocking a call.
//!
//! A [`CallTrace`] collects what happened in one call — both sides of the
//! transcript, every retrieval (query, sources, hits, timings, partial
//! flags), tool calls and results, decisions and context snapshots — and is
//! written as one JSON file per call into `telemetry.traces` when the call
//! ends. It keeps at most [`MAX_TRACE_EVENTS`] events.
//!
//! Timing fields of a turn:
//! * `latency_ms` — from the first frame of the caller's silence that ended
//!   the turn to the first RTP packet of the reply (media time, exact);
//! * `endpoint_ms` — the silence the endpointer waits for (part of the
//!   latency, by design);
//! * `stt_ms` — end of turn → final transcript;
//! * `retrieval_ms` — transcript → retrieval results available (near zero
//!   when the prefetch on partial transcripts already had them);
//! * `llm_ms` — reasoning request → first complete sentence (tool round
//!   trips included);
//! * `tts_ms` — first sentence → its first audio handed to the call;
//! * `server_overhead_ms` — `latency_ms` minus all of the above: channel
//!   hops, scheduling, waiting for the send.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tracing::{info, warn};

use super::provider::{SourceReport, SyncState};

/// The most events one call trace keeps.
pub const MAX_TRACE_EVENTS: usize = 4096;

/// One turn, as written to the JSON lines file.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TurnRecord {
    /// The call (dialog) id.
    pub session_id: String,
    /// Turn number in the call (the greeting is turn 0).
    pub turn: u64,
    /// When the turn ended (RFC 3339).
    pub at: String,
    /// Caller stopped → first agent RTP packet, ms; `None` when no audio
    /// went out (the caller barged in first, or the call ended).
    pub latency_ms: Option<f64>,
    /// Endpointing silence, ms.
    pub endpoint_ms: f64,
    /// Speech-to-text, ms.
    pub stt_ms: f64,
    /// Retrieval wait, ms.
    pub retrieval_ms: f64,
    /// Reasoning to first sentence, ms.
    pub llm_ms: f64,
    /// Synthesis to first audio, ms.
    pub tts_ms: f64,
    /// Latency not explained by the stages, ms.
    pub server_overhead_ms: Option<f64>,
    /// Language of the caller's words.
    pub language: String,
    /// Detected intent.
    pub intent: Option<String>,
    /// Where a CRM write of this turn stands: success, queued, failed or
    /// none (no write).
    pub crm_sync: String,
    /// The final transcript.
    pub transcript: String,
    /// Its confidence.
    pub stt_confidence: f32,
    /// The reply as generated.
    pub reply: String,
    /// The reply as heard (cut at a barge-in).
    pub heard: String,
    /// The caller interrupted the reply.
    pub barge_in: bool,
    /// Retrieval was incomplete.
    pub partial: bool,
    /// Some source's answer came from its cache after the source failed or
    /// missed its deadline (stale-while-error).
    pub stale: bool,
    /// Providers used.
    pub stt: String,
    /// Reasoner used.
    pub reasoner: String,
    /// TTS used.
    pub tts: String,
}

impl TurnRecord {
    /// `crm_sync` text for a sync state.
    pub fn sync_text(s: Option<SyncState>) -> String {
        match s {
            Some(SyncState::Success) => "success",
            Some(SyncState::Queued) => "queued",
            Some(SyncState::Failed) => "failed",
            None => "none",
        }
        .to_owned()
    }

    /// Fills `server_overhead_ms` from the latency and the stage times.
    pub fn settle(&mut self) {
        self.server_overhead_ms = self.latency_ms.map(|l| {
            let stages =
                self.endpoint_ms + self.stt_ms + self.retrieval_ms + self.llm_ms + self.tts_ms;
            ((l - stages) * 10.0).round() / 10.0
        });
    }
}

/// Where turn records go.
#[derive(Debug, Clone)]
pub struct Telemetry {
    lines: Option<SyncSender<String>>,
    kept: Option<Arc<Mutex<Vec<TurnRecord>>>>,
}

impl Telemetry {
    /// Records to `path` (created, appended), or only to the log.
    pub fn new(path: Option<&Path>) -> std::io::Result<Telemetry> {
        let Some(path) = path else {
            return Ok(Telemetry {
                lines: None,
                kept: None,
            });
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let (tx, rx) = sync_channel::<String>(1024);
        let path = path.to_owned();
        std::thread::Builder::new()
            .name("turn-telemetry".into())
            .spawn(move || {
                for line in rx {
                    if let Err(e) = writeln!(file, "{line}").and_then(|_| file.flush()) {
                        warn!(path = %path.display(), error = %e, "cannot write turn record");
                    }
                }
            })?;
        Ok(Telemetry {
            lines: Some(tx),
            kept: None,
        })
    }

    /// Records kept in memory only (tests and benchmarks read them back).
    #[cfg(test)]
    pub fn in_memory() -> (Telemetry, Arc<Mutex<Vec<TurnRecord>>>) {
        let kept = Arc::new(Mutex::new(Vec::new()));
        let t = Telemetry {
            lines: None,
            kept: Some(Arc::clone(&kept)),
        };
        (t, kept)
    }

    /// Writes one record.
    pub fn record(&self, r: &TurnRecord) {
        if let Some(kept) = &self.kept {
            if let Ok(mut k) = kept.lock() {
                k.push(r.clone());
            }
        }
        let Ok(line) = serde_json::to_string(r) else {
            return;
        };
        info!(target: "voxtrunk::turn", record = %line, "turn");
        if let Some(tx) = &self.lines {
            match tx.try_send(line) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    metrics::counter!("voxtrunk_turn_records_dropped_total").increment(1);
                    warn!("turn telemetry writer is behind; record dropped");
                }
                Err(TrySendError::Disconnected(_)) => {}
            }
        }
    }
}

/// Who spoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Speaker {
    /// The caller.
    Caller,
    /// The agent.
    Agent,
}

/// One event of a call trace.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TraceEvent {
    /// Words, either side.
    Transcript {
        /// ms since the call started.
        at_ms: u64,
        /// Who.
        who: Speaker,
        /// What.
        text: String,
        /// Final (or partial) transcript; for the agent, fully heard.
        r#final: bool,
        /// STT confidence (caller side).
        confidence: Option<f32>,
    },
    /// A retrieval.
    Retrieval {
        /// ms since the call started.
        at_ms: u64,
        /// The query text.
        query: String,
        /// Intent and slots used.
        intent: Option<String>,
        /// Prefetched on a partial transcript.
        prefetch: bool,
        /// Incomplete.
        partial: bool,
        /// Per-source reports.
        sources: Vec<SourceReport>,
        /// (source, id, score) of each hit.
        hits: Vec<(String, String, f32)>,
    },
    /// A tool call.
    ToolCall {
        /// ms since the call started.
        at_ms: u64,
        /// Tool.
        name: String,
        /// Arguments.
        arguments: serde_json::Value,
    },
    /// A tool result.
    ToolResult {
        /// ms since the call started.
        at_ms: u64,
        /// Tool.
        name: String,
        /// Result.
        content: serde_json::Value,
        /// CRM sync state.
        sync: Option<SyncState>,
    },
    /// A decision of the pipeline (fallbacks, barge-in, hang-up...).
    Decision {
        /// ms since the call started.
        at_ms: u64,
        /// What.
        what: String,
        /// Why.
        why: String,
    },
    /// The context sent to the reasoner.
    Context {
        /// ms since the call started.
        at_ms: u64,
        /// Its size in characters.
        chars: usize,
        /// The messages.
        messages: Vec<super::provider::Message>,
    },
}

impl TraceEvent {
    /// Sets the event's time (events made in a reply task are stamped when
    /// the session receives them).
    pub fn stamp(&mut self, at: u64) {
        match self {
            TraceEvent::Transcript { at_ms, .. }
            | TraceEvent::Retrieval { at_ms, .. }
            | TraceEvent::ToolCall { at_ms, .. }
            | TraceEvent::ToolResult { at_ms, .. }
            | TraceEvent::Decision { at_ms, .. }
            | TraceEvent::Context { at_ms, .. } => *at_ms = at,
        }
    }
}

/// Everything that happened in one call.
#[derive(Debug, Clone, Serialize)]
pub struct CallTrace {
    /// Session id.
    pub session_id: String,
    /// Agent name.
    pub agent: String,
    /// Caller number.
    pub caller: Option<String>,
    /// When the call started (RFC 3339).
    pub started_at: String,
    /// Events, in order.
    pub events: Vec<TraceEvent>,
    /// Events dropped past the cap.
    pub dropped_events: u64,
}

impl CallTrace {
    /// A new trace.
    pub fn new(session_id: &str, agent: &str, caller: Option<String>, started_at: String) -> Self {
        CallTrace {
            session_id: session_id.to_owned(),
            agent: agent.to_owned(),
            caller,
            started_at,
            events: Vec::new(),
            dropped_events: 0,
        }
    }

    /// Adds an event (dropped and counted past the cap).
    pub fn push(&mut self, e: TraceEvent) {
        if self.events.len() < MAX_TRACE_EVENTS {
            self.events.push(e);
        } else {
            self.dropped_events += 1;
        }
    }

    /// Writes the trace as `<dir>/<session_id>.json`.
    pub fn write(&self, dir: &Path) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let name: String = self
            .session_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = dir.join(format!("{name}.json"));
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&path, json)?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overhead_is_latency_minus_stages() {
        let mut r = TurnRecord {
            latency_ms: Some(700.0),
            endpoint_ms: 600.0,
            stt_ms: 12.0,
            retrieval_ms: 1.0,
            llm_ms: 2.0,
            tts_ms: 40.0,
            ..TurnRecord::default()
        };
        r.settle();
        assert_eq!(r.server_overhead_ms, Some(45.0));
    }

    #[test]
    fn records_are_json_lines_with_every_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t/turns.jsonl");
        let t = Telemetry::new(Some(&path)).unwrap();
        let mut r = TurnRecord {
            session_id: "s1".into(),
            turn: 1,
            crm_sync: TurnRecord::sync_text(Some(SyncState::Queued)),
            ..TurnRecord::default()
        };
        r.settle();
        t.record(&r);
        drop(t);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let text = loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if !text.is_empty() || std::time::Instant::now() > deadline {
                break text;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        for f in [
            "session_id",
            "turn",
            "latency_ms",
            "stt_ms",
            "retrieval_ms",
            "llm_ms",
            "tts_ms",
            "language",
            "intent",
            "crm_sync",
            "server_overhead_ms",
        ] {
            assert!(v.get(f).is_some(), "{f} missing");
        }
        assert_eq!(v["crm_sync"], "queued");
    }

    #[test]
    fn traces_are_capped_and_written() {
        let mut tr = CallTrace::new("a/b c", "agent", None, "2026-11-24T00:00:00Z".into());
        for i in 0..(MAX_TRACE_EVENTS + 10) {
            tr.push(TraceEvent::Decision {
                at_ms: i as u64,
                what: "x".into(),
                why: "y".into(),
            });
        }
        assert_eq!(tr.events.len(), MAX_TRACE_EVENTS);
        assert_eq!(tr.dropped_events, 10);
        let dir = tempfile::tempdir().unwrap();
        let p = tr.write(dir.path()).unwrap();
        assert!(p.ends_with("a_b_c.json"));
    }
}
