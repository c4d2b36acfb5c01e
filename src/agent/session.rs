//! One call's agent: the streaming turn pipeline.
//!
//! The call task forwards every 20 ms frame of the caller's audio and the
//! media session's turn events here, and plays what comes back. Per turn:
//!
//! 1. `SpeechStarted` opens a speech-to-text stream (on a blocking worker),
//!    fed from 100 ms before the detected start, then frame by frame.
//! 2. Partial transcripts run intent detection; once an intent is clear,
//!    retrieval for it starts (prefetch) while the caller is still talking.
//! 3. `SpeechStopped` closes the stream; a reply task takes the final
//!    transcript, understands it, reuses the prefetched retrieval when it
//!    still fits (or retrieves now), builds a bounded context from memory,
//!    and streams the reasoner's output. Sentences go to text-to-speech as
//!    they complete and their audio goes to the call as it is made, so the
//!    first words play before the reply is finished. Tool calls run between
//!    reasoning rounds.
//! 4. A barge-in (the media session flushed playout) cancels the reply task
//!    and records what the caller actually heard.
//!
//! Channels: frames from the call task (64, newest dropped when full — the
//! session is then too slow to keep up and the turn logic still works on
//! events), media events (64, the call task logs a full queue), output to
//! the call task (256 chunks, the reply task waits), reply progress to the
//! session (64, the reply task waits).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};
use voxtrunk_media::dtmf::Digit;
use voxtrunk_media::resample::Resampler;
use voxtrunk_media::session::{FRAME_SAMPLES, Frame, PCM_RATE, PlayoutReport};
use voxtrunk_media::vad::TurnEvent;

use super::memory::{Memory, context_chars};
use super::provider::{
    AgentError, Query, ReasonEvent, ReasonRequest, Reasoner, SlotValue, SttHints, SyncState,
    ToolContext, ToolResult, Transcript,
};
use super::reason::openai::{assistant_tool_calls_message, tool_result_message};
use super::retrieve::orchestrator::RetrievalOutcome;
use super::runtime::AgentRuntime;
use super::telemetry::{CallTrace, Speaker, TraceEvent, TurnRecord};
use crate::inference::{PoolError, Priority};

/// What the call task sends the agent besides frames.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentInput {
    /// A turn event from the endpointer, when the media session made it.
    Turn(TurnEvent, Instant),
    /// Playout was flushed by a barge-in.
    BargeIn(Option<PlayoutReport>),
    /// The first packet of an utterance went out at this tick.
    UtteranceStarted {
        /// The utterance.
        utterance: u64,
        /// When that packet was sent.
        at: Instant,
    },
    /// An utterance played to its end.
    UtteranceDone(PlayoutReport),
    /// A DTMF digit.
    Dtmf(Digit),
    /// How the hand-over to a person goes (for the trace); `failed` means
    /// the person could not be reached and the agent takes the call back.
    Escalation {
        /// What happened (REFER accepted, bridged...).
        what: String,
        /// Details.
        why: String,
        /// The transfer failed.
        failed: bool,
    },
}

/// What the agent asks the call task to do.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentOutput {
    /// Audio (16 kHz mono) of an utterance; the first chunk starts it.
    Audio {
        /// The utterance.
        utterance: u64,
        /// Samples.
        samples: Vec<i16>,
    },
    /// The utterance is complete.
    End {
        /// The utterance.
        utterance: u64,
    },
    /// Drop whatever is queued of this utterance.
    Cancel {
        /// The utterance.
        utterance: u64,
    },
    /// End the call (after what is queued has played).
    Hangup,
    /// Hand the call to a person (after what is queued has played): the
    /// call task transfers it to the definition's escalation target.
    Escalate {
        /// Why, for logs.
        reason: String,
    },
}

/// Who the call is with.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// The call (dialog) id.
    pub session_id: String,
    /// The caller's number (From user).
    pub caller: Option<String>,
    /// When the call started (RFC 3339).
    pub started_at: String,
}

/// Capacity of the frame channel into the session.
pub const FRAME_QUEUE: usize = 64;
/// Capacity of the event channel into the session.
pub const EVENT_QUEUE: usize = 64;
/// Capacity of the output channel to the call task.
pub const OUTPUT_QUEUE: usize = 256;

/// Frames of pre-roll fed to STT before the detected speech start: the
/// VAD marks speech late on soft onsets (a plosive, a short vowel: "book
/// a…" starts up to 300 ms before its first speech frame on G.711), and
/// the recogniser wants some silence before the first word anyway.
const PRE_ROLL_FRAMES: u64 = 20;
/// Frames kept for pre-roll.
const RING_FRAMES: usize = 40;
/// Longest wait for a final transcript.
const STT_FINISH_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for a tool.
const TOOL_TIMEOUT: Duration = Duration::from_secs(3);
/// Reasoning rounds per turn (tool calls in between).
const MAX_ROUNDS: usize = 3;
/// Score above which a partial transcript's intent triggers prefetch.
const PREFETCH_SCORE: f32 = 0.35;

/// A running speech-to-text job.
struct SttJob {
    frames: mpsc::Sender<Vec<i16>>,
    partials: mpsc::Receiver<Transcript>,
    done: JoinHandle<Result<Transcript, AgentError>>,
}

/// Frames handed to the recognizer in one blocking call at most.
const STT_BATCH: usize = 50;

