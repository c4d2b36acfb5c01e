//! RFC 3261 §17 transactions, with the RFC 6026 `Accepted` states.
//!
//! Each transaction is a small state machine that owns its retransmission
//! buffer and its deadlines. It never reads the clock: every method that can
//! start or fire a timer takes `now`, and [`deadline`](ServerInvite::deadline)
//! tells the endpoint when to call `handle_timeout` next. Timers are data
//! ([`Timer`]); their durations come from [`TimerConfig`] so tests can shrink
//! T1/T2/T4.
//!
//! Over reliable transports (TCP, TLS) the retransmission timers A, E and G
//! are never started and the wait timers D, I, J and K are zero (§17.1.1.2,
//! §17.1.2.2, §17.2.1, §17.2.2).

use std::time::{Duration, Instant};

use crate::msg::Method;

/// T1, T2 and T4 of RFC 3261 §17.1.1.1 (table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate, default 500 ms.
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE
    /// responses, default 4 s.
    pub t2: Duration,
    /// Maximum time a message stays in the network, default 5 s.
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl TimerConfig {
    /// 64·T1: the transaction timeout of timers B, F, H, J, L and M.
    pub fn t1x64(&self) -> Duration {
        self.t1 * 64
    }
}

/// The named timers of RFC 3261 §17 (table 4) and RFC 6026.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// INVITE request retransmit, starts at T1 and doubles (§17.1.1.2).
    A,
    /// INVITE client transaction timeout, 64·T1 (§17.1.1.2).
    B,
    /// Wait for response retransmissions after a non-2xx, 32 s over UDP (§17.1.1.2).
    D,
    /// Non-INVITE request retransmit, doubling up to T2 (§17.1.2.2).
    E,
    /// Non-INVITE client transaction timeout, 64·T1 (§17.1.2.2).
    F,
    /// INVITE response retransmit, doubling up to T2 (§17.2.1; the same
    /// schedule drives 2xx retransmission by the UAS core, §13.3.1.4).
    G,
    /// Wait for ACK, 64·T1 (§17.2.1; for 2xx, §13.3.1.4).
    H,
    /// Wait for ACK retransmissions, T4 over UDP (§17.2.1).
    I,
    /// Wait for non-INVITE request retransmissions, 64·T1 over UDP (§17.2.2).
    J,
    /// Wait for non-INVITE response retransmissions, T4 over UDP (§17.1.2.2).
    K,
    /// Absorb INVITE retransmissions after a 2xx, 64·T1 (RFC 6026 §7.1).
    L,
    /// Absorb 2xx retransmissions at the client, 64·T1 (RFC 6026 §7.2).
    M,
}

/// Identity of a server transaction (RFC 3261 §17.2.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TransactionKey {
    /// The top Via has a `z9hG4bK` branch: branch + sent-by + method.
    Rfc3261 {
        /// The branch parameter.
        branch: String,
        /// The top Via sent-by, `host[:port]`.
        sent_by: String,
        /// The method, with ACK folded into INVITE.
        method: Method,
    },
    /// RFC 2543 peers: matched on Call-ID, From tag, CSeq number and the
    /// whole top Via (the To tag is checked by the ACK logic itself).
    Rfc2543 {
        /// Call-ID.
        call_id: String,
        /// From tag, possibly empty (RFC 2543 did not require one).
        from_tag: String,
        /// CSeq number.
        cseq: u32,
        /// The top Via as written.
        via: String,
        /// The method, with ACK folded into INVITE.
        method: Method,
    },
}

impl TransactionKey {
    /// The same transaction identity with another method (CANCEL and ACK
    /// look up the INVITE they refer to).
    pub fn with_method(&self, m: Method) -> TransactionKey {
        let mut k = self.clone();
        match &mut k {
            TransactionKey::Rfc3261 { method, .. } | TransactionKey::Rfc2543 { method, .. } => {
                *method = m
            }
        }
        k
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A retransmission schedule: fires at `next`, then doubles its interval,
/// capped at `cap` (timers A, E and G).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// When the next retransmission is due.
    pub next: Instant,
    interval: Duration,
    cap: Option<Duration>,
}

impl Backoff {
    /// First retransmission at `now + t1`.
    pub fn new(now: Instant, t1: Duration, cap: Option<Duration>) -> Self {
        Backoff {
            next: now + t1,
            interval: t1,
            cap,
        }
    }

    /// Advances after a retransmission at `now`.
    pub fn step(&mut self, now: Instant) {
        self.interval *= 2;
        if let Some(cap) = self.cap {
            self.interval = self.interval.min(cap);
        }
        self.next = now + self.interval;
    }

