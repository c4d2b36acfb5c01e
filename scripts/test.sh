#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests on virtual time, the
# RFC 4475 corpus, the built binary driven by SIPp and baresip, and the
# OpenAI-compatible reasoner against a real local model server (slow: the
# first run builds llama-cpp-python, see scripts/local-llm.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
export VOXTRUNK_CONFORMANCE_DIR="${VOXTRUNK_CONFORMANCE_DIR:-$(cd .. && pwd)/shared/conformance}"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
cargo test --locked --bin voxtrunk slow_openai -- --ignored
