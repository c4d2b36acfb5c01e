//! The one object the shell drives: a SIP user agent with its transactions
//! and dialogs, answering calls (UAS) and placing them (UAC).
//!
//! Inputs: [`Endpoint::handle_datagram`], [`Endpoint::handle_stream_item`]
//! and [`Endpoint::handle_timeout`], plus the commands the call logic (the
//! TU) issues for a call leg: [`ring`](Endpoint::ring),
//! [`answer`](Endpoint::answer), [`reject`](Endpoint::reject),
//! [`hangup`](Endpoint::hangup), [`answer_offer`](Endpoint::answer_offer),
//! [`reinvite`](Endpoint::reinvite), [`refer`](Endpoint::refer) and
//! [`dial`](Endpoint::dial). After any of them, drain
//! [`poll_output`](Endpoint::poll_output) until it returns
//! [`Output::Timeout`], and call `handle_timeout` at that instant.
//!
//! What the endpoint decides by itself: every answer RFC 3261 fixes (400,
//! 405, 416, 420, 481, 483, 491, 501, 505, 513, OPTIONS, CANCEL, BYE), all
//! retransmissions, and 503 while draining. What it asks the TU: whether and
//! how to answer a new INVITE, and the answer to a re-INVITE or UPDATE offer.
//!
//! As a UAC the endpoint places outgoing INVITEs ([`dial`](Endpoint::dial);
//! progress, answer and failure come back as [`Event::Progress`],
//! [`Event::Answered`] and [`Event::Ended`]), ACKs their 2xx itself
//! (again for every retransmitted 2xx), cancels them on
//! [`hangup`](Endpoint::hangup) before the answer (RFC 3261 §9.1), and
//! keeps the dialog of the first 2xx; a 2xx from another fork is ACKed and
//! sent BYE (§13.2.2.4). Inside any confirmed dialog it sends REFER (RFC
//! 3515) and reports the final response ([`Event::ReferAnswered`]) and the
//! `refer` NOTIFYs ([`Event::ReferNotify`]), which it answers itself. It
//! does not accept incoming REFER or SUBSCRIBE.

mod response;
pub mod validate;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::Transport;
use crate::dialog::{Dialog, DialogId};
use crate::msg::{
    Essentials, Framed, HeaderName, Host, MediaType, Message, Method, NameAddr, ParseError,
    Request, Response, Uri, parse_datagram,
};
use crate::sdp::{self, SessionDescription};
use crate::transaction::{
    Backoff, ClientEvent, ClientInvite, ClientNonInvite, ServerInvite, ServerNonInvite,
    TimerConfig, TransactionKey, TxAction,
};
pub use response::warning;
use response::{response_to, stateless_tag};
use validate::Checked;
pub use validate::{ALLOW, Rejection, Warning};

/// Settings of an endpoint.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// T1, T2, T4.
    pub timers: TimerConfig,
    /// Host written in our Via and Contact headers.
    pub host: Host,
    /// Port written in our Via and Contact headers.
    pub port: u16,
    /// Server / User-Agent header value.
    pub user_agent: String,
    /// Largest message accepted; larger ones get 513.
    pub max_message_size: usize,
    /// Retry-After (seconds) on 503 while draining.
    pub retry_after: u32,
    /// Send in-dialog requests back along the flow the INVITE came on, not
    /// to the Contact / Record-Route (for peers behind NAT).
    pub in_dialog_to_source: bool,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            timers: TimerConfig::default(),
            host: Host::V4(std::net::Ipv4Addr::LOCALHOST),
            port: 5060,
            user_agent: "voxtrunk".to_owned(),
            max_message_size: 65_535,
            retry_after: 5,
            in_dialog_to_source: false,
        }
    }
}

/// Identifies one call leg: an incoming call or one placed with
/// [`Endpoint::dial`] (one INVITE and the dialog it creates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LegId(pub u64);

impl std::fmt::Display for LegId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "leg-{}", self.0)
    }
}

/// Bytes to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Transport to use; for TCP the connection to `destination`, opened if
    /// there is none.
    pub transport: Transport,
    /// Where to send.
    pub destination: SocketAddr,
    /// The message.
    pub payload: Vec<u8>,
}

/// A new INVITE waiting for the TU's decision.
#[derive(Debug, Clone)]
pub struct IncomingCall {
    /// The leg.
    pub leg: LegId,
    /// The INVITE as received.
    pub request: Request,
    /// Its typed essentials.
    pub essentials: Essentials,
    /// Where it came from.
    pub source: SocketAddr,
    /// Over which transport.
    pub transport: Transport,
    /// The SDP offer, or `None` for an INVITE without body (the TU then
    /// puts an offer in its 200 and gets the answer with the ACK).
    pub offer: Option<SessionDescription>,
}

/// An outgoing call to place.
#[derive(Debug, Clone)]
pub struct Dial {
    /// Request-URI and To, e.g. `sip:human@127.0.0.1:5090` (the host must
    /// be an IP literal; this library does no DNS).
    pub target: Uri,
    /// From URI, e.g. the caller's number as `sip:+4930123@host` (a
    /// name-addr with `<>` is taken as written), sent with our fresh tag.
    pub from: String,
    /// Transport to use (UDP or TCP).
    pub transport: Transport,
    /// SDP offer (sent without body when empty).
    pub sdp: Vec<u8>,
    /// Extra headers (e.g. Referred-By or a header naming the original
    /// Call-ID); values containing CR or LF are dropped.
    pub headers: Vec<(HeaderName, String)>,
}

/// The body of an ACK that completes an offer/answer exchange.
#[derive(Debug, Clone)]
pub enum AckSdp {
    /// No SDP (the offer/answer was completed by the INVITE and its 2xx).
    None,
    /// The answer to the offer we put in our 2xx.
    Answer(Box<SessionDescription>),
    /// An answer that does not parse; RFC 3261 §13.3.1.4 says end the call.
    Invalid(sdp::SdpError),
}

/// Why a leg ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The peer sent BYE.
    RemoteBye,
    /// The peer cancelled before the final response.
    Cancelled,
    /// The TU rejected the INVITE with this status.
    Rejected(u16),
    /// The TU hung up (our BYE completed or timed out, or our CANCEL ended
    /// an outgoing call before it was answered).
    LocalHangup,
    /// No ACK for our 2xx within timer H; we sent BYE.
    AckTimeout,
    /// The peer stopped answering in-dialog requests (408/481 or timer B/F).
    PeerGone,
    /// Our outgoing INVITE got this final non-2xx status (408 for timer B).
    Failed(u16),
}

/// What the endpoint tells the TU.
#[derive(Debug, Clone)]
pub enum Event {
    /// A new call; answer with `ring`/`answer`/`reject`.
    IncomingCall(Box<IncomingCall>),
    /// The ACK for a 2xx arrived (the initial INVITE's or a re-INVITE's).
    Acked {
        /// The leg.
        leg: LegId,
        /// The SDP it carried.
        sdp: AckSdp,
    },
    /// A re-INVITE or UPDATE carries an offer (or, for a re-INVITE without
    /// body, asks for one); reply with `answer_offer`.
    OfferReceived {
        /// The leg.
        leg: LegId,
        /// INVITE or UPDATE.
        method: Method,
        /// The offer; `None` means the peer asks us to offer.
        offer: Option<Box<SessionDescription>>,
    },
    /// The outcome of our own re-INVITE.
    OfferAnswered {
        /// The leg.
        leg: LegId,
        /// The answer, or the final status that refused the offer.
        result: Result<Box<SessionDescription>, u16>,
    },
    /// An INFO request (DTMF relay and friends), already answered 200.
    Info {
        /// The leg.
        leg: LegId,
        /// Its Content-Type.
        content_type: Option<MediaType>,
        /// Its body.
        body: Vec<u8>,
    },
    /// A provisional response (101–199) to our outgoing INVITE.
    Progress {
        /// The leg.
        leg: LegId,
        /// Its status code.
        status: u16,
    },
    /// A 2xx to our outgoing INVITE; the endpoint has already sent the ACK
    /// (and sends it again for retransmitted 2xx). Not reported when the TU
    /// hung up first: then the endpoint ACKs and sends BYE.
    Answered {
        /// The leg.
        leg: LegId,
        /// The SDP answer in the 2xx.
        sdp: Result<Box<SessionDescription>, sdp::SdpError>,
    },
    /// The final response to our REFER (408 when it timed out, timer F).
    /// After 408 or 481 the dialog is taken as gone (RFC 3261 §12.2.1.2):
    /// the endpoint sends BYE and the leg ends with [`EndReason::PeerGone`].
    ReferAnswered {
        /// The leg.
        leg: LegId,
        /// The status code.
        status: u16,
    },
    /// An in-dialog NOTIFY with `Event: refer` (RFC 3515 §2.4.5), already
    /// answered 200.
    ReferNotify {
        /// The leg.
        leg: LegId,
        /// The status of the sipfrag status line (`SIP/2.0 200 OK` is 200);
        /// `None` when the body does not start with one.
        status: Option<u16>,
        /// `Subscription-State: terminated`: no more NOTIFYs follow.
        terminated: bool,
    },
    /// The leg is over; no more events for it.
    Ended {
        /// The leg.
        leg: LegId,
        /// Why.
        reason: EndReason,
    },
}

