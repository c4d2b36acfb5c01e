//! Inference scheduling: bounded worker pools for speech recognition,
//! speech synthesis and reasoning, shared by every call of the server, and
//! the admission rule that keeps them under their target utilization.
//!
//! A [`Pool`] has a fixed number of slots. A job waits for a slot in one of
//! three FIFO queues, served strictly by [`Priority`]: a live turn before a
//! fixed prompt (a greeting) before background work (warming the prompt
//! cache). A fourth pool, `stt_streams`, has no jobs: its slots are the
//! recogniser's decoders, each held for a whole utterance, so the number of
//! callers that can be listened to at once is measured like the rest. Each
//! engine kind has its own pool, so recognition cannot take
//! the slots synthesis needs. The STT and TTS jobs run on threads of
//! tokio's blocking pool, one per slot in use (the threads stay alive
//! between jobs; the models and voices they use are loaded once at start-up
//! and shared); the reasoning pool's jobs are awaited on the caller's task,
//! because its engines are network services (an OpenAI-compatible server)
//! or cheap rules.
//!
//! Every pool measures itself: queue depth, the time jobs waited for a slot,
//! and utilization (busy slots integrated over time ÷ slots), smoothed over
//! a few seconds by [`Pool::sample`]. [`Admission`] turns those figures into
//! the decision for a new agent call: each call's share of each pool is
//! learnt from the measured utilization and the number of calls, and a new
//! call is refused (503 + Retry-After) when one more share would push a
//! pool, or the in-process engines together on the machine's cores, past
//! the target utilization, or when jobs already wait longer than the wait
//! budget. Calls already up keep their latency; new ones are told to come
//! back later.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Who is waiting: served strictly in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// A turn of a call in progress (the caller is waiting).
    Live = 0,
    /// A fixed prompt: a greeting or a line not cached yet.
    Prompt = 1,
    /// Work nobody waits for (warming the prompt cache).
    Background = 2,
}

impl Priority {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Priority::Live => "live",
            Priority::Prompt => "prompt",
            Priority::Background => "background",
        }
    }
}

/// Why a job did not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolError {
    /// The queue holds its maximum of waiting jobs.
    Full {
        /// The pool.
        pool: &'static str,
        /// Jobs waiting.
        queued: usize,
    },
    /// The runtime is stopping, or the job panicked.
    Stopped(&'static str),
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolError::Full { pool, queued } => {
                write!(f, "the {pool} pool is full ({queued} jobs waiting)")
            }
            PoolError::Stopped(pool) => write!(f, "the {pool} pool stopped"),
        }
    }
}

impl std::error::Error for PoolError {}

/// A figure of one pool at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolSnapshot {
    /// The pool's name.
    pub name: &'static str,
    /// Slots.
    pub workers: usize,
    /// Slots in use.
    pub busy: usize,
    /// Jobs waiting for a slot.
    pub queued: usize,
    /// Busy slots ÷ slots, smoothed over a few seconds (0–1).
    pub utilization: f64,
    /// Recent time jobs waited for a slot, ms (smoothed).
    pub wait_ms: f64,
    /// Whether the pool's engines run on this machine's cores.
    pub local: bool,
}

struct State {
    busy: usize,
    queues: [VecDeque<oneshot::Sender<Instant>>; 3],
    /// Σ busy × time since the last change, in slot-nanoseconds.
    busy_ns: u128,
    changed_at: Instant,
    /// `busy_ns` and the time at the last sample.
    sampled_ns: u128,
    sampled_at: Instant,
    utilization: f64,
    wait_ms: f64,
}

impl State {
    fn account(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.changed_at).as_nanos();
        self.busy_ns += dt * self.busy as u128;
        self.changed_at = now;
    }

    fn queued(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum()
    }
}

struct Inner {
    name: &'static str,
    workers: usize,
    max_queue: usize,
    local: bool,
    state: Mutex<State>,
    blocking: bool,
    done: AtomicU64,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives a freed slot to the first live waiter, or frees it.
    fn release(&self) {
        let now = Instant::now();
        let mut s = self.state();
        for q in 0..s.queues.len() {
            while let Some(waiter) = s.queues[q].pop_front() {
                if waiter.send(now).is_ok() {
                    return;
                }
            }
        }
        s.account(now);
        s.busy -= 1;
    }
}

/// A bounded pool of inference slots (see the module documentation).
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.inner.name)
            .field("workers", &self.inner.workers)
            .finish_non_exhaustive()
    }
}

