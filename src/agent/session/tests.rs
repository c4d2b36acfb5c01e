//! Whole calls through the agent session on paused time, with scripted
//! providers and a simulated call task that plays audio at 20 ms per frame.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use voxtrunk_media::session::{FRAME_SAMPLES, PlayoutReport};

use super::*;
use crate::agent::definition::AgentDefinition;
use crate::agent::fake::{FakeReasoner, FakeRetriever, FakeStt, FakeTool, FakeTts, Step};
use crate::agent::memory::Memory;
use crate::agent::provider::{Document, Role, SyncState, TextToSpeech};
use crate::agent::retrieve::orchestrator::{RetrievalOrchestrator, SourceConfig};
use crate::agent::runtime::{AgentRuntime, Parts};
use crate::agent::telemetry::Telemetry;

const DEFINITION: &str = r#"
[agent]
name = "test-agent"
greeting = "Hello."
recent_turns = 4

[turn]
stop_ms = 600

[[knowledge]]
name = "inventory"
kind = "documents"
paths = ["inventory.csv"]
deadline_ms = 150

[[intent]]
name = "search_property"
examples = ["I am looking for a three bedroom apartment in Whitefield", "show me flats in Whitefield"]
keywords = ["apartment", "bedroom", "flat"]
retrieve = ["inventory"]
remember = { property_id = "inventory.id" }
[[intent.reply]]
text = "We have {inventory.name}."

[[intent]]
name = "price"
examples = ["what is the price", "how much does it cost"]
keywords = ["price", "cost"]
[[intent.reply]]
text = "It costs a lot."

[[intent]]
name = "book_visit"
examples = ["book a site visit for tomorrow"]
keywords = ["book", "visit"]
tool = "book_site_visit"
[[intent.reply]]
text = "Booked."
"#;

/// Frames of silence the endpointer waits (600 ms).
const STOP_FRAMES: u64 = 30;

fn inventory(fail: bool) -> Arc<FakeRetriever> {
    let mut fields = BTreeMap::new();
    fields.insert("id".to_owned(), "P001".to_owned());
    fields.insert("name".to_owned(), "Prestige Lakeside".to_owned());
    Arc::new(FakeRetriever {
        name: "inventory".into(),
        documents: vec![Document {
            source: "inventory".into(),
            id: "inventory.csv#P001".into(),
            title: "Prestige Lakeside".into(),
            text: "Prestige Lakeside, Whitefield, 3 BHK, 1.18 crore".into(),
            fields,
            version: "v1".into(),
            score: 1.0,
        }],
        delay: Duration::from_millis(40),
        fail,
        queries: Default::default(),
    })
}

struct Kit {
    rt: Arc<AgentRuntime>,
    reasoner: Arc<FakeReasoner>,
    fallback: Option<Arc<FakeReasoner>>,
    tool: Arc<FakeTool>,
    inventory: Arc<FakeRetriever>,
    records: Arc<Mutex<Vec<TurnRecord>>>,
    traces: tempfile::TempDir,
}

fn kit(stt: FakeStt, script: Vec<Step>) -> Kit {
    kit_with_tts(stt, script, vec![Arc::new(FakeTts::default())])
}

fn kit_with_tts(stt: FakeStt, script: Vec<Step>, tts: Vec<Arc<dyn TextToSpeech>>) -> Kit {
    kit_with(KitOptions {
        stt,
        script,
        tts,
        ..KitOptions::default()
    })
}

/// What a test changes in the kit.
struct KitOptions {
    stt: FakeStt,
    script: Vec<Step>,
    tts: Vec<Arc<dyn TextToSpeech>>,
    /// TOML appended to the definition.
    extra: &'static str,
    /// The inventory source fails.
    inventory_fails: bool,
    /// A fallback reasoner with this script.
    fallback: Option<Vec<Step>>,
}

impl Default for KitOptions {
    fn default() -> Self {
        KitOptions {
            stt: FakeStt::new(&[]),
            script: Vec::new(),
            tts: vec![Arc::new(FakeTts::default())],
            extra: "",
            inventory_fails: false,
            fallback: None,
        }
    }
}

