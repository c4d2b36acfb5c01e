#!/usr/bin/env bash
# Installs what voxtrunk needs on Debian 12: build tools, the offline speech
# engines of the default agent (pocketsphinx and its en-US model, flite,
# espeak-ng), and with --test the real SIP peers and audio tools the test
# suite drives. Idempotent: only missing packages are installed. Rust comes
# from rustup (see README).
set -euo pipefail

build_pkgs=(gcc g++ make cmake pkg-config libpocketsphinx-dev libsphinxbase-dev flite1-dev)
run_pkgs=(pocketsphinx-en-us espeak-ng)
test_pkgs=(sip-tester baresip-core flite sox kamailio python3-venv curl iproute2)

want=("${build_pkgs[@]}" "${run_pkgs[@]}")
if [[ "${1:-}" == "--test" ]]; then
  want+=("${test_pkgs[@]}")
fi

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The tests start their own Kamailio; the packaged service is not wanted.
if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled kamailio >/dev/null 2>&1; then
  $sudo systemctl disable --now kamailio >/dev/null 2>&1 || true
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust with rustup (https://rustup.rs), then run this again" >&2
  exit 1
fi