/// A slot of a pool, given back when dropped.
pub struct Permit {
    inner: Arc<Inner>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.inner.done.fetch_add(1, Ordering::Relaxed);
        self.inner.release();
    }
}

/// Waits for a slot; a wait given up (its future dropped) after the slot
/// was handed over gives the slot back.
struct Waiting {
    inner: Arc<Inner>,
    rx: Option<oneshot::Receiver<Instant>>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            if rx.try_recv().is_ok() {
                self.inner.release();
            }
        }
    }
}

impl Pool {
    /// A pool of `workers` slots; with `blocking`, [`Pool::run`] runs
    /// its jobs on threads of the runtime's blocking pool (one per slot in
    /// use), otherwise on the caller's task. At most `max_queue` jobs wait.
    /// `local`: the engines run on this machine's cores.
    pub fn new(
        name: &'static str,
        workers: usize,
        max_queue: usize,
        blocking: bool,
        local: bool,
    ) -> Self {
        let workers = workers.max(1);
        let now = Instant::now();
        Pool {
            inner: Arc::new(Inner {
                name,
                workers,
                max_queue,
                local,
                state: Mutex::new(State {
                    busy: 0,
                    queues: Default::default(),
                    busy_ns: 0,
                    changed_at: now,
                    sampled_ns: 0,
                    sampled_at: now,
                    utilization: 0.0,
                    wait_ms: 0.0,
                }),
                blocking,
                done: AtomicU64::new(0),
            }),
        }
    }

    /// Waits for a slot, behind every waiter of the same or a higher
    /// priority.
    pub async fn acquire(&self, priority: Priority) -> Result<Permit, PoolError> {
        let asked = Instant::now();
        let rx = {
            let mut s = self.inner.state();
            let ahead: usize = s.queues[..=priority as usize]
                .iter()
                .map(VecDeque::len)
                .sum();
            if s.busy < self.inner.workers && ahead == 0 {
                s.account(asked);
                s.busy += 1;
                drop(s);
                self.waited(priority, Duration::ZERO);
                return Ok(Permit {
                    inner: Arc::clone(&self.inner),
                });
            }
            let queued = s.queued();
            if queued >= self.inner.max_queue {
                metrics::counter!("voxtrunk_pool_rejected_total", "pool" => self.inner.name)
                    .increment(1);
                return Err(PoolError::Full {
                    pool: self.inner.name,
                    queued,
                });
            }
            let (tx, rx) = oneshot::channel();
            s.queues[priority as usize].push_back(tx);
            metrics::gauge!("voxtrunk_pool_queue_depth", "pool" => self.inner.name)
                .set((queued + 1) as f64);
            rx
        };
        let mut waiting = Waiting {
            inner: Arc::clone(&self.inner),
            rx: Some(rx),
        };
        let granted = waiting
            .rx
            .as_mut()
            .expect("set above")
            .await
            .map_err(|_| PoolError::Stopped(self.inner.name))?;
        waiting.rx = None;
        self.waited(priority, granted.saturating_duration_since(asked));
        Ok(Permit {
            inner: Arc::clone(&self.inner),
        })
    }

    fn waited(&self, priority: Priority, wait: Duration) {
        let ms = wait.as_secs_f64() * 1000.0;
        {
            let mut s = self.inner.state();
            s.wait_ms += 0.2 * (ms - s.wait_ms);
        }
        metrics::histogram!("voxtrunk_pool_wait_ms", "pool" => self.inner.name).record(ms);
        metrics::counter!("voxtrunk_pool_jobs_total", "pool" => self.inner.name, "priority" => priority.label())
            .increment(1);
    }