/// What [`Endpoint::poll_output`] returns.
#[derive(Debug, Clone)]
pub enum Output {
    /// Send these bytes.
    Transmit(Transmit),
    /// Tell the TU.
    Event(Event),
    /// Nothing more for now; call `handle_timeout` at this instant
    /// (`None`: no timer is pending).
    Timeout(Option<Instant>),
}

/// A command the endpoint could not carry out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The leg does not exist (any more).
    #[error("no such call leg")]
    UnknownLeg,
    /// The leg is not in a state where the command makes sense.
    #[error("the call leg is in the wrong state for this command")]
    WrongState,
    /// An offer/answer exchange is already in progress.
    #[error("an offer/answer exchange is in progress")]
    OfferPending,
    /// The target URI has no IP-literal host to send to.
    #[error("the target has no IP-literal host")]
    NoRoute,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerRef {
    Server(u64),
    Client(u64),
    Leg(u64),
}

#[derive(Debug)]
enum ServerTx {
    Invite(ServerInvite),
    NonInvite(ServerNonInvite),
}

#[derive(Debug)]
struct ServerTxEntry {
    key: TransactionKey,
    tx: ServerTx,
    dest: (Transport, SocketAddr),
    scheduled: Option<Instant>,
}

#[derive(Debug)]
enum ClientTx {
    Invite(ClientInvite),
    NonInvite(ClientNonInvite),
}

#[derive(Debug)]
struct ClientTxEntry {
    key: (String, Method),
    tx: ClientTx,
    dest: (Transport, SocketAddr),
    leg: LegId,
    request: Request,
    /// The ACK sent for a 2xx, resent when the 2xx is retransmitted.
    ack: Option<Vec<u8>>,
    /// The initial INVITE of an outgoing leg (not a re-INVITE).
    dial: bool,
    /// Outgoing INVITE: the ACK sent for each 2xx, by To tag, and where it
    /// went. The first is the leg's dialog; later ones are forks.
    answered: Vec<(String, Flow, Vec<u8>)>,
    scheduled: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LegState {
    /// INVITE received, no final response yet.
    Proceeding,
    /// Our INVITE sent, no final response yet (outgoing legs).
    Calling,
    /// 2xx sent, waiting for the ACK.
    Accepted,
    /// ACK received (incoming), or 2xx received and ACKed (outgoing).
    Confirmed,
    /// Our BYE is in flight.
    Terminating,
}

/// The UAS core's retransmission of a 2xx until the ACK (§13.3.1.4).
#[derive(Debug)]
struct Pending2xx {
    cseq: u32,
    bytes: Vec<u8>,
    /// Timer G schedule (UDP only).
    g: Option<Backoff>,
    /// Timer H: give up and end the call.
    h: Instant,
    /// Our 2xx carried the offer, so the ACK carries the answer.
    offer_in_2xx: bool,
}

/// Where the CANCEL of an outgoing INVITE stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cancel {
    /// The TU has not hung up.
    No,
    /// The TU hung up before any provisional response: CANCEL waits for one
    /// (§9.1).
    Wanted,
    /// CANCEL sent; the leg ends when the INVITE's final response arrives,
    /// or at this instant (64·T1 later) without one.
    Sent(Instant),
}

/// An outgoing INVITE awaiting its final response.
#[derive(Debug)]
struct Outgoing {
    provisional: bool,
    cancel: Cancel,
}

#[derive(Debug)]
struct ServerOffer {
    tx: u64,
    method: Method,
    request: Request,
}

#[derive(Debug)]
struct Leg {
    /// The INVITE's server transaction, or for an outgoing leg its client
    /// transaction.
    invite_tx: u64,
    /// The INVITE received, or the one we sent.
    invite: Request,
    /// We placed this call.
    uac: bool,
    /// Set while our INVITE has no final response.
    outgoing: Option<Outgoing>,
    /// The client transaction of our REFER awaiting its final response.
    refer: Option<u64>,
    /// We sent REFER in this dialog, so `refer` NOTIFYs are expected.
    referred: bool,
    dialog: Dialog,
    state: LegState,
    has_offer: bool,
    pending_2xx: Option<Pending2xx>,
    bye_after_ack: bool,
    end_reason: EndReason,
    server_offer: Option<ServerOffer>,
    client_offer: Option<u64>,
    /// A re-INVITE to retry after a 491 (RFC 3261 §14.1).
    retry_offer: Option<(Instant, Vec<u8>)>,
    scheduled: Option<Instant>,
}

impl Leg {
    fn deadline(&self) -> Option<Instant> {
        let p = self
            .pending_2xx
            .as_ref()
            .map(|p| p.g.map_or(p.h, |g| g.next.min(p.h)));
        let r = self.retry_offer.as_ref().map(|(at, _)| *at);
        let c = match self.outgoing {
            Some(Outgoing {
                cancel: Cancel::Sent(at),
                ..
            }) => Some(at),
            _ => None,
        };
        [p, r, c].into_iter().flatten().min()
    }
}

/// The SIP user agent (server, and client for outgoing calls).
#[derive(Debug)]
pub struct Endpoint {
    config: EndpointConfig,
    rng: fastrand::Rng,
    salt: u64,
    draining: bool,
    next_id: u64,
    server_txs: HashMap<u64, ServerTxEntry>,
    server_keys: HashMap<TransactionKey, u64>,
    client_txs: HashMap<u64, ClientTxEntry>,
    client_keys: HashMap<(String, Method), u64>,
    legs: HashMap<LegId, Leg>,
    dialogs: HashMap<DialogId, LegId>,
    timers: BinaryHeap<Reverse<(Instant, TimerRef)>>,
    out: VecDeque<Output>,
}

type Flow = (Transport, SocketAddr);

/// The owner of client transactions that belong to no leg (the BYE sent to
/// a forked 2xx); no leg ever gets this id.
const NO_LEG: LegId = LegId(0);

fn tx_key(method: &Method, ess: &Essentials) -> TransactionKey {
    let method = if *method == Method::Ack {
        Method::Invite
    } else {
        method.clone()
    };
    match ess.top_via.branch() {
        Some(branch) if ess.top_via.has_rfc3261_branch() => TransactionKey::Rfc3261 {
            branch: branch.to_owned(),
            sent_by: ess.top_via.sent_by(),
            method,
        },
        _ => TransactionKey::Rfc2543 {
            call_id: ess.call_id.clone(),
            from_tag: ess.from.tag().unwrap_or_default().to_owned(),
            cseq: ess.cseq.seq,
            via: ess.top_via_raw.clone(),
            method,
        },
    }
}

impl Endpoint {
    /// A new endpoint; `seed` feeds tags, branches and CSeq starts (tests
    /// pass a constant to get identical runs).
    pub fn new(config: EndpointConfig, seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        Endpoint {
            salt: rng.u64(..),
            rng,
            config,
            draining: false,
            next_id: 1,
            server_txs: HashMap::new(),
            server_keys: HashMap::new(),
            client_txs: HashMap::new(),
            client_keys: HashMap::new(),
            legs: HashMap::new(),
            dialogs: HashMap::new(),
            timers: BinaryHeap::new(),
            out: VecDeque::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// Number of live call legs.
    pub fn leg_count(&self) -> usize {
        self.legs.len()
    }

    /// Number of live transactions (server + client), for metrics.
    pub fn transaction_count(&self) -> usize {
        self.server_txs.len() + self.client_txs.len()
    }

    /// While draining, new INVITEs and OPTIONS get 503 with Retry-After so
    /// that load balancers move traffic elsewhere; calls already up go on.
    pub fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
    }

    // --- inputs ---------------------------------------------------------

    /// A UDP datagram arrived.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, bytes: &[u8]) {
        let parsed = parse_datagram(bytes, self.config.max_message_size);
        self.handle_parsed(now, (Transport::Udp, source), parsed);
    }

