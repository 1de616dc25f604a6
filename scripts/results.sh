#!/usr/bin/env bash
# Rebuild docs/results.md and docs/results/*/ (reports, JSON, plots) from the shared
# correctness tables: `bash scripts/results.sh [DATA_DIR]`. Runs `herd eval` five times
# (5 seeds each); the first run embeds the questions once (cached), then each setup takes
# minutes on a CPU. Extra arguments after DATA_DIR go to every `herd eval` call (e.g.
# --with-finetune on a machine with a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-../shared/data/correctness}"
shift || true
herd=(.venv/bin/herd eval --seeds 5 --costs "$data/models.json")
out=docs/results
small8="Meta-Llama-3_1-8B-Instruct,Mistral-7B-Instruct-v0.2,Qwen1.5-7B-Chat,gemma-7b,Phi-3-mini-4k-instruct,Yi-6b-Chat,mathstral-7B,Meta-Llama-3-8B"

"${herd[@]}" "$data/routerdc_mmlu.parquet" --out "$out/routerdc_mmlu" \
    --title "routerdc_mmlu: 7 open 7-8B models, the authors' test split" "$@"
"${herd[@]}" "$data/mmlu_pro.parquet" --out "$out/mmlu_pro_small8" --where "source=ori_mmlu-*" \
    --models "$small8" --predictions "$data/mmlu_pro_predictions.parquet" \
    --title "mmlu_pro (MMLU-origin questions): herd of 8 small open models" "$@"
"${herd[@]}" "$data/mmlu_pro.parquet" --out "$out/mmlu_pro_llama70b_vs_8b" \
    --where "source=ori_mmlu-*" --pair Meta-Llama-3_1-70B-Instruct Meta-Llama-3_1-8B-Instruct \
    --title "mmlu_pro (MMLU-origin): strong Llama-3.1-70B-Instruct vs weak Llama-3.1-8B-Instruct" "$@"
"${herd[@]}" "$data/mmlu_pro.parquet" --out "$out/mmlu_pro_qwen110b_vs_mistral7b" \
    --where "source=ori_mmlu-*" --pair Qwen1.5-110B Mistral-7B-Instruct-v0.2 \
    --title "mmlu_pro (MMLU-origin): strong Qwen1.5-110B vs weak Mistral-7B-Instruct-v0.2" "$@"
"${herd[@]}" "$data/mmlu_pro.parquet" --out "$out/mmlu_pro_open_vs_gemini" \
    --where "source=ori_mmlu-*" --max-cost 72.5 --reference gemini-1.5-pro-002 \
    --predictions "$data/mmlu_pro_predictions.parquet" \
    --title "mmlu_pro (MMLU-origin): open models <= 72B routed, against gemini-1.5-pro-002" "$@"
.venv/bin/python scripts/results_table.py "$out" docs/results.md
