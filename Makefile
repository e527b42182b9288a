# Two commands for a fresh machine: `make demo` and `make test`. Both set up first (idempotent).
PY := .venv/bin/python
export GRADIO_ANALYTICS_ENABLED := False

.PHONY: setup demo test test-fast clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) app.py

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow and not browser"

clean:
	rm -rf .venv .pytest_cache