    /// An item cut from a stream connection by a
    /// [`StreamFramer`](crate::msg::StreamFramer).
    pub fn handle_stream_item(
        &mut self,
        now: Instant,
        transport: Transport,
        source: SocketAddr,
        item: Framed,
    ) {
        match item {
            Framed::Ping => self.send((transport, source), b"\r\n".to_vec()),
            Framed::Message(m) => self.handle_parsed(now, (transport, source), Ok(m)),
            Framed::Invalid(e) => self.handle_parsed(now, (transport, source), Err(e)),
        }
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, r))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            match r {
                TimerRef::Server(id) => self.fire_server(now, id),
                TimerRef::Client(id) => self.fire_client(now, id),
                TimerRef::Leg(id) => self.fire_leg(now, LegId(id)),
            }
        }
    }

    /// The next output; drain until [`Output::Timeout`].
    pub fn poll_output(&mut self) -> Output {
        if let Some(o) = self.out.pop_front() {
            return o;
        }
        Output::Timeout(self.timers.peek().map(|Reverse((at, _))| *at))
    }

    // --- commands from the TU -------------------------------------------

    /// Sends 180 Ringing.
    pub fn ring(&mut self, leg: LegId) -> Result<(), CommandError> {
        let l = self.legs.get(&leg).ok_or(CommandError::UnknownLeg)?;
        if l.state != LegState::Proceeding || l.uac {
            return Err(CommandError::WrongState);
        }
        let resp = self.leg_response(leg, 180);
        let bytes = resp.to_bytes();
        let tx = l.invite_tx;
        if let Some(ServerTxEntry {
            tx: ServerTx::Invite(t),
            dest,
            ..
        }) = self.server_txs.get_mut(&tx)
        {
            t.send_provisional(bytes.clone());
            let dest = *dest;
            self.send(dest, bytes);
        }
        Ok(())
    }

    /// Answers the INVITE with 200 OK carrying `sdp` (the answer, or our
    /// offer when the INVITE had none).
    pub fn answer(&mut self, now: Instant, leg: LegId, sdp: Vec<u8>) -> Result<(), CommandError> {
        let l = self.legs.get(&leg).ok_or(CommandError::UnknownLeg)?;
        if l.state != LegState::Proceeding || l.uac {
            return Err(CommandError::WrongState);
        }
        let (tx, has_offer, cseq) = (l.invite_tx, l.has_offer, l.dialog.remote_cseq);
        let mut resp = self.leg_response(leg, 200);
        resp.headers
            .push(HeaderName::ContentType, "application/sdp");
        resp.body = sdp;
        let bytes = resp.to_bytes();
        self.final_in_tx(now, tx, 200, bytes.clone());
        let reliable = self.legs[&leg].dialog.flow.0.is_reliable();
        let timers = self.config.timers;
        let l = self.legs.get_mut(&leg).ok_or(CommandError::UnknownLeg)?;
        l.state = LegState::Accepted;
        l.pending_2xx = Some(Pending2xx {
            cseq,
            bytes,
            g: (!reliable).then(|| Backoff::new(now, timers.t1, Some(timers.t2))),
            h: now + timers.t1x64(),
            offer_in_2xx: !has_offer,
        });
        self.resched_leg(leg);
        Ok(())
    }

    /// Rejects the INVITE with a final status (300–699) and extra headers
    /// (Retry-After, Warning...).
    pub fn reject(
        &mut self,
        now: Instant,
        leg: LegId,
        status: u16,
        headers: &[(HeaderName, String)],
    ) -> Result<(), CommandError> {
        let l = self.legs.get(&leg).ok_or(CommandError::UnknownLeg)?;
        if l.state != LegState::Proceeding || l.uac || !(300..700).contains(&status) {
            return Err(CommandError::WrongState);
        }
        let tx = l.invite_tx;
        let mut resp = self.leg_response(leg, status);
        for (n, v) in headers {
            resp.headers.push(n.clone(), v.as_str());
        }
        self.final_in_tx(now, tx, status, resp.to_bytes());
        self.end_leg(now, leg, EndReason::Rejected(status));
        Ok(())
    }

    /// Ends the call: BYE once confirmed (after the ACK if it is still
    /// awaited, §15), 480 before any final response. An outgoing call not
    /// yet answered is cancelled (§9.1; the CANCEL waits for a provisional
    /// response) and ends with [`EndReason::LocalHangup`] when the INVITE's
    /// final response arrives or 64·T1 after the CANCEL; if a 2xx wins the
    /// race it is ACKed and sent BYE.
    pub fn hangup(&mut self, now: Instant, leg: LegId) -> Result<(), CommandError> {
        let l = self.legs.get_mut(&leg).ok_or(CommandError::UnknownLeg)?;
        match l.state {
            LegState::Proceeding => self.reject(now, leg, 480, &[]),
            LegState::Calling => {
                if let Some(o) = &mut l.outgoing {
                    if o.cancel == Cancel::No {
                        o.cancel = Cancel::Wanted;
                        if o.provisional {
                            self.send_cancel(now, leg);
                        }
                    }
                }
                Ok(())
            }
            LegState::Accepted => {
                l.bye_after_ack = true;
                Ok(())
            }
            LegState::Confirmed => {
                self.send_bye(now, leg, EndReason::LocalHangup);
                Ok(())
            }
            LegState::Terminating => Ok(()),
        }
    }

    /// Answers a pending re-INVITE/UPDATE offer: `Ok(sdp)` sends 200 with
    /// the answer (or our offer, when the re-INVITE had none), `Err` sends
    /// the rejection (usually 488 with a Warning).
    pub fn answer_offer(
        &mut self,
        now: Instant,
        leg: LegId,
        result: Result<Vec<u8>, Rejection>,
    ) -> Result<(), CommandError> {
        let l = self.legs.get_mut(&leg).ok_or(CommandError::UnknownLeg)?;
        let offer = l.server_offer.take().ok_or(CommandError::WrongState)?;
        let (flow, tag) = (l.dialog.flow, l.dialog.id.local_tag.clone());
        let status = result.as_ref().map_or_else(|r| r.status, |_| 200);
        let mut resp = response_to(
            &offer.request.headers,
            status,
            Some(&tag),
            flow.1,
            &self.config.user_agent,
        );
        match result {
            Ok(sdp) => {
                resp.headers.push(HeaderName::Contact, self.contact(flow.0));
                resp.headers
                    .push(HeaderName::ContentType, "application/sdp");
                resp.body = sdp;
            }
            Err(rej) => self.decorate(&mut resp, &rej),
        }
        let bytes = resp.to_bytes();
        self.final_in_tx(now, offer.tx, status, bytes.clone());
        if offer.method == Method::Invite && status == 200 {
            let reliable = flow.0.is_reliable();
            let timers = self.config.timers;
            let has_body = !offer.request.body.is_empty();
            let cseq = Essentials::extract(&offer.request)
                .map(|e| e.cseq.seq)
                .unwrap_or_default();
            if let Some(l) = self.legs.get_mut(&leg) {
                l.pending_2xx = Some(Pending2xx {
                    cseq,
                    bytes,
                    g: (!reliable).then(|| Backoff::new(now, timers.t1, Some(timers.t2))),
                    h: now + timers.t1x64(),
                    offer_in_2xx: !has_body,
                });
            }
            self.resched_leg(leg);
        }
        Ok(())
    }

    /// Sends a re-INVITE with our offer (hold, codec change). The outcome
    /// arrives as [`Event::OfferAnswered`]; a 491 is retried by the endpoint
    /// after a random 0–2 s (RFC 3261 §14.1, we do not own the Call-ID).
    pub fn reinvite(&mut self, now: Instant, leg: LegId, sdp: Vec<u8>) -> Result<(), CommandError> {
        let l = self.legs.get(&leg).ok_or(CommandError::UnknownLeg)?;
        if l.state != LegState::Confirmed {
            return Err(CommandError::WrongState);
        }
        if l.server_offer.is_some() || l.client_offer.is_some() || l.retry_offer.is_some() {
            return Err(CommandError::OfferPending);
        }
        self.send_reinvite(now, leg, sdp);
        Ok(())
    }

    /// Places an outgoing INVITE (new Call-ID, From with a fresh tag, To and
    /// Request-URI the target) to the target's address (port 5060 unless
    /// given); the new leg's progress arrives as [`Event::Progress`],
    /// [`Event::Answered`] and [`Event::Ended`]. Timer B (64·T1) only runs
    /// until the first provisional response; how long to let it ring is the
    /// TU's choice ([`hangup`](Self::hangup) cancels).
    /// `Err(CommandError::NoRoute)` when the target has no IP-literal host.
    pub fn dial(&mut self, now: Instant, dial: Dial) -> Result<LegId, CommandError> {
        let sip = dial.target.as_sip().ok_or(CommandError::NoRoute)?;
        let ip = sip.host.ip().ok_or(CommandError::NoRoute)?;
        let port = sip.port.unwrap_or(if sip.secure { 5061 } else { 5060 });
        let flow = (dial.transport, SocketAddr::new(ip, port));
        let call_id = format!("{}@{}", self.token(), self.config.host);
        let local_tag = self.token();
        let from = dial.from.trim();
        let local_party = if from.contains('<') {
            format!("{from};tag={local_tag}")
        } else {
            format!("<{from}>;tag={local_tag}")
        };
        let cseq = self.rng.u32(0..1 << 30);
        let mut dialog =
            Dialog::outgoing(&call_id, local_party, &local_tag, &dial.target, flow, cseq);
        let hop = dialog.next_hop(self.config.in_dialog_to_source);
        let via = self.via(hop.0);
        let contact = self.contact(hop.0);
        let body = (!dial.sdp.is_empty()).then_some(("application/sdp", dial.sdp));
        let mut invite = dialog.request(Method::Invite, None, via, Some(contact), body);
        invite.headers.push(HeaderName::Allow, ALLOW);
        invite
            .headers
            .push(HeaderName::UserAgent, self.config.user_agent.as_str());
        for (name, value) in dial.headers {
            if !value.contains(['\r', '\n']) {
                invite.headers.push(name, value);
            }
        }
        let leg = LegId(self.id());
        self.legs.insert(
            leg,
            Leg {
                invite_tx: 0,
                invite: invite.clone(),
                uac: true,
                outgoing: Some(Outgoing {
                    provisional: false,
                    cancel: Cancel::No,
                }),
                refer: None,
                referred: false,
                dialog,
                state: LegState::Calling,
                has_offer: true,
                pending_2xx: None,
                bye_after_ack: false,
                end_reason: EndReason::LocalHangup,
                server_offer: None,
                client_offer: None,
                retry_offer: None,
                scheduled: None,
            },
        );
        let tx = self.start_client_tx(now, leg, hop, invite, true);
        if let Some(l) = self.legs.get_mut(&leg) {
            l.invite_tx = tx;
        }
        Ok(leg)
    }

    /// Sends REFER (RFC 3515) inside a confirmed leg's dialog, with
    /// `Refer-To: <refer_to>`, `Referred-By` our URI in the dialog, and
    /// Contact. The outcome arrives as [`Event::ReferAnswered`] and
    /// [`Event::ReferNotify`]. One REFER at a time:
    /// [`CommandError::WrongState`] while one awaits its final response or
    /// the leg is not confirmed.
    pub fn refer(&mut self, now: Instant, leg: LegId, refer_to: &str) -> Result<(), CommandError> {
        let l = self.legs.get(&leg).ok_or(CommandError::UnknownLeg)?;
        if l.state != LegState::Confirmed || l.refer.is_some() {
            return Err(CommandError::WrongState);
        }
        let transport = l.dialog.next_hop(self.config.in_dialog_to_source).0;
        let referred_by = NameAddr::parse(l.dialog.local_party.as_bytes())
            .map(|a| format!("<{}>", a.uri))
            .unwrap_or_else(|_| self.contact(transport));
        let refer_to: String = refer_to
            .trim()
            .chars()
            .filter(|c| *c != '\r' && *c != '\n')
            .collect();
        let refer_to = if refer_to.contains('<') {
            refer_to
        } else {
            format!("<{refer_to}>")
        };
        let via = self.via(transport);
        let contact = self.contact(transport);
        let l = self.legs.get_mut(&leg).ok_or(CommandError::UnknownLeg)?;
        let mut req = l
            .dialog
            .request(Method::Refer, None, via, Some(contact), None);
        req.headers.push(HeaderName::ReferTo, refer_to);
        req.headers.push(HeaderName::ReferredBy, referred_by);
        let id = self.new_client_tx(now, leg, req);
        if let Some(l) = self.legs.get_mut(&leg) {
            l.refer = id;
            l.referred = true;
        }
        Ok(())
    }

    // --- internals: output helpers --------------------------------------

    fn send(&mut self, (transport, destination): Flow, payload: Vec<u8>) {
        self.out.push_back(Output::Transmit(Transmit {
            transport,
            destination,
            payload,
        }));
    }

    fn emit(&mut self, e: Event) {
        self.out.push_back(Output::Event(e));
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn token(&mut self) -> String {
        format!("{:016x}", self.rng.u64(..))
    }

    fn contact(&self, transport: Transport) -> String {
        let t = match transport {
            Transport::Udp => "",
            Transport::Tcp => ";transport=tcp",
        };
        format!(
            "<sip:voxtrunk@{}:{}{t}>",
            self.config.host, self.config.port
        )
    }

    fn via(&mut self, transport: Transport) -> String {
        let branch = self.token();
        format!(
            "SIP/2.0/{} {}:{};branch={}{branch};rport",
            transport.via_token(),
            self.config.host,
            self.config.port,
            crate::msg::MAGIC_COOKIE,
        )
    }

    fn decorate(&self, resp: &mut Response, rej: &Rejection) {
        for (n, v) in &rej.headers {
            resp.headers.push(n.clone(), v.as_str());
        }
        if let Some(w) = &rej.warning {
            resp.headers.push(
                HeaderName::Warning,
                warning(w.code, &self.config.host.to_string(), &w.text),
            );
        }
    }

    /// A response to the leg's INVITE with our tag, and for 101–299 the
    /// Contact and Record-Route that establish the dialog (§12.1.1).
    fn leg_response(&self, leg: LegId, status: u16) -> Response {
        let l = &self.legs[&leg];
        let mut resp = response_to(
            &l.invite.headers,
            status,
            Some(&l.dialog.id.local_tag),
            l.dialog.flow.1,
            &self.config.user_agent,
        );
        if (101..300).contains(&status) {
            for rr in l.invite.headers.all(&HeaderName::RecordRoute) {
                resp.headers.push(HeaderName::RecordRoute, rr);
            }
            resp.headers
                .push(HeaderName::Contact, self.contact(l.dialog.flow.0));
        }
        if (200..300).contains(&status) {
            resp.headers.push(HeaderName::Allow, ALLOW);
        }
        resp
    }

    // --- internals: timers ----------------------------------------------

    fn resched_server(&mut self, id: u64) {
        let Some(e) = self.server_txs.get_mut(&id) else {
            return;
        };
        let d = match &e.tx {
            ServerTx::Invite(t) => t.deadline(),
            ServerTx::NonInvite(t) => t.deadline(),
        };
        let done = match &e.tx {
            ServerTx::Invite(t) => t.is_terminated(),
            ServerTx::NonInvite(t) => t.is_terminated(),
        };
        if done {
            let key = e.key.clone();
            self.server_txs.remove(&id);
            self.server_keys.remove(&key);
            return;
        }
        if d != e.scheduled {
            e.scheduled = d;
            if let Some(d) = d {
                self.timers.push(Reverse((d, TimerRef::Server(id))));
            }
        }
    }

    fn resched_client(&mut self, id: u64) {
        let Some(e) = self.client_txs.get_mut(&id) else {
            return;
        };
        let (d, done) = match &e.tx {
            ClientTx::Invite(t) => (t.deadline(), t.is_terminated()),
            ClientTx::NonInvite(t) => (t.deadline(), t.is_terminated()),
        };
        if done {
            let key = e.key.clone();
            self.client_txs.remove(&id);
            self.client_keys.remove(&key);
            return;
        }
        if d != e.scheduled {
            e.scheduled = d;
            if let Some(d) = d {
                self.timers.push(Reverse((d, TimerRef::Client(id))));
            }
        }
    }

    fn resched_leg(&mut self, leg: LegId) {
        let Some(l) = self.legs.get_mut(&leg) else {
            return;
        };
        let d = l.deadline();
        if d != l.scheduled {
            l.scheduled = d;
            if let Some(d) = d {
                self.timers.push(Reverse((d, TimerRef::Leg(leg.0))));
            }
        }
    }

    fn fire_server(&mut self, now: Instant, id: u64) {
        let Some(e) = self.server_txs.get_mut(&id) else {
            return;
        };
        e.scheduled = None;
        for _ in 0..8 {
            let action = match &mut e.tx {
                ServerTx::Invite(t) if t.deadline().is_some_and(|d| d <= now) => {
                    t.handle_timeout(now)
                }
                ServerTx::NonInvite(t) if t.deadline().is_some_and(|d| d <= now) => {
                    t.handle_timeout(now);
                    None
                }
                _ => break,
            };
            if let Some(TxAction::Send(b)) = action {
                self.out.push_back(Output::Transmit(Transmit {
                    transport: e.dest.0,
                    destination: e.dest.1,
                    payload: b,
                }));
            }
        }
        self.resched_server(id);
    }

    fn fire_client(&mut self, now: Instant, id: u64) {
        let Some(e) = self.client_txs.get_mut(&id) else {
            return;
        };
        e.scheduled = None;
        let mut timed_out = None;
        for _ in 0..8 {
            let action = match &mut e.tx {
                ClientTx::Invite(t) if t.deadline().is_some_and(|d| d <= now) => {
                    t.handle_timeout(now)
                }
                ClientTx::NonInvite(t) if t.deadline().is_some_and(|d| d <= now) => {
                    t.handle_timeout(now)
                }
                _ => break,
            };
            match action {
                Some(TxAction::Send(b)) => self.out.push_back(Output::Transmit(Transmit {
                    transport: e.dest.0,
                    destination: e.dest.1,
                    payload: b,
                })),
                Some(TxAction::TimedOut(t)) => timed_out = Some(t),
                None => {}
            }
        }
        let (leg, method, dial) = (e.leg, e.key.1.clone(), e.dial);
        self.resched_client(id);
        if timed_out.is_some() {
            if dial {
                self.dial_failed(now, leg, 408);
            } else {
                self.client_failed(now, id, leg, &method, 408);
            }
        }
    }

    fn fire_leg(&mut self, now: Instant, leg: LegId) {
        let Some(l) = self.legs.get_mut(&leg) else {
            return;
        };
        l.scheduled = None;
        if let Some(Outgoing {
            cancel: Cancel::Sent(at),
            ..
        }) = l.outgoing
        {
            if at <= now {
                // §9.1: no final response 64·T1 after our CANCEL; the INVITE
                // transaction is destroyed.
                let tx = l.invite_tx;
                if let Some(e) = self.client_txs.remove(&tx) {
                    self.client_keys.remove(&e.key);
                }
                self.end_leg(now, leg, EndReason::LocalHangup);
                return;
            }
        }
        let mut ack_timeout = false;
        let mut retransmit = None;
        if let Some(p) = &mut l.pending_2xx {
            if p.h <= now {
                l.pending_2xx = None;
                ack_timeout = true;
            } else if let Some(g) = &mut p.g {
                if g.next <= now {
                    g.step(now);
                    retransmit = Some(p.bytes.clone());
                }
            }
        }
        let retry = match &l.retry_offer {
            Some((at, _)) if *at <= now => l.retry_offer.take().map(|(_, sdp)| sdp),
            _ => None,
        };
        let flow = l.dialog.flow;
        if let Some(b) = retransmit {
            self.send(flow, b);
        }
        if ack_timeout {
            // §13.3.1.4: confirmed without ACK, the session SHOULD end with BYE.
            self.send_bye(now, leg, EndReason::AckTimeout);
        }
        if let Some(sdp) = retry {
            if self
                .legs
                .get(&leg)
                .is_some_and(|l| l.state == LegState::Confirmed)
            {
                self.send_reinvite(now, leg, sdp);
            }
        }
        self.resched_leg(leg);
    }

    // --- internals: transactions ----------------------------------------

    fn new_server_tx(&mut self, key: TransactionKey, method: &Method, flow: Flow) -> u64 {
        let reliable = flow.0.is_reliable();
        let tx = if *method == Method::Invite {
            ServerTx::Invite(ServerInvite::new(reliable, self.config.timers))
        } else {
            ServerTx::NonInvite(ServerNonInvite::new(reliable, self.config.timers))
        };
        let id = self.id();
        self.server_keys.insert(key.clone(), id);
        self.server_txs.insert(
            id,
            ServerTxEntry {
                key,
                tx,
                dest: flow,
                scheduled: None,
            },
        );
        id
    }

    /// Records a final response in a server transaction and sends it.
    fn final_in_tx(&mut self, now: Instant, id: u64, status: u16, bytes: Vec<u8>) {
        let Some(e) = self.server_txs.get_mut(&id) else {
            return;
        };
        match &mut e.tx {
            ServerTx::Invite(t) => t.send_final(now, status, bytes.clone()),
            ServerTx::NonInvite(t) => t.send_response(now, status, bytes.clone()),
        }
        let dest = e.dest;
        self.send(dest, bytes);
        self.resched_server(id);
    }

    /// Answers a request inside a new server transaction.
    fn respond_new_tx(
        &mut self,
        now: Instant,
        flow: Flow,
        key: TransactionKey,
        req: &Request,
        resp: Response,
    ) {
        let id = self.new_server_tx(key, &req.method, flow);
        let status = resp.status;
        self.final_in_tx(now, id, status, resp.to_bytes());
    }

    fn simple_response(
        &mut self,
        req: &Request,
        flow: Flow,
        status: u16,
        tag: Option<&str>,
    ) -> Response {
        let tag = tag.map_or_else(|| stateless_tag(&req.headers, self.salt), str::to_owned);
        response_to(
            &req.headers,
            status,
            Some(&tag),
            flow.1,
            &self.config.user_agent,
        )
    }

    fn options_response(&mut self, req: &Request, flow: Flow, tag: Option<&str>) -> Response {
        if self.draining {
            let mut r = self.simple_response(req, flow, 503, tag);
            r.headers
                .push(HeaderName::RetryAfter, self.config.retry_after.to_string());
            return r;
        }
        let mut r = self.simple_response(req, flow, 200, tag);
        r.headers.push(HeaderName::Allow, ALLOW);
        r.headers.push(HeaderName::Accept, "application/sdp");
        r.headers
            .push(HeaderName::Supported, validate::SUPPORTED.join(", "));
        r
    }

    // --- internals: requests --------------------------------------------

    fn handle_parsed(&mut self, now: Instant, flow: Flow, parsed: Result<Message, ParseError>) {
        match parsed {
            Ok(Message::Request(req)) => self.handle_request(now, flow, req),
            Ok(Message::Response(resp)) => self.handle_response(now, resp),
            Err(e) => {
                let (Some(status), Some(salvage)) = (e.status(), e.salvage.as_ref()) else {
                    return;
                };
                let tag = stateless_tag(&salvage.headers, self.salt);
                let mut resp = response_to(
                    &salvage.headers,
                    status,
                    Some(&tag),
                    flow.1,
                    &self.config.user_agent,
                );
                let rej = Rejection {
                    status,
                    warning: Some(Warning::misc(e.kind.to_string())),
                    headers: Vec::new(),
                };
                self.decorate(&mut resp, &rej);
                self.send(flow, resp.to_bytes());
            }
        }
    }

    fn handle_request(&mut self, now: Instant, flow: Flow, req: Request) {
        let checked = match validate::check(&req) {
            Ok(c) => c,
            Err(rej) => {
                if req.method != Method::Ack {
                    let mut resp = self.simple_response(&req, flow, rej.status, None);
                    self.decorate(&mut resp, &rej);
                    self.send(flow, resp.to_bytes());
                }
                return;
            }
        };
        let key = tx_key(&req.method, &checked.ess);
        if req.method == Method::Ack {
            return self.handle_ack(now, req, &checked, &key);
        }
        if let Some(&id) = self.server_keys.get(&key) {
            let e = &self.server_txs[&id];
            let again = match &e.tx {
                ServerTx::Invite(t) => t.handle_retransmission(),
                ServerTx::NonInvite(t) => t.handle_retransmission(),
            };
            if let Some(bytes) = again {
                let dest = e.dest;
                self.send(dest, bytes);
            }
            return;
        }
        if req.method == Method::Cancel {
            return self.handle_cancel(now, flow, req, key);
        }
        if checked.ess.to.tag().is_some() {
            self.handle_in_dialog(now, flow, req, checked, key);
        } else {
            self.handle_out_of_dialog(now, flow, req, checked, key);
        }
    }

    fn handle_ack(&mut self, now: Instant, req: Request, checked: &Checked, key: &TransactionKey) {
        if let Some(&id) = self.server_keys.get(key) {
            if let Some(ServerTxEntry {
                tx: ServerTx::Invite(t),
                ..
            }) = self.server_txs.get_mut(&id)
            {
                if t.handle_ack(now) {
                    self.resched_server(id);
                    return;
                }
            }
        }
        let ess = &checked.ess;
        let Some(local_tag) = ess.to.tag() else {
            return;
        };
        let did = DialogId {
            call_id: ess.call_id.clone(),
            local_tag: local_tag.to_owned(),
            remote_tag: ess.from.tag().unwrap_or_default().to_owned(),
        };
        let Some(&leg) = self.dialogs.get(&did) else {
            return;
        };
        let Some(l) = self.legs.get_mut(&leg) else {
            return;
        };
        let Some(p) = l.pending_2xx.take_if(|p| p.cseq == ess.cseq.seq) else {
            return; // a retransmitted ACK, or one for another 2xx
        };
        if l.state == LegState::Accepted {
            l.state = LegState::Confirmed;
        }
        let sdp = match (p.offer_in_2xx, req.body.is_empty()) {
            (true, false) => match sdp::parse(&req.body) {
                Ok(s) => AckSdp::Answer(Box::new(s)),
                Err(e) => AckSdp::Invalid(e),
            },
            _ => AckSdp::None,
        };
        let bye = std::mem::take(&mut l.bye_after_ack);
        self.resched_leg(leg);
        self.emit(Event::Acked { leg, sdp });
        if bye {
            self.send_bye(now, leg, EndReason::LocalHangup);
        }
    }

    fn handle_cancel(&mut self, now: Instant, flow: Flow, req: Request, key: TransactionKey) {
        let invite_key = key.with_method(Method::Invite);
        let leg = self.server_keys.get(&invite_key).and_then(|id| {
            self.legs
                .iter()
                .find(|(_, l)| l.invite_tx == *id && !l.uac)
                .map(|(leg, l)| (*leg, l.state, l.dialog.id.local_tag.clone()))
        });
        match leg {
            None => {
                let resp = self.simple_response(&req, flow, 481, None);
                self.respond_new_tx(now, flow, key, &req, resp);
            }
            Some((leg, state, tag)) => {
                // §9.2: 200 to the CANCEL, with the INVITE's To tag; 487 to
                // the INVITE if it is still unanswered. A CANCEL that loses
                // the race to our 2xx changes nothing: the caller sends BYE.
                let resp = self.simple_response(&req, flow, 200, Some(&tag));
                self.respond_new_tx(now, flow, key, &req, resp);
                if state == LegState::Proceeding {
                    let tx = self.legs[&leg].invite_tx;
                    let resp = self.leg_response(leg, 487);
                    self.final_in_tx(now, tx, 487, resp.to_bytes());
                    self.end_leg(now, leg, EndReason::Cancelled);
                }
            }
        }
    }

    fn handle_out_of_dialog(
        &mut self,
        now: Instant,
        flow: Flow,
        req: Request,
        checked: Checked,
        key: TransactionKey,
    ) {
        match req.method {
            Method::Options => {
                let resp = self.options_response(&req, flow, None);
                self.respond_new_tx(now, flow, key, &req, resp);
            }
            Method::Invite => self.new_call(now, flow, req, checked, key),
            _ => {
                let resp = self.simple_response(&req, flow, 481, None);
                self.respond_new_tx(now, flow, key, &req, resp);
            }
        }
    }

    fn new_call(
        &mut self,
        now: Instant,
        flow: Flow,
        req: Request,
        checked: Checked,
        key: TransactionKey,
    ) {
        if self.draining {
            let mut resp = self.simple_response(&req, flow, 503, None);
            resp.headers
                .push(HeaderName::RetryAfter, self.config.retry_after.to_string());
            return self.respond_new_tx(now, flow, key, &req, resp);
        }
        let offer = if req.body.is_empty() {
            None
        } else {
            match sdp::parse(&req.body) {
                Ok(s) => Some(s),
                Err(e) => {
                    let mut resp = self.simple_response(&req, flow, 400, None);
                    let rej = Rejection {
                        status: 400,
                        warning: Some(Warning::new(
                            e.warning_code(),
                            format!("malformed SDP: {e}"),
                        )),
                        headers: Vec::new(),
                    };
                    self.decorate(&mut resp, &rej);
                    return self.respond_new_tx(now, flow, key, &req, resp);
                }
            }
        };
        let Some(contact) = checked.contact.as_ref() else {
            return;
        };
        let tx = self.new_server_tx(key, &req.method, flow);
        let local_tag = self.token();
        let local_cseq = self.rng.u32(1..1 << 30);
        let dialog = Dialog::for_invite(&req, &checked.ess, contact, &local_tag, flow, local_cseq);
        let leg = LegId(self.id());
        let trying =
            response_to(&req.headers, 100, None, flow.1, &self.config.user_agent).to_bytes();
        if let Some(ServerTxEntry {
            tx: ServerTx::Invite(t),
            ..
        }) = self.server_txs.get_mut(&tx)
        {
            t.send_provisional(trying.clone());
        }
        self.send(flow, trying);
        self.dialogs.insert(dialog.id.clone(), leg);
        self.legs.insert(
            leg,
            Leg {
                invite_tx: tx,
                invite: req.clone(),
                uac: false,
                outgoing: None,
                refer: None,
                referred: false,
                dialog,
                state: LegState::Proceeding,
                has_offer: offer.is_some(),
                pending_2xx: None,
                bye_after_ack: false,
                end_reason: EndReason::LocalHangup,
                server_offer: None,
                client_offer: None,
                retry_offer: None,
                scheduled: None,
            },
        );
        self.emit(Event::IncomingCall(Box::new(IncomingCall {
            leg,
            request: req,
            essentials: checked.ess,
            source: flow.1,
            transport: flow.0,
            offer,
        })));
    }

    fn handle_in_dialog(
        &mut self,
        now: Instant,
        flow: Flow,
        req: Request,
        checked: Checked,
        key: TransactionKey,
    ) {
        let ess = &checked.ess;
        let did = DialogId {
            call_id: ess.call_id.clone(),
            local_tag: ess.to.tag().unwrap_or_default().to_owned(),
            remote_tag: ess.from.tag().unwrap_or_default().to_owned(),
        };
        let Some(leg) = self.dialogs.get(&did).copied() else {
            let resp = self.simple_response(&req, flow, 481, None);
            return self.respond_new_tx(now, flow, key, &req, resp);
        };
        let tag = did.local_tag.clone();
        let respond = |ep: &mut Self, status: u16, extra: &[(HeaderName, String)]| {
            let mut resp = ep.simple_response(&req, flow, status, Some(&tag));
            for (n, v) in extra {
                resp.headers.push(n.clone(), v.as_str());
            }
            ep.respond_new_tx(now, flow, key.clone(), &req, resp);
        };
        let l = self
            .legs
            .get_mut(&leg)
            .expect("dialog index only names live legs");
        if l.dialog.check_remote_cseq(ess.cseq.seq).is_err() {
            let w = warning(399, &self.config.host.to_string(), "CSeq out of order");
            return respond(self, 500, &[(HeaderName::Warning, w)]);
        }
        let retry_after = || (HeaderName::RetryAfter, fastrand::u32(0..=10).to_string());
        match req.method {
            Method::Bye => {
                respond(self, 200, &[]);
                self.end_leg(now, leg, EndReason::RemoteBye);
            }
            Method::Invite | Method::Update => {
                let l = &self.legs[&leg];
                let awaiting_ack_answer = l.pending_2xx.as_ref().is_some_and(|p| p.offer_in_2xx);
                if l.client_offer.is_some() || l.retry_offer.is_some() || awaiting_ack_answer {
                    // Glare: our own offer is outstanding (§14.1, RFC 3311 §5.2).
                    return respond(self, 491, &[]);
                }
                if l.server_offer.is_some() || l.state == LegState::Proceeding {
                    return respond(self, 500, &[retry_after()]);
                }
                if req.method == Method::Update && req.body.is_empty() {
                    let resp = self.options_response(&req, flow, Some(&tag));
                    return self.respond_new_tx(now, flow, key, &req, resp);
                }
                let offer = if req.body.is_empty() {
                    None
                } else {
                    match sdp::parse(&req.body) {
                        Ok(s) => Some(Box::new(s)),
                        Err(e) => {
                            let w = warning(
                                e.warning_code(),
                                &self.config.host.to_string(),
                                &format!("malformed SDP: {e}"),
                            );
                            return respond(self, 400, &[(HeaderName::Warning, w)]);
                        }
                    }
                };
                let tx = self.new_server_tx(key, &req.method, flow);
                if req.method == Method::Invite {
                    let trying =
                        response_to(&req.headers, 100, None, flow.1, &self.config.user_agent)
                            .to_bytes();
                    if let Some(ServerTxEntry {
                        tx: ServerTx::Invite(t),
                        ..
                    }) = self.server_txs.get_mut(&tx)
                    {
                        t.send_provisional(trying.clone());
                    }
                    self.send(flow, trying);
                }
                let l = self.legs.get_mut(&leg).expect("checked above");
                if let Some(c) = &checked.contact {
                    l.dialog.refresh_target(c);
                }
                l.server_offer = Some(ServerOffer {
                    tx,
                    method: req.method.clone(),
                    request: req.clone(),
                });
                self.emit(Event::OfferReceived {
                    leg,
                    method: req.method.clone(),
                    offer,
                });
            }
            Method::Info => {
                respond(self, 200, &[]);
                let content_type = req
                    .headers
                    .first(&HeaderName::ContentType)
                    .and_then(MediaType::parse);
                self.emit(Event::Info {
                    leg,
                    content_type,
                    body: req.body.clone(),
                });
            }
            Method::Options => {
                let resp = self.options_response(&req, flow, Some(&tag));
                self.respond_new_tx(now, flow, key, &req, resp);
            }
            Method::Notify => {
                // RFC 6665 §8.2.2: an event package we did not subscribe to
                // gets 489; a subscription we never created (no REFER sent
                // in this dialog) gets 481.
                let is_refer = req
                    .headers
                    .first(&HeaderName::Event)
                    .is_some_and(|v| first_token(v).eq_ignore_ascii_case("refer"));
                if !is_refer {
                    return respond(self, 489, &[]);
                }
                if !self.legs.get(&leg).is_some_and(|l| l.referred) {
                    return respond(self, 481, &[]);
                }
                let terminated = req
                    .headers
                    .first(&HeaderName::SubscriptionState)
                    .is_some_and(|v| first_token(v).eq_ignore_ascii_case("terminated"));
                let status = sipfrag_status(&req.body);
                respond(self, 200, &[]);
                self.emit(Event::ReferNotify {
                    leg,
                    status,
                    terminated,
                });
            }
            _ => respond(self, 481, &[]),
        }
    }

    // --- internals: client side -----------------------------------------

    /// Starts a client transaction for an in-dialog request of `leg`.
    fn new_client_tx(&mut self, now: Instant, leg: LegId, req: Request) -> Option<u64> {
        let dest = self
            .legs
            .get(&leg)?
            .dialog
            .next_hop(self.config.in_dialog_to_source);
        Some(self.start_client_tx(now, leg, dest, req, false))
    }

    /// Starts a client transaction sending `req` to `dest`; `dial` marks the
    /// initial INVITE of an outgoing leg.
    fn start_client_tx(
        &mut self,
        now: Instant,
        leg: LegId,
        dest: Flow,
        req: Request,
        dial: bool,
    ) -> u64 {
        let branch = Essentials::extract(&req)
            .ok()
            .and_then(|e| e.top_via.branch().map(str::to_owned))
            .unwrap_or_default();
        let bytes = req.to_bytes();
        let reliable = dest.0.is_reliable();
        let tx = if req.method == Method::Invite {
            ClientTx::Invite(ClientInvite::new(
                now,
                bytes.clone(),
                reliable,
                self.config.timers,
            ))
        } else {
            ClientTx::NonInvite(ClientNonInvite::new(
                now,
                bytes.clone(),
                reliable,
                self.config.timers,
            ))
        };
        let id = self.id();
        let key = (branch, req.method.clone());
        self.client_keys.insert(key.clone(), id);
        self.client_txs.insert(
            id,
            ClientTxEntry {
                key,
                tx,
                dest,
                leg,
                request: req,
                ack: None,
                dial,
                answered: Vec::new(),
                scheduled: None,
            },
        );
        self.send(dest, bytes);
        self.resched_client(id);
        id
    }

    fn send_bye(&mut self, now: Instant, leg: LegId, reason: EndReason) {
        let transport = match self.legs.get(&leg) {
            Some(l) if l.state != LegState::Terminating => {
                l.dialog.next_hop(self.config.in_dialog_to_source).0
            }
            _ => return,
        };
        let via = self.via(transport);
        let Some(l) = self.legs.get_mut(&leg) else {
            return;
        };
        l.state = LegState::Terminating;
        l.end_reason = reason;
        l.pending_2xx = None;
        l.retry_offer = None;
        let bye = l.dialog.request(Method::Bye, None, via, None, None);
        self.new_client_tx(now, leg, bye);
    }

    fn send_reinvite(&mut self, now: Instant, leg: LegId, sdp: Vec<u8>) {
        let Some(transport) = self
            .legs
            .get(&leg)
            .map(|l| l.dialog.next_hop(self.config.in_dialog_to_source).0)
        else {
            return;
        };
        let via = self.via(transport);
        let contact = self.contact(transport);
        let Some(l) = self.legs.get_mut(&leg) else {
            return;
        };
        let inv = l.dialog.request(
            Method::Invite,
            None,
            via,
            Some(contact),
            Some(("application/sdp", sdp)),
        );
        let id = self.new_client_tx(now, leg, inv);
        if let Some(l) = self.legs.get_mut(&leg) {
            l.client_offer = id;
        }
    }

    /// CANCEL for the leg's outgoing INVITE (§9.1): its Request-URI, top
    /// Via, Route, From, To, Call-ID and CSeq number, sent where it went.
    fn send_cancel(&mut self, now: Instant, leg: LegId) {
        let Some(l) = self.legs.get(&leg) else {
            return;
        };
        let Some(dest) = self.client_txs.get(&l.invite_tx).map(|e| e.dest) else {
            return;
        };
        let to = l.invite.headers.first(&HeaderName::To).map(<[u8]>::to_vec);
        let cancel = request_like_invite(&l.invite, Method::Cancel, to.as_deref());
        let deadline = now + self.config.timers.t1x64();
        self.start_client_tx(now, leg, dest, cancel, false);
        if let Some(o) = self.legs.get_mut(&leg).and_then(|l| l.outgoing.as_mut()) {
            o.cancel = Cancel::Sent(deadline);
        }
        self.resched_leg(leg);
    }

    fn handle_response(&mut self, now: Instant, resp: Response) {
        let Some(via) = resp
            .headers
            .list(&HeaderName::Via)
            .and_then(|v| v.first().and_then(|v| crate::msg::Via::parse(v).ok()))
        else {
            return;
        };
        let Some(cseq) = resp
            .headers
            .first(&HeaderName::CSeq)
            .and_then(crate::msg::CSeq::parse)
        else {
            return;
        };
        let key = (
            via.branch().unwrap_or_default().to_owned(),
            cseq.method.clone(),
        );
        let Some(&id) = self.client_keys.get(&key) else {
            return;
        };
        let Some(e) = self.client_txs.get_mut(&id) else {
            return;
        };
        let status = resp.status;
        let (leg, dial) = (e.leg, e.dial);
        match &mut e.tx {
            ClientTx::NonInvite(t) => {
                let ev = t.handle_response(now, status);
                self.resched_client(id);
                if ev == ClientEvent::Deliver && status >= 200 {
                    match cseq.method {
                        Method::Bye => {
                            let reason = self
                                .legs
                                .get(&leg)
                                .map_or(EndReason::LocalHangup, |l| l.end_reason);
                            self.end_leg(now, leg, reason);
                        }
                        Method::Refer => self.refer_final(now, id, leg, status),
                        _ => {}
                    }
                }
            }
            ClientTx::Invite(t) => {
                let request = &e.request;
                let (ev, action) = t.handle_response(now, status, || non_2xx_ack(request, &resp));
                if let Some(TxAction::Send(b)) = action {
                    let dest = e.dest;
                    self.send(dest, b);
                }
                if ev == ClientEvent::Deliver {
                    if dial {
                        self.dial_response(now, id, leg, resp);
                    } else if status >= 200 {
                        self.reinvite_final(now, id, leg, resp);
                    }
                }
                self.resched_client(id);
            }
        }
    }

    /// A response to the initial INVITE of an outgoing leg, as delivered by
    /// its transaction (non-2xx finals are already ACKed by it).
    fn dial_response(&mut self, now: Instant, id: u64, leg: LegId, resp: Response) {
        let status = resp.status;
        if (200..300).contains(&status) {
            return self.dial_answered(now, id, leg, &resp);
        }
        if status >= 300 {
            return self.dial_failed(now, leg, status);
        }
        let Some(l) = self.legs.get_mut(&leg) else {
            return;
        };
        let Some(o) = l.outgoing.as_mut().filter(|_| l.state == LegState::Calling) else {
            return;
        };
        o.provisional = true;
        match o.cancel {
            Cancel::No if status > 100 => self.emit(Event::Progress { leg, status }),
            Cancel::Wanted => self.send_cancel(now, leg),
            _ => {}
        }
    }

    /// A 2xx to our outgoing INVITE (§13.2.2.4): the first one creates the
    /// dialog and is ACKed; a retransmission gets the same ACK again; a 2xx
    /// from another fork is ACKed and sent BYE.
    fn dial_answered(&mut self, now: Instant, id: u64, leg: LegId, resp: &Response) {
        let Some(e) = self.client_txs.get(&id) else {
            return;
        };
        let to_tag = resp
            .headers
            .first(&HeaderName::To)
            .and_then(|v| NameAddr::parse(v).ok())
            .and_then(|a| a.tag().map(str::to_owned))
            .unwrap_or_default();
        if let Some((_, dest, ack)) = e.answered.iter().find(|(t, ..)| *t == to_tag) {
            let (dest, ack) = (*dest, ack.clone());
            return self.send(dest, ack);
        }
        let invite = e.request.clone();
        let first = e.answered.is_empty();
        let calling = self
            .legs
            .get(&leg)
            .filter(|l| first && l.state == LegState::Calling);
        let (flow, local_tag) = match calling {
            Some(l) => (l.dialog.flow, l.dialog.id.local_tag.clone()),
            None => {
                let tag = invite
                    .headers
                    .first(&HeaderName::From)
                    .and_then(|v| NameAddr::parse(v).ok())
                    .and_then(|a| a.tag().map(str::to_owned))
                    .unwrap_or_default();
                (e.dest, tag)
            }
        };
        let establish = calling.is_some();
        let mut dialog = Dialog::for_uac(&invite, resp, flow, &local_tag);
        let hop = dialog.next_hop(self.config.in_dialog_to_source);
        let via = self.via(hop.0);
        let cseq = dialog.local_cseq;
        let ack = dialog
            .request(Method::Ack, Some(cseq), via, None, None)
            .to_bytes();
        if let Some(e) = self.client_txs.get_mut(&id) {
            e.answered.push((to_tag, hop, ack.clone()));
        }
        self.send(hop, ack);
        if !establish {
            let via = self.via(hop.0);
            let bye = dialog.request(Method::Bye, None, via, None, None);
            self.start_client_tx(now, NO_LEG, hop, bye, false);
            return;
        }
        let Some(l) = self.legs.get_mut(&leg) else {
            return;
        };
        let hung_up = l.outgoing.take().is_some_and(|o| o.cancel != Cancel::No);
        self.dialogs.insert(dialog.id.clone(), leg);
        l.dialog = dialog;
        l.state = LegState::Confirmed;
        self.resched_leg(leg);
        if hung_up {
            self.send_bye(now, leg, EndReason::LocalHangup);
        } else {
            let sdp = sdp::parse(&resp.body).map(Box::new);
            self.emit(Event::Answered { leg, sdp });
        }
    }

    /// Our outgoing INVITE got a final non-2xx or timed out.
    fn dial_failed(&mut self, now: Instant, leg: LegId, status: u16) {
        let Some(l) = self.legs.get(&leg) else {
            return;
        };
        let Some(o) = l.outgoing.as_ref().filter(|_| l.state == LegState::Calling) else {
            return;
        };
        let reason = match o.cancel {
            Cancel::No => EndReason::Failed(status),
            _ => EndReason::LocalHangup,
        };
        self.end_leg(now, leg, reason);
    }

    /// The final response to our REFER (or 408 for timer F).
    fn refer_final(&mut self, now: Instant, id: u64, leg: LegId, status: u16) {
        let Some(l) = self.legs.get_mut(&leg) else {
            return;
        };
        if l.refer != Some(id) {
            return;
        }
        l.refer = None;
        self.emit(Event::ReferAnswered { leg, status });
        if status == 408 || status == 481 {
            // §12.2.1.2: the dialog is gone.
            self.send_bye(now, leg, EndReason::PeerGone);
        }
    }

    fn reinvite_final(&mut self, now: Instant, id: u64, leg: LegId, resp: Response) {
        let status = resp.status;
        if (200..300).contains(&status) {
            let Some(e) = self.client_txs.get(&id) else {
                return;
            };
            let first = e.ack.is_none();
            let ack = match &e.ack {
                Some(a) => a.clone(),
                None => {
                    let cseq = Essentials::extract(&e.request)
                        .map(|x| x.cseq.seq)
                        .unwrap_or_default();
                    let transport = e.dest.0;
                    let via = self.via(transport);
                    let Some(l) = self.legs.get_mut(&leg) else {
                        return;
                    };
                    if let Some(c) = resp
                        .headers
                        .first(&HeaderName::Contact)
                        .and_then(|c| NameAddr::parse(c).ok())
                    {
                        l.dialog.refresh_target(&c);
                    }
                    l.dialog
                        .request(Method::Ack, Some(cseq), via, None, None)
                        .to_bytes()
                }
            };
            let Some(e) = self.client_txs.get_mut(&id) else {
                return;
            };
            e.ack = Some(ack.clone());
            let dest = e.dest;
            self.send(dest, ack);
            if first {
                if let Some(l) = self.legs.get_mut(&leg) {
                    l.client_offer = None;
                }
                let result = sdp::parse(&resp.body).map(Box::new).map_err(|_| 488);
                self.emit(Event::OfferAnswered { leg, result });
            }
            return;
        }
        let Some(l) = self.legs.get_mut(&leg) else {
            return;
        };
        l.client_offer = None;
        if status == 491 {
            let body = self
                .client_txs
                .get(&id)
                .map(|e| e.request.body.clone())
                .unwrap_or_default();
            let wait = Duration::from_millis(self.rng.u64(0..=2000));
            if let Some(l) = self.legs.get_mut(&leg) {
                l.retry_offer = Some((now + wait, body));
            }
            self.resched_leg(leg);
            return;
        }
        self.client_failed(now, id, leg, &Method::Invite, status);
    }

    /// An in-dialog request (re-INVITE, BYE, REFER) failed or timed out.
    fn client_failed(&mut self, now: Instant, id: u64, leg: LegId, method: &Method, status: u16) {
        match method {
            Method::Bye => {
                let reason = self
                    .legs
                    .get(&leg)
                    .map_or(EndReason::LocalHangup, |l| l.end_reason);
                self.end_leg(now, leg, reason);
            }
            Method::Refer => self.refer_final(now, id, leg, status),
            // A CANCEL's fate is settled by the INVITE's final response.
            Method::Cancel => {}
            _ => {
                if let Some(l) = self.legs.get_mut(&leg) {
                    l.client_offer = None;
                }
                self.emit(Event::OfferAnswered {
                    leg,
                    result: Err(status),
                });
                if status == 408 || status == 481 {
                    // §12.2.1.2 / §14.1: the dialog is gone.
                    self.send_bye(now, leg, EndReason::PeerGone);
                }
            }
        }
    }

    fn end_leg(&mut self, now: Instant, leg: LegId, reason: EndReason) {
        let Some(l) = self.legs.remove(&leg) else {
            return;
        };
        self.dialogs.remove(&l.dialog.id);
        if let Some(offer) = l.server_offer {
            // §15.1.2: a re-INVITE still pending when the call ends gets 487.
            let resp = response_to(
                &offer.request.headers,
                487,
                Some(&l.dialog.id.local_tag),
                l.dialog.flow.1,
                &self.config.user_agent,
            );
            self.final_in_tx(now, offer.tx, 487, resp.to_bytes());
        }
        self.emit(Event::Ended { leg, reason });
    }
}