/// Starts recognising an utterance. The stream is driven from an async
/// task that hands whatever frames have arrived to the blocking pool in one
/// short job at a time, so no blocking thread waits for audio and a slow
/// recognizer batches up naturally.
fn start_stt(rt: &AgentRuntime) -> SttJob {
    let (frames_tx, mut frames_rx) = mpsc::channel::<Vec<i16>>(256);
    let (partial_tx, partials) = mpsc::channel::<Transcript>(16);
    let stt = Arc::clone(&rt.stt);
    let hints = SttHints {
        language: rt.def.agent.language.clone(),
    };
    let name = stt.name().to_owned();
    let pool = rt.inference.stt.clone();
    let lost = move |e: PoolError| AgentError::unavailable(&name, e.to_string());
    let streams = rt.inference.stt_streams.clone();
    let done = tokio::spawn(async move {
        // A decoder for the whole utterance; dropped when the task ends.
        let _stream_slot = streams.acquire(Priority::Live).await.map_err(&lost)?;
        let mut stream = pool
            .run(Priority::Live, move || stt.start(&hints))
            .await
            .map_err(&lost)??;
        while let Some(first) = frames_rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < STT_BATCH {
                match frames_rx.try_recv() {
                    Ok(f) => batch.push(f),
                    Err(_) => break,
                }
            }
            let (back, partial) = pool
                .run(Priority::Live, move || {
                    let mut partial = None;
                    for f in &batch {
                        match stream.push(f) {
                            Ok(Some(p)) => partial = Some(p),
                            Ok(None) => {}
                            Err(e) => return (stream, Err(e)),
                        }
                    }
                    (stream, Ok(partial))
                })
                .await
                .map_err(&lost)?;
            stream = back;
            if let Some(p) = partial? {
                let _ = partial_tx.try_send(p);
            }
        }
        pool.run(Priority::Live, move || stream.finish())
            .await
            .map_err(&lost)?
    });
    SttJob {
        frames: frames_tx,
        partials,
        done,
    }
}

/// A retrieval started early.
struct Prefetch {
    key: String,
    handle: JoinHandle<RetrievalOutcome>,
}

/// What the reply task tells the session.
#[derive(Debug)]
enum ReplyEvent {
    Transcript(Transcript),
    Sentence {
        utterance: u64,
        text: String,
        samples: usize,
    },
    Trace(TraceEvent),
    Finished(Box<ReplyOutcome>),
}

/// The result of a reply task.
#[derive(Debug, Default)]
struct ReplyOutcome {
    record: TurnRecord,
    slots: BTreeMap<String, SlotValue>,
    hangup: bool,
    /// Hand the call to a person once this reply has played (why).
    escalate: Option<String>,
    /// Audio went out for this utterance.
    spoke: bool,
}

/// A turn waiting for its playout to finish before it is recorded.
struct OpenTurn {
    utterance: u64,
    /// When the endpointer declared the end of the caller's turn.
    stopped_at: Instant,
    record: TurnRecord,
    sentences: Vec<(String, usize)>,
    finished: bool,
    hangup: bool,
    escalate: Option<String>,
    /// When the first packet of the reply went out.
    started_at: Option<Instant>,
}

/// The agent of one call.
struct Session {
    rt: Arc<AgentRuntime>,
    info: SessionInfo,
    out: mpsc::Sender<AgentOutput>,
    memory: Memory,
    trace: CallTrace,
    start: Instant,
    ring: VecDeque<(u64, Frame)>,
    stt: Option<SttJob>,
    prefetch: Option<Prefetch>,
    reply: Option<(JoinHandle<()>, Arc<AtomicBool>)>,
    reply_tx: mpsc::Sender<ReplyEvent>,
    open: Option<OpenTurn>,
    next_utterance: u64,
    turns: u64,
    pending_hangup: bool,
    /// The call is being handed to a person: the caller is not listened to.
    escalating: bool,
    tts_index: Arc<AtomicUsize>,
    language: Arc<Mutex<LanguageGuard>>,
}

/// Runs the agent of one call until the call ends.
pub async fn run(
    rt: Arc<AgentRuntime>,
    info: SessionInfo,
    mut frames: mpsc::Receiver<(u64, Frame)>,
    mut events: mpsc::Receiver<AgentInput>,
    out: mpsc::Sender<AgentOutput>,
) {
    let (reply_tx, mut reply_rx) = mpsc::channel(64);
    let rt_def_agent = rt.def.agent.clone();
    let trace = CallTrace::new(
        &info.session_id,
        &rt.def.agent.name,
        info.caller.clone(),
        info.started_at.clone(),
    );
    let mut s = Session {
        memory: Memory::new(rt.def.agent.recent_turns),
        rt,
        info,
        out,
        trace,
        start: Instant::now(),
        ring: VecDeque::with_capacity(RING_FRAMES),
        stt: None,
        prefetch: None,
        reply: None,
        reply_tx,
        open: None,
        next_utterance: 1,
        turns: 0,
        pending_hangup: false,
        escalating: false,
        tts_index: Arc::new(AtomicUsize::new(0)),
        language: Arc::new(Mutex::new(LanguageGuard::new(&rt_def_agent))),
    };
    s.greet().await;
    // The call drops both senders when it ends; events queued before that
    // (a transfer's outcome, say) still belong in the trace, so the session
    // ends when the event channel closes, not when the frames stop.
    let mut frames_open = true;
    loop {
        tokio::select! {
            f = frames.recv(), if frames_open => match f {
                Some((index, frame)) => s.on_frame(index, frame),
                None => frames_open = false,
            },
            e = events.recv() => match e {
                Some(ev) => {
                    if !s.on_event(ev).await {
                        break;
                    }
                }
                None => break,
            },
            Some(p) = recv_partial(&mut s.stt) => s.on_partial(p),
            Some(r) = reply_rx.recv() => s.on_reply(r).await,
        }
    }
    s.close().await;
}

async fn recv_partial(stt: &mut Option<SttJob>) -> Option<Transcript> {
    match stt {
        Some(j) => j.partials.recv().await,
        None => std::future::pending().await,
    }
}

impl Session {
    fn at_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    async fn greet(&mut self) {
        let utterance = self.next_utterance;
        self.next_utterance += 1;
        let text = self.rt.def.agent.greeting.clone();
        let at_ms = self.at_ms();
        self.trace.push(TraceEvent::Transcript {
            at_ms,
            who: Speaker::Agent,
            text: text.clone(),
            r#final: true,
            confidence: None,
        });
        let pcm = self.rt.greeting_audio().await;
        match pcm {
            Some(pcm) => {
                for chunk in pcm.chunks(FRAME_SAMPLES * 10) {
                    let _ = self
                        .out
                        .send(AgentOutput::Audio {
                            utterance,
                            samples: chunk.to_vec(),
                        })
                        .await;
                }
                let _ = self.out.send(AgentOutput::End { utterance }).await;
            }
            None => warn!(session = %self.info.session_id, "greeting could not be synthesized"),
        }
        // Long-term memory: what the CRM knows about this caller.
        if let Some(profile) = self.rt.caller_profile(self.info.caller.as_deref()).await {
            self.memory.set_profile(&profile);
        }
    }

