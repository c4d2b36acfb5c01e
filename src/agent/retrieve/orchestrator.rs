//! Retrieval across sources for one turn.
//!
//! [`RetrievalOrchestrator::retrieve`] asks every source concurrently (the
//! futures are joined in the caller's task: no task is spawned, so dropping
//! the retrieval — barge-in, hang-up — cancels every source at once) and
//! bounds each by its own deadline, so a retrieval never takes longer than
//! the largest deadline.
//!
//! Per source, in order:
//! 1. **Fresh cache hit** — the same normalised query (words lowercased,
//!    punctuation dropped; intent, slots, caller and limit included, so one
//!    caller's CRM answer never serves another) answered within the
//!    source's `cache_ttl`: served without asking the source (`cached`).
//! 2. **Answer** within the deadline: served and cached.
//! 3. **Timeout or error**: reported (`timed_out` / `error`). If the cache
//!    holds an answer no older than the orchestrator's max staleness
//!    ([`RetrievalOrchestrator::with_max_stale`], default
//!    [`DEFAULT_MAX_STALE`]), that answer is served and marked `cached`
//!    and `stale` (stale-while-error) and the source counts as answered.
//!    Without an answer to the same query, the newest answer to a query
//!    that differs only in its words, one's words beginning with the
//!    other's, stands in: the session prefetches on partial transcripts,
//!    so a question asked again may be asked with its first few words
//!    only (the session keeps a prefetch whose intent and slots match the
//!    final transcript's). Otherwise the
//!    source gave nothing usable: the retrieval is `partial`, and if the
//!    source is `essential` its name is in
//!    [`RetrievalOutcome::essential_failed`].
//!
//! ## Drift
//!
//! Every report carries the `version` and `updated_at` of the data it
//! served (from [`Retriever::freshness`] for a fresh answer, from the cache
//! entry for a cached one) and its `age_s`. A source given a maximum age
//! ([`RetrievalOrchestrator::with_max_age`], the definition's `max_age_s`)
//! whose data is older is reported `too_old`; every such report counts in
//! `voxtrunk_knowledge_too_old_total{source}`, and a warning is logged once
//! per source and version. `voxtrunk_knowledge_age_seconds{source}` is the
//! age last reported.
//!
//! Documents come out grouped by source in configuration order, best first
//! within each source. Sources apply `Query::limit` themselves. Reports give
//! the time spent per source (0 for a fresh cache hit). Time is tokio's
//! clock, so tests run on a paused clock.
//!
//! The cache holds at most [`CACHE_CAPACITY`] answers; when full, answers
//! too old to be served in any way go first, then the oldest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::agent::provider::{
    AgentError, Document, Freshness, Query, Retrieval, Retriever, SourceReport,
};

use super::rfc3339_utc;

/// How old a cached answer may be and still be served when its source
/// fails.
pub const DEFAULT_MAX_STALE: Duration = Duration::from_secs(600);

/// Cached answers kept at most (all sources together).
pub const CACHE_CAPACITY: usize = 1024;

/// One source and how to treat it.
#[derive(Clone)]
pub struct SourceConfig {
    /// The source.
    pub retriever: Arc<dyn Retriever>,
    /// How long to wait for it.
    pub deadline: Duration,
    /// How long its answers are served from the cache without asking it
    /// again (zero: always ask; answers are still kept for stale-while-error).
    pub cache_ttl: Duration,
    /// The agent cannot answer well without it: its failure is reported in
    /// [`RetrievalOutcome::essential_failed`].
    pub essential: bool,
}

impl std::fmt::Debug for SourceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceConfig")
            .field("source", &self.retriever.name())
            .field("deadline", &self.deadline)
            .field("cache_ttl", &self.cache_ttl)
            .field("essential", &self.essential)
            .finish()
    }
}

/// A retrieval and the essential sources that gave nothing usable.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RetrievalOutcome {
    /// Documents and per-source reports.
    pub retrieval: Retrieval,
    /// Names of essential sources that failed or timed out with no cached
    /// answer to stand in.
    pub essential_failed: Vec<String>,
}

struct CacheEntry {
    at: Instant,
    docs: Vec<Document>,
    freshness: Option<Freshness>,
}

