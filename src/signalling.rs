//! The signalling task: the only owner of the SIP sockets and the
//! [`Endpoint`]. It `select!`s over UDP datagrams, items from TCP
//! connection tasks, commands from call tasks, the endpoint's next deadline
//! and the shutdown signal; after each it drains the endpoint's output.
//!
//! Channels (capacity → behaviour when full):
//! * TCP connections → here: 1024 items; connection tasks wait (back-pressure
//!   on that peer's socket).
//! * call tasks → here: 4096 commands; call tasks wait.
//! * here → each call task: 32 signals; a full queue means a stuck call
//!   task, so the signal is dropped with a warning (the call's own timers
//!   still end it).
//! * here → each TCP writer: 256 messages; a full queue drops the message
//!   (SIP retransmission covers it) with a warning.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant as TokioInstant;
use tracing::{debug, info, warn};
use voxtrunk_sip::Transport;
use voxtrunk_sip::endpoint::{
    EndReason, Endpoint, EndpointConfig, Event, IncomingCall, LegId, Output, Rejection, Transmit,
    Warning, warning,
};
use voxtrunk_sip::msg::HeaderName;

use crate::admission::{Gate, Refusal};
use crate::call::{self, CallSignal, CallTask, Command};
use crate::dialplan::{App, CallFacts, Dialplan};
use crate::net::{self, StreamInput};
use crate::runtime::{Runtime, now};

/// Shutdown phases sent by `main` to the signalling task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Keep running.
    Run,
    /// Stop admitting calls; hang up the live ones after the drain time.
    Drain,
    /// Hang up everything now.
    Now,
}

struct Signalling {
    rt: Arc<Runtime>,
    dialplan: Arc<Dialplan>,
    ep: Endpoint,
    udp: UdpSocket,
    writers: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    calls: HashMap<LegId, mpsc::Sender<CallSignal>>,
    /// Second legs (to a person the call is handed to) → the caller's leg,
    /// whose task gets their events.
    outbound: HashMap<LegId, LegId>,
    streams_tx: mpsc::Sender<StreamInput>,
    commands_tx: mpsc::Sender<Command>,
    /// Admission limits and the calls holding them.
    gate: Gate,
}