    /// A caller frame; `index` is the media session's count, the one
    /// turn events use, so the pre-roll lines up even after drops.
    fn on_frame(&mut self, index: u64, frame: Frame) {
        if self.ring.len() == RING_FRAMES {
            self.ring.pop_front();
        }
        self.ring.push_back((index, frame));
        if let Some(job) = &self.stt {
            if job.frames.try_send(frame.to_vec()).is_err() {
                debug!(session = %self.info.session_id, "STT worker behind: frame dropped");
            }
        }
    }

    /// Returns false when the session must end.
    async fn on_event(&mut self, ev: AgentInput) -> bool {
        if self.escalating
            && matches!(
                ev,
                AgentInput::Turn(..) | AgentInput::BargeIn(_) | AgentInput::Dtmf(_)
            )
        {
            return true;
        }
        match ev {
            AgentInput::Turn(TurnEvent::SpeechStarted { frame, over_agent }, _) => {
                // A reply not yet audible is stale once the caller goes on.
                if !over_agent && self.open.as_ref().is_some_and(|o| o.started_at.is_none()) {
                    self.cancel_reply("the caller went on talking before the reply played");
                }
                let job = start_stt(&self.rt);
                for (i, f) in &self.ring {
                    if *i + PRE_ROLL_FRAMES >= frame {
                        let _ = job.frames.try_send(f.to_vec());
                    }
                }
                self.stt = Some(job);
                if let Some(p) = self.prefetch.take() {
                    p.handle.abort();
                }
            }
            AgentInput::Turn(TurnEvent::SpeechStopped { frame, speech_ms }, at) => {
                debug!(session = %self.info.session_id, frame, speech_ms, "end of caller turn");
                if let Some(job) = self.stt.take() {
                    self.start_reply(job, at);
                }
            }
            AgentInput::BargeIn(report) => {
                let at_ms = self.at_ms();
                self.trace.push(TraceEvent::Decision {
                    at_ms,
                    what: "barge-in".into(),
                    why: format!("caller spoke over the reply ({report:?})"),
                });
                let mut escalate = None;
                if let Some(open) = self.open.take() {
                    let played = report
                        .filter(|r| r.utterance == open.utterance)
                        .map_or(0, |r| r.played_samples);
                    escalate = open.escalate.clone();
                    self.close_turn(open, Some(played as usize)).await;
                }
                self.cancel_reply("barge-in");
                // Talking over the escalation line does not cancel the
                // hand-over the caller needs.
                if let Some(reason) = escalate {
                    self.escalate(reason).await;
                }
            }
            AgentInput::UtteranceStarted { utterance, at } => {
                if let Some(open) = self.open.as_mut().filter(|o| o.utterance == utterance) {
                    open.started_at = Some(at);
                }
            }
            AgentInput::UtteranceDone(report) => {
                if self
                    .open
                    .as_ref()
                    .is_some_and(|o| o.utterance == report.utterance && o.finished)
                {
                    if let Some(open) = self.open.take() {
                        let hangup = open.hangup;
                        let escalate = open.escalate.clone();
                        self.close_turn(open, None).await;
                        if let Some(reason) = escalate {
                            self.escalate(reason).await;
                        } else if hangup {
                            self.pending_hangup = true;
                            let _ = self.out.send(AgentOutput::Hangup).await;
                        }
                    }
                }
            }
            AgentInput::Dtmf(d) => {
                let at_ms = self.at_ms();
                self.trace.push(TraceEvent::Decision {
                    at_ms,
                    what: format!("dtmf {}", d.digit),
                    why: "the caller pressed a key".into(),
                });
                if let Some(e) = self
                    .rt
                    .def
                    .escalation
                    .as_ref()
                    .filter(|e| e.dtmf == Some(d.digit))
                {
                    let line = e.line.clone();
                    let why = format!("the caller pressed {}", d.digit);
                    self.start_line(format!("dtmf {}", d.digit), line, Some(why));
                }
            }
            AgentInput::Escalation { what, why, failed } => {
                let at_ms = self.at_ms();
                info!(session = %self.info.session_id, what = %what, why = %why, "escalation");
                self.trace.push(TraceEvent::Decision { at_ms, what, why });
                if failed && self.escalating {
                    self.escalating = false;
                    if let Some(e) = &self.rt.def.escalation {
                        let line = e.unavailable_line.clone();
                        self.start_line(String::new(), line, None);
                    }
                }
            }
        }
        true
    }

    /// The escalation line has played: hand the call over.
    async fn escalate(&mut self, reason: String) {
        let at_ms = self.at_ms();
        self.trace.push(TraceEvent::Decision {
            at_ms,
            what: "escalate".into(),
            why: reason.clone(),
        });
        metrics::counter!("voxtrunk_agent_escalations_total").increment(1);
        self.escalating = true;
        self.cancel_reply("the call is handed to a person");
        let _ = self.out.send(AgentOutput::Escalate { reason }).await;
    }

    fn on_partial(&mut self, p: Transcript) {
        let at_ms = self.at_ms();
        self.trace.push(TraceEvent::Transcript {
            at_ms,
            who: Speaker::Caller,
            text: p.text.clone(),
            r#final: false,
            confidence: Some(p.confidence),
        });
        let u = self.rt.nlu.understand(&p.text, self.rt.today());
        let Some((intent, score)) = u.intent else {
            return;
        };
        if score < PREFETCH_SCORE {
            return;
        }
        let mut slots = self.memory.facts();
        slots.extend(u.slots);
        let query = self
            .rt
            .query(&intent, &p.text, &slots, self.info.caller.clone());
        let Some(query) = query else { return };
        let key = query_key(&query);
        if self.prefetch.as_ref().is_some_and(|f| f.key == key) {
            return;
        }
        if let Some(old) = self.prefetch.take() {
            old.handle.abort();
        }
        let rt = Arc::clone(&self.rt);
        let intent_name = intent.clone();
        let handle = tokio::spawn(async move { rt.retrieve(&intent_name, &query).await });
        self.prefetch = Some(Prefetch { key, handle });
    }