/// Fans a query out to the configured sources (see the module doc).
pub struct RetrievalOrchestrator {
    sources: Vec<SourceConfig>,
    max_stale: Duration,
    /// Per source (same index): data older than this is flagged.
    max_ages: Vec<Option<Duration>>,
    cache: Mutex<HashMap<(usize, String), CacheEntry>>,
    /// Per source: the (version, updated_at) last warned about as too old.
    warned: Mutex<HashMap<usize, (String, Option<SystemTime>)>>,
}

impl std::fmt::Debug for RetrievalOrchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetrievalOrchestrator")
            .field("sources", &self.sources)
            .field("max_stale", &self.max_stale)
            .field("max_ages", &self.max_ages)
            .finish_non_exhaustive()
    }
}

/// The result of asking one source.
struct Answer {
    report: SourceReport,
    docs: Vec<Document>,
    usable: bool,
}

impl RetrievalOrchestrator {
    /// An orchestrator over `sources` (queried in parallel, reported in
    /// this order).
    pub fn new(sources: Vec<SourceConfig>) -> Self {
        RetrievalOrchestrator {
            max_ages: vec![None; sources.len()],
            sources,
            max_stale: DEFAULT_MAX_STALE,
            cache: Mutex::new(HashMap::new()),
            warned: Mutex::new(HashMap::new()),
        }
    }

    /// Flags the data of the source `name` as too old past `max_age` (see
    /// the module doc). Unknown names are ignored.
    pub fn with_max_age(mut self, name: &str, max_age: Duration) -> Self {
        for (source, slot) in self.sources.iter().zip(self.max_ages.iter_mut()) {
            if source.retriever.name() == name {
                *slot = Some(max_age);
            }
        }
        self
    }

    /// Sets how old a cached answer may be and still stand in for a source
    /// that failed.
    #[cfg(test)]
    pub fn with_max_stale(mut self, max_stale: Duration) -> Self {
        self.max_stale = max_stale;
        self
    }

    /// The configured sources.
    pub fn sources(&self) -> &[SourceConfig] {
        &self.sources
    }

    /// Asks every source, within its deadline (see the module doc).
    #[cfg(test)]
    pub async fn retrieve(&self, query: &Query) -> RetrievalOutcome {
        self.retrieve_where(query, |_| true).await
    }

    /// Asks the sources named in `names` (an intent's `retrieve` list), in
    /// configuration order; unknown names are ignored.
    pub async fn retrieve_from(&self, query: &Query, names: &[String]) -> RetrievalOutcome {
        self.retrieve_where(query, |s| names.iter().any(|n| n == s.retriever.name()))
            .await
    }

    async fn retrieve_where(
        &self,
        query: &Query,
        pick: impl Fn(&SourceConfig) -> bool,
    ) -> RetrievalOutcome {
        let key = cache_key(query);
        let chosen: Vec<(usize, &SourceConfig)> = self
            .sources
            .iter()
            .enumerate()
            .filter(|(_, s)| pick(s))
            .collect();
        let asks = chosen
            .iter()
            .map(|&(i, source)| self.ask(i, source, query, &key));
        let answers = futures_util::future::join_all(asks).await;

        let mut outcome = RetrievalOutcome::default();
        for (answer, (_, source)) in answers.into_iter().zip(chosen) {
            if !answer.usable {
                outcome.retrieval.partial = true;
                if source.essential {
                    outcome.essential_failed.push(answer.report.source.clone());
                }
            }
            let mut docs = answer.docs;
            docs.sort_by(|a, b| b.score.total_cmp(&a.score));
            outcome.retrieval.documents.extend(docs);
            outcome.retrieval.sources.push(answer.report);
        }
        outcome
    }

