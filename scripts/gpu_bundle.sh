#!/usr/bin/env bash
# Prepare .gpu/ (git-ignored) for running the fine-tuning routers of docs/results on a GPU
# machine that has PyTorch and transformers but not this project's other dependencies and
# cannot download: pydantic wheels, the MiniLM encoder (float16, to fit the 64 MiB transfer
# limit; gpu_finetune_results.sh restores float32), and the correctness tables.
# Usage: bash scripts/gpu_bundle.sh [DATA_DIR]; then, on the GPU machine, from the repo
# root with .gpu present: bash scripts/gpu_finetune_results.sh SETUP...
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-../shared/data/correctness}"
mkdir -p .gpu/whl .gpu/minilm .gpu/data
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .gpu/whl \
    pydantic==2.14.3 pydantic-core==2.50.4 annotated-types typing-inspection
src=$(.venv/bin/python -c "from langchain_herd.classifiers.embedding import default_encoder_path as p; print(p())")
(cd "$src" && cp -r 1_Pooling config.json config_sentence_transformers.json modules.json \
    sentence_bert_config.json special_tokens_map.json tokenizer.json tokenizer_config.json \
    vocab.txt "$OLDPWD/.gpu/minilm/")
.venv/bin/python - "$src/model.safetensors" <<'PY'
import sys
from safetensors.torch import load_file, save_file
weights = load_file(sys.argv[1])
save_file({k: v.half() for k, v in weights.items()}, ".gpu/minilm/model.fp16.safetensors",
          metadata={"format": "pt"})
PY
cp "$data"/*.parquet "$data/models.json" .gpu/data/
du -sh .gpu
