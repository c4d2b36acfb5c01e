#!/usr/bin/env bash
# Builds and runs the server with the default dialplan (./dialplans).
# Extra arguments go to `voxtrunk run`, e.g. --sip-listen 0.0.0.0:5060.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked
exec target/release/voxtrunk run "$@"
