//! One task per call: it owns the call's RTP socket, its
//! [`MediaSession`], its SDP state and its application, and talks to the
//! signalling task through channels.
//!
//! Ticks: the media session says when its next 20 ms tick is due and the
//! task sleeps until then; a late wake-up is absorbed by the session (up to
//! 60 ms of backlog is sent as a burst, older ticks are skipped without
//! losing queued audio — see `voxtrunk_media::session`).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant as TokioInstant;
use tracing::{debug, info, warn};
use voxtrunk_media::clock::WallClock;
use voxtrunk_media::codec::CodecKind;
use voxtrunk_media::dtmf::parse_dtmf_info;
use voxtrunk_media::rtp::{MediaTime, SeqNo, Ssrc};
use voxtrunk_media::session::{
    Channel, MediaConfig, MediaEvent, MediaSession, Output, RtcpConfig, TurnConfig,
};
use voxtrunk_media::vad::{EchoGuardConfig, EndpointConfig, VadConfig};
use voxtrunk_sip::endpoint::{AckSdp, EndReason, IncomingCall, LegId, Rejection, Warning};
use voxtrunk_sip::msg::MediaType;
use voxtrunk_sip::sdp::{
    AudioCodec, Direction, LocalMedia, NegotiatedAudio, SdpSession, SessionDescription,
};

use crate::agent::bridge::AgentBridge;
use crate::agent::definition::TurnSection;
use crate::agent::runtime::AgentRuntime;
use crate::agent::session::SessionInfo;
use crate::dialplan::{After, App};
use crate::runtime::{CallInfo, CallMediaStats, Runtime, now};

/// What the signalling task tells a call task.
#[derive(Debug)]
pub enum CallSignal {
    /// The ACK arrived.
    Acked(AckSdp),
    /// A re-INVITE or UPDATE offer (`None`: the peer asks us to offer).
    Offer(Option<Box<SessionDescription>>),
    /// An INFO request.
    Info {
        /// Its Content-Type.
        content_type: Option<MediaType>,
        /// Its body.
        body: Vec<u8>,
    },
    /// The call is over.
    Ended(EndReason),
}

/// What a call task asks the signalling task to do.
#[derive(Debug)]
pub enum Command {
    /// 200 OK with this SDP.
    Answer {
        /// The leg.
        leg: LegId,
        /// SDP answer (or offer).
        sdp: Vec<u8>,
    },
    /// Refuse the INVITE.
    Reject {
        /// The leg.
        leg: LegId,
        /// Status.
        status: u16,
        /// Warning header.
        warning: Option<Warning>,
    },
    /// End the call.
    Hangup {
        /// The leg.
        leg: LegId,
    },
    /// Answer a re-INVITE/UPDATE offer.
    AnswerOffer {
        /// The leg.
        leg: LegId,
        /// The SDP answer or the rejection.
        result: Result<Vec<u8>, Rejection>,
    },
}

/// Everything a call task starts with.
pub struct CallTask {
    /// The leg.
    pub leg: LegId,
    /// The INVITE.
    pub call: Box<IncomingCall>,
    /// The application.
    pub app: App,
    /// The route name.
    pub route: String,
    /// Signals from the signalling task.
    pub signals: mpsc::Receiver<CallSignal>,
    /// Commands to the signalling task.
    pub commands: mpsc::Sender<Command>,
    /// Shared runtime.
    pub rt: Arc<Runtime>,
}

fn media_codec(c: AudioCodec) -> CodecKind {
    match c {
        AudioCodec::Pcmu => CodecKind::Pcmu,
        AudioCodec::Pcma => CodecKind::Pcma,
        AudioCodec::G722 => CodecKind::G722,
        AudioCodec::Opus => CodecKind::Opus,
    }
}

