# The two set-up commands of the README are `make run` and `make test`; both install what they need.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test check fmt bench completions

$(BIN)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@# The bytecode pip writes for every package it installs: an editable install leaves it to
	@# the first import, and PYTHONDONTWRITEBYTECODE=1 (set on many CI machines) forbids that, so
	@# each CLI command would compile khronos's modules again.
	$(BIN)/python -m compileall -q khronos_cli
	touch $@

run: $(BIN)/.installed
	$(BIN)/khronos run --sandbox

test: $(BIN)/.installed
	scripts/ensure-redis
	@# A short base directory: pytest's own (/tmp/pytest-of-USER/pytest-N/popen-gwN/...) leaves a
	@# test's state dir too little of the 107 bytes a control socket's path may have.
	dir=$$(mktemp -d /tmp/kt.XXXXXX); $(BIN)/pytest -n 2 --basetemp="$$dir"; \
	  status=$$?; [ $$status -ne 0 ] || rm -rf "$$dir"; exit $$status

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
