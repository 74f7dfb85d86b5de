"""Run the emitted C kernels on the CPU, to check their numerics without a GPU.

The C source is the very text :func:`~backends.cstyle.render` emits for CUDA and HIP, rendered in a
third dialect, ``CPU_SIM``, whose prelude makes it plain C++20 for the system ``g++``. The GPU
threads of a block are fibers (ucontext) on one OS thread, switched at every barrier: deterministic,
and no OS context switch per barrier. Blocks run one after another (so ``__shared__`` can be a
function ``static``); ``__syncthreads()`` waits for the block's fibers, a warp shuffle exchanges
values through memory between two waits for the warp's. The warp is 4 lanes and a block 2 warps, so
the butterfly, the cross-warp step through shared memory, the grid-stride loops and the multi-phase
row loops all run, on few threads::

    kernel = HostKernel.build(ir)            # g++ -> a shared library, cached on disk
    kernel(inputs, outputs, sizes)           # CPU tensors, the IR's argument order

What this checks: indexing, masking, gathers, phase placement, reduction trees, every scalar op's
C expression, the half/bfloat16 conversions. What it cannot: the vendors' math libraries (libm's
expf is not CUDA's), warp-synchronous timing, and anything the GPU compilers alone do.
"""

from __future__ import annotations

import ctypes
import logging
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agnostic_rt.backends.lowering.kernel_ir import KernelIR

from .build import BinaryCache, BuildError, launch_args
from .cstyle import _HIP_PRELUDE, CDialect, CKernel, Numerics, c_type, choose_mode, render, render_module

log = logging.getLogger("agnostic_rt.backends.c.cstyle")

__all__ = ["CPU_SIM", "HOST_THREADS", "HostKernel", "HostModule", "available", "render_host"]

_SIM = r"""
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <ucontext.h>
#include <vector>
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
struct ag_dim3 { unsigned x, y, z; };
static ag_dim3 threadIdx, blockIdx, blockDim, gridDim;

// The threads of a block are fibers (ucontext) on one OS thread: a barrier is a yield to the
// scheduler until every member has arrived. Deterministic, and no OS context switch per barrier.
struct ag_fiber { ucontext_t ctx; bool done; std::vector<char> stack; };
struct ag_bar { int count, arrived, gen; };
static ucontext_t ag_scheduler;
static std::vector<ag_fiber> ag_fibers;
static int ag_current;
static std::function<void()> ag_body;
static ag_bar ag_block_bar;
static std::vector<ag_bar> ag_warp_bars;
static unsigned char ag_exchange[1024][8];  // one slot per thread of the running block

static void ag_wait(ag_bar& b) {
  const int gen = b.gen;
  if (++b.arrived == b.count) { b.arrived = 0; ++b.gen; return; }
  while (b.gen == gen) swapcontext(&ag_fibers[ag_current].ctx, &ag_scheduler);
}
inline void __syncthreads() { ag_wait(ag_block_bar); }
// A warp shuffle: publish, wait for the warp, read the partner's slot, wait again before reuse.
template <typename T> inline T ag_sim_shfl_xor(T v, int o) {
  static_assert(sizeof(T) <= 8, "shuffled values are at most 8 bytes");
  const unsigned t = threadIdx.x;
  ag_bar& warp = ag_warp_bars[t / AG_WARP];
  std::memcpy(ag_exchange[t], &v, sizeof(T));
  ag_wait(warp);
  T w;
  std::memcpy(&w, ag_exchange[t ^ (unsigned)o], sizeof(T));
  ag_wait(warp);
  return w;
}
inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline double __longlong_as_double(long long i) { double d; std::memcpy(&d, &i, 8); return d; }
// numerics="fast" intrinsics have no host equivalent: the host runs the accurate functions.
#define __expf expf
#define __logf logf
#define __log2f log2f
#define __sinf sinf
#define __cosf cosf
#define __fdividef(a, b) ((a) / (b))
inline float rsqrtf(float a) { return 1.0f / sqrtf(a); }

// Fibers switch only at barriers, so a read-modify-write between two is atomic.
template <typename T> inline T atomicAdd(T* p, T v) { T old = *p; *p = old + v; return old; }

static void ag_trampoline() { ag_body(); ag_fibers[ag_current].done = true; }

template <typename F> void ag_run_grid(int grid, int block, F kernel) {
  gridDim = {(unsigned)grid, 1, 1};
  blockDim = {(unsigned)block, 1, 1};
  ag_body = kernel;
  for (int b = 0; b < grid; ++b) {  // blocks in turn: __shared__ (static) is the running block's
    blockIdx = {(unsigned)b, 0, 0};
    ag_block_bar = {block, 0, 0};
    ag_warp_bars.assign(block / AG_WARP, ag_bar{AG_WARP, 0, 0});
    ag_fibers.assign(block, ag_fiber{});
    for (int t = 0; t < block; ++t) {
      ag_fiber& f = ag_fibers[t];
      f.stack.resize(1 << 16);
      getcontext(&f.ctx);
      f.ctx.uc_stack.ss_sp = f.stack.data();
      f.ctx.uc_stack.ss_size = f.stack.size();
      f.ctx.uc_link = &ag_scheduler;
      makecontext(&f.ctx, ag_trampoline, 0);
    }
    for (int left = block; left > 0;) {  // round robin until every thread has returned
      left = 0;
      for (int t = 0; t < block; ++t) {
        if (ag_fibers[t].done) continue;
        ag_current = t;
        threadIdx = {(unsigned)t, 0, 0};
        swapcontext(&ag_scheduler, &ag_fibers[t].ctx);
        left += !ag_fibers[t].done;
      }
    }
  }
}
"""

