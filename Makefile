# han-gateway: the first two commands on a fresh machine are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
NODE   := tests/node/node_modules/.installed

.PHONY: demo test bench lint install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,demo,bench]'
	touch $(STAMP)

install: $(STAMP)

# Independent test peers from npm (a BACnet client, a ZCL codec); tests skip them when npm is absent.
$(NODE): tests/node/package.json
	cd tests/node && npm install --no-audit --no-fund --loglevel=error
	touch $(NODE)

demo: $(STAMP)
	$(VENV)/bin/han-gateway demo $(ARGS)

# Static checks first, so that pytest's summary is the run's closing line.
test: $(STAMP) $(NODE)
	$(VENV)/bin/lint-imports
	$(PY) -m mypy
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m benchmarks $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/lint-imports
	$(PY) -m mypy

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache tests/node/node_modules