    fn start_reply(&mut self, job: SttJob, stopped_at: Instant) {
        let ctx = self.open_turn(stopped_at);
        let cancel = Arc::clone(&ctx.cancel);
        let handle = tokio::spawn(reply(ctx, job));
        self.reply = Some((handle, cancel));
    }

    /// A turn the agent starts itself: `line` is spoken and, with
    /// `escalate`, the call is handed over once it has played.
    fn start_line(&mut self, transcript: String, line: String, escalate: Option<String>) {
        let ctx = self.open_turn(Instant::now());
        let cancel = Arc::clone(&ctx.cancel);
        let handle = tokio::spawn(say_line(ctx, transcript, line, escalate));
        self.reply = Some((handle, cancel));
    }

    fn open_turn(&mut self, stopped_at: Instant) -> ReplyContext {
        self.cancel_reply("a new turn started");
        let utterance = self.next_utterance;
        self.next_utterance += 1;
        self.turns += 1;
        let ctx = ReplyContext {
            rt: Arc::clone(&self.rt),
            session_id: self.info.session_id.clone(),
            caller: self.info.caller.clone(),
            memory: self.memory.clone(),
            prefetch: self.prefetch.take(),
            out: self.out.clone(),
            events: self.reply_tx.clone(),
            utterance,
            turn: self.turns,
            cancel: Arc::new(AtomicBool::new(false)),
            tts_index: Arc::clone(&self.tts_index),
            language: Arc::clone(&self.language),
        };
        self.open = Some(OpenTurn {
            utterance,
            stopped_at,
            record: TurnRecord::default(),
            sentences: Vec::new(),
            finished: false,
            hangup: false,
            escalate: None,
            started_at: None,
        });
        ctx
    }

    fn cancel_reply(&mut self, why: &str) {
        if let Some((handle, cancel)) = self.reply.take() {
            cancel.store(true, Ordering::Relaxed);
            handle.abort();
            let at_ms = self.at_ms();
            self.trace.push(TraceEvent::Decision {
                at_ms,
                what: "reply cancelled".into(),
                why: why.into(),
            });
        }
        if let Some(open) = self.open.as_ref().filter(|o| o.started_at.is_none()) {
            let _ = self.out.try_send(AgentOutput::Cancel {
                utterance: open.utterance,
            });
        }
    }

    async fn on_reply(&mut self, ev: ReplyEvent) {
        match ev {
            ReplyEvent::Transcript(t) => {
                let at_ms = self.at_ms();
                self.trace.push(TraceEvent::Transcript {
                    at_ms,
                    who: Speaker::Caller,
                    text: t.text,
                    r#final: true,
                    confidence: Some(t.confidence),
                });
            }
            ReplyEvent::Sentence {
                utterance,
                text,
                samples,
            } => {
                if let Some(open) = self.open.as_mut().filter(|o| o.utterance == utterance) {
                    open.sentences.push((text, samples));
                }
            }
            ReplyEvent::Trace(mut e) => {
                e.stamp(self.at_ms());
                self.trace.push(e);
            }
            ReplyEvent::Finished(outcome) => {
                self.reply = None;
                self.memory.remember(&outcome.slots);
                let Some(open) = self.open.as_mut() else {
                    return;
                };
                if open.record.turn == 0 && outcome.record.turn != 0 {
                    open.record = outcome.record;
                }
                open.finished = true;
                open.hangup = outcome.hangup;
                open.escalate = outcome.escalate;
                if !outcome.spoke {
                    if let Some(open) = self.open.take() {
                        let escalate = open.escalate.clone();
                        self.close_turn(open, Some(0)).await;
                        // Nothing to wait for: hand over now.
                        if let Some(reason) = escalate {
                            self.escalate(reason).await;
                        }
                    }
                }
            }
        }
    }

