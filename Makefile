# `make test` prepares everything a fresh machine lacks, then runs the whole suite.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | sha1sum | cut -c1-12)
TINY_MODELS_DIR ?= var/tiny-models

.PHONY: test system-deps compose-check venv tiny-models run-web run-worker messages screenshots

test: venv system-deps compose-check
	$(PY) -m pytest $(PYTEST_ARGS)

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: an unpinned torch pulls several GB from the registry.
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -r requirements-dev.txt
	rm -f $(VENV)/.installed-*
	touch $@

system-deps:
	bash scripts/ensure_services.sh
	bash scripts/install_pgvector.sh
	bash scripts/install_chromium.sh
	bash scripts/install_tesseract.sh

compose-check:
	bash scripts/check_compose.sh

tiny-models: venv
	$(PY) manage.py make_tiny_models $(TINY_MODELS_DIR)

messages: venv
	$(PY) manage.py makemessages -l ru --no-location --no-obsolete \
		--ignore=.venv --ignore=node_modules --ignore=var --ignore=examples --ignore=bench
	$(PY) manage.py compilemessages --ignore=.venv

PORT ?= 8000

# A development site: its database made if missing, migrated, the starter examples loaded into an
# empty one (as the container does), then daphne on PORT (`make run-web PORT=8001`).
run-web: venv
	bash scripts/ensure_database.sh
	$(PY) manage.py migrate
	$(PY) manage.py import_examples examples/starter --if-empty
	$(VENV)/bin/daphne -b 127.0.0.1 -p $(PORT) diagramsite.asgi:application

run-worker: venv
	$(PY) manage.py runworker describer-gpu

# PNGs of the main pages at 1440 and 390 px wide into docs/screenshots/, from a database, Redis and
# daphne of the script's own (all stopped and dropped at the end); PostgreSQL must be running.
screenshots: venv
	$(PY) scripts/screenshots.py
