#!/bin/bash
# On the lent GPU machine (issue 22, item 4): the whole `lens run` of the Llama-3-8B shape with random bf16
# weights, six target languages + English (40 held-out prompts each, 64 new tokens), every stage against the
# measured bf16 peak, with each stage's device-memory peak; then the same without the kept prefill
# (--eval.no-reuse-prefill), whose store copies keys and values to the host and back. Prepare with
# benchmarks/device_prep.sh here; everything comes back under $OUT (JSON and logs). Both runs fit the tool's
# 600 s per call: run(command="bash benchmarks/device_run.sh", carry=[".bench_tok", ".whl"], timeout_s=600).
set -o pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
export PYTHONPATH=/tmp/site:$PWD
OUT=${OUT:-runs/device}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
    | tee -a "$OUT/gpu.txt"
common=(--device cuda --dtype bfloat16 --shape llama3-8b --tokenizer .bench_tok --langs zh,ja,ko,ar,bn,sw
        --no-langid --no-cross-check --peak-seconds 0.1 "$@")
timeout 340 python3 benchmarks/roofline.py "${common[@]}" --json "$OUT/roofline_8b.json" 2>&1 \
    | grep -v "Writing model shards" | tee "$OUT/roofline_8b.log"
timeout 200 python3 benchmarks/roofline.py "${common[@]}" --no-reuse-prefill --json "$OUT/roofline_8b_full_prefill.json" \
    2>&1 | grep -v "Writing model shards" | tee "$OUT/roofline_8b_full_prefill.log"
