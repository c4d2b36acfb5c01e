//! Agent definitions: one TOML file per agent, referenced from a dialplan
//! route (`app = "agent"`, `agent = "agents/realestate/agent.toml"`).
//! Relative paths inside it (knowledge files, databases, telemetry) are
//! relative to the definition file.
//!
//! ```toml
//! [agent]
//! name = "realestate"
//! language = "en-US"
//! greeting = "Hello, this is Asha from Greenfield Homes. How can I help?"
//!
//! [turn]                       # endpointing, ms
//! start_ms = 120
//! stop_ms = 600
//! barge_in_ms = 400
//!
//! [stt]                        # pocketsphinx with a domain model from the intents
//! extra_phrases = ["my name is ravi"]
//!
//! [tts]
//! primary = { engine = "flite", voice = "slt" }
//! secondary = { engine = "espeak-ng", voice = "en-us" }
//!
//! [reasoner]
//! engine = "rules"             # or "openai" with base_url, model, api_key_env
//!
//! [[knowledge]]
//! name = "inventory"
//! kind = "documents"           # documents | http | crm | booking
//! paths = ["knowledge/inventory.csv"]
//! deadline_ms = 150
//! essential = true
//! max_age_s = 86400            # flag data older than a day
//!
//! [[knowledge]]
//! name = "listings"
//! kind = "http"                # GET {url}?q=...&k=... → JSON documents
//! url = "http://127.0.0.1:9000/search"
//! deadline_ms = 150
//!
//! [crm]
//! sqlite = "var/crm.sqlite"    # or http = { base_url = "...", token_env = "..." }
//!
//! [telemetry]
//! turns = "var/turns.jsonl"
//! traces = "var/traces"
//!
//! [[intent]]
//! name = "search_property"
//! examples = ["I am looking for a three bedroom apartment in Whitefield"]
//! retrieve = ["inventory"]
//! [[intent.reply]]
//! when = ["hits:inventory"]
//! text = "{inventory.name} in {inventory.locality} is a {inventory.bhk} B H K at {inventory.price_words}."
//! [[intent.reply]]
//! text = "Which area would you like?"
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::config::ConfigError;

fn default_language() -> String {
    "en-US".to_owned()
}

/// `[agent]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// Name used in logs and telemetry.
    pub name: String,
    /// BCP 47 language.
    #[serde(default = "default_language")]
    pub language: String,
    /// Spoken when the call is answered.
    pub greeting: String,
    /// Spoken when the reasoner is too slow or fails.
    #[serde(default = "default_recovery")]
    pub recovery_line: String,
    /// Spoken when nothing in the definition matches.
    #[serde(default = "default_fallback")]
    pub fallback_line: String,
    /// Working memory: how many recent turns the reasoner sees.
    #[serde(default = "default_recent_turns")]
    pub recent_turns: usize,
    /// Language guard: the call's language stays `language` unless the
    /// recogniser reports one other language this many utterances in a row,
    /// each at least `language_confidence` sure.
    #[serde(default = "default_language_switch_after")]
    pub language_switch_after: u32,
    /// See `language_switch_after`.
    #[serde(default = "default_language_confidence")]
    pub language_confidence: f32,
}

fn default_stt_failure_line() -> String {
    "Sorry, I am having trouble hearing you.".to_owned()
}

fn default_language_switch_after() -> u32 {
    3
}

fn default_language_confidence() -> f32 {
    0.8
}

fn default_recovery() -> String {
    "Sorry, give me a moment.".to_owned()
}

fn default_fallback() -> String {
    "Sorry, I did not catch that. Could you say it again?".to_owned()
}

fn default_recent_turns() -> usize {
    6
}

/// `[turn]`: endpointing and barge-in, ms.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TurnSection {
    /// Speech before `SpeechStarted` while the agent is silent.
    pub start_ms: u32,
    /// Silence before `SpeechStopped`.
    pub stop_ms: u32,
    /// Speech (within 1 s) before the caller interrupts the agent.
    pub barge_in_ms: u32,
    /// Let the caller interrupt at all.
    pub barge_in: bool,
}

impl Default for TurnSection {
    fn default() -> Self {
        TurnSection {
            start_ms: 120,
            stop_ms: 600,
            barge_in_ms: 400,
            barge_in: true,
        }
    }
}

