//! What all calls of one agent share: the definition, the understanding
//! model, the engines, the knowledge sources, the CRM, the tools and the
//! telemetry sinks — built once when the server starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use dashmap::DashMap;
use tokio::sync::OnceCell;
use tracing::{info, warn};
use voxtrunk_media::resample::Resampler;
use voxtrunk_media::session::PCM_RATE;

use super::crm::http::{HttpCrm, HttpCrmConfig};
use super::crm::source::{AvailabilitySource, CrmSource};
use super::crm::sqlite::{SqliteCrm, SqliteCrmConfig, VisitingHours};
use super::crm::{CallRecord, Contact, Crm};
use super::definition::{AgentDefinition, IntentSection, TtsEngine};
use super::memory::Memory;
use super::nlu::Nlu;
use super::outbox::{
    ContactUpdate, CrmWrite, Outbox, OutboxConfig, call_key, contact_key, system_clock,
};
use super::provider::{
    AgentError, Query, Reasoner, Retrieval, Retriever, SlotValue, SpeechToText, TextToSpeech, Tool,
    ToolSpec,
};
use super::reason::openai::{OpenAiConfig, OpenAiReasoner};
use super::reason::rules::RulesReasoner;
use super::retrieve::docs::DocumentSource;
use super::retrieve::http::HttpSource;
use super::retrieve::orchestrator::{RetrievalOrchestrator, RetrievalOutcome, SourceConfig};
use super::session::SessionInfo;
use super::stt::pocketsphinx::{PocketSphinx, PsConfig};
use super::telemetry::Telemetry;
use super::tools::BookSiteVisit;
use super::tts::espeak::{EspeakConfig, EspeakNg};
use super::tts::flite::{Flite, FliteConfig};
use crate::inference::{Inference, Priority};

/// Today's date, injectable for tests.
pub type Today = Arc<dyn Fn() -> NaiveDate + Send + Sync>;

/// The shared parts of one agent.
pub struct AgentRuntime {
    /// The definition.
    pub def: AgentDefinition,
    /// Intent and slot extraction.
    pub nlu: Nlu,
    /// Speech recognition.
    pub stt: Arc<dyn SpeechToText>,
    /// Speech synthesis, primary first.
    pub tts: Vec<Arc<dyn TextToSpeech>>,
    /// Reasoning.
    pub reasoner: Arc<dyn Reasoner>,
    /// Tried once after the recovery line (`None`: `reasoner` again).
    pub fallback_reasoner: Option<Arc<dyn Reasoner>>,
    /// Knowledge.
    pub retrieval: Arc<RetrievalOrchestrator>,
    /// Actions.
    pub tools: Vec<Arc<dyn Tool>>,
    /// The CRM (call records at hang-up, caller profile at answer).
    pub crm: Option<Arc<dyn Crm>>,
    /// The durable queue of CRM writes; its delivery task is started with
    /// the server ([`Outbox::run`]).
    pub outbox: Option<Arc<Outbox>>,
    /// Turn records.
    pub telemetry: Telemetry,
    /// Directory of call traces.
    pub traces: Option<PathBuf>,
    /// The server's inference pools (shared by every agent).
    pub inference: Inference,
    today: Today,
    greeting: OnceCell<Option<Arc<[i16]>>>,
    /// Fixed lines synthesized by the primary voice, by text.
    lines: DashMap<String, Arc<[i16]>>,
}

impl std::fmt::Debug for AgentRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentRuntime")
            .field("agent", &self.def.agent.name)
            .field("definition", &self.def.path)
            .field("stt", &self.stt.name())
            .field("reasoner", &self.reasoner.name())
            .finish_non_exhaustive()
    }
}

