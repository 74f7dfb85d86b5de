# The two commands the README promises: `make demo` and `make test`. Both install first.
PYTHON ?= python3
PIP := $(PYTHON) -m pip

.PHONY: install demo test test-fast lint bench conformance

# torch is pinned to the CPU build that lies on this machine's disk; pyproject allows torch>=2.11,
# and an unpinned install would pull a multi-GB CUDA build.
install:
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[test,cuda,rocm]"

demo: install
	agnostic-rt demo

test: install
	$(PYTHON) -m pytest -q
	agnostic-rt conformance --quick

test-fast:
	$(PYTHON) -m pytest -q -m "not slow"

lint:
	ruff check agnostic_rt backends passes conformance tests bench

bench:
	agnostic-rt bench --append BENCHMARKS.md
