//! voxtrunk media library (sans-IO).
#![deny(clippy::disallowed_methods)]

pub mod codec;
pub mod resample;