/// The parts an [`AgentRuntime`] is assembled from.
pub struct Parts {
    /// Speech recognition.
    pub stt: Arc<dyn SpeechToText>,
    /// Speech synthesis, primary first.
    pub tts: Vec<Arc<dyn TextToSpeech>>,
    /// Reasoning.
    pub reasoner: Arc<dyn Reasoner>,
    /// Tried once after the recovery line (`None`: `reasoner` again).
    pub fallback_reasoner: Option<Arc<dyn Reasoner>>,
    /// Knowledge.
    pub retrieval: Arc<RetrievalOrchestrator>,
    /// Actions.
    pub tools: Vec<Arc<dyn Tool>>,
    /// The CRM.
    pub crm: Option<Arc<dyn Crm>>,
    /// The durable queue of CRM writes.
    pub outbox: Option<Arc<Outbox>>,
    /// Places the understanding model should know.
    pub places: Vec<String>,
    /// Turn records.
    pub telemetry: Telemetry,
    /// Directory of call traces.
    pub traces: Option<PathBuf>,
    /// Today's date.
    pub today: Today,
    /// The server's inference pools.
    pub inference: Inference,
}

impl AgentRuntime {
    /// Assembles a runtime.
    pub fn from_parts(def: AgentDefinition, parts: Parts) -> Self {
        AgentRuntime {
            nlu: Nlu::new(&def, &parts.places),
            def,
            stt: parts.stt,
            tts: parts.tts,
            reasoner: parts.reasoner,
            fallback_reasoner: parts.fallback_reasoner,
            retrieval: parts.retrieval,
            tools: parts.tools,
            crm: parts.crm,
            outbox: parts.outbox,
            telemetry: parts.telemetry,
            traces: parts.traces,
            inference: parts.inference,
            today: parts.today,
            greeting: OnceCell::new(),
            lines: DashMap::new(),
        }
    }

    /// Today (for relative dates).
    pub fn today(&self) -> NaiveDate {
        (self.today)()
    }

    /// The instructions for model reasoners.
    pub fn system_prompt(&self) -> String {
        self.def.reasoner.system_prompt.clone().unwrap_or_else(|| {
            format!(
                "You are {}, a phone agent. Answer in one or two short spoken sentences, only from the \
                 knowledge given; if it is missing, say so. Use the tools to book.",
                self.def.agent.name
            )
        })
    }

    /// Tool specs for the reasoner.
    pub fn tool_specs(&self) -> Vec<ToolSpec> {
        self.tools.iter().map(|t| t.spec()).collect()
    }

    /// A tool by name.
    pub fn tool(&self, name: &str) -> Option<Arc<dyn Tool>> {
        self.tools.iter().find(|t| t.spec().name == name).cloned()
    }

    /// The greeting as 16 kHz PCM, synthesized once (at start-up by
    /// [`AgentRuntime::prewarm`]) and reused.
    pub async fn greeting_audio(&self) -> Option<Arc<[i16]>> {
        self.greeting
            .get_or_init(|| async {
                let tts = self.tts.clone();
                let text = self.def.agent.greeting.clone();
                self.inference
                    .tts
                    .run(Priority::Prompt, move || synthesize_all(&tts, &text))
                    .await
                    .ok()
                    .flatten()
            })
            .await
            .clone()
    }

    /// The lines the agent says without the reasoner: the recovery and
    /// fallback lines, the recogniser's failure line (with its key menu)
    /// and the escalation lines.
    pub fn fixed_lines(&self) -> Vec<String> {
        let d = &self.def;
        let mut lines = vec![
            d.agent.recovery_line.clone(),
            d.agent.fallback_line.clone(),
            d.stt.failure_line.clone(),
        ];
        if let Some(e) = &d.escalation {
            lines.push(stt_failure_menu(&d.stt.failure_line, e.dtmf));
            lines.push(e.line.clone());
            lines.push(e.unavailable_line.clone());
        }
        lines.retain(|l| !l.trim().is_empty());
        lines.dedup();
        lines
    }

