# npas: make install | make test | make demo | make bench
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of PyTorch; override e.g. TORCH="torch==2.13.0 --index-url ..." for CUDA.
TORCH ?= torch==2.13.0
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: install test test-fast lint demo bench bench-step bench-methods bench-controller bench-plots clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install $(TORCH)
	$(PIP) install -e ".[test]"
	touch $@

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# Two test processes (pytest-xdist), a test file each at a time: a file's module fixtures
# (a store with a finished search, a two-node Ray cluster) are built once.
PYTEST_JOBS ?= 2

test: install lint
	$(VENV)/bin/pytest -n $(PYTEST_JOBS) --dist loadfile --durations=15

test-fast: install
	$(VENV)/bin/pytest -n $(PYTEST_JOBS) --dist loadfile -m "not slow"

demo: install
	$(VENV)/bin/npas demo

# Each benchmark writes benchmarks/results/*.json; README's tables come from them.
bench: bench-step bench-methods bench-controller bench-plots

bench-step: install
	$(PY) benchmarks/bench_step.py

bench-methods: install
	$(PY) benchmarks/bench_methods.py

bench-controller: install
	$(PY) benchmarks/bench_controller.py

bench-plots: install
	$(PY) benchmarks/bench_plots.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
