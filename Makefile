# realmchat: `make run` and `make test` work on a fresh machine.
# make run: main (8080), realm alpha (8000) and the web GUI (8550), data in ./data; change them with
#   make run MAIN_PORT=9080 REALM_PORT=9000 GUI_PORT=9550 IRC_PORT=6697 DATA=/tmp/chat
# `make setup` installs what running needs; `make setup-test` adds the test tools (Chromium,
# PostgreSQL, pytest, ruff), which `make test`, `make lint` and `make bench` use.
# `make bench PEER=ngircd` also installs Debian's ngircd and runs the IRC comparison
# (`python -m bench --peer ngircd`); BENCH_ARGS passes more options, e.g. BENCH_ARGS="--workloads 1,3".
PY := .venv/bin/python
DATA ?= ./data
MAIN_PORT ?= 8080
REALM_PORT ?= 8000
REALM ?= alpha
GUI_PORT ?= 8550
# IRC clients on the realm (docs/IRC.md); 0 = no IRC listener.
IRC_PORT ?= 6667
# Tests mostly wait on real servers, sockets and a browser: two run at once on two cores.
TEST_WORKERS ?= 2

.PHONY: setup setup-test run test lint bench gui gui-web clean

setup:
	@./scripts/setup.sh

setup-test:
	@./scripts/setup.sh --test

run: setup
	@./scripts/run.sh "$(DATA)" "$(MAIN_PORT)" "$(REALM_PORT)" "$(REALM)" "$(GUI_PORT)" "$(IRC_PORT)"

test: setup-test
	$(PY) -m ruff check .
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

lint: setup-test
	$(PY) -m ruff check .

bench: setup-test
	@$(if $(PEER),./scripts/setup.sh --bench)
	$(PY) -m bench $(if $(PEER),--peer $(PEER)) $(BENCH_ARGS)

gui: setup
	$(PY) -m gui --realm 127.0.0.1:$(REALM_PORT)

gui-web: setup
	FLET_WEB_NO_CDN=1 $(PY) -m gui --web --port $(GUI_PORT) --realm 127.0.0.1:$(REALM_PORT)

clean:
	rm -rf .venv realmchat/pb/chat_pb2*.py* .pytest_cache .ruff_cache