    /// Loads what the first call would otherwise wait for: the greeting
    /// (prompt priority) and every fixed line (background priority), in
    /// the primary voice, through the TTS pool. Returns how many lines
    /// are cached.
    pub async fn prewarm(&self) -> usize {
        let greeting = self.greeting_audio().await.is_some();
        let mut cached = usize::from(greeting);
        let Some(tts) = self.tts.first().cloned() else {
            return cached;
        };
        for line in self.fixed_lines() {
            if self.lines.contains_key(&line) {
                continue;
            }
            let tts = Arc::clone(&tts);
            let text = line.clone();
            let pcm = self
                .inference
                .tts
                .run(Priority::Background, move || {
                    synthesize_all(std::slice::from_ref(&tts), &text)
                })
                .await
                .ok()
                .flatten();
            if let Some(pcm) = pcm {
                self.lines.insert(line, pcm);
                cached += 1;
            }
        }
        cached
    }

    /// A fixed line in the primary voice, when it is cached.
    pub fn cached_line(&self, text: &str) -> Option<Arc<[i16]>> {
        self.lines.get(text).map(|l| Arc::clone(&l))
    }

    /// An intent of the definition by name.
    fn intent(&self, name: &str) -> Option<&IntentSection> {
        self.def.intent.iter().find(|i| i.name == name)
    }

    /// The retrieval query for an intent, if it consults any source.
    pub fn query(
        &self,
        intent: &str,
        text: &str,
        slots: &BTreeMap<String, SlotValue>,
        caller: Option<String>,
    ) -> Option<Query> {
        let i = self.intent(intent)?;
        (!i.retrieve.is_empty()).then(|| Query {
            text: text.to_owned(),
            intent: Some(intent.to_owned()),
            slots: slots.clone(),
            caller,
            limit: 5,
        })
    }

    /// Retrieves from the sources an intent names.
    pub async fn retrieve(&self, intent: &str, query: &Query) -> RetrievalOutcome {
        let names: Vec<String> = self
            .intent(intent)
            .map(|i| i.retrieve.iter().map(|r| r.get_ref().clone()).collect())
            .unwrap_or_default();
        self.retrieval.retrieve_from(query, &names).await
    }