    /// Switches to a fixed interval (timer E in Proceeding uses T2).
    pub fn set_interval(&mut self, now: Instant, interval: Duration) {
        self.interval = interval;
        self.next = now + interval;
    }
}

/// What a transaction asks the endpoint to do after an input or a timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxAction {
    /// Send these bytes to the transaction's peer.
    Send(Vec<u8>),
    /// The transaction gave up (timer B, F or H): tell the TU.
    TimedOut(Timer),
}

// --- server INVITE (RFC 3261 §17.2.1, figure 7; RFC 6026 figure 5) ---------

#[derive(Debug, Clone)]
enum ServerInviteState {
    Proceeding {
        provisional: Option<Vec<u8>>,
    },
    Completed {
        response: Vec<u8>,
        g: Option<Backoff>,
        h: Instant,
    },
    Confirmed {
        i: Instant,
    },
    Accepted {
        l: Instant,
    },
    Terminated,
}

/// An INVITE server transaction.
#[derive(Debug, Clone)]
pub struct ServerInvite {
    state: ServerInviteState,
    reliable: bool,
    timers: TimerConfig,
}

impl ServerInvite {
    /// A transaction in Proceeding for a just-received INVITE.
    pub fn new(reliable: bool, timers: TimerConfig) -> Self {
        ServerInvite {
            state: ServerInviteState::Proceeding { provisional: None },
            reliable,
            timers,
        }
    }

    /// True while no final response has been sent.
    pub fn is_proceeding(&self) -> bool {
        matches!(self.state, ServerInviteState::Proceeding { .. })
    }

    /// True once the transaction can be forgotten.
    pub fn is_terminated(&self) -> bool {
        matches!(self.state, ServerInviteState::Terminated)
    }

    /// Records a provisional response (sent by the caller) for retransmission.
    pub fn send_provisional(&mut self, bytes: Vec<u8>) {
        if let ServerInviteState::Proceeding { provisional } = &mut self.state {
            *provisional = Some(bytes);
        }
    }

    /// Records a final response (sent by the caller). A 2xx moves to
    /// Accepted (RFC 6026); anything else to Completed with timers G and H.
    pub fn send_final(&mut self, now: Instant, status: u16, bytes: Vec<u8>) {
        if !self.is_proceeding() {
            return;
        }
        self.state = if (200..300).contains(&status) {
            ServerInviteState::Accepted {
                l: now + self.timers.t1x64(),
            }
        } else {
            ServerInviteState::Completed {
                response: bytes,
                g: (!self.reliable)
                    .then(|| Backoff::new(now, self.timers.t1, Some(self.timers.t2))),
                h: now + self.timers.t1x64(),
            }
        };
    }

    /// A retransmission of the INVITE arrived: what to send back.
    pub fn handle_retransmission(&self) -> Option<Vec<u8>> {
        match &self.state {
            ServerInviteState::Proceeding { provisional } => provisional.clone(),
            ServerInviteState::Completed { response, .. } => Some(response.clone()),
            _ => None,
        }
    }

    /// An ACK matched this transaction (only meaningful after a non-2xx).
    /// Returns true when it was absorbed.
    pub fn handle_ack(&mut self, now: Instant) -> bool {
        match self.state {
            ServerInviteState::Completed { .. } => {
                let wait = if self.reliable {
                    Duration::ZERO
                } else {
                    self.timers.t4
                };
                self.state = ServerInviteState::Confirmed { i: now + wait };
                true
            }
            ServerInviteState::Confirmed { .. } => true,
            _ => false,
        }
    }

    /// The next deadline, if any.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.state {
            ServerInviteState::Completed { g, h, .. } => earliest(g.map(|g| g.next), Some(*h)),
            ServerInviteState::Confirmed { i } => Some(*i),
            ServerInviteState::Accepted { l } => Some(*l),
            _ => None,
        }
    }

    /// Fires whatever timers are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<TxAction> {
        match &mut self.state {
            ServerInviteState::Completed { h, .. } if *h <= now => {
                self.state = ServerInviteState::Terminated;
                Some(TxAction::TimedOut(Timer::H))
            }
            ServerInviteState::Completed {
                response,
                g: Some(g),
                ..
            } if g.next <= now => {
                g.step(now);
                Some(TxAction::Send(response.clone()))
            }
            ServerInviteState::Confirmed { i } if *i <= now => {
                self.state = ServerInviteState::Terminated;
                None
            }
            ServerInviteState::Accepted { l } if *l <= now => {
                self.state = ServerInviteState::Terminated;
                None
            }
            _ => None,
        }
    }
}

// --- server non-INVITE (RFC 3261 §17.2.2, figure 8) -------------------------

#[derive(Debug, Clone)]
enum ServerNonInviteState {
    Trying,
    Proceeding { provisional: Vec<u8> },
    Completed { response: Vec<u8>, j: Instant },
    Terminated,
}

