# The two commands of the README: `make demo` and `make test`. Both start from a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SPARK_STAMP := $(VENV)/.spark

.PHONY: demo test unit integration serve lint fmt proto openapi bench bench-quick bench-servers chaos chaos-quick redis-bin h2load-bin browser-bin spark-env clean

$(STAMP): pyproject.toml
	@echo "==> creating $(VENV) and installing recsvc[dev]"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# A redis-server binary for the throwaway servers of tests, demo and bench.
redis-bin:
	@command -v redis-server >/dev/null || { \
	  echo "==> redis-server missing: installing Debian's redis-server"; \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; \
	  else echo "install it with: sudo apt-get install redis-server" >&2; exit 1; fi; }

# h2load (Debian's nghttp2-client) drives the server-model benchmark (bench/servers/): installed
# with apt-get when root, else unpacked without root into .tools/ (ignored by git).
h2load-bin: $(STAMP)
	@$(PY) -m bench.servers.h2load --install

# Debian's chromium for the browser tests (Playwright drives it; it never downloads a browser).
browser-bin:
	@command -v chromium >/dev/null || { \
	  echo "==> chromium missing: installing Debian's chromium"; \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else echo "install it with: sudo apt-get install chromium" >&2; exit 1; fi; }

# axe-core (npm) for the panel's accessibility check in tests/browser/test_panel.py.
AXE := $(VENV)/axe/node_modules/axe-core/axe.min.js
$(AXE):
	npm install --no-save --no-audit --no-fund --prefix $(VENV)/axe axe-core@4

# The spark engine's test needs the `spark` extra (~490 MB, about 2 min to install) and Java 17.
$(SPARK_STAMP): $(STAMP)
	@command -v java >/dev/null || { \
	  echo "==> java missing: installing Debian's openjdk-17-jre-headless"; \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless >/dev/null; \
	  else echo "install it with: sudo apt-get install openjdk-17-jre-headless" >&2; exit 1; fi; }
	@echo "==> installing recsvc[spark] (pyspark) into $(VENV)"
	$(PY) -m pip install --quiet -e '.[dev,spark]'
	@touch $(SPARK_STAMP)

spark-env: $(SPARK_STAMP)

demo: $(STAMP) redis-bin
	$(PY) -m training.demo

test: $(STAMP) redis-bin browser-bin $(AXE) $(SPARK_STAMP)
	$(PY) -m pytest -q tests

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

integration: $(STAMP) redis-bin $(SPARK_STAMP)
	$(PY) -m pytest -q tests/integration

serve: $(STAMP)
	$(VENV)/bin/recsvc serve

lint: $(STAMP)
	$(VENV)/bin/ruff check recsvc training tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

fmt: $(STAMP)
	$(VENV)/bin/ruff check --fix recsvc training tests bench
	$(VENV)/bin/ruff format recsvc training tests bench

proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -Iproto --python_out=. --grpc_python_out=. --pyi_out=. \
	  proto/recsvc/v1/offers.proto

# The HTTP face's OpenAPI document, generated from proto/ (tests/unit/test_openapi.py compares).
openapi: $(STAMP)
	$(PY) -m recsvc.api.http.openapi > docs/openapi.json

bench: $(STAMP) redis-bin h2load-bin
	$(PY) -m bench all
	$(PY) -m bench exposure

# Faults under load (Redis stalled/killed/flaky, overload, model switches, killed training,
# fuzz, memory); writes docs/RELIABILITY.md. Minutes long: not part of `make test`.
chaos: $(STAMP) redis-bin
	$(PY) -m bench.chaos

chaos-quick: $(STAMP) redis-bin
	$(PY) -m bench.chaos --quick

bench-quick: $(STAMP) redis-bin h2load-bin
	$(PY) -m bench all --quick

# Only the h2load comparison of the echoes and the server models (bench/servers/).
bench-servers: $(STAMP) redis-bin h2load-bin
	$(PY) -m bench.servers

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
