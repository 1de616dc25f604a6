#!/usr/bin/env bash
# The three ways of combining the Hivemind LoRA herd, side by side on held-out questions:
#   1. the four subject adapters and their router (scripts/build_lora_herd.sh);
#   2. merges of the four adapters: linear, task arithmetic, TIES, DARE, and SLERP of two;
#   3. Model Swarms over the four adapters, its utility on the skills dev split;
# then `herd compare-experts` on the test split (never used to train, merge or swarm) of the
# skills set and a per-group sample of MMLU, into docs/results/lora_side_by_side/.
# Every step whose output exists is skipped, so a stopped run resumes where it was.
#
#   bash scripts/lora_side_by_side.sh [REPORT_DIR]
#
# Settings (environment): SWARM_SIZE (4), SWARM_STEPS (6), SWARM_PATIENCE (3),
# MMLU_PER_GROUP (30). On two CPU cores the whole run takes about an hour; with a GPU,
# raise them (the defaults of herd swarm are 8 particles and 20 steps).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
REPORT="${1:-docs/results/lora_side_by_side}"
HERD_DIR=.herd/lora-herd
CONFIG=tgi_configs/local-lora.yaml
herd=(.venv/bin/python -m langchain_herd.cli)
experts=("$HERD_DIR/stem" "$HERD_DIR/humanities" "$HERD_DIR/social_sciences" "$HERD_DIR/other")
started=$SECONDS

echo "== 1/4 subject adapters and router" >&2
bash scripts/build_lora_herd.sh "$HERD_DIR"

echo "== 2/4 merges" >&2
merge() {  # merge NAME METHOD EXPERT... [-- ARGS]
  local name=$1 method=$2
  shift 2
  if [ -f "$HERD_DIR/merges/$name/adapter_model.safetensors" ]; then
    echo "merge $name: already built" >&2
  else
    "${herd[@]}" merge "$method" "$@" --out "$HERD_DIR/merges/$name"
  fi
}
merge linear linear "${experts[@]}"
merge task_arithmetic task_arithmetic "${experts[@]}"
merge ties ties "${experts[@]}" --density 0.5
merge dare dare "${experts[@]}" --density 0.5 --seed 0
merge slerp slerp "$HERD_DIR/stem" "$HERD_DIR/humanities" --t 0.5

echo "== 3/4 Model Swarms (utility: skills dev split)" >&2
"${herd[@]}" swarm "$CONFIG" --utility skills --out "$HERD_DIR/swarm" \
  --swarm-size "${SWARM_SIZE:-4}" --max-steps "${SWARM_STEPS:-6}" \
  --patience "${SWARM_PATIENCE:-3}" --seed 0

echo "== 4/4 side by side (test split)" >&2
merges=()
for name in linear task_arithmetic ties dare slerp; do
  merges+=(--merge "$name=$HERD_DIR/merges/$name")
done
"${herd[@]}" compare-experts "$CONFIG" --out "$REPORT" \
  --questions "skills,mmlu@${MMLU_PER_GROUP:-30}" "${merges[@]}" --swarm "$HERD_DIR/swarm"
# What made the contenders, beside the report: the swarm's record, each adapter's training
# record and the adapters' dev scores.
cp "$HERD_DIR/swarm/swarm.json" "$REPORT/swarm.json"
cp "$HERD_DIR/dev-scores.json" "$REPORT/adapters-dev-scores.json"
mkdir -p "$REPORT/finetune"
for group in stem humanities social_sciences other; do
  cp "$HERD_DIR/$group/herd-finetune.json" "$REPORT/finetune/$group.json"
done
for name in linear task_arithmetic ties dare slerp; do
  cp "$HERD_DIR/merges/$name/herd-merge.yaml" "$REPORT/merges-$name.yaml"
done
echo "lora_side_by_side.sh: done in $((SECONDS - started)) s; report in $REPORT/report.md" >&2