fn kit_with(o: KitOptions) -> Kit {
    let (stt, script, tts) = (o.stt, o.script, o.tts);
    let def: AgentDefinition =
        toml::from_str(&format!("{DEFINITION}\n{}", o.extra)).expect("definition");
    let reasoner = Arc::new(FakeReasoner::new(script));
    let fallback = o.fallback.map(|s| Arc::new(FakeReasoner::new(s)));
    let tool = Arc::new(FakeTool::new(
        "book_site_visit",
        serde_json::json!({ "status": "booked", "booking_id": "BK-TEST" }),
        Some(SyncState::Success),
    ));
    let inventory = inventory(o.inventory_fails);
    let retrieval = Arc::new(RetrievalOrchestrator::new(vec![SourceConfig {
        retriever: inventory.clone(),
        deadline: Duration::from_millis(150),
        cache_ttl: Duration::ZERO,
        essential: true,
    }]));
    let (telemetry, records) = Telemetry::in_memory();
    let traces = tempfile::tempdir().expect("tempdir");
    let rt = AgentRuntime::from_parts(
        def,
        Parts {
            stt: Arc::new(stt),
            tts,
            reasoner: reasoner.clone(),
            fallback_reasoner: fallback
                .clone()
                .map(|f| f as Arc<dyn crate::agent::provider::Reasoner>),
            retrieval,
            tools: vec![tool.clone()],
            crm: None,
            outbox: None,
            places: vec!["Whitefield".into()],
            telemetry,
            traces: Some(traces.path().to_owned()),
            today: Arc::new(|| chrono::NaiveDate::from_ymd_opt(2026, 11, 24).expect("date")),
            inference: crate::inference::Inference::for_tests(),
        },
    );
    Kit {
        rt: Arc::new(rt),
        reasoner,
        fallback,
        tool,
        inventory,
        records,
        traces,
    }
}

/// What the call task does, reduced to its timing: 20 ms ticks, playout of
/// the agent's audio at real-time rate, the caller's frames.
struct Call {
    frames: Option<mpsc::Sender<(u64, Frame)>>,
    events: Option<mpsc::Sender<AgentInput>>,
    out: mpsc::Receiver<AgentOutput>,
    /// Utterance, samples waiting, end received.
    queue: VecDeque<(u64, usize, bool)>,
    playing: Option<PlayoutReport>,
    cut: u64,
    tick: u64,
    /// Utterances played to their end.
    done: Vec<PlayoutReport>,
    hangup: bool,
    escalated: Option<String>,
    session: JoinHandle<()>,
}

impl Call {
    fn start(rt: &Arc<AgentRuntime>) -> Call {
        let (frames, frames_rx) = mpsc::channel(FRAME_QUEUE);
        let (events, events_rx) = mpsc::channel(EVENT_QUEUE);
        let (out_tx, out) = mpsc::channel(OUTPUT_QUEUE);
        let info = SessionInfo {
            session_id: "call-1@test".into(),
            caller: Some("+919800000001".into()),
            started_at: "2026-11-24T10:00:00Z".into(),
        };
        let session = tokio::spawn(run(Arc::clone(rt), info, frames_rx, events_rx, out_tx));
        Call {
            frames: Some(frames),
            events: Some(events),
            out,
            queue: VecDeque::new(),
            playing: None,
            cut: 0,
            tick: 0,
            done: Vec::new(),
            hangup: false,
            escalated: None,
            session,
        }
    }

    async fn event(&self, e: AgentInput) {
        self.events
            .as_ref()
            .expect("open")
            .send(e)
            .await
            .expect("session alive");
    }

    fn take_output(&mut self) {
        while let Ok(o) = self.out.try_recv() {
            match o {
                AgentOutput::Audio { utterance, .. } | AgentOutput::End { utterance }
                    if utterance <= self.cut => {}
                AgentOutput::Audio { utterance, samples } => {
                    match self.queue.iter_mut().find(|q| q.0 == utterance) {
                        Some(q) => q.1 += samples.len(),
                        None => self.queue.push_back((utterance, samples.len(), false)),
                    }
                }
                AgentOutput::End { utterance } => {
                    match self.queue.iter_mut().find(|q| q.0 == utterance) {
                        Some(q) => q.2 = true,
                        None => self.queue.push_back((utterance, 0, true)),
                    }
                }
                AgentOutput::Cancel { utterance } => {
                    self.queue.retain(|q| q.0 != utterance);
                    self.cut = self.cut.max(utterance);
                }
                AgentOutput::Hangup => self.hangup = true,
                AgentOutput::Escalate { reason } => self.escalated = Some(reason),
            }
        }
    }

