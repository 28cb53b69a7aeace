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

$(VENV)/.installed-test: $(VENV)/.installed tests/plugin_example/setup.cfg
	$(PIP) -e '.[test]' -e tests/plugin_example
	touch $@

demo: $(VENV)/.installed
	$(BIN)/micronet audit micronet:wrn_28_10 --track cifar100 --no-freebie
	$(BIN)/micronet audit micronet:densenet_cifar?growth_rate=12 --track cifar100 --top 15 --what-if 'bits=32,16,8,4;sparsity=0,0.5,0.9' --json demo-report/densenet_cifar.json --csv demo-report/densenet_cifar.csv --html demo-report/densenet_cifar.html
	@echo "reports written to demo-report/ (open demo-report/densenet_cifar.html in a browser)"

# The HTML report's browser test needs Chromium. Developers: installed where we can
# (root + apt-get), else that test is skipped and says why. CI (CI set): the install
# must succeed, and a run with any skipped test fails (tests/conftest.py).
CHROMIUM := command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null
APT_CHROMIUM := apt-get update -qq && apt-get install -y -qq chromium

test: $(VENV)/.installed-test
	@if $(CHROMIUM); then :; \
	elif [ -n "$$CI" ]; then $(APT_CHROMIUM); \
	else (command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && ($(APT_CHROMIUM)) >/dev/null 2>&1) \
		|| echo "Chromium is not installed: the browser test will be skipped"; fi
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: $(VENV)/.installed
	$(PIP) -e '.[bench]'
	$(BIN)/python benchmarks/audit_speed.py

clean:
	rm -rf $(VENV) build *.egg-info demo-report