    async fn ask(&self, i: usize, source: &SourceConfig, query: &Query, key: &str) -> Answer {
        let name = source.retriever.name().to_owned();
        let started = Instant::now();
        let mut report = SourceReport {
            source: name.clone(),
            hits: 0,
            elapsed_ms: 0.0,
            timed_out: false,
            cached: false,
            stale: false,
            error: None,
            version: None,
            updated_at: None,
            age_s: None,
            too_old: false,
        };
        if let Some((docs, freshness)) = self.cached(i, key, source.cache_ttl, started) {
            report.hits = docs.len();
            report.cached = true;
            self.drift(i, &mut report, freshness.as_ref());
            return Answer {
                report,
                docs,
                usable: true,
            };
        }

        let result = tokio::time::timeout(source.deadline, source.retriever.retrieve(query)).await;
        report.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        match result {
            Ok(Ok(docs)) => {
                let freshness = source.retriever.freshness();
                self.store(i, key, &docs, freshness.clone());
                report.hits = docs.len();
                self.drift(i, &mut report, freshness.as_ref());
                return Answer {
                    report,
                    docs,
                    usable: true,
                };
            }
            // A source that enforces the deadline itself (HTTP).
            Ok(Err(AgentError::Timeout(_))) | Err(_) => report.timed_out = true,
            Ok(Err(e)) => report.error = Some(e.to_string()),
        }
        let stale_limit = self.max_stale.max(source.cache_ttl);
        match self
            .cached(i, key, stale_limit, Instant::now())
            .or_else(|| self.cached_related(i, key, stale_limit, Instant::now()))
        {
            Some((docs, freshness)) => {
                tracing::warn!(
                    source = %name,
                    timed_out = report.timed_out,
                    error = report.error.as_deref().unwrap_or(""),
                    "knowledge source failed; serving its cached answer"
                );
                report.hits = docs.len();
                report.cached = true;
                report.stale = true;
                self.drift(i, &mut report, freshness.as_ref());
                Answer {
                    report,
                    docs,
                    usable: true,
                }
            }
            None => {
                tracing::warn!(
                    source = %name,
                    timed_out = report.timed_out,
                    error = report.error.as_deref().unwrap_or(""),
                    "knowledge source failed; no cached answer"
                );
                Answer {
                    report,
                    docs: Vec::new(),
                    usable: false,
                }
            }
        }
    }

    /// Fills the drift fields of a report from the freshness of the data
    /// served, and counts, gauges and warns (see the module doc).
    fn drift(&self, i: usize, report: &mut SourceReport, freshness: Option<&Freshness>) {
        let Some(f) = freshness else {
            return;
        };
        if !f.version.is_empty() {
            report.version = Some(f.version.clone());
        }
        let Some(at) = f.updated_at else {
            return;
        };
        let age = SystemTime::now().duration_since(at).unwrap_or_default();
        report.updated_at = Some(rfc3339_utc(at));
        report.age_s = Some(age.as_secs());
        let source = report.source.clone();
        metrics::gauge!("voxtrunk_knowledge_age_seconds", "source" => source.clone())
            .set(age.as_secs_f64());
        let Some(max_age) = self.max_ages.get(i).copied().flatten() else {
            return;
        };
        if age <= max_age {
            return;
        }
        report.too_old = true;
        metrics::counter!("voxtrunk_knowledge_too_old_total", "source" => source.clone())
            .increment(1);
        let seen = (f.version.clone(), f.updated_at);
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        if warned.get(&i) != Some(&seen) {
            tracing::warn!(
                source = %source,
                version = %f.version,
                updated_at = %rfc3339_utc(at),
                age_s = age.as_secs(),
                max_age_s = max_age.as_secs(),
                "knowledge source data is older than its max_age_s"
            );
            warned.insert(i, seen);
        }
    }

    /// A cached answer no older than `max_age`, with the freshness of its
    /// data.
    fn cached(
        &self,
        i: usize,
        key: &str,
        max_age: Duration,
        now: Instant,
    ) -> Option<(Vec<Document>, Option<Freshness>)> {
        if max_age.is_zero() {
            return None;
        }
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let entry = cache.get(&(i, key.to_owned()))?;
        (now.saturating_duration_since(entry.at) < max_age)
            .then(|| (entry.docs.clone(), entry.freshness.clone()))
    }

    /// The newest cached answer no older than `max_age` to a query that
    /// differs from `key` only in its words, where one query's words begin
    /// with the other's (a partial transcript and the whole one).
    fn cached_related(
        &self,
        i: usize,
        key: &str,
        max_age: Duration,
        now: Instant,
    ) -> Option<(Vec<Document>, Option<Freshness>)> {
        if max_age.is_zero() {
            return None;
        }
        let (words, rest) = key.split_once(KEY_SEP)?;
        if words.is_empty() {
            return None;
        }
        let begins = |long: &str, short: &str| {
            long.strip_prefix(short)
                .is_some_and(|tail| tail.starts_with(' '))
        };
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .iter()
            .filter(|((source, _), entry)| {
                *source == i && now.saturating_duration_since(entry.at) < max_age
            })
            .filter(|((_, other), _)| {
                other.split_once(KEY_SEP).is_some_and(|(w, r)| {
                    r == rest && !w.is_empty() && (begins(w, words) || begins(words, w))
                })
            })
            .max_by_key(|(_, entry)| entry.at)
            .map(|(_, entry)| (entry.docs.clone(), entry.freshness.clone()))
    }

