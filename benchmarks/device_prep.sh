#!/bin/bash
# Here, before a call of the lent GPU machine (issue 22): what benchmarks/device_run.sh needs there and the
# machine does not have. It has PyTorch and transformers but no Hub and no pip index, takes at most 64 MiB of
# files, and lacks gguf (a wheel of 0.1 MB goes along) and lingua (96 MB: it stays here, --no-langid).
#   benchmarks/device_prep.sh        then: run(command="bash benchmarks/device_run.sh", carry=[".bench_tok", ".whl"])
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
mkdir -p .git/info
for p in /.bench_tok/ /.whl/; do grep -qxF "$p" .git/info/exclude 2>/dev/null || echo "$p" >> .git/info/exclude; done
# The tokenizer of the packaged SmolLM2 (the random-weight shapes use its ids, benchmarks/shapes.py).
$PY - <<'PY'
from lensml.runtime.models import ModelConfig, load_tokenizer, resolve_model_path
path = resolve_model_path(ModelConfig())[0]
load_tokenizer(path, ModelConfig()).save_pretrained(".bench_tok")
PY
rm -rf .whl && mkdir -p .whl
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_17_x86_64 -d .whl "gguf==$($PY -c 'import importlib.metadata as m; print(m.version("gguf"))')"
du -sh .bench_tok .whl