#: The host dialect: a 4-lane warp, shuffles and barriers simulated with threads.
CPU_SIM = CDialect(
    name="cpu_sim", warp_size=4, shfl_xor="ag_sim_shfl_xor({v}, {o})",
    prelude=_SIM + _HIP_PRELUDE,  # _Float16 conversions, as on AMD: g++ knows the type too
    kernel_prefix="", launch_bounds="", barrier="__syncthreads()", shared="static",
)

#: Threads per block on the host, per kernel mode: at least two warps, so the shared-memory step
#: across warps runs too; a row-per-block reduction gets 16 warps, so each thread sums a share of a
#: long row about as short as on a GPU (a sequential sum of 1/8 of a row is less accurate than ATen's).
HOST_THREADS = {"pointwise": 2 * CPU_SIM.warp_size, "warp": 2 * CPU_SIM.warp_size, "block": 16 * CPU_SIM.warp_size}
#: Blocks per launch: few, so the grid-stride loops over elements and rows take several turns.
HOST_GRID = 3


def available() -> bool:
    """Whether a C++20 host compiler is on the PATH."""
    return shutil.which("g++") is not None


def _launcher(kernel: CKernel) -> str:
    """``extern "C" void launch_<name>(grid, block, buffers, sizes)`` calling the kernel on every thread;
    ``sizes`` points at ``int`` or ``long long`` values, as the kernel's size arguments are."""
    ir = kernel.ir
    args = [f"(const {c_type(b.dtype, storage=True)}*)bufs[{i}]" for i, b in enumerate(ir.inputs)]
    args += [f"({c_type(b.dtype, storage=True)}*)bufs[{len(ir.inputs) + i}]" for i, b in enumerate(ir.outputs)]
    args += [f"sizes[{i}]" for i in range(len(ir.sizes))]
    return (f'extern "C" void launch_{kernel.name}(int grid, int block, void** bufs, const {kernel.size_ctype}* sizes) {{\n'
            f"  ag_run_grid(grid, block, [=] {{ {kernel.name}({', '.join(args)}); }});\n}}\n")


class HostModule:
    """Many kernels in one shared library (one g++ run), each callable as a :class:`HostKernel`."""

    def __init__(self, kernels: Sequence[CKernel]):
        self.kernels = {k.name: k for k in kernels}
        source = render_module(list(self.kernels.values()), CPU_SIM)
        source += "\n" + "".join(_launcher(k) for k in self.kernels.values())
        self.source = source
        self.lib = ctypes.CDLL(str(_compile(source)))

    def __getitem__(self, name: str) -> HostKernel:
        return HostKernel(self.kernels[name], getattr(self.lib, f"launch_{name}"))


class HostKernel:
    """One C kernel on the CPU: ``kernel(inputs, outputs, sizes=None)`` with CPU tensors."""

    def __init__(self, kernel: CKernel, fn: Any):
        self.kernel, self._fn = kernel, fn
        fn.restype = None
        self._size = ctypes.c_int32 if kernel.index_bits == 32 else ctypes.c_int64
        fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(self._size)]

    @classmethod
    def build(cls, ir: KernelIR, *, numerics: Numerics = "strict", mode: str | None = None) -> HostKernel:
        kernel = render_host(ir, numerics=numerics, mode=mode)
        return HostModule([kernel])[kernel.name]

    def __call__(self, inputs: Sequence[Any], outputs: Sequence[Any], sizes: Mapping[str, int] | None = None) -> None:
        a = launch_args(self.kernel, inputs, outputs, sizes, max_grid=HOST_GRID)
        if a is None:
            return
        ptrs = (ctypes.c_void_p * max(1, len(a.pointers)))(*a.pointers)
        sz = (self._size * max(1, len(a.sizes)))(*a.sizes)
        grid, block = a.grid, a.block
        self._fn(grid, block, ptrs, sz)


def render_host(ir: KernelIR, *, numerics: Numerics = "strict", mode: str | None = None,
                bits: int | None = None) -> CKernel:
    """``ir`` in the host dialect, with :data:`HOST_THREADS` threads per block for its mode, indexing
    in ``bits`` (default: as on a GPU, :func:`~backends.cstyle.index_bits`)."""
    mode = mode or choose_mode(ir, CPU_SIM.warp_size)
    return render(ir, CPU_SIM, numerics=numerics, mode=mode, max_threads=HOST_THREADS[mode], bits=bits)


_cache = BinaryCache("host")
_FLAGS = ["-std=c++20", "-O1", "-ffp-contract=off", "-fno-fast-math", "-shared", "-fPIC", "-pthread", "-w"]


def _compile(source: str) -> Path:
    """g++ ``source`` into a shared library (cached by source and flags)."""
    if not available():
        raise BuildError("no g++ on the PATH: the host checks of the C kernels need a C++20 compiler")
    version = subprocess.run(["g++", "-dumpfullversion"], capture_output=True, text=True).stdout.strip()
    path = _cache.path(source, "x86_64", f"g++-{version}", _FLAGS, ".so")
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "kernels.cpp"
        src.write_text(source)
        out = Path(tmp) / "kernels.so"
        proc = subprocess.run(["g++", *_FLAGS, str(src), "-o", str(out)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise BuildError(f"g++ failed on the host kernels:\n{proc.stderr[-4000:]}")
        _cache.put(source, "x86_64", f"g++-{version}", _FLAGS, out.read_bytes(), ".so")
    return path
