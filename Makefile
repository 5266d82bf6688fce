# invoker-pack — every target sets up .venv itself on first use.
# torch is installed first, pinned to the CPU build (a bare `torch` would pull a multi-GB CUDA build).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
MODEL  ?= models/tiny-invoker
OUT    ?= out/$(notdir $(MODEL))
EXTRAS ?= dev
comma  := ,
STAMP  := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: setup test test-fast quantize eval tiny-invoker clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

setup: $(STAMP)

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m 'not e2e'

eval: setup
	$(BIN)/invoker-pack eval $(MODEL)

# The pipeline's stages land issue by issue; today `quantize` runs what exists: the fp16 baseline eval.
quantize: setup
	mkdir -p $(OUT)/fp16
	$(BIN)/invoker-pack eval $(MODEL) --json > $(OUT)/fp16/eval.json.tmp
	mv $(OUT)/fp16/eval.json.tmp $(OUT)/fp16/eval.json
	cat $(OUT)/fp16/eval.json

# Rebuild the bundled model from scratch (seeded; ~1 h on 2 CPU cores).
tiny-invoker: setup
	$(BIN)/python models/tiny-invoker/train.py --out $(MODEL)

clean:
	rm -rf out
