//! voxtrunk media library (sans-IO).
#![deny(clippy::disallowed_methods)]

pub mod clock;
pub mod codec;
pub mod dtmf;
pub mod jitter;
pub mod resample;
pub mod rtcp;
pub mod rtp;
pub mod session;
pub mod vad;

/// The origin of virtual time in unit tests: the only clock read in this
/// crate, made once per test; everything after it is `base + n·20 ms`.
#[cfg(test)]
#[allow(clippy::disallowed_methods)]
pub(crate) fn test_epoch() -> std::time::Instant {
    std::time::Instant::now()
}