    /// One 20 ms tick: output in, one frame of playout out, one caller
    /// frame to the agent.
    async fn tick(&mut self, caller_speaks: bool) {
        self.take_output();
        if let Some(&(utterance, waiting, ended)) = self.queue.front() {
            if waiting > 0 || ended {
                if self.playing.is_none_or(|p| p.utterance != utterance) {
                    self.playing = Some(PlayoutReport {
                        utterance,
                        played_samples: 0,
                    });
                    let at = Instant::now();
                    self.event(AgentInput::UtteranceStarted { utterance, at })
                        .await;
                }
                let n = waiting.min(FRAME_SAMPLES);
                let p = self.playing.as_mut().expect("playing");
                p.played_samples += n as u64;
                let report = *p;
                if let Some(front) = self.queue.front_mut() {
                    front.1 -= n;
                }
                if waiting == n && ended {
                    self.queue.pop_front();
                    self.done.push(report);
                    self.event(AgentInput::UtteranceDone(report)).await;
                }
            }
        }
        let level = if caller_speaks { 6000 } else { 0 };
        let frame: Frame = std::array::from_fn(|i| if i % 2 == 0 { level } else { -level });
        let _ = self
            .frames
            .as_ref()
            .expect("open")
            .try_send((self.tick, frame));
        self.tick += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    /// The caller talks for `frames` frames and stops; the endpointer's
    /// `SpeechStopped` follows 600 ms later.
    async fn say(&mut self, frames: u64, over_agent: bool) {
        let first = self.tick;
        self.event(AgentInput::Turn(
            TurnEvent::SpeechStarted {
                frame: first,
                over_agent,
            },
            Instant::now(),
        ))
        .await;
        for _ in 0..frames {
            self.tick(true).await;
        }
        self.pause_and_stop(first).await;
    }

    async fn pause_and_stop(&mut self, first: u64) {
        let stop = self.tick;
        for _ in 0..STOP_FRAMES {
            self.tick(false).await;
        }
        let speech_ms = ((stop - first) * 20) as u32;
        self.event(AgentInput::Turn(
            TurnEvent::SpeechStopped {
                frame: stop,
                speech_ms,
            },
            Instant::now(),
        ))
        .await;
    }

    /// Ticks until `utterance` has played to its end (bounded).
    async fn until_done(&mut self, utterance: u64) -> PlayoutReport {
        for _ in 0..3000 {
            if let Some(r) = self.done.iter().find(|r| r.utterance == utterance) {
                return *r;
            }
            self.tick(false).await;
        }
        panic!(
            "utterance {utterance} never finished (queue {:?})",
            self.queue
        );
    }

    /// Ticks until `utterance` is audible (bounded).
    async fn until_playing(&mut self, utterance: u64) {
        for _ in 0..3000 {
            if self.playing.is_some_and(|p| p.utterance == utterance) {
                return;
            }
            self.tick(false).await;
        }
        panic!("utterance {utterance} never started");
    }

    /// The caller barges in: the media session flushes playout and
    /// reports how much was heard.
    async fn barge_in(&mut self) -> PlayoutReport {
        let report = self.playing.expect("something is playing");
        let first = self.tick;
        self.event(AgentInput::Turn(
            TurnEvent::SpeechStarted {
                frame: first,
                over_agent: true,
            },
            Instant::now(),
        ))
        .await;
        self.queue.retain(|q| q.0 != report.utterance);
        self.cut = self.cut.max(report.utterance);
        self.playing = None;
        self.event(AgentInput::BargeIn(Some(report))).await;
        report
    }

    /// Hangs up and waits for the session to write its trace.
    async fn end(mut self) {
        self.frames = None;
        self.events = None;
        tokio::time::timeout(Duration::from_secs(10), self.session)
            .await
            .expect("session ends when the call does")
            .expect("session task");
    }
}

#[tokio::test(start_paused = true)]
async fn three_turns_with_a_barge_in_in_the_second() {
    let stt = FakeStt::new(&[
        "I am looking for a three bedroom apartment in Whitefield",
        "what is the price",
        "book a site visit for tomorrow",
    ]);
    let k = kit(
        stt,
        vec![
            Step::Say("Prestige Lakeside in Whitefield is a three bedroom flat. It is ready to move in.".into()),
            Step::Say(
                "It costs one crore eighteen lakh. The price includes parking and club membership. Shall I book a visit?"
                    .into(),
            ),
            Step::Call("book_site_visit".into(), serde_json::json!({ "date": "2026-11-25" })),
            Step::Say("Your visit is booked for tomorrow. The booking number is B K TEST.".into()),
        ],
    );
    let mut call = Call::start(&k.rt);

    // Greeting (utterance 1) plays in full.
    let greeting = call.until_done(1).await;
    assert_eq!(greeting.played_samples, "Hello.".len() as u64 * 960);

    // Turn 1: 2 s of speech; the word-by-word partials prefetch inventory.
    call.say(100, false).await;
    call.until_done(2).await;
    // A prefetch per change of what the partials say (intent, then each
    // new slot), not one per partial (10 words); the last one is reused.
    let queries = k.inventory.queries.load(Ordering::Relaxed);
    assert!((1..=4).contains(&queries), "{queries} inventory queries");

    // Turn 2: the reply starts; 600 ms into it the caller barges in and
    // says the third sentence.
    call.say(40, false).await;
    call.until_playing(3).await;
    for _ in 0..30 {
        call.tick(false).await;
    }
    let cut = call.barge_in().await;
    assert!(cut.played_samples > 0);
    for _ in 0..60 {
        call.tick(true).await;
    }
    call.pause_and_stop(call.tick - 60).await;

    // Turn 3: a tool call, then the confirmation.
    call.until_done(4).await;
    assert!(
        !call.done.iter().any(|r| r.utterance == 3),
        "the cut reply never finished playing"
    );
    call.end().await;

    let records = k.records.lock().expect("records").clone();
    assert_eq!(records.len(), 3, "{records:#?}");
    assert_eq!(
        records.iter().map(|r| r.turn).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    for r in &records {
        assert_eq!(r.session_id, "call-1@test");
        assert_eq!(r.language, "en-US");
        assert!(r.latency_ms.is_some(), "{r:?}");
        let latency = r.latency_ms.unwrap_or_default();
        // 600 ms of endpointing plus at most one tick until the next send.
        assert!(
            (600.0..=640.0).contains(&latency),
            "latency {latency} in {r:?}"
        );
        let overhead = r.server_overhead_ms.unwrap_or(f64::MAX);
        assert!(overhead.abs() <= 40.0, "overhead {overhead} in {r:?}");
    }
    let (r1, r2, r3) = (&records[0], &records[1], &records[2]);
    assert_eq!(r1.intent.as_deref(), Some("search_property"));
    assert!(!r1.barge_in && r1.heard == r1.reply);
    assert_eq!(r1.crm_sync, "none");

    assert_eq!(r2.intent.as_deref(), Some("price"));
    assert!(r2.barge_in);
    assert!(
        !r2.heard.is_empty() && r2.heard.len() < r2.reply.len(),
        "heard {:?}",
        r2.heard
    );
    assert_eq!(
        r2.heard, "It…",
        "600 ms of the first sentence's 2 s: one word of six"
    );

    assert_eq!(r3.intent.as_deref(), Some("book_visit"));
    assert_eq!(r3.crm_sync, "success");
    assert!(r3.reply.contains("booked"));

    // The tool saw the remembered property and the date.
    let calls = k.tool.calls.lock().expect("calls").clone();
    assert_eq!(calls.len(), 1);
    let slots = &calls[0].1.slots;
    assert_eq!(
        slots.get("property_id").map(SlotValue::as_text).as_deref(),
        Some("P001")
    );
    assert_eq!(
        slots.get("date").map(SlotValue::as_text).as_deref(),
        Some("2026-11-25")
    );

    // The third turn's context holds what was heard of the second reply,
    // not what was generated.
    let requests = k.reasoner.requests.lock().expect("requests").clone();
    assert_eq!(requests.len(), 4);
    let third = &requests[2].messages;
    assert!(
        third
            .iter()
            .any(|m| m.role == Role::Assistant && m.content == r2.heard)
    );
    assert!(!third.iter().any(|m| m.content.contains("club membership")));
    assert!(
        third.iter().any(|m| m.content.contains("bedrooms=3")),
        "{third:#?}"
    );
    let fourth = &requests[3].messages;
    assert!(
        fourth
            .last()
            .is_some_and(|m| m.role == Role::Tool && m.content.contains("BK-TEST"))
    );

    // The trace has both sides, the prefetch, the barge-in and the tool.
    let file = std::fs::read_dir(k.traces.path())
        .expect("traces")
        .next()
        .expect("one trace")
        .expect("entry");
    let trace: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file.path()).expect("read")).expect("json");
    let events = trace["events"].as_array().expect("events");
    let has = |pred: &dyn Fn(&serde_json::Value) -> bool| events.iter().any(pred);
    assert!(has(&|e| e["event"] == "retrieval" && e["prefetch"] == true));
    assert!(has(&|e| e["event"] == "decision" && e["what"] == "barge-in"));
    assert!(has(
        &|e| e["event"] == "tool_call" && e["name"] == "book_site_visit"
    ));
    assert!(has(
        &|e| e["event"] == "tool_result" && e["sync"] == "success"
    ));
    assert!(has(&|e| e["event"] == "transcript"
        && e["who"] == "caller"
        && e["final"] == true));
    assert!(has(&|e| e["event"] == "transcript"
        && e["who"] == "agent"
        && e["text"] == r2.heard.as_str()));
    assert!(events.iter().all(|e| e["at_ms"].as_u64().is_some()));
    assert!(
        events
            .iter()
            .filter(|e| e["event"] != "transcript" || e["who"] != "agent")
            .any(|e| e["at_ms"].as_u64() > Some(0))
    );
}

