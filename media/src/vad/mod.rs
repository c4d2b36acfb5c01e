//! Voice activity, endpointing and barge-in decisions on 20 ms frames of
//! 16 kHz PCM.
//!
//! Three small parts, each usable alone:
//!
//! * [`VoiceDetector`] — is this frame speech? The `earshot` model (a small
//!   neural network over 40 mel bands, pure Rust, weights built in) decides,
//!   but only for frames loud enough to matter: an energy gate tracks the
//!   noise floor and classifies frames within a few dB of it (or below an
//!   absolute floor) as silence without running the model. earshot costs
//!   about 5 µs per 16 ms block (0.31 ms of CPU per call-second while it
//!   runs); on a call the caller is silent much of the time — while the
//!   agent talks — so the gate saves most of that. We chose it over
//!   `webrtc-vad` (a C library whose detector is `!Send`) and over Silero
//!   through ONNX Runtime (a native runtime per process and a model file to
//!   ship) for being pure Rust, `Send`, and accurate on telephone speech.
//! * [`Endpointer`] — turns per-frame decisions into `SpeechStarted` /
//!   `SpeechStopped`, with hangovers counted in frames. While the agent is
//!   talking it asks for more speech before it declares a start: at least
//!   `barge_in_ms` of speech within the last `barge_in_window_ms`, so that
//!   coughs, clicks and short backchannels ("uh-huh", "yeah", "mm-hm" —
//!   typically 200–400 ms) do not interrupt the agent, while "Actually,
//!   wait..." does, even with pauses between the words.
//! * [`EchoGuard`] — carriers and speakerphones return the agent's own
//!   voice, attenuated and delayed. The guard learns the echo path (delay
//!   and loss) from how the inbound level follows the outbound level, and
//!   while the agent talks only frames clearly louder than the predicted
//!   echo count as the caller (double talk); before the path is learnt a
//!   Geigel rule (6 dB below the loudest recent outbound frame is echo)
//!   stands in.
//!
//! # Barge-in policy (defaults)
//!
//! | situation | what happens |
//! |---|---|
//! | caller speaks ≥ 120 ms while the agent is silent | `SpeechStarted` |
//! | caller speaks ≥ 400 ms (within 1 s) over the agent, above the echo bound | `SpeechStarted`, playout flushed at once (barge-in) |
//! | cough, click, "uh-huh", "yeah" (< 400 ms of speech) over the agent | nothing; the agent goes on |
//! | the agent's own voice coming back (echo) | nothing |
//! | ≥ 600 ms of silence after speech | `SpeechStopped` (end of the caller's turn) |
//!
//! A backchannel longer than the threshold does stop playout; the media
//! layer then reports exactly how much of the reply was heard, so the agent
//! can decide from the transcript to carry on from there.

use std::collections::VecDeque;

use crate::session::{FRAME_SAMPLES, Frame};

/// Frame length in milliseconds.
const FRAME_MS: u32 = 20;
/// earshot's block size (16 ms at 16 kHz).
const MODEL_BLOCK: usize = 256;

/// Level of a frame in dBFS (full-scale sine ≈ −3 dBFS); −100 for silence.
pub fn level_dbfs(frame: &[i16]) -> f32 {
    if frame.is_empty() {
        return -100.0;
    }
    // Integer sum of squares: exact, and it vectorises.
    let energy = frame
        .iter()
        .map(|&s| i64::from(s) * i64::from(s))
        .sum::<i64>() as f64;
    let ms = energy / frame.len() as f64 / (32768.0 * 32768.0);
    if ms <= 1e-10 {
        -100.0
    } else {
        (10.0 * ms.log10()) as f32
    }
}

/// Settings of the [`VoiceDetector`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadConfig {
    /// Model score at or above which a frame is speech (0–1).
    pub threshold: f32,
    /// Frames less than this many dB above the tracked noise floor are
    /// silence without running the model.
    pub gate_db: f32,
    /// Frames below this level are always silence.
    pub floor_dbfs: f32,
}

impl Default for VadConfig {
    fn default() -> Self {
        VadConfig {
            threshold: 0.5,
            gate_db: 6.0,
            floor_dbfs: -55.0,
        }
    }
}

/// What the detector says about one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadFrame {
    /// Model score, 0 when the gate decided.
    pub score: f32,
    /// Speech or not.
    pub speech: bool,
    /// The frame's level in dBFS.
    pub level_dbfs: f32,
}

/// Gated neural voice activity detection.
pub struct VoiceDetector {
    config: VadConfig,
    model: Box<earshot::Detector>,
    /// Samples waiting for a full model block.
    pending: Vec<i16>,
    noise_floor_db: f32,
    /// The model skipped frames: its context is stale and is reset before
    /// it runs again (silence is what it missed).
    model_stale: bool,
    model_blocks: u64,
    last_score: f32,
}