    /// Runs `job` once a slot is free: on a blocking thread for a
    /// blocking pool, else on the caller's task.
    pub async fn run<T, F>(&self, priority: Priority, job: F) -> Result<T, PoolError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let permit = self.acquire(priority).await?;
        if !self.inner.blocking {
            let out = job();
            drop(permit);
            return Ok(out);
        }
        tokio::task::spawn_blocking(move || {
            let out = job();
            // The slot is free before the result is read.
            drop(permit);
            out
        })
        .await
        .map_err(|_| PoolError::Stopped(self.inner.name))
    }

    /// Updates the smoothed utilization (time constant `tau`) and publishes
    /// the pool's gauges; called every few hundred ms.
    pub fn sample(&self, now: Instant, tau: Duration) -> PoolSnapshot {
        let mut s = self.inner.state();
        s.account(now);
        let dt = now.saturating_duration_since(s.sampled_at);
        if !dt.is_zero() {
            let busy = (s.busy_ns - s.sampled_ns) as f64;
            let window = dt.as_nanos() as f64 * self.inner.workers as f64;
            let u = (busy / window).clamp(0.0, 1.0);
            let a = 1.0 - (-dt.as_secs_f64() / tau.as_secs_f64().max(1e-3)).exp();
            s.utilization += a * (u - s.utilization);
            s.sampled_ns = s.busy_ns;
            s.sampled_at = now;
        }
        let snap = self.snapshot_locked(&s);
        drop(s);
        let name = self.inner.name;
        metrics::gauge!("voxtrunk_pool_utilization", "pool" => name).set(snap.utilization);
        metrics::gauge!("voxtrunk_pool_queue_depth", "pool" => name).set(snap.queued as f64);
        metrics::gauge!("voxtrunk_pool_busy", "pool" => name).set(snap.busy as f64);
        metrics::gauge!("voxtrunk_pool_workers", "pool" => name).set(snap.workers as f64);
        snap
    }

    /// The pool's figures now.
    pub fn snapshot(&self) -> PoolSnapshot {
        let s = self.inner.state();
        self.snapshot_locked(&s)
    }

    fn snapshot_locked(&self, s: &State) -> PoolSnapshot {
        PoolSnapshot {
            name: self.inner.name,
            workers: self.inner.workers,
            busy: s.busy,
            queued: s.queued(),
            utilization: s.utilization,
            wait_ms: s.wait_ms,
            local: self.inner.local,
        }
    }

    /// Jobs finished since start.
    #[cfg(test)]
    pub fn finished(&self) -> u64 {
        self.inner.done.load(Ordering::Relaxed)
    }
}

/// The `[inference]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct InferenceSettings {
    /// Speech-recognition slots (threads).
    pub stt_workers: usize,
    /// Utterances recognised at once.
    pub stt_streams: usize,
    /// Speech-synthesis slots (threads).
    pub tts_workers: usize,
    /// Reasoning slots (concurrent requests).
    pub reason_workers: usize,
    /// Jobs that may wait per pool before new ones are refused.
    pub max_queue: usize,
    /// Utilization admission keeps every pool under (0–1).
    pub target_utilization: f64,
    /// A pool whose jobs wait longer than this (ms) refuses new calls.
    pub max_wait_ms: f64,
    /// Cores the in-process engines share.
    pub cores: usize,
    /// How long an admitted agent call takes to show its load (its
    /// greeting plays first): until then it is not measured.
    pub settle: Duration,
    /// Agent calls admitted at once per `settle` while the per-call share
    /// is still unknown.
    pub warmup_calls: usize,
    /// Starting shares per pool (slots per call), configured or kept from
    /// an earlier run; with them the shares count as known from the start.
    pub call_share: Vec<(&'static str, f64)>,
    /// Whether the pools decide on new agent calls at all (off: only the
    /// call limits do; the shares are still learnt).
    pub admission: bool,
}

impl InferenceSettings {
    /// Small pools on 2 cores, admission as shipped, for tests.
    #[cfg(test)]
    pub fn for_tests() -> Self {
        InferenceSettings {
            stt_workers: 4,
            stt_streams: 8,
            tts_workers: 2,
            reason_workers: 4,
            max_queue: 256,
            target_utilization: 0.75,
            max_wait_ms: 200.0,
            cores: 2,
            settle: Duration::from_secs(10),
            warmup_calls: 8,
            call_share: Vec::new(),
            admission: true,
        }
    }
}

/// The server's inference pools.
#[derive(Debug, Clone)]
pub struct Inference {
    /// Speech recognition.
    pub stt: Pool,
    /// Utterances being recognised (each holds a recogniser's decoder).
    pub stt_streams: Pool,
    /// Speech synthesis.
    pub tts: Pool,
    /// Reasoning.
    pub reason: Pool,
    /// The admission rule over them.
    pub admission: Arc<Mutex<Admission>>,
}

/// How often the pools are sampled, and the utilization's time constant.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(250);
const UTILIZATION_TAU: Duration = Duration::from_secs(2);

impl Inference {
    /// The pools, empty.
    pub fn new(s: &InferenceSettings) -> Self {
        Inference {
            stt: Pool::new("stt", s.stt_workers, s.max_queue, true, true),
            stt_streams: Pool::new("stt_streams", s.stt_streams, s.max_queue, false, false),
            tts: Pool::new("tts", s.tts_workers, s.max_queue, true, true),
            reason: Pool::new("reason", s.reason_workers, s.max_queue, false, false),
            admission: Arc::new(Mutex::new(Admission::new(s))),
        }
    }