#[tokio::test(start_paused = true)]
async fn context_stays_bounded_over_1000_turns() {
    const TURNS: usize = 1000;
    let lines: Vec<String> = (0..TURNS)
        .map(|i| match i % 3 {
            0 => format!(
                "I am looking for a {} bedroom apartment in Whitefield",
                1 + i % 4
            ),
            1 => "what is the price".to_owned(),
            _ => "book a site visit for tomorrow".to_owned(),
        })
        .collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let script = (0..TURNS)
        .map(|i| Step::Say(format!("Reply number {i} is here.")))
        .collect();
    let k = kit(FakeStt::new(&refs), script);
    let mut call = Call::start(&k.rt);
    call.until_done(1).await;
    for turn in 0..TURNS as u64 {
        call.say(12, false).await;
        call.until_done(turn + 2).await;
    }
    call.end().await;

    let records = k.records.lock().expect("records");
    assert_eq!(records.len(), TURNS);
    let requests = k.reasoner.requests.lock().expect("requests");
    assert!(requests.len() >= TURNS);
    let bound = Memory::new(k.rt.def.agent.recent_turns)
        .context_bound(k.rt.system_prompt().chars().count());
    let sizes: Vec<usize> = requests
        .iter()
        .map(|r| context_chars(&r.messages))
        .collect();
    let largest = sizes.iter().copied().max().unwrap_or_default();
    assert!(
        largest <= bound,
        "context of {largest} chars over the bound {bound}"
    );
    // Working memory is full after 4 turns; from then on the size depends
    // on the words, not on how long the call has run.
    let early = sizes[10..40].iter().copied().max().unwrap_or_default();
    let late = sizes[sizes.len() - 30..]
        .iter()
        .copied()
        .max()
        .unwrap_or_default();
    assert!(
        late <= early + 64,
        "context grew from {early} to {late} chars"
    );
    let recent = requests.last().map_or(0, |r| {
        r.messages.iter().filter(|m| m.role == Role::User).count()
    });
    assert_eq!(recent, 5, "4 remembered turns and the new one");
}