impl std::fmt::Debug for VoiceDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoiceDetector")
            .field("config", &self.config)
            .field("noise_floor_db", &self.noise_floor_db)
            .field("model_blocks", &self.model_blocks)
            .finish()
    }
}

impl VoiceDetector {
    /// A detector for one audio stream.
    pub fn new(config: VadConfig) -> Self {
        VoiceDetector {
            config,
            model: earshot::Detector::default_boxed(),
            pending: Vec::with_capacity(MODEL_BLOCK),
            noise_floor_db: -70.0,
            model_stale: false,
            model_blocks: 0,
            last_score: 0.0,
        }
    }

    /// Model blocks run so far (the gate's effect shows here).
    pub fn model_blocks(&self) -> u64 {
        self.model_blocks
    }

    /// The tracked noise floor in dBFS.
    pub fn noise_floor_dbfs(&self) -> f32 {
        self.noise_floor_db
    }

    /// Classifies one frame.
    pub fn process(&mut self, frame: &Frame) -> VadFrame {
        let level = level_dbfs(frame);
        let gate = self
            .config
            .floor_dbfs
            .max(self.noise_floor_db + self.config.gate_db);
        if level < gate {
            self.model_stale = true;
            self.pending.clear();
            self.last_score = 0.0;
            self.track_floor(level, false);
            return VadFrame {
                score: 0.0,
                speech: false,
                level_dbfs: level,
            };
        }
        if self.model_stale {
            self.model.reset();
            self.model_stale = false;
        }
        // 320 samples feed one or two 256-sample blocks; the frame's score
        // is the highest of the blocks that ended in it.
        let mut score: Option<f32> = None;
        let mut rest: &[i16] = frame;
        while !rest.is_empty() {
            let take = (MODEL_BLOCK - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() == MODEL_BLOCK {
                let s = self.model.predict_i16(&self.pending);
                self.model_blocks += 1;
                self.pending.clear();
                score = Some(score.map_or(s, |m: f32| m.max(s)));
            }
        }
        let score = score.unwrap_or(self.last_score);
        self.last_score = score;
        let speech = score >= self.config.threshold;
        self.track_floor(level, speech);
        VadFrame {
            score,
            speech,
            level_dbfs: level,
        }
    }

    /// Minimum tracking: follows the level down at once, creeps up by
    /// 0.1 dB per non-speech frame (5 dB/s) so a louder line is learnt
    /// within seconds while speech never lifts the floor.
    fn track_floor(&mut self, level: f32, speech: bool) {
        if level < self.noise_floor_db {
            self.noise_floor_db = level.max(-100.0);
        } else if !speech {
            self.noise_floor_db = (self.noise_floor_db + 0.1).min(level);
        }
    }

    /// Forgets everything (new stream).
    pub fn reset(&mut self) {
        self.model.reset();
        self.pending.clear();
        self.noise_floor_db = -70.0;
        self.model_stale = false;
        self.last_score = 0.0;
    }
}

/// Settings of the [`Endpointer`], per agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointConfig {
    /// Speech needed to declare a start while the agent is silent.
    pub start_ms: u32,
    /// Silence needed after speech to declare the end of the turn.
    pub stop_ms: u32,
    /// Speech needed, within `barge_in_window_ms`, to declare a start while
    /// the agent is talking (barge-in); less is backchannel or noise.
    pub barge_in_ms: u32,
    /// The window over which barge-in speech is counted.
    pub barge_in_window_ms: u32,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            start_ms: 120,
            stop_ms: 600,
            barge_in_ms: 400,
            barge_in_window_ms: 1000,
        }
    }
}

fn frames(ms: u32) -> u32 {
    ms.div_ceil(FRAME_MS).max(1)
}

