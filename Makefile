# The two commands the README promises: `make demo` and `make test`. Both install first.
PYTHON ?= python3
PIP := $(PYTHON) -m pip

.PHONY: install rocm-toolchain demo test test-fast arch lint bench conformance triton-compat

# torch is pinned to the CPU build that lies on this machine's disk; pyproject allows torch>=2.11,
# and an unpinned install would pull a multi-GB CUDA build.
install: rocm-toolchain
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[test,cuda,rocm]"

# Debian's ROCm 5.2 (hiprtc lives in libamdhip64) lets HIP C kernels build for gfx90a with no AMD GPU.
# Skipped where apt-get is missing or we are not root; the HIP C build tests then skip with a reason.
rocm-toolchain:
	@if [ -e /usr/lib/x86_64-linux-gnu/libamdhip64.so ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hipcc libamdhip64-dev rocm-device-libs >/dev/null; \
	else echo "note: ROCm toolchain not installed (needs root + apt-get); HIP C build checks will skip"; fi

demo: install
	$(PYTHON) -m agnostic_rt.cli demo

test: install
	$(MAKE) --no-print-directory arch
	$(PYTHON) -m pytest -q
	$(PYTHON) -m agnostic_rt.cli conformance --quick
	$(MAKE) --no-print-directory triton-compat

# The lent GPU runs torch 2.11 with Triton 3.6; this machine Triton 3.9. The generated kernels must work
# on both: every zoo kernel is built for both vendors, and the kernel tests run through the interpreter,
# with GPU_TRITON installed beside ours (.triton-compat/, ignored by git) and put first on the path.
GPU_TRITON ?= 3.6.0
COMPAT := $(CURDIR)/.triton-compat/$(GPU_TRITON)
triton-compat:
	PYTHONPATH="$(COMPAT)" $(PYTHON) -c "import sys, triton; sys.exit(triton.__version__ != '$(GPU_TRITON)')" 2>/dev/null \
	  || $(PIP) install -q --no-deps --upgrade --target "$(COMPAT)" "triton==$(GPU_TRITON)"
	PYTHONPATH="$(COMPAT)" $(PYTHON) -c "import triton; v = triton.__version__; assert v == '$(GPU_TRITON)', v; print('triton', v)"
	PYTHONPATH="$(COMPAT)" TRITON_CACHE_DIR="$(COMPAT)-cache" $(PYTHON) -m pytest -q -p no:cacheprovider \
	  tests/backends/test_triton_build.py tests/backends/test_triton_kernels.py tests/backends/test_interpret_zoo.py tests/backends/test_scatter_add.py

# The import-linter contracts in pyproject.toml (which layer may import which), over agnostic_rt as
# installed; tests/test_architecture.py adds the module-cycle check and shows both fail when broken.
arch:
	$(PYTHON) tests/import_graph.py

test-fast:
	$(PYTHON) -m pytest -q -m "not slow"

lint:
	ruff check agnostic_rt backends passes conformance tests bench

bench:
	$(PYTHON) -m agnostic_rt.cli bench --append BENCHMARKS.md