    /// Slots an intent keeps from its retrieval results (`remember`).
    pub fn remembered_slots(
        &self,
        intent: &str,
        retrieval: &Retrieval,
    ) -> Vec<(String, SlotValue)> {
        let Some(i) = self.intent(intent) else {
            return Vec::new();
        };
        i.remember
            .iter()
            .filter_map(|(slot, path)| {
                let (source, field) = path.split_once('.')?;
                let doc = retrieval.documents.iter().find(|d| d.source == source)?;
                let v = if field == "id" && !doc.fields.contains_key("id") {
                    doc.id.clone()
                } else {
                    doc.fields
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(field))?
                        .1
                        .clone()
                };
                Some((slot.clone(), SlotValue::Text(v)))
            })
            .collect()
    }

    /// True when an intent ends the call.
    pub fn hangs_up(&self, intent: &str) -> bool {
        self.intent(intent).is_some_and(|i| i.hangup)
    }

    /// What the CRM knows about a caller, in one line.
    pub async fn caller_profile(&self, caller: Option<&str>) -> Option<String> {
        let (crm, phone) = (self.crm.as_ref()?, caller?);
        let contact = tokio::time::timeout(
            std::time::Duration::from_millis(300),
            crm.find_contact(phone),
        )
        .await
        .ok()?
        .ok()
        .flatten();
        let calls = tokio::time::timeout(
            std::time::Duration::from_millis(300),
            crm.recent_calls(phone, 3),
        )
        .await
        .ok()?
        .unwrap_or_default();
        let mut parts = Vec::new();
        if let Some(name) = contact.and_then(|c| c.name).filter(|n| !n.is_empty()) {
            parts.push(format!("returning caller {name}"));
        }
        for c in calls {
            if !c.summary.is_empty() {
                parts.push(format!("{}: {}", c.started_at, c.summary));
            }
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }

    /// Records the call in the CRM when it ends: its summary, and the name
    /// the caller gave as the contact's name. With an outbox both are
    /// committed to it (keys `call:<session id>`, `contact:<session id>`)
    /// before this returns and delivered by its task; without one they
    /// are written straight to the CRM, within 2 s each.
    pub async fn finish_call(&self, info: &SessionInfo, memory: &Memory) {
        let (Some(crm), Some(phone)) = (self.crm.as_ref(), info.caller.as_ref()) else {
            return;
        };
        let facts: Vec<String> = memory
            .facts()
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_text()))
            .collect();
        let summary = format!("{} turns; {}", memory.turns(), facts.join(", "));
        let record = CallRecord {
            call_id: info.session_id.clone(),
            phone: phone.clone(),
            started_at: info.started_at.clone(),
            summary,
        };
        // A name the caller gave becomes the contact's name; notes stay.
        let name = match memory.facts().get("name") {
            Some(SlotValue::Text(name)) => Some(name.clone()),
            _ => None,
        };
        if let Some(outbox) = &self.outbox {
            let mut writes = vec![(call_key(&info.session_id), CrmWrite::Call(record))];
            if let Some(name) = name {
                writes.push((
                    contact_key(&info.session_id),
                    CrmWrite::Contact(ContactUpdate {
                        phone: phone.clone(),
                        name,
                    }),
                ));
            }
            for (key, write) in writes {
                if let Err(e) = outbox.enqueue(&key, &write) {
                    warn!(key, kind = write.kind().as_str(), error = %e, "CRM write not queued");
                }
            }
            return;
        }
        let limit = Duration::from_secs(2);
        match tokio::time::timeout(limit, crm.record_call(record)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(crm = crm.name(), error = %e, "call record not written"),
            Err(_) => warn!(crm = crm.name(), "call record not written: CRM timed out"),
        }
        let Some(name) = name else {
            return;
        };
        let update = async {
            let mut contact = crm.find_contact(phone).await?.unwrap_or(Contact {
                phone: phone.clone(),
                name: None,
                notes: String::new(),
                updated_at: String::new(),
            });
            if contact.name.as_deref() == Some(name.as_str()) {
                return Ok(());
            }
            contact.name = Some(name);
            crm.upsert_contact(contact).await.map(drop)
        };
        match tokio::time::timeout(limit, update).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(crm = crm.name(), error = %e, "contact name not written"),
            Err(_) => warn!(crm = crm.name(), "contact name not written: CRM timed out"),
        }
    }
}

/// Synthesizes `text` completely at 16 kHz with the first provider that
/// works (start-up work: greetings).
pub fn synthesize_all(tts: &[Arc<dyn TextToSpeech>], text: &str) -> Option<Arc<[i16]>> {
    for engine in tts {
        let mut pcm = Vec::new();
        let mut resampler: Option<Resampler> = None;
        let ok = engine.synthesize(text, &mut |chunk| {
            if chunk.rate == PCM_RATE {
                pcm.extend_from_slice(&chunk.samples);
                return true;
            }
            let r = match &mut resampler {
                Some(r) => r,
                None => match Resampler::new(chunk.rate, PCM_RATE) {
                    Ok(r) => resampler.insert(r),
                    Err(_) => return false,
                },
            };
            r.process(&chunk.samples, &mut pcm);
            true
        });
        match ok {
            Ok(()) if !pcm.is_empty() => return Some(pcm.into()),
            Ok(()) => {}
            Err(e) => warn!(provider = engine.name(), error = %e, "synthesis failed"),
        }
    }
    None
}

// --- building from a definition ------------------------------------------

/// Fields of documents whose values are places the caller may name.
const PLACE_FIELDS: [&str; 4] = ["locality", "zone", "city", "area"];