/// A turn-taking event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnEvent {
    /// The caller started speaking; `frame` is the first speech frame.
    SpeechStarted {
        /// Index of the first frame of the speech.
        frame: u64,
        /// The agent was talking (this is a barge-in).
        over_agent: bool,
    },
    /// The caller stopped; `frame` is the first frame of the silence that
    /// ended the turn.
    SpeechStopped {
        /// Index of the first silent frame.
        frame: u64,
        /// Length of the speech, ms.
        speech_ms: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EpState {
    Silence { run: u32, first: u64, misses: u32 },
    Speech { start: u64, silence: u32 },
}

/// Speech start/stop detection with hangovers counted in frames.
#[derive(Debug, Clone)]
pub struct Endpointer {
    config: EndpointConfig,
    frame: u64,
    state: EpState,
    /// The last `barge_in_window_ms` of decisions, newest last.
    recent: VecDeque<bool>,
    recent_speech: u32,
}

impl Endpointer {
    /// A new endpointer, in silence.
    pub fn new(config: EndpointConfig) -> Self {
        Endpointer {
            config,
            frame: 0,
            state: EpState::Silence {
                run: 0,
                first: 0,
                misses: 0,
            },
            recent: VecDeque::with_capacity(frames(config.barge_in_window_ms) as usize),
            recent_speech: 0,
        }
    }

    /// True between `SpeechStarted` and `SpeechStopped`.
    pub fn in_speech(&self) -> bool {
        matches!(self.state, EpState::Speech { .. })
    }

    /// Index of the next frame.
    pub fn frame_index(&self) -> u64 {
        self.frame
    }

    /// Feeds one frame's decision. `agent_playing` selects the barge-in
    /// threshold.
    pub fn push(&mut self, speech: bool, agent_playing: bool) -> Option<TurnEvent> {
        let index = self.frame;
        self.frame += 1;
        if self.recent.len() == frames(self.config.barge_in_window_ms) as usize
            && self.recent.pop_front() == Some(true)
        {
            self.recent_speech -= 1;
        }
        self.recent.push_back(speech);
        self.recent_speech += u32::from(speech);
        match &mut self.state {
            EpState::Silence { run, first, misses } => {
                if speech {
                    if *run == 0 {
                        *first = index;
                    }
                    *run += 1;
                    *misses = 0;
                } else if *run > 0 && *misses == 0 {
                    // One dropout inside a word does not restart the count.
                    *misses = 1;
                } else {
                    *run = 0;
                    *misses = 0;
                }
                let start = if agent_playing {
                    // Barge-in: enough speech within the window, ending now.
                    (speech && self.recent_speech >= frames(self.config.barge_in_ms)).then(|| {
                        let back = self.recent.iter().position(|s| *s).unwrap_or(0);
                        index + 1 - (self.recent.len() - back) as u64
                    })
                } else {
                    (*run >= frames(self.config.start_ms)).then_some(*first)
                };
                if let Some(start) = start {
                    self.state = EpState::Speech { start, silence: 0 };
                    return Some(TurnEvent::SpeechStarted {
                        frame: start,
                        over_agent: agent_playing,
                    });
                }
                None
            }
            EpState::Speech { start, silence } => {
                if speech {
                    *silence = 0;
                    return None;
                }
                *silence += 1;
                if *silence >= frames(self.config.stop_ms) {
                    let first_silent = index + 1 - u64::from(*silence);
                    let speech_ms = ((first_silent - *start) * u64::from(FRAME_MS)) as u32;
                    self.state = EpState::Silence {
                        run: 0,
                        first: 0,
                        misses: 0,
                    };
                    return Some(TurnEvent::SpeechStopped {
                        frame: first_silent,
                        speech_ms,
                    });
                }
                None
            }
        }
    }
}

/// Settings of the [`EchoGuard`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EchoGuardConfig {
    /// How much louder than the predicted echo an inbound frame must be to
    /// count as the caller talking (dB).
    pub margin_db: f32,
    /// The longest echo delay looked for (network round trip + jitter
    /// buffer + echo path).
    pub window_ms: u32,
}

impl Default for EchoGuardConfig {
    fn default() -> Self {
        EchoGuardConfig {
            margin_db: 6.0,
            window_ms: 500,
        }
    }
}

/// Frames of level history correlated to find the echo path.
const ECHO_CORR_FRAMES: usize = 25;
/// Correlation above which the echo path counts as found.
const ECHO_CORR_MIN: f32 = 0.7;
/// Levels below this are silence for the echo guard.
const QUIET_DBFS: f32 = -50.0;

/// Tells the agent's returning voice from the caller's.
///
/// It learns the echo path from the frame levels: the lag (0 to
/// `window_ms`) at which the inbound level envelope follows the outbound one
/// best, and the echo return loss at that lag. Once learnt, an inbound frame
/// is echo unless it is `margin_db` louder than the outbound level at that
/// lag minus the loss (double talk: the caller over the echo). Until it is
/// learnt — the first half second of agent speech — a Geigel rule stands
/// in: a frame more than 6 dB below the loudest recent outbound frame is
/// echo. A line that shows no echo at all (no correlation once the agent
/// has talked for half a second) filters nothing.
#[derive(Debug, Clone)]
pub struct EchoGuard {
    config: EchoGuardConfig,
    /// Outbound frame levels, newest last.
    far: VecDeque<f32>,
    /// Inbound frame levels, newest last.
    near: VecDeque<f32>,
    /// Frames since the agent last started talking after silence.
    talking_for: usize,
    /// Learnt echo path: lag in frames and return loss in dB.
    path: Option<(usize, f32)>,
}