    /// Records a turn: `played` is how many samples were heard when it was
    /// cut short (`None`: heard in full).
    async fn close_turn(&mut self, open: OpenTurn, played: Option<usize>) {
        let mut record = open.record;
        let full: String = open
            .sentences
            .iter()
            .map(|(t, _)| t.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        let heard = match played {
            None => full.clone(),
            Some(p) => heard_text(&open.sentences, p),
        };
        record.barge_in = played.is_some() && !full.is_empty();
        record.heard = heard.clone();
        // The caller stopped `endpoint_ms` before the endpointer said so.
        record.latency_ms = open
            .started_at
            .map(|t| record.endpoint_ms + ms(t.saturating_duration_since(open.stopped_at)));
        record.settle();
        let at_ms = self.at_ms();
        self.trace.push(TraceEvent::Transcript {
            at_ms,
            who: Speaker::Agent,
            text: heard.clone(),
            r#final: played.is_none(),
            confidence: None,
        });
        self.memory
            .record_turn(&record.transcript, &heard, record.intent.as_deref());
        self.rt.telemetry.record(&record);
        metrics::counter!("voxtrunk_agent_turns_total").increment(1);
        if let Some(l) = record.latency_ms {
            metrics::histogram!("voxtrunk_agent_turn_latency_ms").record(l);
        }
    }

    async fn close(mut self) {
        self.cancel_reply("the call ended");
        if let Some(open) = self.open.take() {
            self.close_turn(open, Some(0)).await;
        }
        if let Some(dir) = &self.rt.traces {
            if let Err(e) = self.trace.write(dir) {
                warn!(error = %e, "cannot write the call trace");
            }
        }
        self.rt.finish_call(&self.info, &self.memory).await;
        info!(session = %self.info.session_id, turns = self.turns, "agent session ended");
    }
}

fn query_key(q: &Query) -> String {
    format!(
        "{:?}|{}",
        q.intent,
        serde_json::to_string(&q.slots).unwrap_or_default()
    )
}

/// The words of the reply that were played before `played` samples.
fn heard_text(sentences: &[(String, usize)], played: usize) -> String {
    let mut out = Vec::new();
    let mut at = 0;
    for (text, samples) in sentences {
        if at + samples <= played {
            out.push(text.clone());
            at += samples;
            continue;
        }
        let left = played.saturating_sub(at);
        if left > 0 && *samples > 0 {
            let words: Vec<&str> = text.split_whitespace().collect();
            let n = words.len() * left / samples;
            if n > 0 {
                out.push(format!("{}…", words[..n].join(" ")));
            }
        }
        break;
    }
    out.join(" ")
}

/// Splits reasoner output into sentences as it streams.
#[derive(Debug, Default)]
struct Sentences {
    buf: String,
}

impl Sentences {
    /// Adds text; returns the sentences it completed.
    fn push(&mut self, text: &str) -> Vec<String> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        loop {
            let cut = self.buf.char_indices().find_map(|(i, c)| {
                let end = i + c.len_utf8();
                let next = self.buf[end..].chars().next();
                let boundary = matches!(c, '.' | '!' | '?' | ';')
                    && next.is_none_or(char::is_whitespace)
                    && next.is_some();
                // Long clauses are cut at a comma so speech starts sooner.
                let long_clause = c == ',' && i > 80 && next.is_some_and(char::is_whitespace);
                (boundary || long_clause).then_some(end)
            });
            let Some(end) = cut else { break };
            let sentence = self.buf[..end].trim().to_owned();
            self.buf = self.buf[end..].trim_start().to_owned();
            if !sentence.is_empty() {
                out.push(sentence);
            }
        }
        out
    }

    /// What is left at the end.
    fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.buf).trim().to_owned();
        (!rest.is_empty()).then_some(rest)
    }
}

/// Everything a reply task needs.
struct ReplyContext {
    rt: Arc<AgentRuntime>,
    session_id: String,
    caller: Option<String>,
    memory: Memory,
    prefetch: Option<Prefetch>,
    out: mpsc::Sender<AgentOutput>,
    events: mpsc::Sender<ReplyEvent>,
    utterance: u64,
    turn: u64,
    cancel: Arc<AtomicBool>,
    tts_index: Arc<AtomicUsize>,
    language: Arc<Mutex<LanguageGuard>>,
}