/// `[stt]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SttSection {
    /// Phrases added to the intents' examples for the domain model.
    pub extra_phrases: Vec<String>,
    /// Acoustic model directory (default: Debian's pocketsphinx-en-us).
    pub model_dir: Option<PathBuf>,
    /// Pronunciation dictionary.
    pub dict: Option<PathBuf>,
    /// Decoders kept ready (concurrent utterances).
    pub decoders: Option<usize>,
    /// Utterances the domain model recognises with less confidence than
    /// this (0–1) are decoded again with the general model, which costs
    /// about a third of the utterance's duration in latency.
    pub fallback_below: Option<f32>,
    /// Said when the recogniser fails (an engine error, not silence); with
    /// an escalation key, followed by "Press <key> to speak with a
    /// colleague."
    pub failure_line: String,
}

impl Default for SttSection {
    fn default() -> Self {
        SttSection {
            extra_phrases: Vec::new(),
            model_dir: None,
            dict: None,
            decoders: None,
            fallback_below: None,
            failure_line: default_stt_failure_line(),
        }
    }
}

/// A TTS engine choice.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TtsEngine {
    /// `flite` (in process) or `espeak-ng` (child process).
    pub engine: String,
    /// Voice name (flite: slt, kal, awb, rms; espeak-ng: a voice id).
    #[serde(default)]
    pub voice: Option<String>,
    /// Speaking rate factor (1.0 = normal).
    #[serde(default)]
    pub rate: Option<f32>,
}

/// `[tts]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TtsSection {
    /// The voice used normally.
    pub primary: TtsEngine,
    /// The voice used after the primary fails.
    #[serde(default)]
    pub secondary: Option<TtsEngine>,
}

impl Default for TtsSection {
    fn default() -> Self {
        TtsSection {
            primary: TtsEngine {
                engine: "flite".into(),
                voice: Some("slt".into()),
                rate: None,
            },
            secondary: None,
        }
    }
}

/// `[reasoner]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasonerSection {
    /// `rules` (the definition's intents) or `openai` (any compatible API).
    pub engine: String,
    /// OpenAI-compatible base URL, e.g. `http://127.0.0.1:8080/v1`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Model name.
    #[serde(default)]
    pub model: Option<String>,
    /// Environment variable holding the API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// First token deadline, ms.
    #[serde(default = "default_first_token_ms")]
    pub first_token_ms: u64,
    /// System prompt for model-based reasoners.
    #[serde(default)]
    pub system_prompt: Option<String>,
    /// After the recovery line, the turn is tried once more: with this
    /// reasoner (`rules` or `openai`, same fields as above), or, when
    /// absent, with the same one.
    #[serde(default)]
    pub fallback: Option<Box<ReasonerSection>>,
}

fn default_first_token_ms() -> u64 {
    1500
}

impl Default for ReasonerSection {
    fn default() -> Self {
        ReasonerSection {
            engine: "rules".into(),
            base_url: None,
            model: None,
            api_key_env: None,
            first_token_ms: default_first_token_ms(),
            system_prompt: None,
            fallback: None,
        }
    }
}

/// `[[knowledge]]`: a knowledge source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnowledgeSection {
    /// Source name, used by intents' `retrieve` and in templates.
    pub name: String,
    /// `documents`, `http` (a search service), `crm` (the caller's
    /// history) or `booking` (availability).
    pub kind: String,
    /// Files for `documents` (Markdown, CSV, JSON).
    #[serde(default)]
    pub paths: Vec<PathBuf>,
    /// The search service of an `http` source (`http://` or `https://`).
    #[serde(default)]
    pub url: Option<Spanned<String>>,
    /// Data older than this (s) is flagged `too_old` (`documents`, `http`).
    #[serde(default)]
    pub max_age_s: Option<Spanned<u64>>,
    /// Deadline per query, ms.
    #[serde(default = "default_deadline")]
    pub deadline_ms: u64,
    /// Cache time to live, s.
    #[serde(default = "default_ttl")]
    pub cache_ttl_s: u64,
    /// Without it the agent must not answer (escalate instead).
    #[serde(default)]
    pub essential: bool,
}

fn default_deadline() -> u64 {
    200
}

fn default_crm_timeout() -> u64 {
    3000
}

fn default_ttl() -> u64 {
    60
}

/// `[crm]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrmSection {
    /// Embedded database file.
    #[serde(default)]
    pub sqlite: Option<PathBuf>,
    /// An external CRM over HTTP.
    #[serde(default)]
    pub http: Option<HttpCrmSection>,
    /// When site visits can be booked (embedded CRM).
    #[serde(default)]
    pub visiting_hours: VisitingHoursSection,
    /// The durable queue in front of the CRM's writes; without it a write
    /// the CRM does not take at once fails.
    #[serde(default)]
    pub outbox: Option<OutboxSection>,
}