/// Runs until shutdown completes.
pub async fn run(
    rt: Arc<Runtime>,
    dialplan: Arc<Dialplan>,
    sockets: net::SipSockets,
    mut shutdown: watch::Receiver<Shutdown>,
) -> anyhow::Result<()> {
    let (streams_tx, mut streams_rx) = mpsc::channel(1024);
    let (commands_tx, mut commands_rx) = mpsc::channel(4096);
    let cfg = &rt.config;
    let ep = Endpoint::new(
        EndpointConfig {
            timers: cfg.timers(),
            host: rt.sip_advertise.into(),
            port: sockets.local.port(),
            user_agent: cfg.sip.user_agent.clone(),
            max_message_size: cfg.sip.max_message_bytes,
            retry_after: cfg.limits.retry_after_s,
            in_dialog_to_source: cfg.sip.in_dialog_to_source,
        },
        fastrand::u64(..),
    );
    spawn_acceptor(sockets.tcp, streams_tx.clone(), &rt);
    let mut s = Signalling {
        rt: Arc::clone(&rt),
        dialplan,
        ep,
        udp: sockets.udp,
        writers: HashMap::new(),
        calls: HashMap::new(),
        outbound: HashMap::new(),
        streams_tx,
        commands_tx,
        gate: Gate::new(&rt.config),
    };
    let mut buf = vec![0u8; 65_536];
    let mut phase = Shutdown::Run;
    let mut drain_deadline: Option<TokioInstant> = None;
    let mut hangup_deadline: Option<TokioInstant> = None;
    let far = Duration::from_secs(3600);
    loop {
        let next_timer = match s.ep.poll_output() {
            Output::Timeout(Some(at)) => TokioInstant::from_std(at),
            Output::Timeout(None) => TokioInstant::now() + far,
            other => {
                s.handle_output(other);
                continue;
            }
        };
        tokio::select! {
            r = s.udp.recv_from(&mut buf) => match r {
                Ok((n, from)) => s.ep.handle_datagram(now(), from, &buf[..n]),
                Err(e) => debug!(error = %e, "UDP receive error"),
            },
            Some(input) = streams_rx.recv() => match input {
                StreamInput::Item(peer, item) => s.ep.handle_stream_item(now(), Transport::Tcp, peer, item),
                StreamInput::Opened(peer, writer) => { s.writers.insert(peer, writer); }
                StreamInput::Closed(peer) => { s.writers.remove(&peer); }
            },
            Some(cmd) = commands_rx.recv() => s.command(cmd),
            _ = tokio::time::sleep_until(next_timer) => s.ep.handle_timeout(now()),
            changed = shutdown.changed(), if phase != Shutdown::Now => {
                let next = if changed.is_ok() { *shutdown.borrow() } else { Shutdown::Now };
                if next != phase {
                    phase = next;
                    s.ep.set_draining(true);
                    rt.shared.draining.store(true, Ordering::Relaxed);
                    let drain = if phase == Shutdown::Now { Duration::ZERO } else { Duration::from_secs(cfg.shutdown.drain_timeout_s) };
                    info!(live_calls = s.calls.len(), drain_s = drain.as_secs(), "draining: new calls get 503");
                    drain_deadline = Some(TokioInstant::now() + drain);
                }
            }
            _ = sleep_opt(drain_deadline) => {
                drain_deadline = None;
                info!(live_calls = s.calls.len(), "drain time over: hanging up live calls");
                let legs: Vec<LegId> = s.calls.keys().copied().collect();
                for leg in legs {
                    let _ = s.ep.hangup(now(), leg);
                }
                // BYEs get one transaction timeout to complete, at most 10 s.
                hangup_deadline = Some(TokioInstant::now() + cfg.timers().t1x64().min(Duration::from_secs(10)));
            }
            _ = sleep_opt(hangup_deadline) => {
                warn!(live_calls = s.calls.len(), "calls still up after BYE; exiting");
                break;
            }
        }
        s.pump();
        if phase != Shutdown::Run && s.calls.is_empty() && s.ep.leg_count() == 0 {
            info!("all calls finished");
            break;
        }
    }
    s.pump();
    Ok(())
}

