# The two set-up commands of the README are `make run` and `make test`; both install what they need.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test check fmt bench completions

$(BIN)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

run: $(BIN)/.installed
	$(BIN)/khronos run --sandbox

test: $(BIN)/.installed
	scripts/ensure-redis
	$(BIN)/pytest -n 2

check: $(BIN)/.installed
	$(BIN)/ruff check khronos_cli tests benchmarks
	$(BIN)/ruff format --check khronos_cli tests benchmarks
	$(BIN)/mypy

completions: $(BIN)/.installed
	for shell in bash zsh fish; do \
	  $(BIN)/python -c "import sys; from khronos_cli.cli.completion import FILES, render; \
	    open('completions/' + FILES[sys.argv[1]], 'w').write(render(sys.argv[1]))" $$shell; \
	done

fmt: $(BIN)/.installed
	$(BIN)/ruff format khronos_cli tests benchmarks
	$(BIN)/ruff check --fix khronos_cli tests benchmarks
