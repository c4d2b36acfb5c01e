//! Reasoners: the deterministic rules reasoner driven by the agent's
//! definition, and an OpenAI-compatible chat-completions client.

pub mod openai;
pub mod rules;