    /// Small pools for tests.
    #[cfg(test)]
    pub fn for_tests() -> Self {
        Inference::new(&InferenceSettings::for_tests())
    }

    fn pools(&self) -> [&Pool; 4] {
        [&self.stt, &self.stt_streams, &self.tts, &self.reason]
    }

    /// The pools' names, in the order of [`Inference::pools`].
    pub const POOL_NAMES: [&'static str; 4] = ["stt", "stt_streams", "tts", "reason"];

    /// Samples every pool and lets admission learn from it.
    pub fn sample(&self, now: Instant, agent_calls: usize) {
        let snaps = self.pools().map(|p| p.sample(now, UTILIZATION_TAU));
        let mut a = self.admission.lock().unwrap_or_else(|e| e.into_inner());
        a.learn(&snaps, agent_calls, now, SAMPLE_EVERY);
        for p in &snaps {
            metrics::gauge!("voxtrunk_pool_call_share", "pool" => p.name).set(a.share(p.name));
        }
    }

    /// Whether one more agent call fits (see [`Admission::decide`]); an
    /// admitted call is counted as settling from `now`.
    pub fn admit(&self, agent_calls: usize, now: Instant) -> Result<(), String> {
        let snaps = self.pools().map(Pool::snapshot);
        let mut a = self.admission.lock().unwrap_or_else(|e| e.into_inner());
        a.decide(&snaps, agent_calls, now)?;
        a.admitted(now);
        Ok(())
    }
}

/// Reads shares kept by [`save_shares`]: pool names with slots per call.
pub fn load_shares(path: &std::path::Path) -> Result<Vec<(&'static str, f64)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let map: std::collections::BTreeMap<String, f64> =
        serde_json::from_str(&text).map_err(|e| format!("not a JSON object of numbers: {e}"))?;
    let mut out = Vec::new();
    for (name, share) in map {
        let Some(&pool) = Inference::POOL_NAMES.iter().find(|n| **n == name) else {
            return Err(format!("no pool named {name:?}"));
        };
        if !(share.is_finite() && share >= 0.0) {
            return Err(format!("{name}: {share} is not a share"));
        }
        out.push((pool, share));
    }
    Ok(out)
}

/// Keeps learnt shares for the next start (written whole, then renamed).
pub fn save_shares(path: &std::path::Path, shares: &[(&'static str, f64)]) -> std::io::Result<()> {
    let map: std::collections::BTreeMap<&str, f64> = shares.iter().copied().collect();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(&map).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(&tmp, path)
}

/// The admission rule: the share of each pool one agent call takes is
/// learnt from measurements, and a new call must fit under the target.
///
/// A new call loads the pools only once its greeting has played and its
/// caller talks, so in the share's denominator a call counts in proportion
/// to its age for its first `settle` (a call 2 s old of a 10 s settle
/// counts as a fifth), and nothing is learnt until at least one call has
/// settled. The calls admitted in the last `settle` may be at most
/// `warmup_calls`, or half the settled calls when that is more: a burst of
/// INVITEs (at start-up, after a failover) is let in step by step, each
/// step measured before the next, like TCP's slow start. The shares are
/// known once learnt for a `settle` (or given at start-up); known shares
/// are kept for the next start.
#[derive(Debug, Clone)]
pub struct Admission {
    target: f64,
    max_wait_ms: f64,
    cores: usize,
    /// Per pool: slot-equivalents one call uses (smoothed), by pool name.
    share: Vec<(&'static str, f64)>,
    settle: Duration,
    warmup_calls: usize,
    /// When the agent calls admitted less than `settle` ago were admitted,
    /// oldest first.
    young: VecDeque<Instant>,
    /// How long the shares have been learnt from settled calls.
    learnt_for: Duration,
    /// The shares were given at start-up.
    given: bool,
    enabled: bool,
}

/// How fast a call's learnt share follows the measurements (per sample).
const SHARE_GAIN: f64 = 0.05;

/// Agent calls not measured yet may be at most this fraction of the
/// settled ones (or `warmup_calls`): the agent calls can grow by half per
/// `settle`, so the measurements the shares come from always cover most
/// of the calls, and callers admitted together do not all talk at once.
const RAMP_GROWTH: f64 = 0.5;

impl Admission {
    /// A rule starting from the settings' shares, if any.
    pub fn new(s: &InferenceSettings) -> Self {
        Admission {
            target: s.target_utilization,
            max_wait_ms: s.max_wait_ms,
            cores: s.cores.max(1),
            share: s.call_share.clone(),
            settle: s.settle,
            warmup_calls: s.warmup_calls.max(1),
            young: VecDeque::new(),
            learnt_for: Duration::ZERO,
            given: !s.call_share.is_empty(),
            enabled: s.admission,
        }
    }

    /// The learnt share of a pool, in slots per call.
    pub fn share(&self, pool: &str) -> f64 {
        self.share
            .iter()
            .find(|(n, _)| *n == pool)
            .map_or(0.0, |(_, s)| *s)
    }

    /// Every pool's share, once known (to keep for the next start).
    pub fn known_shares(&self) -> Option<&[(&'static str, f64)]> {
        self.known().then_some(self.share.as_slice())
    }

    /// Whether the shares have been measured long enough, or were given.
    pub fn known(&self) -> bool {
        self.given || self.learnt_for >= self.settle
    }

    /// Counts an admitted agent call as settling from `now`.
    pub fn admitted(&mut self, now: Instant) {
        self.forget_settled(now);
        self.young.push_back(now);
    }

    fn forget_settled(&mut self, now: Instant) {
        while self
            .young
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.settle)
        {
            self.young.pop_front();
        }
    }

    /// Learns each pool's share per call from its utilization while
    /// `agent_calls` calls are up (the young ones counted by their age),
    /// over a sample of `dt`. A share only grows quickly: a quiet moment
    /// (everyone listening) pulls it down slowly.
    pub fn learn(
        &mut self,
        pools: &[PoolSnapshot],
        agent_calls: usize,
        now: Instant,
        dt: Duration,
    ) {
        self.forget_settled(now);
        // Young calls that have already ended are still in `young`: they
        // take the place of settled ones (the share errs upwards).
        let settled = agent_calls.saturating_sub(self.young.len());
        if settled == 0 {
            return;
        }
        let ramping: f64 = self
            .young
            .iter()
            .map(|t| now.saturating_duration_since(*t).as_secs_f64() / self.settle.as_secs_f64())
            .sum();
        let calls = settled as f64 + ramping.min((agent_calls - settled) as f64);
        self.learnt_for += dt;
        for p in pools {
            let measured = p.utilization * p.workers as f64 / calls;
            let gain = if measured > self.share(p.name) {
                4.0 * SHARE_GAIN
            } else {
                SHARE_GAIN
            };
            match self.share.iter_mut().find(|(n, _)| *n == p.name) {
                Some((_, s)) => *s += gain * (measured - *s),
                None => self.share.push((p.name, measured)),
            }
        }
    }

    /// Whether a new agent call fits with `agent_calls` up; the error says
    /// which limit it would pass.
    pub fn decide(
        &self,
        pools: &[PoolSnapshot],
        agent_calls: usize,
        now: Instant,
    ) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        let young = self
            .young
            .iter()
            .filter(|t| now.saturating_duration_since(**t) < self.settle)
            .count();
        let settled = agent_calls.saturating_sub(young);
        let allowed = self
            .warmup_calls
            .max((settled as f64 * RAMP_GROWTH) as usize);
        if young >= allowed {
            return Err(format!(
                "ramping up: {young} agent calls admitted in the last {} s are not measured yet \
                 (at most {} at a time, or half the settled ones)",
                self.settle.as_secs(),
                self.warmup_calls
            ));
        }
        let calls = agent_calls as f64 + 1.0;
        let mut local_slots = 0.0;
        for p in pools {
            if p.queued > 0 && p.wait_ms > self.max_wait_ms {
                return Err(format!(
                    "{} jobs wait {:.0} ms for the {} pool (limit {:.0} ms)",
                    p.queued, p.wait_ms, p.name, self.max_wait_ms
                ));
            }
            let share = self.share(p.name);
            let predicted = (calls * share / p.workers as f64).max(p.utilization);
            if predicted > self.target {
                return Err(format!(
                    "the {} pool would be {:.0}% busy with one more call (target {:.0}%)",
                    p.name,
                    predicted * 100.0,
                    self.target * 100.0
                ));
            }
            if p.local {
                local_slots += (calls * share).max(p.utilization * p.workers as f64);
            }
        }
        let cores = local_slots / self.cores as f64;
        if cores > self.target {
            return Err(format!(
                "speech engines would use {:.0}% of {} cores with one more call (target {:.0}%)",
                cores * 100.0,
                self.cores,
                self.target * 100.0
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