/// Opens a parent directory for a file the agent writes.
fn ensure_parent(path: &Path) -> Result<(), AgentError> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir).map_err(|e| {
            AgentError::config("agent", format!("cannot create {}: {e}", dir.display()))
        }),
        _ => Ok(()),
    }
}

impl AgentRuntime {
    /// Builds everything a definition names: the recogniser with a model
    /// of its phrases, the voices, the reasoner, the CRM, the knowledge
    /// sources, the tools and the telemetry files. Blocking (loads models,
    /// opens files): call at start-up.
    ///
    /// # Errors
    /// What cannot be built, naming the definition file and the part.
    pub fn load(def: AgentDefinition, inference: Inference) -> Result<AgentRuntime, AgentError> {
        let file = def.path.display().to_string();
        let fail = |part: &str, e: &dyn std::fmt::Display| {
            AgentError::config("agent", format!("{file}: {part}: {e}"))
        };

        let mut ps = recogniser_config(&def);
        if def.stt.decoders.is_none() {
            // As many decoders as utterances the server recognises at once.
            ps.decoders = inference.stt_streams.snapshot().workers;
        }
        let stt = PocketSphinx::new(ps).map_err(|e| fail("stt", &e))?;
        let report = stt.report();
        info!(
            agent = %def.agent.name,
            language = stt.language(),
            vocabulary = report.vocabulary,
            sentences = report.sentences,
            guessed = %report.guessed.iter().cloned().collect::<Vec<_>>().join(" "),
            "speech recogniser ready"
        );

        let mut tts: Vec<Arc<dyn TextToSpeech>> = Vec::new();
        for engine in std::iter::once(&def.tts.primary).chain(def.tts.secondary.as_ref()) {
            tts.push(build_tts(engine).map_err(|e| fail("tts", &e))?);
        }

        let reasoner = build_reasoner(&def, &def.reasoner).map_err(|(part, e)| fail(part, &e))?;
        let fallback_reasoner = match def.reasoner.fallback.as_deref() {
            Some(f) => Some(build_reasoner(&def, f).map_err(|(part, e)| fail(part, &e))?),
            None => None,
        };

        let crm: Option<Arc<dyn Crm>> = if let Some(path) = &def.crm.sqlite {
            let path = def.resolve(path);
            ensure_parent(&path)?;
            let hours = &def.crm.visiting_hours;
            let visiting_hours = VisitingHours::new(&hours.open, &hours.close, hours.slot_minutes)
                .map_err(|e| fail("crm.visiting_hours", &e))?;
            let crm = SqliteCrm::open(&SqliteCrmConfig {
                path,
                visiting_hours,
            })
            .map_err(|e| fail("crm.sqlite", &e))?;
            info!(agent = %def.agent.name, path = %crm.path().display(), "CRM: embedded SQLite");
            Some(Arc::new(crm))
        } else if let Some(http) = &def.crm.http {
            let mut config = HttpCrmConfig::new(http.base_url.clone());
            config.timeout = Duration::from_millis(http.timeout_ms);
            if let Some(var) = &http.token_env {
                let token = std::env::var(var).map_err(|_| {
                    fail(
                        "crm.http.token_env",
                        &format!("environment variable {var} is not set"),
                    )
                })?;
                config.auth_header = Some(("Authorization".to_owned(), format!("Bearer {token}")));
            }
            Some(Arc::new(
                HttpCrm::new(&config).map_err(|e| fail("crm.http", &e))?,
            ))
        } else {
            None
        };

        let mut places = Vec::new();
        let mut sources = Vec::new();
        let mut max_ages = Vec::new();
        for k in &def.knowledge {
            let retriever: Arc<dyn Retriever> = match k.kind.as_str() {
                "documents" => {
                    let paths: Vec<PathBuf> = k.paths.iter().map(|p| def.resolve(p)).collect();
                    let docs = DocumentSource::load(&k.name, &paths)
                        .map_err(|e| fail(&format!("knowledge {}", k.name), &e))?
                        .with_auto_reload(Duration::from_secs(5));
                    if docs.is_empty() {
                        warn!(agent = %def.agent.name, source = %k.name, "knowledge source has no documents");
                    } else {
                        info!(agent = %def.agent.name, source = %k.name, documents = docs.len(), "knowledge loaded");
                    }
                    for d in docs.documents() {
                        for (field, value) in &d.fields {
                            if PLACE_FIELDS.contains(&field.to_ascii_lowercase().as_str()) {
                                places.push(value.clone());
                            }
                        }
                    }
                    Arc::new(docs)
                }
                "http" => {
                    let url = k.url.as_ref().map(|u| u.get_ref().as_str()).unwrap_or("");
                    let source =
                        HttpSource::new(&k.name, url, Duration::from_millis(k.deadline_ms))
                            .map_err(|e| fail(&format!("knowledge {}", k.name), &e))?;
                    info!(agent = %def.agent.name, source = %k.name, url, "knowledge over HTTP");
                    Arc::new(source)
                }
                kind => {
                    let Some(crm) = crm.clone() else {
                        return Err(fail(
                            &format!("knowledge {}", k.name),
                            &format!("kind {kind} needs a [crm] section"),
                        ));
                    };
                    if kind == "crm" {
                        Arc::new(CrmSource::new(crm).with_name(&k.name))
                    } else {
                        Arc::new(AvailabilitySource::new(crm).with_name(&k.name))
                    }
                }
            };
            sources.push(SourceConfig {
                retriever,
                deadline: Duration::from_millis(k.deadline_ms),
                cache_ttl: Duration::from_secs(k.cache_ttl_s),
                essential: k.essential,
            });
            if let Some(max_age) = &k.max_age_s {
                max_ages.push((k.name.clone(), Duration::from_secs(*max_age.get_ref())));
            }
        }
        let retrieval = max_ages.iter().fold(
            RetrievalOrchestrator::new(sources),
            |orchestrator, (name, max_age)| orchestrator.with_max_age(name, *max_age),
        );
        places.sort();
        places.dedup();

        let outbox = match (&crm, &def.crm.outbox) {
            (Some(crm), Some(o)) => {
                let path = def.resolve(&o.path);
                ensure_parent(&path)?;
                let config = OutboxConfig {
                    path,
                    first_retry: Duration::from_millis(o.first_retry_ms),
                    max_retry: Duration::from_secs(o.max_retry_s),
                    give_up_after: Duration::from_secs(o.give_up_s),
                    attempt_timeout: Duration::from_millis(o.attempt_ms),
                };
                let outbox = Outbox::open(config, Arc::clone(crm), system_clock())
                    .map_err(|e| fail("crm.outbox", &e))?;
                info!(agent = %def.agent.name, path = %outbox.path().display(), "CRM writes go through the outbox");
                Some(Arc::new(outbox))
            }
            _ => None,
        };
        let mut tools: Vec<Arc<dyn Tool>> = Vec::new();
        if let Some(crm) = &crm {
            let tool = match &outbox {
                Some(o) => BookSiteVisit::with_writer(Arc::clone(crm), o.clone()),
                None => BookSiteVisit::new(Arc::clone(crm)),
            };
            tools.push(Arc::new(
                tool.with_default_slot(def.crm.visiting_hours.open.clone()),
            ));
        }
        for i in &def.intent {
            if let Some(tool) = &i.tool
                && !tools.iter().any(|t| t.spec().name == *tool.get_ref())
            {
                return Err(fail(
                    &format!("intent {}", i.name),
                    &format!(
                        "tool {} is not available (book_site_visit needs a [crm] section)",
                        tool.get_ref()
                    ),
                ));
            }
        }

        let turns = def.telemetry.turns.as_ref().map(|p| def.resolve(p));
        if let Some(p) = &turns {
            ensure_parent(p)?;
        }
        let telemetry =
            Telemetry::new(turns.as_deref()).map_err(|e| fail("telemetry.turns", &e))?;
        let traces = def.telemetry.traces.as_ref().map(|p| def.resolve(p));
        if let Some(dir) = &traces {
            std::fs::create_dir_all(dir).map_err(|e| fail("telemetry.traces", &e))?;
        }

        Ok(AgentRuntime::from_parts(
            def,
            Parts {
                stt: Arc::new(stt),
                tts,
                reasoner,
                fallback_reasoner,
                retrieval: Arc::new(retrieval),
                tools,
                crm,
                outbox,
                places,
                telemetry,
                traces,
                today: Arc::new(|| chrono::Local::now().date_naive()),
                inference,
            },
        ))
    }
}

