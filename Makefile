# Entry points. `make book` builds the whole report; `make test` runs the test suite.
# Both set up the environment first (idempotent: see scripts/setup.sh).
VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHONHASHSEED := 0

.PHONY: setup book html pdf test test-fast test-unit lint preview check-site constraints organisms clean

setup:
	@bash scripts/setup.sh

## The whole report: (re-)execute stale notebooks with papermill, then build the HTML book.
## A failing notebook is reported, the others' pages and the book are still built, and make fails.
## `make book FORCE=1` re-executes every page, stale or not.
PIPELINE_ARGS += $(if $(FORCE),--force)
book: setup
	@$(PY) -m helpers.pipeline $(PIPELINE_ARGS); status=$$?; $(MAKE) html pdf && exit $$status

## Strict: any Sphinx warning (broken reference, unknown citation, page not in the TOC) fails.
html:
	$(VENV)/bin/jupyter-book build . --builder html -W -n --keep-going $(BOOK_ARGS)

## The whole suite (CI runs this); `make test-fast` skips the slow tests while you iterate.
test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

## Pure-function tests only (seconds): tiers are assigned in tests/conftest.py.
test-unit: setup
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks notebooks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

## The book as one PDF, _build/html/rl-circuitry.pdf (headless Chromium prints the single-page build;
## skipped with a message when Chromium is missing).
pdf:
	$(PY) -m helpers.book.pdf

## Serve the built book on http://127.0.0.1:8000
preview:
	$(PY) -m http.server --directory _build/html --bind 127.0.0.1 8000

## Open every page of the built site in headless Chromium: titles, images, provenance, math,
## noise, width; screenshots of three pages to _build/site-check/.
check-site: setup
	BOOK_SITE_REUSE=1 $(PY) -m pytest -m slow tests/test_book_site.py

## Retrain the whole organism set (minutes on CPU); commits nothing by itself.
organisms: setup
	$(PY) -m helpers.organisms.build $(ORGANISM_ARGS)

## Record the exact versions the suite passed with (torch excluded so Colab's own is kept).
constraints: setup
	{ echo "# Exact versions the test suite passed with (make constraints; torch excluded so an existing torch is kept)."; \
	  $(VENV)/bin/pip freeze --exclude-editable | grep -viE '^(torch|nvidia-|triton|rl-circuitry)'; } > constraints.txt

clean:
	rm -rf _build .pytest_cache
