# The two commands a newcomer needs: `make demo` and `make test` (both install first).
PY := .venv/bin/python
export PYANNOTE_METRICS_ENABLED := 0

.PHONY: install demo test lint protos

install:
	@bash scripts/install.sh

demo: install
	$(PY) -m orchestrator run ../shared/testdata/video/short_hamilton_clip.mp4

test: install
	$(PY) -m pytest

lint: install
	$(PY) -m ruff check .

protos: install
	$(PY) -m protos.generate
