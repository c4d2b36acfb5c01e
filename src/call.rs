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
use voxtrunk_sip::endpoint::{AckSdp, Dial, EndReason, IncomingCall, LegId, Rejection, Warning};
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
use crate::transfer::{Relay, Transfer};

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
    /// The final response to our REFER (408 when it timed out).
    ReferAnswered(u16),
    /// A NOTIFY about our REFER: the transfer's progress.
    ReferNotify {
        /// The status in its sipfrag body, if it parsed.
        status: Option<u16>,
        /// The subscription is over (no more NOTIFYs).
        terminated: bool,
    },
    /// The second leg was created (or why not).
    Dialed(Result<LegId, String>),
    /// The second leg got a provisional response.
    OutboundProgress(u16),
    /// The person answered; their SDP answer.
    OutboundAnswered(Result<Box<SessionDescription>, String>),
    /// The second leg ended (refused, not answered, or hung up).
    OutboundEnded(EndReason),
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
    /// Ask the caller's side to transfer the call (REFER).
    Refer {
        /// The leg.
        leg: LegId,
        /// The Refer-To URI.
        target: String,
    },
    /// Call the person on a second leg; its events go to `parent`'s task.
    Dial {
        /// The caller's leg.
        parent: LegId,
        /// The outgoing INVITE.
        dial: Box<Dial>,
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
    let escalation = agent.as_ref().and_then(|a| a.def.escalation.clone());
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
    let mut transfer: Option<Transfer> = None;
    let mut relay_buf = vec![0u8; 2048];
    let mut relay_rtcp_buf = [0u8; 1500];
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
    let mut pace = SendPace::default();
    let mut relay_pace = SendPace::default();
    metrics::gauge!("voxtrunk_rtp_ports_free").set(t.rt.ports.available() as f64);
    loop {
        // Echo and playback move audio after the media session's output,
        // as they always have; an agent's queued reply goes in first so
        // that its first packet leaves in this tick, not the next.
        let mut due = None;
        let mut relay_due = None;
        if let Some(Transfer::Bridged {
            leg: second,
            relay,
            frames,
        }) = transfer.as_mut()
        {
            // Two people talk: the agent is out of the media path.
            if let Some(person) = relay.media.as_mut() {
                let moved = Relay::exchange(&mut media, person);
                frames.0 += moved.0;
                frames.1 += moved.1;
                let relay_sockets = Sockets {
                    rtp: &relay.rtp,
                    rtcp: relay.rtcp.as_ref(),
                };
                relay_due = Some(drain_media(
                    person,
                    relay_sockets,
                    &mut relay_pace,
                    &mut relay.hung_up,
                    *second,
                    &t.commands,
                    None,
                ));
            }
            due = Some(drain_media(
                &mut media,
                sockets,
                &mut pace,
                &mut hung_up,
                leg,
                &t.commands,
                None,
            ));
        } else {
            // Echo and playback move audio after the media session's
            // output, as they always have; an agent's queued reply goes in
            // first so that its first packet leaves in this tick, not the
            // next.
            if player.agent().is_none() {
                due = Some(drain_media(
                    &mut media,
                    sockets,
                    &mut pace,
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
            if transfer.is_none() && !hung_up {
                if let (Some(bridge), Some(esc)) = (player.agent(), escalation.as_ref()) {
                    if let Some(reason) = bridge.take_escalation(&media) {
                        let target = esc.target.get_ref().clone();
                        info!(%leg, reason = %reason, target = %target, "escalating: REFER");
                        bridge.escalation_note("REFER sent", &format!("Refer-To: {target}"), false);
                        let _ = t.commands.send(Command::Refer { leg, target }).await;
                        transfer = Some(Transfer::Referring {
                            deadline: TokioInstant::now()
                                + Duration::from_millis(esc.refer_timeout_ms),
                            accepted: false,
                        });
                    }
                }
            }
            if due.is_none() {
                due = Some(drain_media(
                    &mut media,
                    sockets,
                    &mut pace,
                    &mut hung_up,
                    leg,
                    &t.commands,
                    player.agent(),
                ));
            }
        }
        let due = match (due, relay_due) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => std::time::Instant::now() + Duration::from_millis(20),
        };
        if TokioInstant::now() >= next_stats {
            next_stats += STATS_EVERY;
            if let Some(mut info) = t.rt.shared.calls.get_mut(&leg) {
                info.media = Some(CallMediaStats::from_session(&media));
            }
        }
        let (relay_rtp, relay_rtcp) = transfer.as_ref().map_or((None, None), Transfer::sockets);
        let transfer_deadline = transfer.as_ref().and_then(Transfer::deadline);
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                // Errors here are ICMP reports for earlier sends; ignore them.
                if let Ok((n, from)) = r {
                    media.handle_receive(now(), from, &buf[..n]);
                }
            }
            _ = tokio::time::sleep_until(TokioInstant::from_std(due)) => {
                let at = now();
                media.handle_timeout(at);
                if let Some(person) = transfer.as_mut().and_then(Transfer::relay_mut).and_then(|r| r.media.as_mut()) {
                    person.handle_timeout(at);
                }
            }
            Ok((n, from)) = recv_from_opt(relay_rtp, &mut relay_buf) => {
                if let Some(person) = transfer.as_mut().and_then(Transfer::relay_mut).and_then(|r| r.media.as_mut()) {
                    person.handle_receive(now(), from, &relay_buf[..n]);
                }
            }
            Ok((n, from)) = recv_from_opt(relay_rtcp, &mut relay_rtcp_buf) => {
                if let Some(person) = transfer.as_mut().and_then(Transfer::relay_mut).and_then(|r| r.media.as_mut()) {
                    person.handle_rtcp(now(), from, &relay_rtcp_buf[..n]);
                }
            }
            _ = sleep_opt(transfer_deadline) => {
                let why = match &transfer {
                    Some(Transfer::Referring { .. }) => "the REFER did not complete in time",
                    _ => "the person did not answer in time",
                };
                info!(%leg, why, "transfer deadline");
                next_transfer_step(&mut transfer, &mut player, &t, &escalation, &local, &mut hung_up, Step::Fail(why.to_owned())).await;
            }
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
                        Some((digit, duration_ms)) => {
                            dtmf_received(leg, digit, "info");
                            if transfer.is_none() {
                                if let Some(bridge) = player.agent() {
                                    let d = voxtrunk_media::dtmf::Digit { digit, duration_ms: duration_ms.unwrap_or(0), timestamp: MediaTime(0) };
                                    bridge.on_media_event(&MediaEvent::Dtmf(d), now());
                                }
                            }
                        }
                        None => debug!(%leg, content_type = %ct, len = body.len(), "INFO ignored"),
                    }
                }
                Some(CallSignal::Acked(_)) => {}
                Some(CallSignal::ReferAnswered(status)) => {
                    let step = if (200..300).contains(&status) {
                        Step::ReferAccepted(status)
                    } else {
                        Step::Fail(format!("the caller's side refused REFER with {status}"))
                    };
                    next_transfer_step(&mut transfer, &mut player, &t, &escalation, &local, &mut hung_up, step).await;
                }
                Some(CallSignal::ReferNotify { status, terminated }) => {
                    let step = match status {
                        Some(s) if (200..300).contains(&s) => Step::Transferred(s),
                        Some(s) if s >= 300 => Step::Fail(format!("the transfer failed with {s}")),
                        None if terminated => Step::Fail("the transfer ended without a result".into()),
                        _ => Step::Progress(status),
                    };
                    next_transfer_step(&mut transfer, &mut player, &t, &escalation, &local, &mut hung_up, step).await;
                }
                Some(CallSignal::Dialed(r)) => {
                    let step = match r {
                        Ok(second) => Step::Dialed(second),
                        Err(e) => Step::GiveUp(format!("the person cannot be called: {e}")),
                    };
                    next_transfer_step(&mut transfer, &mut player, &t, &escalation, &local, &mut hung_up, step).await;
                }
                Some(CallSignal::OutboundProgress(status)) => debug!(%leg, status, "second leg progress"),
                Some(CallSignal::OutboundAnswered(answer)) => {
                    let step = Step::Answered(answer);
                    next_transfer_step(&mut transfer, &mut player, &t, &escalation, &local, &mut hung_up, step).await;
                    if matches!(transfer, Some(Transfer::Bridged { .. })) {
                        // No more turns or barge-in: the caller talks to a person.
                        media.stop_turn_detection();
                    }
                }
                Some(CallSignal::OutboundEnded(reason)) => {
                    if let Some(Transfer::Bridged { frames, .. }) = &transfer {
                        info!(%leg, ?reason, to_person = frames.0, to_caller = frames.1, "the person hung up: ending the call");
                        transfer = None;
                        if !hung_up {
                            hung_up = true;
                            let _ = t.commands.send(Command::Hangup { leg }).await;
                        }
                    } else {
                        let why = match reason {
                            EndReason::Failed(s) => format!("the person's side answered {s}"),
                            other => format!("the second leg ended ({other:?})"),
                        };
                        next_transfer_step(&mut transfer, &mut player, &t, &escalation, &local, &mut hung_up, Step::GiveUp(why)).await;
                    }
                }
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

/// The gaps between one stream's RTP packets as they leave, counted in
/// 0.5 ms bins and added to the `voxtrunk_rtp_send_interval_ms` summary
/// once a second (and when the call ends), so the pacing of every packet is
/// measured without a metrics update per packet.
struct SendPace {
    last: Option<std::time::Instant>,
    flushed: Option<std::time::Instant>,
    bins: [u32; PACE_BINS],
}

/// Bins of 0.5 ms: 0 to 120 ms, the last one for anything longer.
const PACE_BINS: usize = 241;

impl Default for SendPace {
    fn default() -> Self {
        SendPace {
            last: None,
            flushed: None,
            bins: [0; PACE_BINS],
        }
    }
}

impl SendPace {
    fn sent(&mut self, at: std::time::Instant) {
        if let Some(last) = self.last {
            let ms = at.saturating_duration_since(last).as_secs_f64() * 1000.0;
            let bin = ((ms * 2.0).round() as usize).min(PACE_BINS - 1);
            self.bins[bin] += 1;
        }
        self.last = Some(at);
        let flushed = *self.flushed.get_or_insert(at);
        if at.saturating_duration_since(flushed) >= Duration::from_secs(1) {
            self.flush();
            self.flushed = Some(at);
        }
    }

    fn flush(&mut self) {
        let h = metrics::histogram!("voxtrunk_rtp_send_interval_ms");
        for (bin, n) in self.bins.iter_mut().enumerate() {
            if *n > 0 {
                h.record_many(bin as f64 / 2.0, *n as usize);
                *n = 0;
            }
        }
    }
}

impl Drop for SendPace {
    fn drop(&mut self) {
        self.flush();
    }
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
    pace: &mut SendPace,
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
                    if tx.channel == Channel::Rtp {
                        pace.sent(now());
                    }
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

async fn sleep_opt(at: Option<TokioInstant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
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

/// What just happened to a transfer in progress.
enum Step {
    /// The REFER got this 2xx.
    ReferAccepted(u16),
    /// A NOTIFY with a provisional status (or none).
    Progress(Option<u16>),
    /// A NOTIFY says the caller's side reached the person.
    Transferred(u16),
    /// This way failed: a REFER falls back to the bridge, a bridge gives up.
    Fail(String),
    /// The second leg exists.
    Dialed(LegId),
    /// The person answered.
    Answered(Result<Box<SessionDescription>, String>),
    /// The person cannot be reached: the agent takes the call back.
    GiveUp(String),
}

/// Moves the transfer on (see [`crate::transfer`]).
async fn next_transfer_step(
    transfer: &mut Option<Transfer>,
    player: &mut Player,
    t: &CallTask,
    escalation: &Option<crate::agent::definition::EscalationSection>,
    local: &LocalMedia,
    hung_up: &mut bool,
    step: Step,
) {
    let leg = t.leg;
    let Some(esc) = escalation.as_ref() else {
        return;
    };
    let note = |player: &mut Player, what: &str, why: &str, failed: bool| {
        if let Some(b) = player.agent() {
            b.escalation_note(what, why, failed);
        }
    };
    let count = |outcome: &'static str| {
        metrics::counter!("voxtrunk_transfers_total", "outcome" => outcome).increment(1);
    };
    match (transfer.take(), step) {
        (
            Some(Transfer::Referring {
                accepted: false, ..
            }),
            Step::ReferAccepted(status),
        ) => {
            info!(%leg, status, "REFER accepted");
            note(player, "REFER accepted", &status.to_string(), false);
            // Accepted: the caller's side now rings the person too.
            let wait = Duration::from_millis(esc.refer_timeout_ms)
                + Duration::from_secs(esc.ring_timeout_s);
            *transfer = Some(Transfer::Referring {
                deadline: TokioInstant::now() + wait,
                accepted: true,
            });
        }
        (Some(Transfer::Referring { .. }), Step::Transferred(status)) => {
            info!(%leg, status, "transferred by the caller's side: hanging up");
            note(
                player,
                "transferred",
                &format!("NOTIFY reported {status}"),
                false,
            );
            count("referred");
            if !*hung_up {
                *hung_up = true;
                let _ = t.commands.send(Command::Hangup { leg }).await;
            }
        }
        (Some(Transfer::Referring { .. }), Step::Fail(why)) => {
            info!(%leg, why = %why, "REFER did not work: calling the person");
            note(player, "REFER failed", &why, false);
            *transfer = dial_person(t, esc, local).await;
            if transfer.is_none() {
                count("failed");
                note(player, "transfer failed", "no RTP port or no route", true);
            }
        }
        (
            Some(Transfer::Dialing {
                leg: None,
                relay,
                deadline,
            }),
            Step::Dialed(second),
        ) => {
            debug!(%leg, %second, "second leg created");
            *transfer = Some(Transfer::Dialing {
                leg: Some(second),
                relay,
                deadline,
            });
        }
        (
            Some(Transfer::Dialing {
                leg: Some(second),
                mut relay,
                ..
            }),
            Step::Answered(answer),
        ) => {
            let negotiated =
                answer.and_then(|a| relay.sdp.accept_answer(&a).map_err(|e| e.to_string()));
            let session = negotiated.and_then(|audio| {
                MediaSession::new(media_config(&t.rt, &audio, relay.ssrc, second, None), now())
                    .map_err(|e| e.to_string())
            });
            match session {
                Ok(m) => {
                    relay.media = Some(m);
                    info!(%leg, %second, "the person answered: media bridged");
                    note(player, "bridged", &format!("second leg {second}"), false);
                    count("bridged");
                    *transfer = Some(Transfer::Bridged {
                        leg: second,
                        relay,
                        frames: (0, 0),
                    });
                }
                Err(e) => {
                    warn!(%leg, %second, error = %e, "the person's answer is unusable");
                    let _ = t.commands.send(Command::Hangup { leg: second }).await;
                    count("failed");
                    note(
                        player,
                        "transfer failed",
                        &format!("unusable answer: {e}"),
                        true,
                    );
                }
            }
        }
        (Some(Transfer::Dialing { leg: second, .. }), Step::Fail(why) | Step::GiveUp(why)) => {
            info!(%leg, why = %why, "the person cannot be reached: the agent carries on");
            if let Some(second) = second {
                let _ = t.commands.send(Command::Hangup { leg: second }).await;
            }
            count("failed");
            note(player, "transfer failed", &why, true);
        }
        (Some(Transfer::Referring { .. }), Step::GiveUp(why)) => {
            count("failed");
            note(player, "transfer failed", &why, true);
        }
        (state, Step::Progress(status)) => {
            debug!(%leg, ?status, "transfer progress");
            *transfer = state;
        }
        (state, _) => *transfer = state,
    }
}

/// Calls the person on a second leg (the REFER did not work).
async fn dial_person(
    t: &CallTask,
    esc: &crate::agent::definition::EscalationSection,
    caller_media: &LocalMedia,
) -> Option<Transfer> {
    let leg = t.leg;
    let target = match voxtrunk_sip::msg::Uri::parse(esc.target.get_ref().as_bytes()) {
        Ok(u) => u,
        Err(e) => {
            warn!(%leg, error = %e, "escalation target does not parse");
            return None;
        }
    };
    let Some(lease) = t.rt.ports.allocate() else {
        warn!(%leg, "no free RTP port for the second leg");
        return None;
    };
    let rtp = UdpSocket::from_std(lease.rtp.try_clone().ok()?).ok()?;
    let rtcp = lease
        .rtcp
        .try_clone()
        .ok()
        .and_then(|s| UdpSocket::from_std(s).ok());
    let local = LocalMedia {
        address: t.rt.rtp_advertise,
        port: lease.port,
        codecs: caller_media.codecs.clone(),
        prefer: caller_media.prefer,
        telephone_event: true,
    };
    let mut sdp = SdpSession::new(fastrand::u64(..u64::MAX >> 1), "voxtrunk");
    let offer = sdp.offer(&local, Direction::SendRecv);
    let dial = Dial {
        target,
        from: t.call.essentials.from.uri.to_string(),
        transport: voxtrunk_sip::Transport::Udp,
        sdp: offer.to_bytes(),
        headers: Vec::new(),
    };
    let _ = t
        .commands
        .send(Command::Dial {
            parent: leg,
            dial: Box::new(dial),
        })
        .await;
    Some(Transfer::Dialing {
        leg: None,
        relay: Box::new(Relay {
            _lease: lease,
            rtp,
            rtcp,
            sdp,
            ssrc: Ssrc(fastrand::u32(..)),
            media: None,
            hung_up: false,
        }),
        deadline: TokioInstant::now() + Duration::from_secs(esc.ring_timeout_s),
    })
}