fn media_config(
    rt: &Runtime,
    audio: &NegotiatedAudio,
    ssrc: Ssrc,
    leg: LegId,
    turn: Option<&TurnSection>,
) -> MediaConfig {
    let cfg = &rt.config.rtp;
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    MediaConfig {
        codec: media_codec(audio.codec),
        payload_type: audio.payload_type,
        telephone_event: audio.telephone_event.map(|t| t.payload_type),
        remote: audio.remote,
        send: audio.direction.sends(),
        receive: audio.direction.receives(),
        symmetric_rtp: cfg.symmetric,
        inactivity_timeout: (cfg.inactivity_timeout_s > 0)
            .then(|| Duration::from_secs(cfg.inactivity_timeout_s)),
        send_silence: cfg.send_silence,
        ssrc,
        first_seq: SeqNo(fastrand::u16(..)),
        first_timestamp: MediaTime(fastrand::u32(..)),
        playout_frames: 10,
        jitter_max_frames: (cfg.jitter_max_ms / 20).max(1) as usize,
        turn: turn.map(turn_config),
        rtcp: Some(RtcpConfig {
            cname: format!("{leg}@{}", rt.rtp_advertise),
            clock: WallClock::new(std::time::Instant::now(), since_epoch),
            seed: fastrand::u64(..),
        }),
    }
}

/// Turn detection for an agent's call.
fn turn_config(t: &TurnSection) -> TurnConfig {
    TurnConfig {
        vad: VadConfig::default(),
        endpoint: EndpointConfig {
            start_ms: t.start_ms,
            stop_ms: t.stop_ms,
            barge_in_ms: t.barge_in_ms,
            ..EndpointConfig::default()
        },
        echo: EchoGuardConfig::default(),
        barge_in: t.barge_in,
    }
}

/// Plays the application's part on every turn of the loop.
enum Player {
    /// Frames that did not fit the playout queue are counted in `dropped`
    /// (the queue bounds the echo delay at 200 ms).
    Echo { dropped: u64 },
    Playback {
        samples: Arc<[i16]>,
        pos: usize,
        after: After,
        done: bool,
    },
    /// The agent session of the call.
    Agent(Box<AgentBridge>),
}

impl Player {
    fn new(app: &App, agent: Option<(Arc<AgentRuntime>, SessionInfo)>) -> Player {
        match (app, agent) {
            (App::Playback { samples, after }, _) => Player::Playback {
                samples: Arc::clone(samples),
                pos: 0,
                after: *after,
                done: false,
            },
            (App::Agent { .. }, Some((rt, info))) => {
                Player::Agent(Box::new(AgentBridge::start(rt, info)))
            }
            _ => Player::Echo { dropped: 0 },
        }
    }

    fn agent(&mut self) -> Option<&mut AgentBridge> {
        match self {
            Player::Agent(b) => Some(b),
            _ => None,
        }
    }

    /// Moves audio; returns true when the call should be hung up.
    fn step(&mut self, media: &mut MediaSession) -> bool {
        match self {
            Player::Agent(bridge) => {
                bridge.pump(media, now());
                bridge.wants_hangup(media)
            }
            Player::Echo { dropped } => {
                while let Some(f) = media.pop_frame() {
                    // Digital silence (prefill, comfort noise, a silent
                    // caller) is left to the session's own silence, so the
                    // echo's talkspurts start where the caller's sound does.
                    if f.iter().all(|&s| s == 0) {
                        continue;
                    }
                    if media.push_audio(&f) < f.len() {
                        *dropped += 1;
                    }
                }
                false
            }
            Player::Playback {
                samples,
                pos,
                after,
                done,
            } => {
                while media.pop_frame().is_some() {}
                while !*done && media.playout_room() > 0 {
                    *pos += media.push_audio(&samples[*pos..]);
                    if *pos == samples.len() {
                        media.finish_utterance();
                        match after {
                            After::Loop => *pos = 0,
                            After::Hangup => *done = true,
                        }
                    }
                }
                *done && media.queued_frames() == 0
            }
        }
    }
}

