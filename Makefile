# realmchat: `make run` and `make test` work on a fresh machine; both start with `make setup`.
# make run: main (8080), realm alpha (8000) and the web GUI (8550), data in ./data.
PY := .venv/bin/python
DATA ?= ./data
MAIN_PORT ?= 8080
REALM_PORT ?= 8000
REALM ?= alpha
GUI_PORT ?= 8550

.PHONY: setup run test lint bench gui gui-web clean

setup:
	@./scripts/setup.sh

run: setup
	@./scripts/run.sh "$(DATA)" "$(MAIN_PORT)" "$(REALM_PORT)" "$(REALM)" "$(GUI_PORT)"

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check .

bench: setup
	$(PY) -m bench

gui: setup
	$(PY) -m gui --realm 127.0.0.1:$(REALM_PORT)

gui-web: setup
	FLET_WEB_NO_CDN=1 $(PY) -m gui --web --realm 127.0.0.1:$(REALM_PORT)

clean:
	rm -rf .venv realmchat/pb/chat_pb2*.py* .pytest_cache .ruff_cache
