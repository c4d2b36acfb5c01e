//! The `agent` application: a voice AI agent per call, built from streaming
//! stages — speech-to-text, retrieval, reasoning, text-to-speech — behind
//! provider traits ([`provider`]), with real offline engines by default and
//! network providers as options.

pub mod crm;
pub mod provider;
pub mod reason;
pub mod retrieve;
pub mod stt;
pub mod tools;
pub mod tts;