/// Runs the call to its end.
pub async fn run(mut t: CallTask) {
    let leg = t.leg;
    let cmd = t.commands.clone();
    let reject = |status: u16, warning: Warning| {
        let cmd = cmd.clone();
        async move {
            let _ = cmd
                .send(Command::Reject {
                    leg,
                    status,
                    warning: Some(warning),
                })
                .await;
        }
    };
    let agent = match &t.app {
        App::Agent { definition } => match t.rt.agents.get(&definition.path) {
            Some(a) => Some(Arc::clone(a)),
            None => {
                warn!(%leg, definition = %definition.path.display(), "agent not loaded");
                return reject(500, Warning::misc("agent not loaded")).await;
            }
        },
        _ => None,
    };
    let turn = agent.as_ref().map(|a| a.def.turn);
    let Some(lease) = t.rt.ports.allocate() else {
        warn!(%leg, "no free RTP port");
        return reject(503, Warning::misc("no free RTP port")).await;
    };
    let local = LocalMedia {
        address: t.rt.rtp_advertise,
        port: lease.port,
        codecs: t.rt.config.rtp.codecs.iter().map(|c| c.0).collect(),
        prefer: t.rt.config.codec_preference(),
        telephone_event: true,
    };
    let mut sdp = SdpSession::new(fastrand::u64(..u64::MAX >> 1), "voxtrunk");
    let negotiated = match t.call.offer.as_ref() {
        Some(offer) => match sdp.answer(offer, &local) {
            Ok(a) => {
                let _ = t
                    .commands
                    .send(Command::Answer {
                        leg,
                        sdp: a.sdp.to_bytes(),
                    })
                    .await;
                a.audio
            }
            Err(e) => {
                info!(%leg, error = %e, "offer not acceptable");
                return reject(
                    e.sip_status(),
                    Warning::new(e.warning_code(), e.to_string()),
                )
                .await;
            }
        },
        None => {
            let offer = sdp.offer(&local, Direction::SendRecv);
            let _ = t
                .commands
                .send(Command::Answer {
                    leg,
                    sdp: offer.to_bytes(),
                })
                .await;
            let answer = match wait_for_answer(&mut t.signals).await {
                Ok(answer) => sdp.accept_answer(&answer).map_err(|e| e.to_string()),
                Err(None) => return,
                Err(Some(why)) => Err(why),
            };
            match answer {
                Ok(a) => a,
                Err(why) => {
                    // RFC 3261 §13.3.1.4: an unusable answer in the ACK ends the call.
                    info!(%leg, why = %why, "no usable answer in the ACK; hanging up");
                    let _ = t.commands.send(Command::Hangup { leg }).await;
                    return drain_until_end(&mut t.signals).await;
                }
            }
        }
    };
    let socket = match UdpSocket::from_std(
        lease
            .rtp
            .try_clone()
            .expect("a bound UDP socket can be cloned"),
    ) {
        Ok(s) => s,
        Err(e) => {
            warn!(%leg, error = %e, "RTP socket unusable");
            let _ = t.commands.send(Command::Hangup { leg }).await;
            return drain_until_end(&mut t.signals).await;
        }
    };
    t.rt.shared.calls.insert(
        leg,
        CallInfo {
            leg: leg.0,
            call_id: t.call.essentials.call_id.clone(),
            route: t.route.clone(),
            app: t.app.name(),
            from: t.call.essentials.from.uri.to_string(),
            to: t.call.essentials.to.uri.to_string(),
            source: t.call.source.to_string(),
            codec: Some(format!("{:?}", negotiated.codec)),
            media: None,
            started_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        },
    );
    let ssrc = Ssrc(fastrand::u32(..));
    let mut media = match MediaSession::new(
        media_config(&t.rt, &negotiated, ssrc, leg, turn.as_ref()),
        now(),
    ) {
        Ok(m) => m,
        Err(e) => {
            warn!(%leg, error = %e, "media session failed");
            let _ = t.commands.send(Command::Hangup { leg }).await;
            t.rt.shared.calls.remove(&leg);
            return drain_until_end(&mut t.signals).await;
        }
    };
    debug!(%leg, port = lease.port, codec = ?negotiated.codec, remote = ?negotiated.remote, "media up");
    let info = agent.map(|a| {
        let caller = t.call.essentials.from.uri.user().filter(|u| !u.is_empty());
        let session = SessionInfo {
            session_id: t.call.essentials.call_id.clone(),
            caller: caller.map(|u| u.to_string()),
            started_at: chrono::Utc::now().to_rfc3339(),
        };
        (a, session)
    });
    let mut player = Player::new(&t.app, info);
    let mut hung_up = false;
    let rtcp = lease
        .rtcp
        .try_clone()
        .ok()
        .and_then(|s| UdpSocket::from_std(s).ok());
    let sockets = Sockets {
        rtp: &socket,
        rtcp: rtcp.as_ref(),
    };
    let mut rtcp_buf = [0u8; 1500];
    let mut buf = vec![0u8; 2048];
    let mut next_stats = TokioInstant::now();
    metrics::gauge!("voxtrunk_rtp_ports_free").set(t.rt.ports.available() as f64);
    loop {
        // Echo and playback move audio after the media session's output,
        // as they always have; an agent's queued reply goes in first so
        // that its first packet leaves in this tick, not the next.
        let mut due = None;
        if player.agent().is_none() {
            due = Some(drain_media(
                &mut media,
                sockets,
                &mut hung_up,
                leg,
                &t.commands,
                None,
            ));
        }
        if player.step(&mut media) && !hung_up {
            hung_up = true;
            info!(%leg, app = t.app.name(), "application finished: hanging up");
            let _ = t.commands.send(Command::Hangup { leg }).await;
        }
        let due = match due {
            Some(d) => d,
            None => drain_media(
                &mut media,
                sockets,
                &mut hung_up,
                leg,
                &t.commands,
                player.agent(),
            ),
        };
        if TokioInstant::now() >= next_stats {
            next_stats += STATS_EVERY;
            if let Some(mut info) = t.rt.shared.calls.get_mut(&leg) {
                info.media = Some(CallMediaStats::from_session(&media));
            }
        }
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                // Errors here are ICMP reports for earlier sends; ignore them.
                if let Ok((n, from)) = r {
                    media.handle_receive(now(), from, &buf[..n]);
                }
            }
            _ = tokio::time::sleep_until(TokioInstant::from_std(due)) => media.handle_timeout(now()),
            Some(out) = recv_agent(&mut player) => {
                if let Some(bridge) = player.agent() {
                    bridge.on_output(out);
                }
            }
            Ok((n, from)) = recv_from_opt(rtcp.as_ref(), &mut rtcp_buf) => {
                media.handle_rtcp(now(), from, &rtcp_buf[..n]);
            }
            s = t.signals.recv() => match s {
                None => break,
                Some(CallSignal::Ended(reason)) => {
                    debug!(%leg, ?reason, "call ended");
                    break;
                }
                Some(CallSignal::Offer(offer)) => {
                    let result = match offer {
                        Some(o) => match sdp.answer(&o, &local) {
                            Ok(a) => {
                                let _ = media.update(media_config(&t.rt, &a.audio, ssrc, leg, turn.as_ref()), now());
                                Ok(a.sdp.to_bytes())
                            }
                            Err(e) => Err(Rejection { status: e.sip_status(), warning: Some(Warning::new(e.warning_code(), e.to_string())), headers: Vec::new() }),
                        },
                        None => Ok(sdp.offer(&local, Direction::SendRecv).to_bytes()),
                    };
                    let _ = t.commands.send(Command::AnswerOffer { leg, result }).await;
                }
                Some(CallSignal::Acked(AckSdp::Answer(answer))) => {
                    if let Ok(a) = sdp.accept_answer(&answer) {
                        let _ = media.update(media_config(&t.rt, &a, ssrc, leg, turn.as_ref()), now());
                    }
                }
                Some(CallSignal::Info { content_type, body }) => {
                    let ct = content_type.map(|c| format!("{}/{}", c.kind, c.subtype)).unwrap_or_default();
                    match parse_dtmf_info(&ct, &body) {
                        Some((digit, _)) => dtmf_received(leg, digit, "info"),
                        None => debug!(%leg, content_type = %ct, len = body.len(), "INFO ignored"),
                    }
                }
                Some(CallSignal::Acked(_)) => {}
            }
        }
    }
    match &player {
        Player::Echo { dropped } if *dropped > 0 => {
            info!(%leg, dropped, "echo frames dropped: playout queue full");
        }
        Player::Agent(bridge) if bridge.dropped_frames > 0 => {
            info!(%leg, dropped = bridge.dropped_frames, "caller frames dropped: agent session behind");
        }
        _ => {}
    }
    if let (Some(bye), Some(r)) = (media.rtcp_bye(), rtcp.as_ref()) {
        let _ = r.try_send_to(&bye.payload, bye.destination);
    }
    let stats = media.stats();
    metrics::counter!("voxtrunk_rtp_packets_received_total").increment(stats.rx_packets);
    metrics::counter!("voxtrunk_rtp_packets_sent_total").increment(stats.tx_packets);
    metrics::counter!("voxtrunk_rtp_concealed_frames_total").increment(stats.concealed_frames);
    t.rt.shared.calls.remove(&leg);
    let m = CallMediaStats::from_session(&media);
    debug!(
        %leg,
        rx_packets = stats.rx_packets,
        rx_ignored = stats.rx_ignored,
        rx_decode_errors = stats.rx_decode_errors,
        tx_packets = stats.tx_packets,
        skipped_ticks = stats.skipped_ticks,
        concealed_frames = stats.concealed_frames,
        lost = m.lost,
        jitter_ms = m.jitter_ms,
        rtt_ms = m.rtt_ms,
        dtmf_received = stats.dtmf_received,
        "call task done"
    );
}