/// `[crm.outbox]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxSection {
    /// The SQLite file of the queue.
    pub path: PathBuf,
    /// First wait before a retry, ms; doubles with every failure.
    #[serde(default = "default_first_retry_ms")]
    pub first_retry_ms: u64,
    /// Longest wait between retries, s.
    #[serde(default = "default_max_retry_s")]
    pub max_retry_s: u64,
    /// A write undelivered this long is dead (logged, counted), s.
    #[serde(default = "default_give_up_s")]
    pub give_up_s: u64,
    /// Longest a single delivery may take, ms.
    #[serde(default = "default_attempt_ms")]
    pub attempt_ms: u64,
}

fn default_first_retry_ms() -> u64 {
    1000
}

fn default_max_retry_s() -> u64 {
    300
}

fn default_give_up_s() -> u64 {
    86_400
}

fn default_attempt_ms() -> u64 {
    1500
}

/// `[crm.visiting_hours]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VisitingHoursSection {
    /// First slot, `HH:MM`.
    pub open: String,
    /// End of the last slot, `HH:MM`.
    pub close: String,
    /// Slot length, minutes.
    pub slot_minutes: u32,
}

impl Default for VisitingHoursSection {
    fn default() -> Self {
        VisitingHoursSection {
            open: "10:00".into(),
            close: "18:00".into(),
            slot_minutes: 60,
        }
    }
}

impl Default for CrmSection {
    fn default() -> Self {
        CrmSection {
            sqlite: Some(PathBuf::from("var/crm.sqlite")),
            http: None,
            visiting_hours: VisitingHoursSection::default(),
            outbox: None,
        }
    }
}

/// `[crm.http]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCrmSection {
    /// Base URL of the CRM's REST API.
    pub base_url: String,
    /// Environment variable holding a bearer token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Request timeout, ms.
    #[serde(default = "default_crm_timeout")]
    pub timeout_ms: u64,
}

/// `[telemetry]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySection {
    /// JSON lines file, one record per turn.
    pub turns: Option<PathBuf>,
    /// Directory of per-call traces (one JSON file per call).
    pub traces: Option<PathBuf>,
}

/// One reply template of an intent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplySection {
    /// Conditions, all of which must hold: `hits:SOURCE`, `no_hits:SOURCE`,
    /// `slot:NAME`, `missing:NAME`, `tool:ok`, `tool:queued`, `tool:failed`,
    /// `partial`.
    #[serde(default)]
    pub when: Vec<Spanned<String>>,
    /// The reply, with `{slot.NAME}`, `{SOURCE.FIELD}` (top document of a
    /// source), `{SOURCE.text}`, `{SOURCE.count}`, `{booking.FIELD}`.
    pub text: Spanned<String>,
}

/// `[[intent]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntentSection {
    /// Intent name (telemetry's `intent`).
    pub name: String,
    /// Example utterances: they train intent matching and the STT model.
    pub examples: Vec<String>,
    /// Words that point strongly to this intent.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// Knowledge sources to consult.
    #[serde(default)]
    pub retrieve: Vec<Spanned<String>>,
    /// A tool to call (`book_site_visit`) when its required slots are known.
    #[serde(default)]
    pub tool: Option<Spanned<String>>,
    /// Slots the tool needs.
    #[serde(default)]
    pub requires: Vec<String>,
    /// End the call after replying.
    #[serde(default)]
    pub hangup: bool,
    /// Session facts kept from the top result: slot name → `SOURCE.FIELD`
    /// (e.g. `property_id = "inventory.id"`), so a later turn can refer to
    /// "it".
    #[serde(default)]
    pub remember: BTreeMap<String, String>,
    /// Replies, first whose conditions hold wins.
    pub reply: Vec<ReplySection>,
}