impl ReplyContext {
    /// Adds an event to the call trace.
    async fn trace(&self, event: TraceEvent) {
        let _ = self.events.send(ReplyEvent::Trace(event)).await;
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

/// One turn, from the end of the caller's speech to the end of the reply.
async fn reply(mut ctx: ReplyContext, job: SttJob) {
    let rt = Arc::clone(&ctx.rt);
    let mut record = TurnRecord {
        session_id: ctx.session_id.clone(),
        turn: ctx.turn,
        at: chrono::Utc::now().to_rfc3339(),
        endpoint_ms: f64::from(rt.def.turn.stop_ms),
        language: rt.def.agent.language.clone(),
        stt: rt.stt.name().to_owned(),
        reasoner: rt.reasoner.name().to_owned(),
        crm_sync: TurnRecord::sync_text(None),
        ..TurnRecord::default()
    };
    // 1. The final transcript.
    let t0 = Instant::now();
    drop(job.frames);
    let mut stt_failed = true;
    let transcript = match tokio::time::timeout(STT_FINISH_TIMEOUT, job.done).await {
        Ok(Ok(Ok(t))) => {
            stt_failed = false;
            t
        }
        Ok(Ok(Err(e))) => {
            warn!(session = %ctx.session_id, error = %e, "speech recognition failed");
            Transcript {
                text: String::new(),
                confidence: 0.0,
                language: record.language.clone(),
                is_final: true,
            }
        }
        _ => {
            warn!(session = %ctx.session_id, "speech recognition did not finish in time");
            Transcript {
                text: String::new(),
                confidence: 0.0,
                language: record.language.clone(),
                is_final: true,
            }
        }
    };
    record.stt_ms = ms(t0.elapsed());
    record.transcript = transcript.text.clone();
    record.stt_confidence = transcript.confidence;
    let (language, switched) = match ctx.language.lock() {
        Ok(mut g) => g.observe(&transcript),
        Err(_) => (record.language.clone(), false),
    };
    if switched {
        ctx.trace(TraceEvent::Decision {
            at_ms: 0,
            what: "language switched".into(),
            why: format!(
                "the recogniser reported {language} confidently {} times in a row",
                rt.def.agent.language_switch_after
            ),
        })
        .await;
    }
    record.language = language;
    let _ = ctx
        .events
        .send(ReplyEvent::Transcript(transcript.clone()))
        .await;
    let mut outcome = ReplyOutcome::default();

    // 2. Understanding and retrieval.
    let understood = rt.nlu.understand(&transcript.text, rt.today());
    let mut slots = ctx.memory.facts();
    slots.extend(understood.slots.clone());
    let intent = understood.intent.map(|(i, _)| i);
    record.intent = intent.clone();
    let t1 = Instant::now();
    let mut retrieval = RetrievalOutcome::default();
    if let Some(intent) = &intent {
        if let Some(query) = rt.query(intent, &transcript.text, &slots, ctx.caller.clone()) {
            let key = query_key(&query);
            let (r, prefetched) = match ctx.prefetch.take() {
                Some(p) if p.key == key => match p.handle.await {
                    Ok(r) => (r, true),
                    Err(_) => (rt.retrieve(intent, &query).await, false),
                },
                other => {
                    if let Some(p) = other {
                        p.handle.abort();
                    }
                    (rt.retrieve(intent, &query).await, false)
                }
            };
            retrieval = r;
            ctx.trace(TraceEvent::Retrieval {
                at_ms: 0,
                query: query.text.clone(),
                intent: query.intent.clone(),
                prefetch: prefetched,
                partial: retrieval.retrieval.partial,
                sources: retrieval.retrieval.sources.clone(),
                hits: retrieval
                    .retrieval
                    .documents
                    .iter()
                    .map(|d| (d.source.clone(), d.id.clone(), d.score))
                    .collect(),
            })
            .await;
            for (k, v) in rt.remembered_slots(intent, &retrieval.retrieval) {
                slots.insert(k.clone(), v.clone());
                outcome.slots.insert(k, v);
            }
        }
    }
    record.retrieval_ms = ms(t1.elapsed());
    record.partial = retrieval.retrieval.partial;
    record.stale = retrieval.retrieval.sources.iter().any(|s| s.stale);
    outcome.slots.extend(understood.slots);
    outcome.hangup = intent.as_deref().is_some_and(|i| rt.hangs_up(i));
    // An essential source gave nothing usable: a person takes over, when
    // the definition says so; otherwise the reply says it is partial.
    if let Some(e) = rt
        .def
        .escalation
        .as_ref()
        .filter(|e| e.on_essential_failure && !retrieval.essential_failed.is_empty())
    {
        let why = format!(
            "essential source {} failed",
            retrieval.essential_failed.join(", ")
        );
        warn!(session = %ctx.session_id, why = %why, "escalating to a person");
        ctx.trace(TraceEvent::Decision {
            at_ms: 0,
            what: "escalation line".into(),
            why: why.clone(),
        })
        .await;
        outcome.escalate = Some(why);
        return reply_with_line(&ctx, record, e.line.clone(), outcome).await;
    }
    let retrieval = retrieval.retrieval;

    // 3. Reasoning, sentence by sentence into speech.
    let t2 = Instant::now();
    let system = rt.system_prompt();
    let mut messages = ctx.memory.context(&system, &retrieval, &transcript.text);
    ctx.trace(TraceEvent::Context {
        at_ms: 0,
        chars: context_chars(&messages),
        messages: messages.clone(),
    })
    .await;
    let mut speaker = Voice::new(&ctx, &rt);
    let mut reply_text = String::new();
    let mut first_sentence_at: Option<Instant> = None;
    let mut sync: Option<SyncState> = None;
    // Nothing recognised (silence, noise, a recogniser that failed): ask
    // again, whatever the reasoner would make of an empty turn.
    // A recogniser that failed gets the failure line instead, and, when the
    // agent has an escalation key, the key as a menu.
    let heard_nothing = transcript.text.trim().is_empty();
    if heard_nothing {
        let line = if stt_failed {
            let key = rt.def.escalation.as_ref().and_then(|e| e.dtmf);
            let line = super::runtime::stt_failure_menu(&rt.def.stt.failure_line, key);
            metrics::counter!("voxtrunk_agent_stt_failures_total").increment(1);
            line
        } else {
            rt.def.agent.fallback_line.clone()
        };
        ctx.trace(TraceEvent::Decision {
            at_ms: 0,
            what: if stt_failed {
                "stt failure line".into()
            } else {
                "fallback line".into()
            },
            why: if stt_failed {
                "speech recognition failed".into()
            } else {
                "nothing was recognised".into()
            },
        })
        .await;
        reply_text.push_str(&line);
        first_sentence_at.get_or_insert_with(Instant::now);
        speaker.say(&line, &mut record).await;
    }
    // A reasoner that fails or misses its first-token deadline gets the
    // recovery line at once; the round is then tried once more, with the
    // fallback reasoner when there is one.
    let mut reasoner: Arc<dyn Reasoner> = Arc::clone(&rt.reasoner);
    let mut retried = false;
    let mut rounds = if heard_nothing { 0 } else { MAX_ROUNDS };
    'rounds: while rounds > 0 {
        rounds -= 1;
        let request = ReasonRequest {
            messages: messages.clone(),
            tools: rt.tool_specs(),
            intent: intent.clone(),
            slots: slots.clone(),
            retrieval: retrieval.clone(),
            first_token_deadline: Duration::from_millis(rt.def.reasoner.first_token_ms),
        };
        // The first token is due within the deadline, however long the
        // round waited for a reasoning slot.
        let first_token_at = Instant::now() + Duration::from_millis(rt.def.reasoner.first_token_ms);
        let slot =
            tokio::time::timeout_at(first_token_at, rt.inference.reason.acquire(Priority::Live))
                .await;
        let (slot, mut stream) = match slot {
            Ok(Ok(permit)) => (Some(permit), reasoner.reason(request)),
            refused => {
                let why = match refused {
                    Ok(Err(e)) => AgentError::unavailable(reasoner.name(), e.to_string()),
                    _ => AgentError::Timeout(reasoner.name().to_owned()),
                };
                let (tx, rx) = mpsc::channel(1);
                let _ = tx.try_send(Err(why));
                (None, rx)
            }
        };
        let mut sentences = Sentences::default();
        let mut calls = Vec::new();
        let mut round_text = String::new();
        let mut first = true;
        loop {
            let next = if first {
                match tokio::time::timeout_at(first_token_at, stream.recv()).await {
                    Ok(n) => n,
                    Err(_) => Some(Err(AgentError::Timeout(reasoner.name().to_owned()))),
                }
            } else {
                stream.recv().await
            };
            first = false;
            match next {
                Some(Ok(ReasonEvent::Token(t))) => {
                    reply_text.push_str(&t);
                    round_text.push_str(&t);
                    for s in sentences.push(&t) {
                        first_sentence_at.get_or_insert_with(Instant::now);
                        if !speaker.say(&s, &mut record).await {
                            break 'rounds;
                        }
                    }
                }
                Some(Ok(ReasonEvent::ToolCall(call))) => calls.push(call),
                Some(Ok(ReasonEvent::Done(_))) | None => break,
                Some(Err(e)) => {
                    if retried {
                        warn!(session = %ctx.session_id, error = %e, "reasoning failed again");
                        ctx.trace(TraceEvent::Decision {
                            at_ms: 0,
                            what: "reasoning given up".into(),
                            why: e.to_string(),
                        })
                        .await;
                        break 'rounds;
                    }
                    warn!(session = %ctx.session_id, error = %e, "reasoning failed; speaking the recovery line");
                    ctx.trace(TraceEvent::Decision {
                        at_ms: 0,
                        what: "recovery line".into(),
                        why: e.to_string(),
                    })
                    .await;
                    let line = rt.def.agent.recovery_line.clone();
                    reply_text.push_str(&line);
                    reply_text.push(' ');
                    first_sentence_at.get_or_insert_with(Instant::now);
                    if !speaker.say(&line, &mut record).await {
                        break 'rounds;
                    }
                    retried = true;
                    if !round_text.is_empty() {
                        // Part of this round was spoken: do not repeat it.
                        break 'rounds;
                    }
                    reasoner = rt
                        .fallback_reasoner
                        .clone()
                        .unwrap_or_else(|| Arc::clone(&rt.reasoner));
                    metrics::counter!("voxtrunk_agent_reasoner_retries_total").increment(1);
                    ctx.trace(TraceEvent::Decision {
                        at_ms: 0,
                        what: "reasoning retried".into(),
                        why: format!("once more, with {}", reasoner.name()),
                    })
                    .await;
                    rounds += 1;
                    continue 'rounds;
                }
            }
        }
        // The reasoning slot is free once the stream has ended.
        drop(slot);
        if let Some(rest) = sentences.finish() {
            first_sentence_at.get_or_insert_with(Instant::now);
            if !speaker.say(&rest, &mut record).await {
                break;
            }
        }
        if calls.is_empty() {
            break;
        }
        messages.push(assistant_tool_calls_message(round_text.trim(), &calls));
        for call in calls {
            ctx.trace(TraceEvent::ToolCall {
                at_ms: 0,
                name: call.name.clone(),
                arguments: call.arguments.clone(),
            })
            .await;
            let tool_ctx = ToolContext {
                session_id: ctx.session_id.clone(),
                caller: ctx.caller.clone(),
                slots: slots.clone(),
            };
            let result = match rt.tool(&call.name) {
                Some(tool) => {
                    match tokio::time::timeout(TOOL_TIMEOUT, tool.call(&call, &tool_ctx)).await {
                        Ok(r) => r,
                        Err(_) => Err(AgentError::Timeout(call.name.clone())),
                    }
                }
                None => Err(AgentError::engine(&call.name, "no such tool")),
            };
            let (content, state) = match result {
                Ok(r) => (r.content, r.sync),
                Err(e) => (
                    serde_json::json!({ "error": e.to_string() }),
                    Some(SyncState::Failed),
                ),
            };
            if state.is_some() {
                sync = state;
            }
            ctx.trace(TraceEvent::ToolResult {
                at_ms: 0,
                name: call.name.clone(),
                content: content.clone(),
                sync: state,
            })
            .await;
            messages.push(tool_result_message(&ToolResult {
                call_id: call.id.clone(),
                content,
                sync: state,
            }));
        }
    }
    record.llm_ms = first_sentence_at.map_or(ms(t2.elapsed()), |t| ms(t.duration_since(t2)));
    record.reasoner = reasoner.name().to_owned();
    record.crm_sync = TurnRecord::sync_text(sync);
    record.reply = reply_text.trim().to_owned();
    record.tts = speaker.provider_name();
    let spoke = speaker.spoke;
    finish_reply(&ctx, outcome, record, spoke).await;
}

/// Ends a reply: closes its utterance when audio went out and hands the
/// outcome, with its turn record, to the session.
async fn finish_reply(
    ctx: &ReplyContext,
    mut outcome: ReplyOutcome,
    record: TurnRecord,
    spoke: bool,
) {
    outcome.spoke = spoke;
    if spoke {
        let _ = ctx
            .out
            .send(AgentOutput::End {
                utterance: ctx.utterance,
            })
            .await;
    }
    outcome.record = record;
    let _ = ctx
        .events
        .send(ReplyEvent::Finished(Box::new(outcome)))
        .await;
}

/// A reply that is one fixed line (the escalation line, the line said when
/// a transfer failed).
async fn reply_with_line(
    ctx: &ReplyContext,
    mut record: TurnRecord,
    line: String,
    outcome: ReplyOutcome,
) {
    let mut speaker = Voice::new(ctx, &ctx.rt);
    speaker.say(&line, &mut record).await;
    record.reply = line;
    record.tts = speaker.provider_name();
    let spoke = speaker.spoke;
    finish_reply(ctx, outcome, record, spoke).await;
}

/// A turn the agent starts itself: speaks `line` (the escalation line after
/// a key press, the line said when a transfer failed).
async fn say_line(ctx: ReplyContext, transcript: String, line: String, escalate: Option<String>) {
    let rt = Arc::clone(&ctx.rt);
    let record = TurnRecord {
        session_id: ctx.session_id.clone(),
        turn: ctx.turn,
        at: chrono::Utc::now().to_rfc3339(),
        language: rt.def.agent.language.clone(),
        stt: rt.stt.name().to_owned(),
        reasoner: String::new(),
        crm_sync: TurnRecord::sync_text(None),
        transcript,
        intent: Some("escalation".into()),
        ..TurnRecord::default()
    };
    let outcome = ReplyOutcome {
        escalate,
        ..ReplyOutcome::default()
    };
    reply_with_line(&ctx, record, line, outcome).await;
}

/// The language guard: the call keeps the agent's language unless the
/// recogniser reports one other language, confidently, for N utterances in
/// a row; then that language holds until the same happens again.
#[derive(Debug)]
struct LanguageGuard {
    current: String,
    after: u32,
    confidence: f32,
    candidate: Option<(String, u32)>,
}

impl LanguageGuard {
    fn new(agent: &super::definition::AgentSection) -> Self {
        LanguageGuard {
            current: agent.language.clone(),
            after: agent.language_switch_after.max(1),
            confidence: agent.language_confidence,
            candidate: None,
        }
    }