/// The recogniser's failure line with the escalation key as a menu.
pub fn stt_failure_menu(line: &str, key: Option<char>) -> String {
    let mut line = line.to_owned();
    if let Some(key) = key {
        line.push_str(&format!(" Press {key} to speak with a colleague."));
    }
    line
}

/// The recogniser an agent's `[stt]` section asks for: the Debian model
/// unless the definition names others, a domain model of its phrases.
pub fn recogniser_config(def: &AgentDefinition) -> PsConfig {
    let mut ps = PsConfig::debian(def.phrases());
    if let Some(dir) = &def.stt.model_dir {
        ps.model_dir = def.resolve(dir);
    }
    if let Some(dict) = &def.stt.dict {
        ps.dict = def.resolve(dict);
    }
    if let Some(n) = def.stt.decoders {
        ps.decoders = n.max(1);
    }
    if let Some(below) = def.stt.fallback_below {
        ps.fallback_below = below;
    }
    ps.language = Some(def.agent.language.clone());
    ps
}

fn build_tts(engine: &TtsEngine) -> Result<Arc<dyn TextToSpeech>, AgentError> {
    Ok(match engine.engine.as_str() {
        "flite" => {
            let mut config = FliteConfig::default();
            if let Some(v) = &engine.voice {
                config.voice.clone_from(v);
            }
            if let Some(rate) = engine.rate {
                config.rate_scale = 1.0 / rate.max(0.1);
            }
            let flite = Flite::new(config)?;
            info!(
                voice = flite.voice(),
                rate = flite.sample_rate(),
                "flite voice ready"
            );
            Arc::new(flite)
        }
        _ => {
            let mut config = EspeakConfig::default();
            if let Some(v) = &engine.voice {
                config.voice.clone_from(v);
            }
            if let Some(rate) = engine.rate {
                config.speed_wpm = (config.speed_wpm as f32 * rate).round() as u32;
            }
            Arc::new(EspeakNg::new(config)?)
        }
    })
}

/// Builds one reasoner of a definition (`section` is `[reasoner]` or its
/// fallback). Errors name the field.
fn build_reasoner(
    def: &AgentDefinition,
    section: &super::definition::ReasonerSection,
) -> Result<Arc<dyn Reasoner>, (&'static str, String)> {
    match section.engine.as_str() {
        "openai" => {
            let api_key = match &section.api_key_env {
                Some(var) => Some(std::env::var(var).map_err(|_| {
                    (
                        "reasoner.api_key_env",
                        format!("environment variable {var} is not set"),
                    )
                })?),
                None => None,
            };
            let config = OpenAiConfig {
                base_url: section.base_url.clone().unwrap_or_default(),
                model: section.model.clone().unwrap_or_default(),
                api_key,
                first_token_timeout: Duration::from_millis(section.first_token_ms),
                ..OpenAiConfig::default()
            };
            let reasoner = OpenAiReasoner::new(config).map_err(|e| ("reasoner", e.to_string()))?;
            info!(agent = %def.agent.name, endpoint = reasoner.endpoint(), "model reasoner");
            Ok(Arc::new(reasoner))
        }
        _ => Ok(Arc::new(RulesReasoner::new(def))),
    }
}