impl EchoGuard {
    /// A guard with no history.
    pub fn new(config: EchoGuardConfig) -> Self {
        let lags = frames(config.window_ms) as usize;
        EchoGuard {
            config,
            far: VecDeque::with_capacity(lags + ECHO_CORR_FRAMES + 1),
            near: VecDeque::with_capacity(ECHO_CORR_FRAMES),
            talking_for: 0,
            path: None,
        }
    }

    fn max_lag(&self) -> usize {
        frames(self.config.window_ms) as usize
    }

    /// Records the level of the frame we sent this tick (−100 for silence).
    pub fn push_far(&mut self, level_dbfs: f32) {
        if self.far.len() == self.max_lag() + ECHO_CORR_FRAMES + 1 {
            self.far.pop_front();
        }
        self.far.push_back(level_dbfs.max(-70.0));
        let recent_talk = self
            .far
            .iter()
            .rev()
            .take(self.max_lag() + 1)
            .any(|l| *l > QUIET_DBFS);
        self.talking_for = if recent_talk { self.talking_for + 1 } else { 0 };
    }

    /// The learnt echo path (lag in frames, return loss in dB), if any.
    pub fn echo_path(&self) -> Option<(usize, f32)> {
        self.path
    }

    /// The outbound level `lag` frames before the newest one.
    fn far_at(&self, lag: usize) -> Option<f32> {
        let n = self.far.len();
        (lag < n).then(|| self.far[n - 1 - lag])
    }

    /// Records the level of an inbound frame and says whether it is echo.
    pub fn push_near(&mut self, level_dbfs: f32) -> bool {
        if self.near.len() == ECHO_CORR_FRAMES {
            self.near.pop_front();
        }
        self.near.push_back(level_dbfs.max(-70.0));
        self.learn();
        if self.talking_for == 0 {
            return false;
        }
        let level = level_dbfs.max(-70.0);
        if let Some((lag, loss)) = self.path {
            let predicted = self.far_at(lag).unwrap_or(-70.0) - loss;
            return level < predicted + self.config.margin_db;
        }
        if self.talking_for <= ECHO_CORR_FRAMES {
            let loudest = self
                .far
                .iter()
                .rev()
                .take(self.max_lag() + 1)
                .fold(-70.0f32, |a, b| a.max(*b));
            return level < loudest - 6.0;
        }
        false
    }

    /// Finds the lag at which the inbound envelope follows the outbound one.
    /// Runs every fourth frame while the agent talks (the echo path moves
    /// slowly), without allocating.
    fn learn(&mut self) {
        let n = self.near.len();
        if n < ECHO_CORR_FRAMES || self.talking_for == 0 || !self.talking_for.is_multiple_of(4) {
            return;
        }
        let mut best: Option<(usize, f32)> = None;
        for lag in 0..=self.max_lag() {
            // near[i] pairs with far sent `lag` frames before it; the newest
            // inbound frame is compared with what was sent up to the tick
            // before (inbound is processed before outbound in a tick).
            if lag + n > self.far.len() {
                break;
            }
            let far = |i: usize| self.far[self.far.len() - 1 - (lag + n - 1 - i)];
            if (0..n).all(|i| far(i) <= QUIET_DBFS) {
                continue;
            }
            let corr = pearson(n, |i| self.near[i], far);
            if best.is_none_or(|(_, c)| corr > c) {
                best = Some((lag, corr));
            }
        }
        let Some((lag, corr)) = best.filter(|(_, c)| *c >= ECHO_CORR_MIN) else {
            return;
        };
        let (mut sum, mut count) = (0.0, 0);
        for i in 0..n {
            let f = self.far[self.far.len() - 1 - (lag + n - 1 - i)];
            if f > QUIET_DBFS {
                sum += f - self.near[i];
                count += 1;
            }
        }
        let _ = corr;
        self.path = Some((lag, sum / count.max(1) as f32));
    }
}

/// Pearson correlation of two series given by index.
fn pearson(n: usize, a: impl Fn(usize) -> f32, b: impl Fn(usize) -> f32) -> f32 {
    let nf = n as f32;
    let (mut sa, mut sb) = (0.0, 0.0);
    for i in 0..n {
        sa += a(i);
        sb += b(i);
    }
    let (ma, mb) = (sa / nf, sb / nf);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let (x, y) = (a(i) - ma, b(i) - mb);
        sab += x * y;
        saa += x * x;
        sbb += y * y;
    }
    if saa < 1.0 || sbb < 1.0 {
        0.0
    } else {
        sab / (saa * sbb).sqrt()
    }
}

/// Frames per second, for callers converting counts.
pub const FRAMES_PER_SECOND: u32 = 1000 / FRAME_MS;

const _: () = assert!(FRAME_SAMPLES == 320);

#[cfg(test)]
mod tests;