    /// The language of this utterance's turn, and whether it just changed.
    fn observe(&mut self, t: &Transcript) -> (String, bool) {
        let other = !t.language.is_empty()
            && !t.language.eq_ignore_ascii_case(&self.current)
            && !t.text.trim().is_empty();
        if !other || t.confidence < self.confidence {
            // Unsure or the same language: the streak is broken.
            self.candidate = None;
            return (self.current.clone(), false);
        }
        let count = match &mut self.candidate {
            Some((lang, n)) if lang.eq_ignore_ascii_case(&t.language) => {
                *n += 1;
                *n
            }
            c => {
                *c = Some((t.language.clone(), 1));
                1
            }
        };
        if count >= self.after {
            self.current = t.language.clone();
            self.candidate = None;
            return (self.current.clone(), true);
        }
        (self.current.clone(), false)
    }
}

/// Turns sentences into audio for the call, switching to the secondary
/// TTS provider for the rest of the call when the primary fails.
struct Voice<'a> {
    ctx: &'a ReplyContext,
    rt: &'a AgentRuntime,
    spoke: bool,
    first_audio_done: bool,
}

impl<'a> Voice<'a> {
    fn new(ctx: &'a ReplyContext, rt: &'a AgentRuntime) -> Self {
        Voice {
            ctx,
            rt,
            spoke: false,
            first_audio_done: false,
        }
    }