/// A reasoner that never answers, then one that fails: each turn speaks
/// the recovery line, the first within the first-token deadline.
#[tokio::test(start_paused = true)]
async fn recovery_line_when_the_reasoner_hangs_then_one_retry() {
    let k = kit(
        FakeStt::new(&["what is the price", "how much does it cost"]),
        vec![
            Step::Hang,
            Step::Say("It costs one crore.".into()),
            Step::Fail,
            Step::Fail,
        ],
    );
    let deadline = Duration::from_millis(k.rt.def.reasoner.first_token_ms);
    let mut call = Call::start(&k.rt);
    call.until_done(1).await;

    // Turn 1: the reasoner hangs; the recovery line plays at its deadline,
    // then the retry's answer.
    call.say(12, false).await;
    let stopped = Instant::now();
    call.until_playing(2).await;
    let waited = stopped.elapsed();
    assert!(
        waited >= deadline && waited <= deadline + Duration::from_millis(200),
        "recovery after {waited:?}, deadline {deadline:?}"
    );
    call.until_done(2).await;

    // Turn 2: it fails twice; the recovery line, and no third attempt.
    call.say(12, false).await;
    call.until_done(3).await;
    call.end().await;

    let records = k.records.lock().expect("records");
    assert_eq!(records.len(), 2);
    let recovery = &k.rt.def.agent.recovery_line;
    assert_eq!(records[0].reply, format!("{recovery} It costs one crore."));
    assert_eq!(records[1].reply, *recovery);
    assert_eq!(k.reasoner.requests.lock().expect("requests").len(), 4);
}

