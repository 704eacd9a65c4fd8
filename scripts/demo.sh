#!/usr/bin/env bash
# The main job on a fresh machine: install packages, build, start a 2-rank tensor-parallel cluster
# on a bundled model and generate from it.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/build.sh --target phi-worker

model=tests/fixtures/phi3_128k_longrope
prompt=$(python3 -c "import json;print(' '.join(map(str, json.load(open('$model/golden.json'))['prompt'])))")
limit=$(python3 -c "import json;print(json.load(open('$model/golden.json'))['tokenizer_size'])")
echo "== phi-cluster demo: 2 ranks (tensor parallel) on $model"
echo "   (a tiny random-weight Phi-3 LongRoPE model, so the ids are noise; they must equal HF's)"
./scripts/mpirun.sh -np 2 build/worker/phi-worker --model "$model" --prompt-ids "$prompt" \
    --max-tokens 32 --vocab-limit "$limit" --tp 2
echo "   HF transformers greedy ids: $(python3 -c "import json;print(' '.join(map(str, json.load(open('$model/golden.json'))['greedy'])))")"