    fn provider_name(&self) -> String {
        let i = self.ctx.tts_index.load(Ordering::Relaxed);
        self.rt
            .tts
            .get(i)
            .map_or_else(String::new, |t| t.name().to_owned())
    }

    /// Synthesizes and sends one sentence; false when cancelled.
    async fn say(&mut self, sentence: &str, record: &mut TurnRecord) -> bool {
        if self.ctx.cancel.load(Ordering::Relaxed) {
            return false;
        }
        let started = Instant::now();
        loop {
            let index = self.ctx.tts_index.load(Ordering::Relaxed);
            let Some(tts) = self.rt.tts.get(index).cloned() else {
                warn!(session = %self.ctx.session_id, "no text-to-speech provider left");
                return false;
            };
            if index == 0
                && let Some(pcm) = self.rt.cached_line(sentence)
            {
                return self.say_cached(sentence, &pcm, started, record).await;
            }
            let (tx, mut rx) = mpsc::channel::<Vec<i16>>(32);
            let cancel = Arc::clone(&self.ctx.cancel);
            let text = sentence.to_owned();
            let pool = self.rt.inference.tts.clone();
            let provider = tts.name().to_owned();
            let job = tokio::spawn(async move {
                let job = pool.run(Priority::Live, move || {
                    let mut resampler: Option<Resampler> = None;
                    tts.synthesize(&text, &mut |chunk| {
                        if cancel.load(Ordering::Relaxed) {
                            return false;
                        }
                        let pcm = if chunk.rate == PCM_RATE {
                            chunk.samples
                        } else {
                            let r = match &mut resampler {
                                Some(r) if r.from_rate() == chunk.rate => r,
                                _ => match Resampler::new(chunk.rate, PCM_RATE) {
                                    Ok(r) => resampler.insert(r),
                                    Err(_) => return false,
                                },
                            };
                            let mut out = Vec::with_capacity(chunk.samples.len() * 2);
                            r.process(&chunk.samples, &mut out);
                            out
                        };
                        tx.blocking_send(pcm).is_ok()
                    })
                });
                job.await
                    .unwrap_or_else(|e| Err(AgentError::unavailable(&provider, e.to_string())))
            });
            let mut samples = 0usize;
            while let Some(pcm) = rx.recv().await {
                if !self.first_audio_done {
                    self.first_audio_done = true;
                    record.tts_ms = ms(started.elapsed());
                }
                samples += pcm.len();
                self.spoke = true;
                if self
                    .ctx
                    .out
                    .send(AgentOutput::Audio {
                        utterance: self.ctx.utterance,
                        samples: pcm,
                    })
                    .await
                    .is_err()
                {
                    return false;
                }
            }
            match job.await {
                Ok(Ok(())) => {
                    let _ = self
                        .ctx
                        .events
                        .send(ReplyEvent::Sentence {
                            utterance: self.ctx.utterance,
                            text: sentence.to_owned(),
                            samples,
                        })
                        .await;
                    return !self.ctx.cancel.load(Ordering::Relaxed);
                }
                Ok(Err(e)) if samples == 0 && index + 1 < self.rt.tts.len() => {
                    warn!(session = %self.ctx.session_id, error = %e, "text-to-speech failed; switching to the secondary provider");
                    self.ctx
                        .trace(TraceEvent::Decision {
                            at_ms: 0,
                            what: "tts fallback".into(),
                            why: e.to_string(),
                        })
                        .await;
                    let _ = self.ctx.tts_index.compare_exchange(
                        index,
                        index + 1,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    continue;
                }
                Ok(Err(e)) => {
                    warn!(session = %self.ctx.session_id, error = %e, "text-to-speech failed");
                    return false;
                }
                Err(_) => return false,
            }
        }
    }

    /// Sends a fixed line synthesized at start-up.
    async fn say_cached(
        &mut self,
        sentence: &str,
        pcm: &[i16],
        started: Instant,
        record: &mut TurnRecord,
    ) -> bool {
        for chunk in pcm.chunks(FRAME_SAMPLES * 10) {
            if self.ctx.cancel.load(Ordering::Relaxed) {
                return false;
            }
            if !self.first_audio_done {
                self.first_audio_done = true;
                record.tts_ms = ms(started.elapsed());
            }
            self.spoke = true;
            let sent = self
                .ctx
                .out
                .send(AgentOutput::Audio {
                    utterance: self.ctx.utterance,
                    samples: chunk.to_vec(),
                })
                .await;
            if sent.is_err() {
                return false;
            }
        }
        let _ = self
            .ctx
            .events
            .send(ReplyEvent::Sentence {
                utterance: self.ctx.utterance,
                text: sentence.to_owned(),
                samples: pcm.len(),
            })
            .await;
        !self.ctx.cancel.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests;
