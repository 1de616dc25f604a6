#!/usr/bin/env bash
# On a GPU machine (see scripts/gpu_bundle.sh): the fine-tuning routers of docs/results,
# one setup per argument; writes $OUT/SETUP.json (copy to docs/results/SETUP/gpu-finetune.json).
set -uo pipefail
OUT="${OUT:-gpu-results}"; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
mkdir -p /tmp/minilm && cp -r .gpu/minilm/* /tmp/minilm/ && python3 - <<'PY'
from safetensors.torch import load_file, save_file
t = load_file("/tmp/minilm/model.fp16.safetensors")
save_file({k: v.float() for k, v in t.items()}, "/tmp/minilm/model.safetensors", metadata={"format": "pt"})
PY
rm /tmp/minilm/model.fp16.safetensors
nvidia-smi --query-gpu=name,memory.used --format=csv
d=.gpu/data
small8="Meta-Llama-3_1-8B-Instruct,Mistral-7B-Instruct-v0.2,Qwen1.5-7B-Chat,gemma-7b,Phi-3-mini-4k-instruct,Yi-6b-Chat,mathstral-7B,Meta-Llama-3-8B"
ft=(--encoder /tmp/minilm --finetune-param max_length=256 --finetune-param batch_size=32 --finetune-param epochs=3 --seeds 5 --costs $d/models.json)
for setup in "$@"; do
  case $setup in
    routerdc_mmlu) args=($d/routerdc_mmlu.parquet --routers finetune);;
    mmlu_pro_small8) args=($d/mmlu_pro.parquet --where "source=ori_mmlu-*" --models "$small8" --routers finetune);;
    mmlu_pro_llama70b_vs_8b) args=($d/mmlu_pro.parquet --where "source=ori_mmlu-*" --pair Meta-Llama-3_1-70B-Instruct Meta-Llama-3_1-8B-Instruct --routers strong-wins-finetune,finetune);;
    mmlu_pro_qwen110b_vs_mistral7b) args=($d/mmlu_pro.parquet --where "source=ori_mmlu-*" --pair Qwen1.5-110B Mistral-7B-Instruct-v0.2 --routers strong-wins-finetune,finetune);;
    mmlu_pro_open_vs_gemini) args=($d/mmlu_pro.parquet --where "source=ori_mmlu-*" --max-cost 72.5 --reference gemini-1.5-pro-002 --routers finetune);;
  esac
  start=$(date +%s)
  python3 -m langchain_herd.cli eval "${args[@]}" "${ft[@]}" --out /tmp/res/$setup 2>&1 | grep -v "^\[.*\]   " | tail -25
  cp /tmp/res/$setup/report.json $OUT/$setup.json
  echo "$setup took $(( $(date +%s) - start )) s"
done
