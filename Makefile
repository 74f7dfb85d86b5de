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

# pytest-xdist: one worker per core (tests/conftest.py gives each its share of torch's threads);
# --dist loadgroup keeps the tests conftest groups (one shared expensive fixture) on one worker.
PYTEST_WORKERS ?= auto
XDIST := -n $(PYTEST_WORKERS) --dist loadgroup

test: install
	$(MAKE) --no-print-directory arch
	$(PYTHON) -m pytest -q $(XDIST)
	$(PYTHON) -m agnostic_rt.cli conformance --quick
	$(MAKE) --no-print-directory triton-compat

# The lent GPU runs torch 2.11 with Triton 3.6; this machine Triton 3.9. What differs between them for
# us is triton.compile for a GPUTarget and the interpreter (interp_range, the libdevice shims, atomics):
# so every zoo kernel is built for both vendors, and the interpreted kernel tests run, with GPU_TRITON
# installed beside ours and put first on the path. The tests that never reach Triton (the C form of
# the scatter kernels: NVRTC/hiprtc builds, g++ on the host) are not run twice. The install and its
# kernel cache live outside the checkout, so a fresh clone on this machine reuses them.
GPU_TRITON ?= 3.6.0
COMPAT ?= $(HOME)/.cache/agnostic_rt/triton-$(GPU_TRITON)
COMPAT_TESTS := tests/backends/test_triton_build.py tests/backends/test_triton_kernels.py \
  tests/backends/test_interpret_zoo.py tests/backends/test_scatter_add.py
COMPAT_SKIP := not test_the_c_form_adds_atomically and not test_the_c_kernel_matches_aten
triton-compat:
	PYTHONPATH="$(COMPAT)" $(PYTHON) -c "import sys, triton; sys.exit(triton.__version__ != '$(GPU_TRITON)')" 2>/dev/null \
	  || $(PIP) install -q --no-deps --upgrade --target "$(COMPAT)" "triton==$(GPU_TRITON)"
	PYTHONPATH="$(COMPAT)" $(PYTHON) -c "import triton; v = triton.__version__; assert v == '$(GPU_TRITON)', v; print('triton', v)"
	PYTHONPATH="$(COMPAT)" TRITON_CACHE_DIR="$(COMPAT)-cache" $(PYTHON) -m pytest -q $(XDIST) \
	  $(COMPAT_TESTS) -k "$(COMPAT_SKIP)"

# The import-linter contracts in pyproject.toml (which layer may import which), over agnostic_rt as
# installed; tests/test_architecture.py adds the module-cycle check and shows both fail when broken.
arch:
	$(PYTHON) tests/import_graph.py

test-fast:
	$(PYTHON) -m pytest -q $(XDIST) -m "not slow"

lint:
	ruff check agnostic_rt backends passes conformance tests bench

bench:
	$(PYTHON) -m agnostic_rt.cli bench --append BENCHMARKS.md