/// With a fallback reasoner, the retry after the recovery line goes to it.
#[tokio::test(start_paused = true)]
async fn the_fallback_reasoner_answers_after_the_recovery_line() {
    let k = kit_with(KitOptions {
        stt: FakeStt::new(&["what is the price"]),
        script: vec![Step::Hang],
        fallback: Some(vec![Step::Say("It costs one crore.".into())]),
        ..KitOptions::default()
    });
    let mut call = Call::start(&k.rt);
    call.until_done(1).await;
    call.say(12, false).await;
    call.until_done(2).await;
    call.end().await;

    let records = k.records.lock().expect("records");
    let recovery = &k.rt.def.agent.recovery_line;
    assert_eq!(records[0].reply, format!("{recovery} It costs one crore."));
    assert_eq!(records[0].reasoner, "fake-reasoner");
    assert_eq!(k.reasoner.requests.lock().expect("requests").len(), 1);
    let fallback = k.fallback.as_ref().expect("fallback");
    assert_eq!(fallback.requests.lock().expect("requests").len(), 1);
    let trace = read_trace(&k);
    assert!(trace.contains("reasoning retried"), "{trace}");
}

const ESCALATION: &str = r#"
[escalation]
target = "sip:sales@127.0.0.1:5090"
line = "Let me connect you to a colleague."
unavailable_line = "Nobody is free, so let us carry on."
dtmf = "0"
"#;

fn read_trace(k: &Kit) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(k.traces.path()).expect("traces") {
        out.push_str(&std::fs::read_to_string(e.expect("entry").path()).expect("trace"));
    }
    out
}

/// An essential source fails: the escalation line, then the hand-over;
/// the caller is not answered by the agent meanwhile; a failed transfer
/// gives the call back to the agent with the unavailable line.
#[tokio::test(start_paused = true)]
async fn an_essential_source_failure_escalates_to_a_person() {
    let k = kit_with(KitOptions {
        stt: FakeStt::new(&[
            "I am looking for a three bedroom apartment in Whitefield",
            "what is the price",
        ]),
        script: vec![Step::Say("It costs a lot.".into())],
        extra: ESCALATION,
        inventory_fails: true,
        ..KitOptions::default()
    });
    let mut call = Call::start(&k.rt);
    call.until_done(1).await;
    call.say(12, false).await;
    call.until_done(2).await;
    for _ in 0..10 {
        call.tick(false).await;
    }
    let reason = call.escalated.clone().expect("escalated");
    assert!(reason.contains("inventory"), "{reason}");
    assert!(
        k.reasoner.requests.lock().expect("requests").is_empty(),
        "the reasoner was not asked"
    );

    // While the transfer runs, the caller's speech is not even recognised.
    call.say(12, false).await;
    for _ in 0..100 {
        call.tick(false).await;
    }
    assert!(
        call.queue.is_empty() && call.done.len() == 2,
        "{:?}",
        call.done
    );

    // The transfer fails: the agent takes the call back.
    call.event(AgentInput::Escalation {
        what: "bridge failed".into(),
        why: "486 Busy Here".into(),
        failed: true,
    })
    .await;
    call.until_done(3).await;
    call.say(12, false).await;
    call.until_done(4).await;
    call.end().await;

    let records = k.records.lock().expect("records");
    let replies: Vec<&str> = records.iter().map(|r| r.reply.as_str()).collect();
    assert_eq!(
        replies,
        [
            "Let me connect you to a colleague.",
            "Nobody is free, so let us carry on.",
            "It costs a lot.",
        ]
    );
    assert!(records[0].partial, "{:?}", records[0]);
    let trace = read_trace(&k);
    for needle in [
        "escalation line",
        "essential source inventory failed",
        "bridge failed",
    ] {
        assert!(trace.contains(needle), "{needle} missing from {trace}");
    }
}

