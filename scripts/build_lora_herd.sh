#!/usr/bin/env bash
# Build the Hivemind LoRA herd that tgi_configs/local-lora.yaml serves from one local server:
#   1. four subject adapters on SmolLM2-135M (herd finetune-expert smollm2 skills:GROUP),
#      each on its group's train split only;
#   2. dev-split scores of the base model and of each adapter on its own group.
# The router (a tfidf group classifier, question -> subject expert, on the same train split)
# is shipped as bundled:skills-group-tfidf; train_group_router in
# langchain_herd/expert_training/router_table.py rebuilds it.
# Every step whose output exists is skipped, so a stopped build resumes where it was.
#
#   bash scripts/build_lora_herd.sh [OUT_DIR]      # default: .herd/lora-herd
#   herd up tgi_configs/local-lora.yaml           # then serve the herd
#
# Settings (environment): LORA_STEPS (20), LORA_BATCH (8), LORA_LR (1e-3), LORA_RANK (8),
# LORA_DEVICE (auto: the GPU when torch sees one). Validation every 10 steps keeps the best
# weights (and stops after 2 passes without a better loss). Measured on two CPU cores: 25 s
# per adapter on an idle machine, 100-170 s while other jobs ran; about 6 minutes in all.
# More training helps stem: LORA_STEPS=63 LORA_BATCH=16 took 120 s (idle) for val loss 0.36.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/.herd/lora-herd}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
GROUPS_=(stem humanities social_sciences other)
mkdir -p "$OUT"
cd "$ROOT"

step=0
for group in "${GROUPS_[@]}"; do
  step=$((step + 1))
  if [ -f "$OUT/$group/adapter_model.safetensors" ] && [ -f "$OUT/$group/herd-finetune.json" ]; then
    echo "[$step/5] adapter $group: already built ($OUT/$group)"
    continue
  fi
  echo "[$step/5] adapter $group: training on skills:$group (train split)"
  "$PYTHON" -m langchain_herd.cli finetune-expert smollm2 "skills:$group" --out "$OUT/$group" \
    --max-steps "${LORA_STEPS:-20}" --batch-size "${LORA_BATCH:-8}" --lr "${LORA_LR:-1e-3}" \
    --rank "${LORA_RANK:-8}" --eval-every 10 --patience 2 --validation-share 0.1 --seed 0 \
    --device "${LORA_DEVICE:-auto}"
done

if [ -f "$OUT/dev-scores.json" ]; then
  echo "[5/5] dev scores: already computed ($OUT/dev-scores.json)"
else
  echo "[5/5] dev scores: base model vs each adapter on its group's dev questions"
  "$PYTHON" - "$OUT" "${GROUPS_[@]}" <<'EOF'
import json
import sys
from pathlib import Path

from langchain_herd.choice_questions import load_questions
from langchain_herd.choice_scoring import score_questions
from langchain_herd.server import load_backend
from langchain_herd.server.adapters import AdapterSpec, adapter_in_use, attach_adapters

out, groups = Path(sys.argv[1]), sys.argv[2:]
backend = load_backend("smollm2")
model = attach_adapters(backend.model, [AdapterSpec(g, str(out / g)) for g in groups])
scores = {}
for group in groups:
    questions = load_questions("skills", "dev", groups=[group])
    row = {"questions": len(questions)}
    for who, adapter in (("base", None), ("adapter", group)):
        with adapter_in_use(model, adapter):
            result = score_questions(model, backend.tokenizer, questions)
        row[who] = {"accuracy": result.accuracy, "mean_gold_loglik": result.mean_gold_loglik}
    run = json.loads((out / group / "herd-finetune.json").read_text())
    row["train"] = {k: run[k] for k in ("seconds", "steps", "best_step", "best_val_loss")}
    scores[group] = row
    print(
        f"  {group:16s} dev acc {row['base']['accuracy']:.3f} -> {row['adapter']['accuracy']:.3f}"
        f", gold loglik {row['base']['mean_gold_loglik']:.2f} -> "
        f"{row['adapter']['mean_gold_loglik']:.2f} ({len(questions)} questions; trained "
        f"{run['seconds']:.0f}s, best step {run['best_step']}, val loss "
        f"{run['best_val_loss']:.3f})"
    )
(out / "dev-scores.json").write_text(json.dumps(scores, indent=2) + "\n")
EOF
fi
echo "done: adapters in $OUT; serve them with: herd up tgi_configs/local-lora.yaml"