/// The call's two media sockets.
#[derive(Clone, Copy)]
struct Sockets<'a> {
    rtp: &'a UdpSocket,
    rtcp: Option<&'a UdpSocket>,
}

/// How often a call publishes its media statistics to the admin API.
const STATS_EVERY: Duration = Duration::from_secs(1);

fn dtmf_received(leg: LegId, digit: char, via: &'static str) {
    info!(%leg, digit = %digit, via, "dtmf");
    metrics::counter!("voxtrunk_dtmf_digits_total", "via" => via).increment(1);
}

/// Sends the session's packets and handles its events; returns when the
/// session next needs a tick.
fn drain_media(
    media: &mut MediaSession,
    sockets: Sockets<'_>,
    hung_up: &mut bool,
    leg: LegId,
    commands: &mpsc::Sender<Command>,
    mut agent: Option<&mut AgentBridge>,
) -> std::time::Instant {
    loop {
        match media.poll_output() {
            Output::Transmit(tx) => {
                let socket = match tx.channel {
                    Channel::Rtp => Some(sockets.rtp),
                    Channel::Rtcp => sockets.rtcp,
                };
                if let Some(s) = socket {
                    let _ = s.try_send_to(&tx.payload, tx.destination);
                }
            }
            Output::Event(MediaEvent::Latched(to)) => debug!(%leg, %to, "RTP latched"),
            Output::Event(MediaEvent::Inactive(silent)) => {
                if !*hung_up {
                    info!(%leg, silent_s = silent.as_secs(), "no RTP: hanging up");
                    *hung_up = true;
                    let _ = commands.try_send(Command::Hangup { leg });
                }
            }
            Output::Event(e @ MediaEvent::Dtmf(d)) => {
                dtmf_received(leg, d.digit, "rfc4733");
                if let Some(bridge) = agent.as_deref_mut() {
                    bridge.on_media_event(&e, now());
                }
            }
            Output::Event(
                e @ (MediaEvent::Turn(_)
                | MediaEvent::BargeIn { .. }
                | MediaEvent::UtteranceStarted { .. }
                | MediaEvent::UtteranceDone(_)),
            ) => {
                debug!(%leg, event = ?e, "media event");
                if let Some(bridge) = agent.as_deref_mut() {
                    bridge.on_media_event(&e, now());
                }
            }
            Output::Timeout(at) => return at,
        }
    }
}

