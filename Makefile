# The commands the README names. Each creates the virtualenv itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run dev ui test lint format typecheck bench clean flower-screenshot openapi chromium ui-screenshots

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The example ETL job on embedded defaults: SQLite, in-memory broker, a worker thread.
run: $(STAMP)
	TIDEGATE_BROKER_URL=memory://localhost/ $(BIN)/tidegate job launch etl_job -f examples/etl/definitions.py --wait
	$(BIN)/tidegate assets list -f examples/etl/definitions.py
	$(BIN)/tidegate schedule list -f examples/etl/definitions.py
	$(BIN)/tidegate sensor list -f examples/etl/definitions.py
	@echo "make dev runs the schedule and the file sensor live: drop orders_*.csv into .tidegate/inbox"
	@echo "Web UI of this example: run 'make ui' beside 'make dev', then open http://127.0.0.1:$(UI_PORT)/ui/"

# The web UI (and REST API) on the example, embedded defaults, loopback only and without login
# (--insecure); `make dev` beside it runs what it launches. With tokens: docs/ui.md.
UI_PORT ?= 3000
ui: $(STAMP)
	@echo "tidegate UI: http://127.0.0.1:$(UI_PORT)/ui/"
	$(BIN)/tidegate webserver -f examples/etl/definitions.py --port $(UI_PORT) --insecure

# The example with its schedule and file sensor running, until Ctrl-C.
dev: $(STAMP)
	mkdir -p .tidegate/inbox
	$(BIN)/tidegate dev -f examples/etl/definitions.py

test: $(STAMP) chromium
	$(BIN)/pytest

# The UI's browser tests drive Debian's Chromium (never a downloaded browser): installed here
# when missing and running as root; otherwise those tests skip (and fail under CI=true).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get install -y -q chromium >/dev/null || { apt-get update -q && apt-get install -y -q chromium >/dev/null; }; \
	  else echo "note: Debian's chromium is not installed (apt-get install chromium): the UI browser tests skip"; fi; }

# docs/ui-run.png, ui-asset.png, ui-sensor.png: taken by the UI's browser tests.
ui-screenshots: $(STAMP) chromium
	TIDEGATE_UI_SCREENSHOTS=1 $(BIN)/pytest tests/test_ui_browser.py -q

lint: $(STAMP)
	$(BIN)/ruff check tidegate tests bench examples scripts
	$(BIN)/ruff format --check tidegate tests bench examples scripts
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format tidegate tests bench examples scripts
	$(BIN)/ruff check --fix tidegate tests bench examples scripts

bench: $(STAMP)
	$(BIN)/python bench/steps.py
	$(BIN)/python bench/beat.py
	$(BIN)/python bench/faults.py
	$(BIN)/python bench/partitions.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/s3_sensor.py
	$(BIN)/python bench/api.py
	$(BIN)/python bench/ui.py

# docs/openapi.json: the webserver's OpenAPI document, checked in (tests/test_api_openapi.py compares).
openapi: $(STAMP)
	$(BIN)/python scripts/export_openapi.py

# docs/flower-tasks.png: Flower's tasks page with the example's step tasks, in headless Chromium
# (Debian: apt-get install chromium). Needs Redis; uses and flushes database 12 (FLOWER_SCREENSHOT_REDIS=...).
FLOWER_SCREENSHOT_REDIS ?= redis://127.0.0.1:6379/12
flower-screenshot: $(STAMP)
	$(BIN)/python scripts/flower_screenshot.py --redis-url $(FLOWER_SCREENSHOT_REDIS) --out docs/flower-tasks.png

clean:
	rm -rf $(VENV) .tidegate .pytest_cache .mypy_cache .ruff_cache
