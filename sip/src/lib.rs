//! voxtrunk SIP library (sans-IO).
#![deny(clippy::disallowed_methods)]

pub mod sdp;