/// The agent's next output, when the call runs one.
async fn recv_agent(player: &mut Player) -> Option<crate::agent::session::AgentOutput> {
    match player {
        Player::Agent(bridge) => bridge.recv_output().await,
        _ => std::future::pending().await,
    }
}

async fn recv_from_opt(
    socket: Option<&UdpSocket>,
    buf: &mut [u8],
) -> std::io::Result<(usize, std::net::SocketAddr)> {
    match socket {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

/// Waits for the ACK that answers our offer. `Err(None)`: the call ended
/// first; `Err(Some(why))`: the ACK has no usable answer.
async fn wait_for_answer(
    signals: &mut mpsc::Receiver<CallSignal>,
) -> Result<Box<SessionDescription>, Option<String>> {
    while let Some(s) = signals.recv().await {
        match s {
            CallSignal::Acked(AckSdp::Answer(a)) => return Ok(a),
            CallSignal::Acked(AckSdp::None) => return Err(Some("ACK without SDP answer".into())),
            CallSignal::Acked(AckSdp::Invalid(e)) => {
                return Err(Some(format!("malformed SDP in ACK: {e}")));
            }
            CallSignal::Ended(_) => return Err(None),
            _ => {}
        }
    }
    Err(None)
}

async fn drain_until_end(signals: &mut mpsc::Receiver<CallSignal>) {
    while let Some(s) = signals.recv().await {
        if matches!(s, CallSignal::Ended(_)) {
            return;
        }
    }
}