/// The first token of a header value (`refer;id=7` is `refer`).
fn first_token(value: &[u8]) -> &str {
    let v = value.split(|&b| b == b';').next().unwrap_or_default();
    std::str::from_utf8(v).unwrap_or_default().trim()
}

/// The status code of a message/sipfrag body's status line (RFC 3420,
/// RFC 3515 §2.4.5): `SIP/2.0 200 OK` is 200.
fn sipfrag_status(body: &[u8]) -> Option<u16> {
    let line = body.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_ascii_whitespace();
    if !parts.next()?.eq_ignore_ascii_case("SIP/2.0") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    code.parse().ok().filter(|c| (100..700).contains(c))
}

/// The ACK for a non-2xx final response to our INVITE (§17.1.1.3): the
/// INVITE's headers with the response's To.
fn non_2xx_ack(invite: &Request, resp: &Response) -> Vec<u8> {
    let to = resp.headers.first(&HeaderName::To);
    request_like_invite(invite, Method::Ack, to).to_bytes()
}

/// A request that repeats our INVITE's Request-URI, top Via, Route set,
/// From, Call-ID and CSeq number, with `to` as its To: a CANCEL (§9.1) or
/// the ACK of a non-2xx response (§17.1.1.3).
fn request_like_invite(invite: &Request, method: Method, to: Option<&[u8]>) -> Request {
    let mut h = crate::msg::Headers::new();
    if let Some(v) = invite
        .headers
        .list(&HeaderName::Via)
        .and_then(|v| v.first().map(|x| x.to_vec()))
    {
        h.push(HeaderName::Via, v);
    }
    h.push(HeaderName::MaxForwards, "70");
    for r in invite.headers.all(&HeaderName::Route) {
        h.push(HeaderName::Route, r);
    }
    if let Some(v) = invite.headers.first(&HeaderName::From) {
        h.push(HeaderName::From, v);
    }
    if let Some(v) = to {
        h.push(HeaderName::To, v);
    }
    if let Some(v) = invite.headers.first(&HeaderName::CallId) {
        h.push(HeaderName::CallId, v);
    }
    let seq = invite
        .headers
        .first(&HeaderName::CSeq)
        .and_then(crate::msg::CSeq::parse)
        .map_or(0, |c| c.seq);
    h.push(HeaderName::CSeq, format!("{seq} {method}"));
    Request {
        method,
        uri: invite.uri.clone(),
        headers: h,
        body: Vec::new(),
    }
}

impl Transport {
    /// TCP and TLS deliver reliably, so retransmission timers stay off.
    pub fn is_reliable(self) -> bool {
        matches!(self, Transport::Tcp)
    }

    /// The Via transport token.
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }
}

#[cfg(test)]
mod tests;