    fn store(&self, i: usize, key: &str, docs: &[Document], freshness: Option<Freshness>) {
        let keep_for = |source: usize| self.max_stale.max(self.sources[source].cache_ttl);
        if keep_for(i).is_zero() {
            return;
        }
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_CAPACITY && !cache.contains_key(&(i, key.to_owned())) {
            cache.retain(|(source, _), entry| {
                now.saturating_duration_since(entry.at) < keep_for(*source)
            });
            if cache.len() >= CACHE_CAPACITY
                && let Some(oldest) = cache
                    .iter()
                    .min_by_key(|(_, e)| e.at)
                    .map(|(k, _)| k.clone())
            {
                cache.remove(&oldest);
            }
        }
        cache.insert(
            (i, key.to_owned()),
            CacheEntry {
                at: now,
                docs: docs.to_vec(),
                freshness,
            },
        );
    }
}

/// Separates the parts of a cache key.
const KEY_SEP: char = '\u{1f}';

/// The cache key of a query: its words lowercased without punctuation, the
/// intent, the slots, the caller and the limit.
fn cache_key(query: &Query) -> String {
    let words: Vec<String> = query
        .text
        .split(|c: char| !c.is_alphanumeric() && c != '.')
        .map(|w| w.trim_matches('.').to_lowercase())
        .filter(|w| !w.is_empty())
        .collect();
    format!(
        "{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}",
        words.join(" "),
        query.intent.as_deref().unwrap_or(""),
        serde_json::to_string(&query.slots).unwrap_or_default(),
        query.caller.as_deref().unwrap_or(""),
        query.limit
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::provider::BoxFuture;
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// What the fake source does on its next calls.
    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Mode {
        Answer,
        Fail,
        Hang,
    }

    struct Fake {
        name: String,
        delay: Mutex<Duration>,
        mode: Mutex<Mode>,
        calls: AtomicUsize,
        freshness: Mutex<Option<Freshness>>,
    }

    impl Fake {
        fn new(name: &str, delay_ms: u64) -> Arc<Fake> {
            Arc::new(Fake {
                name: name.to_owned(),
                delay: Mutex::new(Duration::from_millis(delay_ms)),
                mode: Mutex::new(Mode::Answer),
                calls: AtomicUsize::new(0),
                freshness: Mutex::new(None),
            })
        }

        fn set_delay(&self, delay: Duration) {
            *self.delay.lock().unwrap() = delay;
        }

        /// Its data is now `version`, changed `age` ago.
        fn set_data(&self, version: &str, age: Duration) {
            *self.freshness.lock().unwrap() = Some(Freshness {
                version: version.into(),
                updated_at: Some(SystemTime::now() - age),
            });
        }

        fn set(&self, mode: Mode) {
            *self.mode.lock().unwrap() = mode;
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    impl Retriever for Fake {
        fn name(&self) -> &str {
            &self.name
        }

        fn retrieve<'a>(
            &'a self,
            query: &'a Query,
        ) -> BoxFuture<'a, Result<Vec<Document>, AgentError>> {
            Box::pin(async move {
                let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
                let mode = *self.mode.lock().unwrap();
                if mode == Mode::Hang {
                    std::future::pending::<()>().await;
                }
                let delay = *self.delay.lock().unwrap();
                tokio::time::sleep(delay).await;
                if mode == Mode::Fail {
                    return Err(AgentError::unavailable(&self.name, "connection refused"));
                }
                Ok(vec![Document {
                    source: self.name.clone(),
                    id: format!("{}-answer-{n}", self.name),
                    title: query.text.clone(),
                    text: format!("{} answer", self.name),
                    fields: BTreeMap::new(),
                    version: "v1".into(),
                    score: 1.0,
                }])
            })
        }

        fn freshness(&self) -> Option<Freshness> {
            self.freshness.lock().unwrap().clone()
        }
    }

    fn config(source: &Arc<Fake>, deadline_ms: u64, ttl_ms: u64, essential: bool) -> SourceConfig {
        SourceConfig {
            retriever: source.clone(),
            deadline: Duration::from_millis(deadline_ms),
            cache_ttl: Duration::from_millis(ttl_ms),
            essential,
        }
    }

    fn query(text: &str) -> Query {
        Query {
            text: text.into(),
            limit: 5,
            ..Query::default()
        }
    }

    fn report<'a>(outcome: &'a RetrievalOutcome, name: &str) -> &'a SourceReport {
        outcome
            .retrieval
            .sources
            .iter()
            .find(|r| r.source == name)
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn retrieve_from_asks_only_the_named_sources() {
        let (a, b) = (Fake::new("policies", 10), Fake::new("inventory", 10));
        b.set(Mode::Hang);
        let orch =
            RetrievalOrchestrator::new(vec![config(&a, 100, 0, false), config(&b, 100, 0, true)]);
        let outcome = orch
            .retrieve_from(&query("cancellation"), &["policies".into(), "nope".into()])
            .await;
        assert_eq!((a.calls(), b.calls()), (1, 0));
        assert_eq!(outcome.retrieval.sources.len(), 1);
        assert!(!outcome.retrieval.partial && outcome.essential_failed.is_empty());
        let none = orch.retrieve_from(&query("cancellation"), &[]).await;
        assert!(none.retrieval.sources.is_empty() && none.retrieval.documents.is_empty());
        assert_eq!(a.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn sources_run_in_parallel() {
        let (a, b) = (Fake::new("policies", 100), Fake::new("inventory", 100));
        let orch =
            RetrievalOrchestrator::new(vec![config(&a, 1000, 0, true), config(&b, 1000, 0, true)]);
        let started = Instant::now();
        let outcome = orch.retrieve(&query("cancellation policy")).await;
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(100) && took < Duration::from_millis(110),
            "{took:?}"
        );
        let r = &outcome.retrieval;
        assert!(!r.partial);
        assert!(outcome.essential_failed.is_empty());
        assert_eq!(r.documents.len(), 2);
        assert_eq!(r.documents[0].source, "policies");
        assert_eq!(r.documents[1].source, "inventory");
        for report in &r.sources {
            assert_eq!(report.hits, 1);
            assert!((report.elapsed_ms - 100.0).abs() < 1.0, "{report:?}");
            assert!(!report.cached && !report.timed_out && report.error.is_none());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_source_is_cut_at_its_deadline_and_reported() {
        let fast = Fake::new("policies", 20);
        let slow = Fake::new("crm", 500);
        let orch = RetrievalOrchestrator::new(vec![
            config(&fast, 300, 0, false),
            config(&slow, 200, 0, true),
        ]);
        let started = Instant::now();
        let outcome = orch.retrieve(&query("my booking")).await;
        assert_eq!(started.elapsed(), Duration::from_millis(200));
        assert!(outcome.retrieval.partial);
        assert_eq!(outcome.essential_failed, ["crm"]);
        assert_eq!(outcome.retrieval.documents.len(), 1);
        let crm = report(&outcome, "crm");
        assert!(crm.timed_out && !crm.cached && crm.hits == 0, "{crm:?}");
        assert!((crm.elapsed_ms - 200.0).abs() < 1.0);
        assert!(!report(&outcome, "policies").timed_out);
    }

    #[tokio::test(start_paused = true)]
    async fn never_waits_longer_than_the_largest_deadline() {
        let hung = Fake::new("crm", 0);
        hung.set(Mode::Hang);
        let other = Fake::new("booking", 0);
        other.set(Mode::Hang);
        let orch = RetrievalOrchestrator::new(vec![
            config(&hung, 300, 0, false),
            config(&other, 150, 0, false),
        ]);
        let started = Instant::now();
        let outcome = orch.retrieve(&query("anything")).await;
        assert_eq!(started.elapsed(), Duration::from_millis(300));
        assert!(outcome.retrieval.partial);
        assert!(outcome.essential_failed.is_empty());
        assert!(outcome.retrieval.sources.iter().all(|r| r.timed_out));
    }

    #[tokio::test(start_paused = true)]
    async fn errors_are_reported() {
        let crm = Fake::new("crm", 10);
        crm.set(Mode::Fail);
        let orch = RetrievalOrchestrator::new(vec![config(&crm, 200, 1000, true)]);
        let outcome = orch.retrieve(&query("my booking")).await;
        let r = report(&outcome, "crm");
        assert!(
            r.error.as_deref().unwrap().contains("connection refused"),
            "{r:?}"
        );
        assert!(!r.timed_out && !r.cached);
        assert!(outcome.retrieval.partial);
        assert_eq!(outcome.essential_failed, ["crm"]);
    }

    #[tokio::test(start_paused = true)]
    async fn stale_answers_stand_in_for_a_failing_source() {
        let crm = Fake::new("crm", 50);
        let orch = RetrievalOrchestrator::new(vec![config(&crm, 200, 1000, true)])
            .with_max_stale(Duration::from_secs(60));
        let q = query("When is my visit?");
        let first = orch.retrieve(&q).await;
        assert!(!first.retrieval.partial);
        assert_eq!(first.retrieval.documents[0].id, "crm-answer-1");

        // Past the TTL the source is asked again; it now times out, and the
        // cached answer stands in: not partial, marked cached and timed out.
        tokio::time::sleep(Duration::from_secs(5)).await;
        crm.set(Mode::Hang);
        let started = Instant::now();
        let second = orch.retrieve(&query("when is my visit")).await;
        assert_eq!(started.elapsed(), Duration::from_millis(200));
        assert_eq!(crm.calls(), 2);
        let r = report(&second, "crm");
        assert!(r.timed_out && r.cached && r.hits == 1, "{r:?}");
        assert!(!second.retrieval.partial);
        assert!(second.essential_failed.is_empty());
        assert_eq!(second.retrieval.documents[0].id, "crm-answer-1");

        // Errors too.
        crm.set(Mode::Fail);
        let third = orch.retrieve(&q).await;
        let r = report(&third, "crm");
        assert!(r.error.is_some() && r.cached && !r.timed_out, "{r:?}");
        assert!(!third.retrieval.partial);

        // Beyond the max staleness nothing stands in.
        tokio::time::sleep(Duration::from_secs(60)).await;
        let fourth = orch.retrieve(&q).await;
        assert!(fourth.retrieval.partial);
        assert!(fourth.retrieval.documents.is_empty());
        assert_eq!(fourth.essential_failed, ["crm"]);
        assert!(!report(&fourth, "crm").cached);
    }

    #[tokio::test(start_paused = true)]
    async fn fresh_answers_are_cached_for_their_ttl() {
        let kb = Fake::new("policies", 30);
        let orch = RetrievalOrchestrator::new(vec![config(&kb, 200, 1000, true)]);
        let q = query("cancellation policy");
        orch.retrieve(&q).await;
        assert_eq!(kb.calls(), 1);

        // Within the TTL (and worded a little differently): from the cache,
        // without asking, no time spent.
        tokio::time::sleep(Duration::from_millis(900)).await;
        let started = Instant::now();
        let hit = orch.retrieve(&query("Cancellation  policy?")).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(kb.calls(), 1);
        let r = report(&hit, "policies");
        assert!(r.cached && r.hits == 1 && r.elapsed_ms == 0.0, "{r:?}");

        // Another caller, other slots: another key.
        let mut other = q.clone();
        other.caller = Some("+919800000001".into());
        orch.retrieve(&other).await;
        assert_eq!(kb.calls(), 2);

        // The TTL expires: asked again.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let miss = orch.retrieve(&q).await;
        assert_eq!(kb.calls(), 3);
        assert!(!report(&miss, "policies").cached);
        assert_eq!(miss.retrieval.documents[0].id, "policies-answer-3");
    }

    #[tokio::test(start_paused = true)]
    async fn zero_ttl_still_keeps_answers_for_errors() {
        let crm = Fake::new("crm", 10);
        let orch = RetrievalOrchestrator::new(vec![config(&crm, 100, 0, false)]);
        let q = query("my visit");
        orch.retrieve(&q).await;
        orch.retrieve(&q).await;
        assert_eq!(crm.calls(), 2);
        crm.set(Mode::Fail);
        let outcome = orch.retrieve(&q).await;
        assert!(report(&outcome, "crm").cached);
        assert_eq!(outcome.retrieval.documents[0].id, "crm-answer-2");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_source_gets_its_stale_answer_within_its_deadline() {
        let inventory = Fake::new("inventory", 20);
        let orch = RetrievalOrchestrator::new(vec![config(&inventory, 150, 1000, true)]);
        let asked = query("I am looking for a three bedroom apartment");
        let first = orch.retrieve(&asked).await;
        let r = report(&first, "inventory");
        assert!(!r.cached && !r.stale && r.hits == 1, "{r:?}");

        // Past the TTL the source has become slower than its deadline.
        tokio::time::sleep(Duration::from_secs(10)).await;
        inventory.set_delay(Duration::from_secs(2));
        let started = Instant::now();
        let second = orch.retrieve(&asked).await;
        assert_eq!(started.elapsed(), Duration::from_millis(150));
        let r = report(&second, "inventory");
        assert!(r.timed_out && r.cached && r.stale && r.hits == 1, "{r:?}");
        assert!((r.elapsed_ms - 150.0).abs() < 1.0, "{r:?}");
        assert!(!second.retrieval.partial && second.essential_failed.is_empty());
        assert_eq!(second.retrieval.documents[0].id, "inventory-answer-1");

        // The same question asked with its first words only (a prefetch on
        // a partial transcript): the answer to the whole question stands in.
        let started = Instant::now();
        let partial = orch.retrieve(&query("I am looking")).await;
        assert_eq!(started.elapsed(), Duration::from_millis(150));
        let r = report(&partial, "inventory");
        assert!(r.stale && r.hits == 1, "{r:?}");
        assert_eq!(partial.retrieval.documents[0].id, "inventory-answer-1");

        // Another question, or the same words with other slots: nothing
        // stands in.
        let other = orch.retrieve(&query("I am looking at villas")).await;
        assert!(other.retrieval.partial && !report(&other, "inventory").stale);
        let mut slotted = asked.clone();
        slotted.slots.insert(
            "bedrooms".into(),
            crate::agent::provider::SlotValue::Number(2.0),
        );
        let slotted = orch.retrieve(&slotted).await;
        assert!(slotted.retrieval.partial);
        assert_eq!(slotted.essential_failed, ["inventory"]);
        assert_eq!(inventory.calls(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn data_older_than_its_max_age_is_flagged() {
        let inventory = Fake::new("inventory", 10);
        let policies = Fake::new("policies", 10);
        inventory.set_data("listings-7", Duration::from_secs(2 * 3600));
        policies.set_data("policies-2", Duration::from_secs(30 * 86_400));
        let orch = RetrievalOrchestrator::new(vec![
            config(&inventory, 100, 1000, true),
            config(&policies, 100, 1000, false),
        ])
        .with_max_age("inventory", Duration::from_secs(3600))
        .with_max_age("nope", Duration::from_secs(1));
        let q = query("three bedroom apartment");
        let outcome = orch.retrieve(&q).await;
        let r = report(&outcome, "inventory");
        assert!(r.too_old, "{r:?}");
        assert_eq!(r.version.as_deref(), Some("listings-7"));
        assert!(r.updated_at.as_deref().is_some_and(|t| t.ends_with('Z')));
        let age = r.age_s.unwrap();
        assert!((7200..7260).contains(&age), "{r:?}");
        // No max age: the age is reported, never flagged.
        let p = report(&outcome, "policies");
        assert!(!p.too_old && p.age_s.unwrap() >= 30 * 86_400, "{p:?}");
        // Too old is not a failure.
        assert!(!outcome.retrieval.partial && outcome.essential_failed.is_empty());

        // A cached answer carries the freshness of the data it came from,
        // even after the source moved on.
        inventory.set_data("listings-8", Duration::ZERO);
        let cached = orch.retrieve(&q).await;
        let r = report(&cached, "inventory");
        assert!(r.cached && r.too_old && r.version.as_deref() == Some("listings-7"));

        // Asked again past the TTL: new data, fresh, not flagged.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let fresh = orch.retrieve(&q).await;
        let r = report(&fresh, "inventory");
        assert!(!r.cached && !r.too_old, "{r:?}");
        assert_eq!(r.version.as_deref(), Some("listings-8"));
        assert!(r.age_s.unwrap() < 60, "{r:?}");
    }
}
