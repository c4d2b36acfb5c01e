//! voxtrunk's SIP library: RFC 3261 messages, transactions and dialogs for a
//! user agent that answers calls and places them (with RFC 3515 REFER), and
//! RFC 3264 SDP offer/answer — all sans-IO.
//!
//! # Run loop
//!
//! The library owns no socket and never reads a clock. The shell feeds an
//! [`endpoint::Endpoint`] with what happened — a datagram, an item cut from a
//! TCP stream by [`msg::StreamFramer`], a timeout, a command for a call leg —
//! each with the current `Instant`, and then drains
//! [`endpoint::Endpoint::poll_output`] until it returns
//! [`endpoint::Output::Timeout`]: transmissions to send, events for the call
//! logic, and the instant at which to call `handle_timeout` next. Given the
//! same inputs and seed, two runs produce the same bytes, which is how the
//! tests run whole call flows on virtual time.
//!
//! # Layers
//!
//! * [`msg`] — parsing (datagram and stream framing), typed headers, writing.
//! * [`sdp`] — SDP parsing/printing and the offer/answer rules.
//! * [`transaction`] — the four RFC 3261 §17 state machines, timers as data.
//! * [`dialog`] — dialog state and in-dialog request construction (§12).
//! * [`endpoint`] — request validation, transaction and dialog matching,
//!   and the UAS and UAC core behaviour.
//!
//! # Errors
//!
//! Nothing from the network can panic: every parse failure is a value that
//! knows the status code to answer with (or that the message is dropped).
//! Each layer has its own `#[non_exhaustive]` error enum. Commands that do
//! not fit a leg's state return [`endpoint::CommandError`].
#![deny(clippy::disallowed_methods)]

pub mod dialog;
pub mod endpoint;
pub mod msg;
pub mod sdp;
pub mod transaction;

/// A SIP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP: unreliable, datagram framing, retransmission timers on.
    Udp,
    /// TCP: reliable, stream framing by Content-Length.
    Tcp,
}

/// The origin of virtual time in unit tests: the only clock read in this
/// crate, made once per test; everything after it is `base + n·ms`.
#[cfg(test)]
#[allow(clippy::disallowed_methods)]
pub(crate) fn test_epoch() -> std::time::Instant {
    std::time::Instant::now()
}
