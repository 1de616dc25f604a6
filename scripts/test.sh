#!/usr/bin/env bash
# The test suite: unit tests, then integration tests through real servers on loopback.
# Extra args go to pytest (e.g. `-m "not slow"` to skip the SmolLM2 tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