/// Without `[escalation]`, the same failure gets an answer flagged partial.
#[tokio::test(start_paused = true)]
async fn without_escalation_an_essential_failure_is_answered_partially() {
    let k = kit_with(KitOptions {
        stt: FakeStt::new(&["I am looking for a three bedroom apartment in Whitefield"]),
        script: vec![Step::Say("Some listings did not load.".into())],
        inventory_fails: true,
        ..KitOptions::default()
    });
    let mut call = Call::start(&k.rt);
    call.until_done(1).await;
    call.say(12, false).await;
    call.until_done(2).await;
    call.end().await;
    assert!(call_escalated_none(&k));
    let records = k.records.lock().expect("records");
    assert!(records[0].partial);
    assert_eq!(records[0].reply, "Some listings did not load.");
    let requests = k.reasoner.requests.lock().expect("requests");
    assert!(requests[0].retrieval.partial);
}

fn call_escalated_none(k: &Kit) -> bool {
    !read_trace(k).contains("\"escalate\"")
}

/// The escalation key: the line, then the hand-over.
#[tokio::test(start_paused = true)]
async fn the_escalation_key_hands_the_call_over() {
    let k = kit_with(KitOptions {
        extra: ESCALATION,
        ..KitOptions::default()
    });
    let mut call = Call::start(&k.rt);
    call.until_done(1).await;
    call.event(AgentInput::Dtmf(voxtrunk_media::dtmf::Digit {
        digit: '5',
        duration_ms: 100,
        timestamp: voxtrunk_media::rtp::MediaTime(0),
    }))
    .await;
    for _ in 0..50 {
        call.tick(false).await;
    }
    assert!(call.done.len() == 1, "5 is not the escalation key");
    call.event(AgentInput::Dtmf(voxtrunk_media::dtmf::Digit {
        digit: '0',
        duration_ms: 100,
        timestamp: voxtrunk_media::rtp::MediaTime(0),
    }))
    .await;
    call.until_done(2).await;
    for _ in 0..10 {
        call.tick(false).await;
    }
    assert_eq!(call.escalated.as_deref(), Some("the caller pressed 0"));

    // The caller's side reports the transfer done and the call ends at
    // once: the frames stop first, and the outcome, queued as the call
    // goes, still reaches the trace.
    call.frames = None;
    for _ in 0..5 {
        tokio::task::yield_now().await;
    }
    call.event(AgentInput::Escalation {
        what: "transferred".into(),
        why: "NOTIFY reported 200".into(),
        failed: false,
    })
    .await;
    call.end().await;
    let trace = read_trace(&k);
    assert!(trace.contains("NOTIFY reported 200"), "{trace}");
}

/// The recogniser fails: the failure line, with the escalation key as a
/// menu; the reasoner is not asked.
#[tokio::test(start_paused = true)]
async fn a_failing_recogniser_gets_the_failure_line_and_the_key_menu() {
    let k = kit_with(KitOptions {
        stt: FakeStt::new(&["!fail"]),
        extra: ESCALATION,
        ..KitOptions::default()
    });
    let mut call = Call::start(&k.rt);
    call.until_done(1).await;
    call.say(12, false).await;
    call.until_done(2).await;
    call.end().await;
    let records = k.records.lock().expect("records");
    assert_eq!(
        records[0].reply,
        "Sorry, I am having trouble hearing you. Press 0 to speak with a colleague."
    );
    assert!(k.reasoner.requests.lock().expect("requests").is_empty());
    assert!(read_trace(&k).contains("stt failure line"));
}