async fn sleep_opt(at: Option<TokioInstant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn spawn_acceptor(
    listener: tokio::net::TcpListener,
    streams: mpsc::Sender<StreamInput>,
    rt: &Runtime,
) {
    let max = rt.config.sip.max_message_bytes;
    let idle = Duration::from_secs(rt.config.sip.tcp_idle_timeout_s);
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let writer = net::spawn_connection(stream, peer, streams.clone(), max, idle);
                    if streams
                        .send(StreamInput::Opened(peer, writer))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) => {
                    warn!(error = %e, "TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
}

impl Signalling {
    fn pump(&mut self) {
        loop {
            match self.ep.poll_output() {
                Output::Timeout(_) => break,
                other => self.handle_output(other),
            }
        }
    }

    fn handle_output(&mut self, o: Output) {
        match o {
            Output::Transmit(t) => self.transmit(t),
            Output::Event(e) => self.event(e),
            Output::Timeout(_) => {}
        }
    }

    fn transmit(&mut self, t: Transmit) {
        match t.transport {
            Transport::Udp => {
                if let Err(e) = self.udp.try_send_to(&t.payload, t.destination) {
                    debug!(to = %t.destination, error = %e, "UDP send failed");
                }
            }
            Transport::Tcp => {
                let writer = self.writers.entry(t.destination).or_insert_with(|| {
                    net::spawn_outbound(
                        t.destination,
                        self.streams_tx.clone(),
                        self.rt.config.sip.max_message_bytes,
                        Duration::from_secs(self.rt.config.sip.tcp_idle_timeout_s),
                    )
                });
                if writer.try_send(t.payload).is_err() {
                    warn!(to = %t.destination, "TCP write queue full or closed; message dropped");
                }
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        let at = now();
        let r = match cmd {
            Command::Answer { leg, sdp } => self.ep.answer(at, leg, sdp),
            Command::Reject {
                leg,
                status,
                warning: w,
            } => {
                let host = self.rt.sip_advertise.to_string();
                let extra: Vec<(HeaderName, String)> = w
                    .map(|w| (HeaderName::Warning, warning(w.code, &host, &w.text)))
                    .into_iter()
                    .collect();
                self.ep.reject(at, leg, status, &extra)
            }
            Command::Hangup { leg } => self.ep.hangup(at, leg),
            Command::AnswerOffer { leg, result } => self.ep.answer_offer(at, leg, result),
            Command::Refer { leg, target } => self.ep.refer(at, leg, &target),
            Command::Dial { parent, dial } => {
                let r = self.ep.dial(at, *dial);
                if let Ok(second) = r {
                    self.outbound.insert(second, parent);
                    metrics::counter!("voxtrunk_outbound_calls_total").increment(1);
                }
                let signal = CallSignal::Dialed(r.map_err(|e| e.to_string()));
                self.forward(parent, signal);
                Ok(())
            }
        };
        if let Err(e) = r {
            debug!(error = %e, "command not applied");
        }
    }

    fn forward(&mut self, leg: LegId, signal: CallSignal) {
        let Some(tx) = self.calls.get(&leg) else {
            return;
        };
        match tx.try_send(signal) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!(%leg, "call task not keeping up; signal dropped")
            }
            // The task already finished (it refused the call): nothing to tell.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    fn event(&mut self, e: Event) {
        if let Some(&parent) = e_leg(&e).and_then(|l| self.outbound.get(&l)) {
            return self.outbound_event(parent, e);
        }
        match e {
            Event::IncomingCall(call) => self.incoming(call),
            Event::Acked { leg, sdp } => self.forward(leg, CallSignal::Acked(sdp)),
            Event::OfferReceived { leg, offer, .. } => {
                if self.calls.contains_key(&leg) {
                    self.forward(leg, CallSignal::Offer(offer));
                } else {
                    let rej = Rejection {
                        status: 488,
                        warning: Some(Warning::misc("no media session for this call")),
                        headers: Vec::new(),
                    };
                    let _ = self.ep.answer_offer(now(), leg, Err(rej));
                }
            }
            Event::OfferAnswered { .. } => {}
            Event::Info {
                leg,
                content_type,
                body,
            } => self.forward(leg, CallSignal::Info { content_type, body }),
            Event::ReferAnswered { leg, status } => {
                self.forward(leg, CallSignal::ReferAnswered(status))
            }
            Event::ReferNotify {
                leg,
                status,
                terminated,
            } => self.forward(leg, CallSignal::ReferNotify { status, terminated }),
            // Only second legs get these, handled above.
            Event::Progress { .. } | Event::Answered { .. } => {}
            Event::Ended { leg, reason } => {
                self.forward(leg, CallSignal::Ended(reason));
                self.calls.remove(&leg);
                self.gate.ended(leg);
                self.rt
                    .shared
                    .agent_calls
                    .store(self.gate.agent_calls(), Ordering::Relaxed);
                // A person bridged to this call loses the other side.
                let seconds: Vec<LegId> = self
                    .outbound
                    .iter()
                    .filter(|(_, p)| **p == leg)
                    .map(|(s, _)| *s)
                    .collect();
                for second in seconds {
                    let _ = self.ep.hangup(now(), second);
                }
                let outcome = match reason {
                    EndReason::RemoteBye => "remote_bye",
                    EndReason::Cancelled => "cancelled",
                    EndReason::Rejected(_) => "rejected",
                    EndReason::LocalHangup => "local_hangup",
                    EndReason::AckTimeout => "ack_timeout",
                    EndReason::PeerGone => "peer_gone",
                    EndReason::Failed(_) => "failed",
                };
                metrics::counter!("voxtrunk_calls_ended_total", "reason" => outcome).increment(1);
                metrics::gauge!("voxtrunk_calls_active").set(self.calls.len() as f64);
            }
        }
    }

    /// An event of a second leg, for the task of the call it belongs to.
    fn outbound_event(&mut self, parent: LegId, e: Event) {
        match e {
            Event::Progress { status, .. } => {
                self.forward(parent, CallSignal::OutboundProgress(status))
            }
            Event::Answered { leg, sdp } => {
                if self.calls.contains_key(&parent) {
                    let answer = sdp.map_err(|e| e.to_string());
                    self.forward(parent, CallSignal::OutboundAnswered(answer));
                } else {
                    // The caller left while the person's phone rang.
                    let _ = self.ep.hangup(now(), leg);
                }
            }
            Event::Ended { leg, reason } => {
                self.outbound.remove(&leg);
                self.forward(parent, CallSignal::OutboundEnded(reason));
            }
            Event::OfferReceived { leg, .. } => {
                let rej = Rejection {
                    status: 488,
                    warning: Some(Warning::misc(
                        "media changes on a bridged leg are not supported",
                    )),
                    headers: Vec::new(),
                };
                let _ = self.ep.answer_offer(now(), leg, Err(rej));
            }
            other => debug!(event = ?other, "second leg event ignored"),
        }
    }

    fn reject(&mut self, leg: LegId, status: u16, text: Option<&str>, retry_after: bool) {
        let mut extra = Vec::new();
        if let Some(t) = text {
            extra.push((
                HeaderName::Warning,
                warning(399, &self.rt.sip_advertise.to_string(), t),
            ));
        }
        if retry_after {
            extra.push((
                HeaderName::RetryAfter,
                self.rt.config.limits.retry_after_s.to_string(),
            ));
        }
        let _ = self.ep.reject(now(), leg, status, &extra);
    }

    /// Answers a call the admission limits refuse: 503, Retry-After and a
    /// Warning naming the limit.
    fn refuse(&mut self, leg: LegId, r: &Refusal) {
        let text = r.text();
        info!(%leg, why = %text, "call refused: 503");
        metrics::counter!("voxtrunk_calls_refused_total", "why" => r.label()).increment(1);
        self.reject(leg, 503, Some(&text), true);
    }

    fn incoming(&mut self, call: Box<IncomingCall>) {
        let leg = call.leg;
        metrics::counter!("voxtrunk_calls_offered_total").increment(1);
        let ticket = match self.gate.check(now(), call.source.ip()) {
            Ok(t) => t,
            Err(r) => return self.refuse(leg, &r),
        };
        let user = call.request.uri.user().unwrap_or_default();
        let from = call.essentials.from.uri.to_string();
        let to = call.essentials.to.uri.to_string();
        let facts = CallFacts {
            user: &user,
            from: &from,
            to: &to,
            source: call.source.ip(),
        };
        let Some(route) = self.dialplan.route(&facts) else {
            info!(%leg, user = %user, "no route: 404");
            return self.reject(leg, 404, Some("no dialplan route matches"), false);
        };
        info!(%leg, route = %route.name, app = route.app.name(), from = %from, to = %to, source = %call.source, call_id = %call.essentials.call_id, "incoming call");
        match &route.app {
            App::Reject { status } => self.reject(leg, *status, None, false),
            App::Echo | App::Playback { .. } | App::Agent { .. } => {
                let agent = matches!(route.app, App::Agent { .. });
                if agent && let Err(why) = self.rt.inference.admit(self.gate.agent_calls(), now()) {
                    return self.refuse(leg, &Refusal::Inference(why));
                }
                self.gate.admit(now(), leg, ticket, agent);
                self.rt
                    .shared
                    .agent_calls
                    .store(self.gate.agent_calls(), Ordering::Relaxed);
                let (tx, rx) = mpsc::channel(32);
                self.calls.insert(leg, tx);
                metrics::gauge!("voxtrunk_calls_active").set(self.calls.len() as f64);
                tokio::spawn(call::run(CallTask {
                    leg,
                    call,
                    app: route.app.clone(),
                    route: route.name.clone(),
                    signals: rx,
                    commands: self.commands_tx.clone(),
                    rt: Arc::clone(&self.rt),
                }));
            }
        }
    }
}

/// The leg an event is about.
fn e_leg(e: &Event) -> Option<LegId> {
    match e {
        Event::IncomingCall(c) => Some(c.leg),
        Event::Acked { leg, .. }
        | Event::OfferReceived { leg, .. }
        | Event::OfferAnswered { leg, .. }
        | Event::Info { leg, .. }
        | Event::Ended { leg, .. }
        | Event::Progress { leg, .. }
        | Event::Answered { leg, .. }
        | Event::ReferAnswered { leg, .. }
        | Event::ReferNotify { leg, .. } => Some(*leg),
    }
}
