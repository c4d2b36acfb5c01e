//! The `agent` application: a voice AI agent per call, built from streaming
//! stages — speech-to-text, retrieval, reasoning, text-to-speech — behind
//! provider traits ([`provider`]), with real offline engines by default and
//! network providers as options.

pub mod bridge;
pub mod crm;
pub mod definition;
#[cfg(test)]
pub mod fake;
pub mod memory;
pub mod nlu;
pub mod outbox;
pub mod provider;
pub mod reason;
pub mod retrieve;
pub mod runtime;
pub mod session;
pub mod stt;
pub mod telemetry;
pub mod template;
pub mod tools;
pub mod tts;
pub mod words;
