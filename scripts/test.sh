#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests on virtual time, the
# RFC 4475 corpus, and the built binary driven by SIPp and baresip.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
export VOXTRUNK_CONFORMANCE_DIR="${VOXTRUNK_CONFORMANCE_DIR:-$(cd .. && pwd)/shared/conformance}"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
