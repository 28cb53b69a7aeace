# Quick start: `make demo` and `make test`, each builds .venv from nothing when missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: demo test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml constraints.txt
	$(PIP) -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) -e '.[test]' -e tests/plugin_example
	touch $@

demo: $(VENV)/.installed
	$(BIN)/micronet audit micronet:wrn_28_10 --track cifar100 --no-freebie
	$(BIN)/micronet audit micronet:densenet_cifar?growth_rate=12 --track cifar100 --top 15 --what-if 'bits=32,16,8,4;sparsity=0,0.5,0.9' --json demo-report/densenet_cifar.json --csv demo-report/densenet_cifar.csv --html demo-report/densenet_cifar.html
	@echo "reports written to demo-report/ (open demo-report/densenet_cifar.html in a browser)"

test: $(VENV)/.installed-test
	@# the HTML report's browser test needs Chromium: install it where we can (root + apt), else it is skipped
	-@command -v chromium >/dev/null || (command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1) || true
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: $(VENV)/.installed
	$(PIP) -e '.[bench]'
	$(BIN)/python benchmarks/audit_speed.py

clean:
	rm -rf $(VENV) build *.egg-info demo-report