/// A non-INVITE server transaction.
#[derive(Debug, Clone)]
pub struct ServerNonInvite {
    state: ServerNonInviteState,
    reliable: bool,
    timers: TimerConfig,
}

impl ServerNonInvite {
    /// A transaction in Trying.
    pub fn new(reliable: bool, timers: TimerConfig) -> Self {
        ServerNonInvite {
            state: ServerNonInviteState::Trying,
            reliable,
            timers,
        }
    }

    /// True until a final response is recorded.
    pub fn awaiting_final(&self) -> bool {
        matches!(
            self.state,
            ServerNonInviteState::Trying | ServerNonInviteState::Proceeding { .. }
        )
    }

    /// True once the transaction can be forgotten.
    pub fn is_terminated(&self) -> bool {
        matches!(self.state, ServerNonInviteState::Terminated)
    }

    /// Records a response sent by the caller; a final starts timer J.
    pub fn send_response(&mut self, now: Instant, status: u16, bytes: Vec<u8>) {
        if !self.awaiting_final() {
            return;
        }
        self.state = if status < 200 {
            ServerNonInviteState::Proceeding { provisional: bytes }
        } else {
            let wait = if self.reliable {
                Duration::ZERO
            } else {
                self.timers.t1x64()
            };
            ServerNonInviteState::Completed {
                response: bytes,
                j: now + wait,
            }
        };
    }

    /// A retransmitted request arrived: what to send back (nothing in Trying).
    pub fn handle_retransmission(&self) -> Option<Vec<u8>> {
        match &self.state {
            ServerNonInviteState::Proceeding { provisional } => Some(provisional.clone()),
            ServerNonInviteState::Completed { response, .. } => Some(response.clone()),
            _ => None,
        }
    }

    /// The next deadline, if any.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.state {
            ServerNonInviteState::Completed { j, .. } => Some(*j),
            _ => None,
        }
    }

    /// Fires timer J.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let ServerNonInviteState::Completed { j, .. } = self.state {
            if j <= now {
                self.state = ServerNonInviteState::Terminated;
            }
        }
    }
}

// --- client INVITE (RFC 3261 §17.1.1, figure 5; RFC 6026 figure 3) ----------

#[derive(Debug, Clone)]
enum ClientInviteState {
    Calling { a: Option<Backoff>, b: Instant },
    Proceeding,
    Completed { ack: Vec<u8>, d: Instant },
    Accepted { m: Instant },
    Terminated,
}

/// What a client transaction reports about a received response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// Pass this response to the TU (first provisional/final, or a 2xx
    /// retransmission the TU must ACK again).
    Deliver,
    /// A retransmission the transaction handled itself.
    Absorbed,
}

/// An INVITE client transaction (the server's own re-INVITEs).
#[derive(Debug, Clone)]
pub struct ClientInvite {
    state: ClientInviteState,
    request: Vec<u8>,
    reliable: bool,
    timers: TimerConfig,
}

impl ClientInvite {
    /// Starts the transaction; the caller sends `request` once now.
    pub fn new(now: Instant, request: Vec<u8>, reliable: bool, timers: TimerConfig) -> Self {
        ClientInvite {
            state: ClientInviteState::Calling {
                a: (!reliable).then(|| Backoff::new(now, timers.t1, None)),
                b: now + timers.t1x64(),
            },
            request,
            reliable,
            timers,
        }
    }

    /// True once the transaction can be forgotten.
    pub fn is_terminated(&self) -> bool {
        matches!(self.state, ClientInviteState::Terminated)
    }

    /// A response arrived. `ack` builds the ACK for a non-2xx final (same
    /// branch, RFC 3261 §17.1.1.3); it is only called when needed.
    pub fn handle_response(
        &mut self,
        now: Instant,
        status: u16,
        ack: impl FnOnce() -> Vec<u8>,
    ) -> (ClientEvent, Option<TxAction>) {
        match (&self.state, status) {
            (ClientInviteState::Calling { .. }, 100..=199) => {
                self.state = ClientInviteState::Proceeding;
                (ClientEvent::Deliver, None)
            }
            (ClientInviteState::Proceeding, 100..=199) => (ClientEvent::Deliver, None),
            (ClientInviteState::Calling { .. } | ClientInviteState::Proceeding, 200..=299) => {
                self.state = ClientInviteState::Accepted {
                    m: now + self.timers.t1x64(),
                };
                (ClientEvent::Deliver, None)
            }
            (ClientInviteState::Accepted { .. }, 200..=299) => (ClientEvent::Deliver, None),
            (ClientInviteState::Calling { .. } | ClientInviteState::Proceeding, _)
                if status >= 300 =>
            {
                let ack = ack();
                let wait = if self.reliable {
                    Duration::ZERO
                } else {
                    Duration::from_secs(32)
                };
                self.state = ClientInviteState::Completed {
                    ack: ack.clone(),
                    d: now + wait,
                };
                (ClientEvent::Deliver, Some(TxAction::Send(ack)))
            }
            (ClientInviteState::Completed { ack, .. }, s) if s >= 300 => {
                (ClientEvent::Absorbed, Some(TxAction::Send(ack.clone())))
            }
            _ => (ClientEvent::Absorbed, None),
        }
    }