/// `[escalation]`: handing the call to a person.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationSection {
    /// The person or queue, as a SIP URI with an IP address
    /// (`sip:sales@192.0.2.10:5060`): the REFER's Refer-To, and the
    /// second leg's target when the caller's side refuses REFER.
    pub target: Spanned<String>,
    /// Said before the transfer.
    #[serde(default = "default_escalation_line")]
    pub line: String,
    /// Said when the person cannot be reached; the agent then carries on.
    #[serde(default = "default_unavailable_line")]
    pub unavailable_line: String,
    /// Transfer when an essential knowledge source fails. When false, the
    /// agent answers with what it has and says it is partial.
    #[serde(default = "default_true")]
    pub on_essential_failure: bool,
    /// A key the caller can press to ask for a person.
    #[serde(default)]
    pub dtmf: Option<char>,
    /// How long the caller's side may take to accept the REFER and report
    /// the transfer done (NOTIFY with a 2xx) before the agent bridges the
    /// call itself, ms.
    #[serde(default = "default_refer_timeout_ms")]
    pub refer_timeout_ms: u64,
    /// How long the person's phone may ring on a bridged transfer, s.
    #[serde(default = "default_ring_timeout_s")]
    pub ring_timeout_s: u64,
}

fn default_escalation_line() -> String {
    "Let me connect you to a colleague who can help with that. Please hold.".to_owned()
}

fn default_unavailable_line() -> String {
    "I could not reach a colleague just now, so let us carry on together.".to_owned()
}

fn default_true() -> bool {
    true
}

fn default_refer_timeout_ms() -> u64 {
    8000
}

fn default_ring_timeout_s() -> u64 {
    30
}

/// A whole agent definition.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentDefinition {
    /// Identity and lines.
    pub agent: AgentSection,
    /// Endpointing.
    #[serde(default)]
    pub turn: TurnSection,
    /// Speech recognition.
    #[serde(default)]
    pub stt: SttSection,
    /// Speech synthesis.
    #[serde(default)]
    pub tts: TtsSection,
    /// Reasoning.
    #[serde(default)]
    pub reasoner: ReasonerSection,
    /// Knowledge sources.
    #[serde(default)]
    pub knowledge: Vec<KnowledgeSection>,
    /// The CRM.
    #[serde(default)]
    pub crm: CrmSection,
    /// Telemetry.
    #[serde(default)]
    pub telemetry: TelemetrySection,
    /// Handing the call to a person.
    #[serde(default)]
    pub escalation: Option<EscalationSection>,
    /// Intents, tried in order.
    #[serde(default)]
    pub intent: Vec<IntentSection>,
    /// The file it was read from.
    #[serde(skip)]
    pub path: PathBuf,
}

const TOOLS: &[&str] = &["book_site_visit"];
const KNOWLEDGE_KINDS: &[&str] = &["documents", "http", "crm", "booking"];
const CONDITIONS: &[&str] = &["hits", "no_hits", "slot", "missing", "tool", "partial"];

impl AgentDefinition {
    /// Reads and checks a definition; every error names file, line and field.
    pub fn load(path: &Path) -> Result<AgentDefinition, Vec<ConfigError>> {
        let source = std::fs::read_to_string(path).map_err(|e| {
            vec![ConfigError::file(
                path,
                format!("cannot read agent definition: {e}"),
            )]
        })?;
        let mut def: AgentDefinition =
            toml::from_str(&source).map_err(|e| vec![ConfigError::from_toml(path, &source, &e)])?;
        def.path = path.to_owned();
        let errors = def.check(&source);
        if errors.is_empty() {
            Ok(def)
        } else {
            Err(errors)
        }
    }

