#!/usr/bin/env bash
# Rebuild docs/results.md, docs/results/*/ (reports, JSON, plots) and the README's results
# tables from the shared correctness tables: `bash scripts/results.sh [DATA_DIR] [ARGS...]`.
# Runs `herd eval` on six setups (5 seeds each); the first run embeds the questions once
# (cached), then each setup takes minutes on a CPU. Extra arguments after DATA_DIR go to
# every `herd eval` call (e.g. --with-finetune on a machine with a GPU). The last step,
# scripts/results_table.py, writes docs/results.md and rewrites the README between its
# `<!-- results:... -->` markers.
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-../shared/data/correctness}"
shift || true
predictions="$data/mmlu_pro_predictions.parquet"
herd=(.venv/bin/herd eval --seeds 5 --costs "$data/models.json")
out=docs/results
small8="Meta-Llama-3_1-8B-Instruct,Mistral-7B-Instruct-v0.2,Qwen1.5-7B-Chat,gemma-7b,Phi-3-mini-4k-instruct,Yi-6b-Chat,mathstral-7B,Meta-Llama-3-8B"
started=$SECONDS

step() {  # step NAME ARGS...: one `herd eval` run, timed
    local name=$1 begun=$SECONDS
    shift
    "${herd[@]}" --out "$out/$name" "$@"
    echo "results.sh: $name took $((SECONDS - begun)) s" >&2
}

step routerdc_mmlu "$data/routerdc_mmlu.parquet" \
    --title "routerdc_mmlu: 7 open 7-8B models, the authors' test split" "$@"
step mmlu_pro_small8 "$data/mmlu_pro.parquet" --where "source=ori_mmlu-*" \
    --models "$small8" --predictions "$predictions" \
    --title "mmlu_pro (MMLU-origin questions): herd of 8 small open models" "$@"
step mmlu_pro_llama70b_vs_8b "$data/mmlu_pro.parquet" --where "source=ori_mmlu-*" \
    --pair Meta-Llama-3_1-70B-Instruct Meta-Llama-3_1-8B-Instruct --predictions "$predictions" \
    --title "mmlu_pro (MMLU-origin): strong Llama-3.1-70B-Instruct vs weak Llama-3.1-8B-Instruct" "$@"
step mmlu_pro_qwen110b_vs_mistral7b "$data/mmlu_pro.parquet" --where "source=ori_mmlu-*" \
    --pair Qwen1.5-110B Mistral-7B-Instruct-v0.2 --predictions "$predictions" \
    --title "mmlu_pro (MMLU-origin): strong Qwen1.5-110B vs weak Mistral-7B-Instruct-v0.2" "$@"
step mmlu_pro_open_vs_gemini "$data/mmlu_pro.parquet" --where "source=ori_mmlu-*" \
    --max-cost 72.5 --reference gemini-1.5-pro-002 --predictions "$predictions" \
    --title "mmlu_pro (MMLU-origin): open models <= 72B routed, against gemini-1.5-pro-002" "$@"
# All 26 open models (adds Qwen1.5-110B and jamba-1.5-large): for the votes. The text
# routers, which tie the best single model on the 24, are left out (they would add most
# of this setup's time).
step mmlu_pro_open26 "$data/mmlu_pro.parquet" --where "source=ori_mmlu-*" \
    --max-cost 1000 --reference gemini-1.5-pro-002 --predictions "$predictions" \
    --routers oracle,random,best-single,vote-majority,vote-weighted,vote-learned \
    --title "mmlu_pro (MMLU-origin): all 26 open models, against gemini-1.5-pro-002" "$@"
.venv/bin/python scripts/results_table.py "$out" docs/results.md README.md
echo "results.sh: everything took $((SECONDS - started)) s" >&2