    /// The next deadline, if any.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.state {
            ClientInviteState::Calling { a, b } => earliest(a.map(|a| a.next), Some(*b)),
            ClientInviteState::Completed { d, .. } => Some(*d),
            ClientInviteState::Accepted { m } => Some(*m),
            _ => None,
        }
    }

    /// Fires timers A, B, D and M.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<TxAction> {
        match &mut self.state {
            ClientInviteState::Calling { b, .. } if *b <= now => {
                self.state = ClientInviteState::Terminated;
                Some(TxAction::TimedOut(Timer::B))
            }
            ClientInviteState::Calling { a: Some(a), .. } if a.next <= now => {
                a.step(now);
                Some(TxAction::Send(self.request.clone()))
            }
            ClientInviteState::Completed { d, .. } if *d <= now => {
                self.state = ClientInviteState::Terminated;
                None
            }
            ClientInviteState::Accepted { m } if *m <= now => {
                self.state = ClientInviteState::Terminated;
                None
            }
            _ => None,
        }
    }
}

// --- client non-INVITE (RFC 3261 §17.1.2, figure 6) -------------------------

#[derive(Debug, Clone)]
enum ClientNonInviteState {
    Trying { e: Option<Backoff>, f: Instant },
    Proceeding { e: Option<Backoff>, f: Instant },
    Completed { k: Instant },
    Terminated,
}

/// A non-INVITE client transaction (the server's own BYE, UPDATE, NOTIFY).
#[derive(Debug, Clone)]
pub struct ClientNonInvite {
    state: ClientNonInviteState,
    request: Vec<u8>,
    reliable: bool,
    timers: TimerConfig,
}

impl ClientNonInvite {
    /// Starts the transaction; the caller sends `request` once now.
    pub fn new(now: Instant, request: Vec<u8>, reliable: bool, timers: TimerConfig) -> Self {
        ClientNonInvite {
            state: ClientNonInviteState::Trying {
                e: (!reliable).then(|| Backoff::new(now, timers.t1, Some(timers.t2))),
                f: now + timers.t1x64(),
            },
            request,
            reliable,
            timers,
        }
    }

    /// True once the transaction can be forgotten.
    pub fn is_terminated(&self) -> bool {
        matches!(self.state, ClientNonInviteState::Terminated)
    }

    /// A response arrived.
    pub fn handle_response(&mut self, now: Instant, status: u16) -> ClientEvent {
        match (&mut self.state, status) {
            (ClientNonInviteState::Trying { e, f }, 100..=199) => {
                let (mut e, f) = (*e, *f);
                if let Some(e) = &mut e {
                    e.set_interval(now, self.timers.t2);
                }
                self.state = ClientNonInviteState::Proceeding { e, f };
                ClientEvent::Deliver
            }
            (ClientNonInviteState::Proceeding { .. }, 100..=199) => ClientEvent::Absorbed,
            (ClientNonInviteState::Trying { .. } | ClientNonInviteState::Proceeding { .. }, _) => {
                let wait = if self.reliable {
                    Duration::ZERO
                } else {
                    self.timers.t4
                };
                self.state = ClientNonInviteState::Completed { k: now + wait };
                ClientEvent::Deliver
            }
            _ => ClientEvent::Absorbed,
        }
    }

    /// The next deadline, if any.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.state {
            ClientNonInviteState::Trying { e, f } | ClientNonInviteState::Proceeding { e, f } => {
                earliest(e.map(|e| e.next), Some(*f))
            }
            ClientNonInviteState::Completed { k } => Some(*k),
            ClientNonInviteState::Terminated => None,
        }
    }

    /// Fires timers E, F and K.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<TxAction> {
        match &mut self.state {
            ClientNonInviteState::Trying { f, .. } | ClientNonInviteState::Proceeding { f, .. }
                if *f <= now =>
            {
                self.state = ClientNonInviteState::Terminated;
                Some(TxAction::TimedOut(Timer::F))
            }
            ClientNonInviteState::Trying { e: Some(e), .. } if e.next <= now => {
                e.step(now);
                Some(TxAction::Send(self.request.clone()))
            }
            ClientNonInviteState::Proceeding { e: Some(e), .. } if e.next <= now => {
                let t2 = self.timers.t2;
                e.set_interval(now, t2);
                Some(TxAction::Send(self.request.clone()))
            }
            ClientNonInviteState::Completed { k } if *k <= now => {
                self.state = ClientNonInviteState::Terminated;
                None
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
