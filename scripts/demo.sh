#!/usr/bin/env bash
# The main job on the embedded default: start the local SmolLM2 herd, route MMLU questions
# through the bundled router, print the table and summary. Extra args go to `herd demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/herd demo "$@"
