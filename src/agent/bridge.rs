//! The call task's side of an agent: moves the caller's frames and the
//! media session's turn events to the agent session, and the agent's audio
//! into the media session's playout queue as room frees up.
//!
//! The playout queue holds 200 ms; the rest of a reply waits here, so a
//! barge-in flush in the media session plus [`AgentBridge::on_media_event`]
//! dropping the waiting audio stops the reply within one tick.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tracing::warn;
use voxtrunk_media::session::{MediaEvent, MediaSession};

use super::runtime::AgentRuntime;
use super::session::{
    self, AgentInput, AgentOutput, EVENT_QUEUE, FRAME_QUEUE, OUTPUT_QUEUE, SessionInfo,
};

#[derive(Debug)]
enum Pending {
    Audio {
        utterance: u64,
        samples: Vec<i16>,
        offset: usize,
    },
    End {
        utterance: u64,
    },
}

impl Pending {
    fn utterance(&self) -> u64 {
        match self {
            Pending::Audio { utterance, .. } | Pending::End { utterance } => *utterance,
        }
    }
}

/// The glue between a call's media session and its agent session.
pub struct AgentBridge {
    frames: mpsc::Sender<(u64, voxtrunk_media::session::Frame)>,
    events: mpsc::Sender<AgentInput>,
    output: mpsc::Receiver<AgentOutput>,
    pending: VecDeque<Pending>,
    /// The utterance whose audio is in the playout queue.
    current: Option<u64>,
    /// The latest utterance cut by a barge-in or cancelled: its late
    /// chunks (already in the channel) are dropped, never played.
    cut: u64,
    hangup: bool,
    escalate: Option<String>,
    /// Frames the agent session could not take.
    pub dropped_frames: u64,
}

impl AgentBridge {
    /// Starts the agent session of a call.
    pub fn start(rt: Arc<AgentRuntime>, info: SessionInfo) -> Self {
        let (frames, frames_rx) = mpsc::channel(FRAME_QUEUE);
        let (events, events_rx) = mpsc::channel(EVENT_QUEUE);
        let (out_tx, output) = mpsc::channel(OUTPUT_QUEUE);
        // Detached: when the call task drops the bridge, the closed channels
        // end the session, which then writes its trace.
        tokio::spawn(session::run(rt, info, frames_rx, events_rx, out_tx));
        AgentBridge {
            frames,
            events,
            output,
            pending: VecDeque::new(),
            current: None,
            cut: 0,
            hangup: false,
            escalate: None,
            dropped_frames: 0,
        }
    }

    fn send_event(&mut self, e: AgentInput) {
        if self.events.try_send(e).is_err() {
            warn!("agent session not keeping up; event dropped");
        }
    }

    /// Handles one event of the media session, made at `now`.
    pub fn on_media_event(&mut self, ev: &MediaEvent, now: Instant) {
        match *ev {
            MediaEvent::Turn(t) => self.send_event(AgentInput::Turn(t, now.into())),
            MediaEvent::BargeIn { interrupted, .. } => {
                // The media session flushed its queue; drop the rest here.
                if let Some(cut) = interrupted.map(|r| r.utterance).or(self.current) {
                    self.pending.retain(|p| p.utterance() != cut);
                    self.cut = self.cut.max(cut);
                }
                self.current = None;
                self.send_event(AgentInput::BargeIn(interrupted));
            }
            MediaEvent::UtteranceStarted { utterance, .. } => {
                self.send_event(AgentInput::UtteranceStarted {
                    utterance,
                    at: now.into(),
                })
            }
            MediaEvent::UtteranceDone(r) => self.send_event(AgentInput::UtteranceDone(r)),
            MediaEvent::Dtmf(d) => self.send_event(AgentInput::Dtmf(d)),
            MediaEvent::Latched(_) | MediaEvent::Inactive(_) => {}
        }
    }

    /// Takes what the agent said.
    pub fn on_output(&mut self, o: AgentOutput) {
        match &o {
            AgentOutput::Audio { utterance, .. } | AgentOutput::End { utterance }
                if *utterance <= self.cut =>
            {
                return;
            }
            _ => {}
        }
        match o {
            AgentOutput::Audio { utterance, samples } => self.pending.push_back(Pending::Audio {
                utterance,
                samples,
                offset: 0,
            }),
            AgentOutput::End { utterance } => self.pending.push_back(Pending::End { utterance }),
            AgentOutput::Cancel { utterance } => {
                self.pending.retain(|p| p.utterance() != utterance);
                self.cut = self.cut.max(utterance);
            }
            AgentOutput::Hangup => self.hangup = true,
            AgentOutput::Escalate { reason } => self.escalate = Some(reason),
        }
    }

    /// The next output of the agent (for the call task's `select!`).
    pub async fn recv_output(&mut self) -> Option<AgentOutput> {
        self.output.recv().await
    }

    /// Moves frames to the agent and queued audio into the media session.
    pub fn pump(&mut self, media: &mut MediaSession, now: Instant) {
        while let Some(f) = media.pop_indexed_frame() {
            if self.frames.try_send(f).is_err() {
                self.dropped_frames += 1;
            }
        }
        let mut started = false;
        while media.playout_room() > 0 {
            let Some(front) = self.pending.front_mut() else {
                break;
            };
            match front {
                Pending::Audio {
                    utterance,
                    samples,
                    offset,
                } => {
                    if self.current != Some(*utterance) {
                        media.begin_utterance(*utterance);
                        self.current = Some(*utterance);
                        started = true;
                    }
                    *offset += media.push_audio(&samples[*offset..]);
                    if *offset == samples.len() {
                        self.pending.pop_front();
                    }
                }
                Pending::End { utterance } => {
                    if self.current == Some(*utterance) {
                        media.finish_utterance();
                    }
                    self.pending.pop_front();
                }
            }
        }
        if started {
            media.play_now(now);
        }
    }

    /// The agent asked for a person and everything it said has been sent:
    /// the reason, once.
    pub fn take_escalation(&mut self, media: &MediaSession) -> Option<String> {
        if self.pending.is_empty() && media.queued_frames() == 0 {
            self.escalate.take()
        } else {
            None
        }
    }

    /// Tells the agent session how the hand-over goes (`failed`: it takes
    /// the call back).
    pub fn escalation_note(&mut self, what: &str, why: &str, failed: bool) {
        self.send_event(AgentInput::Escalation {
            what: what.to_owned(),
            why: why.to_owned(),
            failed,
        });
    }

    /// The agent asked to hang up and everything it said has been sent.
    pub fn wants_hangup(&self, media: &MediaSession) -> bool {
        self.hangup && self.pending.is_empty() && media.queued_frames() == 0
    }
}