    /// The directory relative paths are resolved against.
    pub fn base(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// A path from the definition, resolved.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base().join(p)
        }
    }

    /// Every phrase the caller is expected to say (STT domain model).
    pub fn phrases(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .intent
            .iter()
            .flat_map(|i| i.examples.iter().cloned())
            .chain(self.stt.extra_phrases.iter().cloned())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The `url`, `paths` and `max_age_s` of one `[[knowledge]]` source.
    fn check_knowledge_drift(
        &self,
        source: &str,
        i: usize,
        k: &KnowledgeSection,
    ) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let at = |span: std::ops::Range<usize>, field: &str, msg: String| {
            ConfigError::at(&self.path, source, span.start, Some(field.to_owned()), msg)
        };
        // The section's `[[knowledge]]` header, for what is missing.
        let name_at = source
            .match_indices("[[knowledge]]")
            .map(|(o, _)| o)
            .filter(|&o| o == 0 || source[..o].ends_with('\n'))
            .nth(i)
            .unwrap_or(0);
        match (&k.url, k.kind.as_str()) {
            (None, "http") => errors.push(ConfigError::at(
                &self.path,
                source,
                name_at,
                Some(format!("knowledge[{i}].url")),
                "an http source needs a url".to_owned(),
            )),
            (Some(url), "http") => match reqwest::Url::parse(url.get_ref()) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                Ok(_) => errors.push(at(
                    url.span(),
                    &format!("knowledge[{i}].url"),
                    format!("{:?} is not an http:// or https:// URL", url.get_ref()),
                )),
                Err(e) => errors.push(at(
                    url.span(),
                    &format!("knowledge[{i}].url"),
                    format!("{:?} is not a URL: {e}", url.get_ref()),
                )),
            },
            (Some(url), kind) => errors.push(at(
                url.span(),
                &format!("knowledge[{i}].url"),
                format!("url is only for kind = \"http\", not {kind:?}"),
            )),
            (None, _) => {}
        }
        if k.kind == "http" && !k.paths.is_empty() {
            errors.push(ConfigError::at(
                &self.path,
                source,
                name_at,
                Some(format!("knowledge[{i}].paths")),
                "an http source has a url, not paths".to_owned(),
            ));
        }
        if let Some(max_age) = &k.max_age_s {
            if *max_age.get_ref() == 0 {
                errors.push(at(
                    max_age.span(),
                    &format!("knowledge[{i}].max_age_s"),
                    "must be above 0 (leave it out to never flag the data)".into(),
                ));
            }
            if !["documents", "http"].contains(&k.kind.as_str()) {
                errors.push(at(
                    max_age.span(),
                    &format!("knowledge[{i}].max_age_s"),
                    format!(
                        "only documents and http sources report their age, not {:?}",
                        k.kind
                    ),
                ));
            }
        }
        errors
    }

    fn check(&self, source: &str) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let at = |span: std::ops::Range<usize>, field: &str, msg: String| {
            ConfigError::at(&self.path, source, span.start, Some(field.to_owned()), msg)
        };
        let file_err = |field: &str, msg: String| {
            let offset = source
                .find(field.rsplit('.').next().unwrap_or(field))
                .unwrap_or(0);
            ConfigError::at(&self.path, source, offset, Some(field.to_owned()), msg)
        };
        let sources: BTreeSet<&str> = self.knowledge.iter().map(|k| k.name.as_str()).collect();
        for (i, k) in self.knowledge.iter().enumerate() {
            if !KNOWLEDGE_KINDS.contains(&k.kind.as_str()) {
                errors.push(file_err(
                    &format!("knowledge[{i}].kind"),
                    format!(
                        "unknown kind {:?}, expected documents, http, crm or booking",
                        k.kind
                    ),
                ));
            }
            errors.extend(self.check_knowledge_drift(source, i, k));
            if k.kind == "documents" && k.paths.is_empty() {
                errors.push(file_err(
                    &format!("knowledge[{i}].paths"),
                    "documents need at least one path".into(),
                ));
            }
            for p in &k.paths {
                if !self.resolve(p).exists() {
                    errors.push(file_err(
                        &format!("knowledge[{i}].paths"),
                        format!("{} does not exist", self.resolve(p).display()),
                    ));
                }
            }
        }
        for e in [&self.tts.primary]
            .into_iter()
            .chain(self.tts.secondary.as_ref())
        {
            if !["flite", "espeak-ng"].contains(&e.engine.as_str()) {
                errors.push(file_err(
                    "tts.engine",
                    format!(
                        "unknown TTS engine {:?}, expected flite or espeak-ng",
                        e.engine
                    ),
                ));
            }
        }
        let reasoners = [("reasoner", &self.reasoner)].into_iter().chain(
            self.reasoner
                .fallback
                .as_deref()
                .map(|f| ("reasoner.fallback", f)),
        );
        for (field, r) in reasoners {
            match r.engine.as_str() {
                "rules" => {}
                "openai" => {
                    if r.base_url.is_none() || r.model.is_none() {
                        errors.push(file_err(
                            &format!("{field}.engine"),
                            "openai needs base_url and model".into(),
                        ));
                    }
                }
                other => errors.push(file_err(
                    &format!("{field}.engine"),
                    format!("unknown reasoner {other:?}, expected rules or openai"),
                )),
            }
        }
        if self
            .reasoner
            .fallback
            .as_ref()
            .is_some_and(|f| f.fallback.is_some())
        {
            errors.push(file_err(
                "reasoner.fallback.fallback",
                "a fallback reasoner has no fallback of its own".into(),
            ));
        }
        if let Some(b) = self.stt.fallback_below
            && !(0.0..=1.0).contains(&b)
        {
            errors.push(file_err(
                "stt.fallback_below",
                format!("{b} is not a confidence between 0 and 1"),
            ));
        }
        if let Some(o) = &self.crm.outbox {
            if o.first_retry_ms == 0 || o.max_retry_s == 0 || o.give_up_s == 0 || o.attempt_ms == 0
            {
                errors.push(file_err(
                    "crm.outbox",
                    "first_retry_ms, max_retry_s, give_up_s and attempt_ms must be above 0".into(),
                ));
            }
            if self.crm.sqlite.is_none() && self.crm.http.is_none() {
                errors.push(file_err(
                    "crm.outbox",
                    "an outbox needs a CRM (sqlite or http)".into(),
                ));
            }
        }
        if let Some(e) = &self.escalation {
            match voxtrunk_sip::msg::Uri::parse(e.target.get_ref().as_bytes()) {
                Ok(u) if u.as_sip().is_some_and(|s| s.host.ip().is_some()) => {}
                Ok(_) => errors.push(at(
                    e.target.span(),
                    "escalation.target",
                    format!(
                        "{:?} needs a sip: URI with an IP address (no DNS lookups)",
                        e.target.get_ref()
                    ),
                )),
                Err(err) => errors.push(at(
                    e.target.span(),
                    "escalation.target",
                    format!("{:?} is not a SIP URI: {err}", e.target.get_ref()),
                )),
            }
            if let Some(d) = e.dtmf
                && !"0123456789*#ABCD".contains(d)
            {
                errors.push(file_err(
                    "escalation.dtmf",
                    format!("{d:?} is not a DTMF key (0-9, *, #, A-D)"),
                ));
            }
            if e.refer_timeout_ms == 0 || e.ring_timeout_s == 0 {
                errors.push(file_err(
                    "escalation.refer_timeout_ms",
                    "refer_timeout_ms and ring_timeout_s must be above 0".into(),
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.agent.language_confidence) {
            errors.push(file_err(
                "agent.language_confidence",
                format!(
                    "{} is not a confidence between 0 and 1",
                    self.agent.language_confidence
                ),
            ));
        }
        if self.agent.language_switch_after == 0 {
            errors.push(file_err(
                "agent.language_switch_after",
                "at least one utterance is needed".into(),
            ));
        }
        if self.stt.decoders == Some(0) {
            errors.push(file_err(
                "stt.decoders",
                "at least one decoder is needed".into(),
            ));
        }
        let hours = &self.crm.visiting_hours;
        if let Err(e) =
            super::crm::VisitingHours::new(&hours.open, &hours.close, hours.slot_minutes)
        {
            errors.push(file_err("crm.visiting_hours", e.to_string()));
        }
        if self.crm.sqlite.is_some() == self.crm.http.is_some() {
            errors.push(file_err("crm", "give exactly one of sqlite or http".into()));
        }
        if self.intent.is_empty() && self.reasoner.engine == "rules" {
            errors.push(file_err(
                "intent",
                "the rules reasoner needs at least one [[intent]]".into(),
            ));
        }
        for (i, intent) in self.intent.iter().enumerate() {
            if self.intent[..i].iter().any(|o| o.name == intent.name) {
                errors.push(file_err(
                    &format!("intent[{i}].name"),
                    format!("a second intent named {:?}", intent.name),
                ));
            }
            if intent.examples.is_empty() {
                errors.push(file_err(
                    &format!("intent[{i}].examples"),
                    "an intent needs examples".into(),
                ));
            }
            for r in &intent.retrieve {
                if !sources.contains(r.get_ref().as_str()) {
                    errors.push(at(
                        r.span(),
                        &format!("intent[{i}].retrieve"),
                        format!("no [[knowledge]] named {:?}", r.get_ref()),
                    ));
                }
            }
            if let Some(t) = &intent.tool {
                if !TOOLS.contains(&t.get_ref().as_str()) {
                    errors.push(at(
                        t.span(),
                        &format!("intent[{i}].tool"),
                        format!("unknown tool {:?}, expected one of {TOOLS:?}", t.get_ref()),
                    ));
                }
            }
            for (slot, path) in &intent.remember {
                match path.split_once('.') {
                    Some((src, field)) if sources.contains(src) && !field.is_empty() => {}
                    _ => errors.push(file_err(
                        &format!("intent[{i}].remember.{slot}"),
                        format!("{path:?} must be SOURCE.FIELD with a [[knowledge]] source"),
                    )),
                }
            }
            if intent.reply.is_empty() {
                errors.push(file_err(
                    &format!("intent[{i}].reply"),
                    "an intent needs at least one reply".into(),
                ));
            }
            for (j, r) in intent.reply.iter().enumerate() {
                for w in &r.when {
                    let kind = w.get_ref().split(':').next().unwrap_or_default();
                    if !CONDITIONS.contains(&kind) {
                        errors.push(at(
                            w.span(),
                            &format!("intent[{i}].reply[{j}].when"),
                            format!("unknown condition {:?}", w.get_ref()),
                        ));
                    }
                    if let Some(src) = w
                        .get_ref()
                        .strip_prefix("hits:")
                        .or_else(|| w.get_ref().strip_prefix("no_hits:"))
                    {
                        if !sources.contains(src) {
                            errors.push(at(
                                w.span(),
                                &format!("intent[{i}].reply[{j}].when"),
                                format!("no [[knowledge]] named {src:?}"),
                            ));
                        }
                    }
                }
                match super::template::Template::parse(r.text.get_ref()) {
                    Ok(t) => {
                        for field in t.fields() {
                            let root = field.split('.').next().unwrap_or_default();
                            if !["slot", "booking"].contains(&root) && !sources.contains(root) {
                                errors.push(at(
                                    r.text.span(),
                                    &format!("intent[{i}].reply[{j}].text"),
                                    format!(
                                        "placeholder {{{field}}}: {root:?} is neither slot, booking \
                                         nor a [[knowledge]] source"
                                    ),
                                ));
                            }
                        }
                    }
                    Err(e) => errors.push(at(
                        r.text.span(),
                        &format!("intent[{i}].reply[{j}].text"),
                        e,
                    )),
                }
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_agent() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("dialplans/agents/realestate/agent.toml")
    }

    /// The shipped agent with `edit` applied, loaded from a copy beside
    /// its knowledge files.
    fn load_edited(edit: impl Fn(&str) -> String) -> Result<AgentDefinition, Vec<ConfigError>> {
        let original = std::fs::read_to_string(default_agent()).unwrap();
        let dir = default_agent().parent().unwrap().to_owned();
        let file = tempfile::Builder::new()
            .prefix(".edited-")
            .suffix(".toml")
            .tempfile_in(&dir)
            .unwrap();
        std::fs::write(file.path(), edit(&original)).unwrap();
        AgentDefinition::load(file.path())
    }

    fn line_of(source: &str, needle: &str) -> usize {
        source[..source.find(needle).unwrap()].matches('\n').count() + 1
    }

    #[test]
    fn the_default_agent_loads() {
        let def = AgentDefinition::load(&default_agent()).expect("valid");
        assert_eq!(def.agent.name, "realestate");
        assert!(def.intent.iter().any(|i| i.name == "book_visit"));
        let phrases = def.phrases();
        assert!(phrases.contains(&"book a site visit for tomorrow".to_owned()));
        assert!(
            phrases.windows(2).all(|w| w[0] < w[1]),
            "sorted, no repeats"
        );
    }

    #[test]
    fn a_placeholder_must_name_a_source_slot_or_booking() {
        let original = std::fs::read_to_string(default_agent()).unwrap();
        let errors = load_edited(|s| s.replace("{pricing.text}", "{prices.text}")).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        let e = &errors[0];
        assert!(e.message.contains("{prices.text}"), "{e}");
        assert!(e.field.as_deref().unwrap().ends_with(".text"), "{e}");
        assert_eq!(e.line, Some(line_of(&original, "{pricing.text}")), "{e}");
    }

    #[test]
    fn unknown_kinds_engines_and_ranges_are_named() {
        let errors = load_edited(|s| {
            s.replace("kind = \"booking\"", "kind = \"calendar\"")
                .replace("engine = \"espeak-ng\"", "engine = \"festival\"")
                .replace("fallback_below = 0.35", "fallback_below = 1.5")
                .replace("engine = \"rules\"", "engine = \"oracle\"")
        })
        .unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        for expected in [
            "unknown kind \"calendar\"",
            "unknown TTS engine \"festival\"",
            "1.5 is not a confidence",
            "unknown reasoner \"oracle\"",
        ] {
            assert!(
                text.iter()
                    .any(|t| t.contains(expected) && t.contains(".toml:")),
                "{expected:?} not in {text:#?}"
            );
        }
    }

    #[test]
    fn escalation_needs_an_ip_target_and_a_dtmf_key() {
        let edit = |s: &str| {
            s.replace("sip:sales@127.0.0.1:5070", "sip:sales@pbx.example.com")
                .replace("dtmf = \"0\"", "dtmf = \"x\"")
                .replace(
                    "language = \"en-US\"",
                    "language = \"en-US\"\nlanguage_confidence = 2.0",
                )
        };
        let edited = edit(&std::fs::read_to_string(default_agent()).unwrap());
        let errors = load_edited(edit).unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let target = errors
            .iter()
            .find(|e| e.field.as_deref() == Some("escalation.target"))
            .unwrap_or_else(|| panic!("{text:#?}"));
        assert!(target.message.contains("IP address"), "{target}");
        assert_eq!(
            target.line,
            Some(line_of(&edited, "sip:sales@pbx.example.com")),
            "{target}"
        );
        for expected in [
            "'x' is not a DTMF key",
            "2 is not a confidence between 0 and 1",
        ] {
            assert!(
                text.iter().any(|t| t.contains(expected)),
                "{expected:?} not in {text:#?}"
            );
        }
    }

    #[test]
    fn intent_names_are_unique() {
        let errors = load_edited(|s| {
            s.replace(
                "[[intent]]\nname = \"pricing\"",
                "[[intent]]\nname = \"policy\"",
            )
        })
        .unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.message.contains("a second intent named \"policy\"")),
            "{errors:?}"
        );
    }

    #[test]
    fn http_sources_and_max_ages_are_checked_with_their_lines() {
        let documents = "kind = \"documents\"\npaths = [\"knowledge/inventory.csv\"]";
        assert!(
            std::fs::read_to_string(default_agent())
                .unwrap()
                .contains(documents)
        );
        let http =
            "kind = \"http\"\nurl = \"http://127.0.0.1:9000/search?tenant=a\"\nmax_age_s = 86400";
        let def = load_edited(|s| s.replacen(documents, http, 1)).expect("valid");
        let inventory = &def.knowledge[0];
        assert_eq!(inventory.kind, "http");
        assert_eq!(
            inventory.url.as_ref().map(|u| u.get_ref().as_str()),
            Some("http://127.0.0.1:9000/search?tenant=a")
        );
        assert_eq!(
            inventory.max_age_s.as_ref().map(|m| *m.get_ref()),
            Some(86_400)
        );

        let original = std::fs::read_to_string(default_agent()).unwrap();
        let edited = original
            .replacen(
                documents,
                "kind = \"http\"\nurl = \"ftp://example.com/x\"",
                1,
            )
            .replacen(
                "paths = [\"knowledge/pricing.md\"]",
                "paths = [\"knowledge/pricing.md\"]\nmax_age_s = 0\nurl = \"http://x/\"",
                1,
            )
            .replacen("kind = \"crm\"", "kind = \"crm\"\nmax_age_s = 60", 1)
            .replacen(
                "kind = \"documents\"\npaths = [\"knowledge/policies.md\"]",
                "kind = \"http\"",
                1,
            );
        let errors = load_edited(|_| edited.clone()).unwrap_err();
        let find = |needle: &str| {
            errors
                .iter()
                .find(|e| e.message.contains(needle))
                .unwrap_or_else(|| panic!("{needle:?} not in {errors:#?}"))
        };
        let e = find("is not an http:// or https:// URL");
        assert_eq!(e.field.as_deref(), Some("knowledge[0].url"));
        assert_eq!(e.line, Some(line_of(&edited, "ftp://")), "{e}");
        let e = find("must be above 0");
        assert_eq!(e.field.as_deref(), Some("knowledge[1].max_age_s"));
        assert_eq!(e.line, Some(line_of(&edited, "max_age_s = 0")), "{e}");
        let e = find("url is only for kind = \"http\"");
        assert_eq!(e.line, Some(line_of(&edited, "url = \"http://x/\"")), "{e}");
        let e = find("only documents and http sources report their age");
        assert_eq!(e.field.as_deref(), Some("knowledge[3].max_age_s"));
        assert_eq!(e.line, Some(line_of(&edited, "max_age_s = 60")), "{e}");
        // A missing url is reported at the source's [[knowledge]] header.
        let e = find("an http source needs a url");
        assert_eq!(e.field.as_deref(), Some("knowledge[2].url"));
        let header = edited.find("name = \"policies\"").unwrap();
        let header_line = edited[..header].matches('\n').count();
        assert_eq!(e.line, Some(header_line), "{e}");
        assert!(e.to_string().contains(".toml:"), "{e}");
    }

    #[test]
    fn a_missing_knowledge_file_is_an_error() {
        let errors =
            load_edited(|s| s.replace("knowledge/pricing.md", "knowledge/prices.md")).unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.message.contains("prices.md does not exist")),
            "{errors:?}"
        );
    }
}