fn heard(text: &str, language: &str, confidence: f32) -> Transcript {
    Transcript {
        text: text.into(),
        confidence,
        language: language.into(),
        is_final: true,
    }
}

#[test]
fn the_language_stays_locked_until_n_confident_utterances_in_a_row() {
    let def: AgentDefinition = toml::from_str(DEFINITION).expect("definition");
    assert_eq!(def.agent.language_switch_after, 3);
    let mut g = LanguageGuard::new(&def.agent);
    let steps = [
        (heard("hola", "es-ES", 0.9), "en-US", false),
        (heard("buenos dias", "es-ES", 0.9), "en-US", false),
        // Unsure: the streak starts again.
        (heard("quiero", "es-ES", 0.5), "en-US", false),
        (heard("hola", "es-ES", 0.9), "en-US", false),
        (heard("hola", "es-ES", 0.9), "en-US", false),
        (heard("una casa", "es-ES", 0.95), "es-ES", true),
        (heard("gracias", "es-ES", 0.9), "es-ES", false),
        // One confident English utterance does not switch back.
        (heard("thank you", "en-US", 0.99), "es-ES", false),
        (heard("gracias", "es-ES", 0.9), "es-ES", false),
    ];
    for (i, (t, want, switched)) in steps.iter().enumerate() {
        assert_eq!(g.observe(t), (want.to_string(), *switched), "step {i}");
    }
}

/// The primary voice fails: the greeting and every reply are spoken by
/// the secondary, which is kept for the rest of the call once switched to.
#[tokio::test(start_paused = true)]
async fn a_failing_voice_is_replaced_by_the_secondary_for_the_rest_of_the_call() {
    let primary = Arc::new(FakeTts {
        label: Some("primary"),
        fail: true,
        ..FakeTts::default()
    });
    let secondary = Arc::new(FakeTts {
        label: Some("secondary"),
        ..FakeTts::default()
    });
    let k = kit_with_tts(
        FakeStt::new(&["what is the price", "how much does it cost"]),
        vec![
            Step::Say("It costs one crore. Parking is included.".into()),
            Step::Say("Registration is extra.".into()),
        ],
        vec![primary.clone(), secondary.clone()],
    );
    let mut call = Call::start(&k.rt);
    let greeting = call.until_done(1).await;
    assert!(greeting.played_samples > 0, "the greeting was spoken");
    for utterance in [2, 3] {
        call.say(12, false).await;
        let reply = call.until_done(utterance).await;
        assert!(reply.played_samples > 0, "reply {utterance} was spoken");
    }
    call.end().await;

    let records = k.records.lock().expect("records");
    assert_eq!(records.len(), 2);
    for r in records.iter() {
        assert_eq!(r.tts, "secondary", "{r:?}");
        assert!(!r.reply.is_empty() && r.heard == r.reply, "{r:?}");
    }
    // The greeting tried the primary once; the first reply's first sentence
    // once more, then never again.
    assert_eq!(primary.calls.load(Ordering::Relaxed), 2);
    assert!(secondary.calls.load(Ordering::Relaxed) >= 4);
}

/// A turn with nothing recognised gets the fallback line without asking
/// the reasoner.
#[tokio::test(start_paused = true)]
async fn nothing_recognised_gets_the_fallback_line() {
    let k = kit(
        FakeStt::new(&["", "what is the price"]),
        vec![Step::Say("It costs one crore.".into())],
    );
    let mut call = Call::start(&k.rt);
    call.until_done(1).await;
    call.say(12, false).await;
    call.until_done(2).await;
    assert!(k.reasoner.requests.lock().expect("requests").is_empty());
    call.say(12, false).await;
    call.until_done(3).await;
    call.end().await;
    let records = k.records.lock().expect("records");
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].reply, k.rt.def.agent.fallback_line);
    assert_eq!(records[1].reply, "It costs one crore.");
    assert_eq!(k.reasoner.requests.lock().expect("requests").len(), 1);
}
