"""CUDA C: KernelIR -> C source (cstyle, CUDA dialect) -> cubin through NVRTC -> launch through CuPy.

Building needs only the NVRTC library (the ``nvidia-cuda-nvrtc`` wheel, reached through
``cupy_backends``): no GPU, no driver, no CUDA toolkit headers (the emitted source includes none)::

    cubin = build_cubin(render(ir, CUDA).source, "sm_90")          # works on any machine
    kernel = compile_c(ir, get_target("h100"))                     # a CudaKernel launcher
    kernel([x], [out])                                             # on a CUDA GPU: torch's stream

Launching loads the cubin with ``cupy.cuda.function.Module`` in the current (primary) context,
which torch shares, and passes the tensors' ``data_ptr()``s and the sizes (int32 where the kernel
indexes in 32 bits, else int64: ``CKernel.index_bits``).
"""

from __future__ import annotations

import logging
from typing import Any

from agnostic_rt.backends.lowering.kernel_ir import KernelIR

from .build import BinaryCache, BuildError, GpuKernel, LaunchArgs
from .cstyle import CUDA, CKernel, Numerics, render

log = logging.getLogger("agnostic_rt.backends.c.cstyle")

__all__ = ["ARCHS", "build_cubin", "build_ptx", "nvrtc_version", "CudaKernel", "compile_c", "BuildError",
           "kernel_params"]

#: Architectures the tests build for (any sm_XX NVRTC knows works).
ARCHS = ("sm_80", "sm_90")

_cache = BinaryCache("cuda")


def nvrtc_version() -> str:
    """``"nvrtc-13.5"``: part of every cache key, so a new NVRTC rebuilds."""
    from cupy_backends.cuda.libs import nvrtc

    major, minor = nvrtc.getVersion()
    return f"nvrtc-{major}.{minor}"


def _options(arch: str, numerics: Numerics) -> list[str]:
    opts = [f"-arch={arch}", "-std=c++17"]
    if numerics == "fast":
        opts.append("--use_fast_math")
    return opts


def build_cubin(source: str, arch: str = "sm_90", *, numerics: Numerics = "strict", cache: bool = True) -> bytes:
    """Compile ``source`` to a cubin for ``arch`` (e.g. ``"sm_90"``); raises BuildError with NVRTC's log."""
    if not arch.startswith("sm_"):
        raise ValueError(f"CUDA arch {arch!r}; expected something like 'sm_80' or 'sm_90'")
    from cupy_backends.cuda.libs import nvrtc

    opts = _options(arch, numerics)
    version = nvrtc_version()
    if cache and (hit := _cache.get(source, arch, version, opts, ".cubin")) is not None:
        return hit
    prog = nvrtc.createProgram(source, "agnostic_kernel.cu", [], [])
    try:
        try:
            nvrtc.compileProgram(prog, opts)
        except nvrtc.NVRTCError as e:
            raise BuildError(f"NVRTC failed for {arch}: {e}\n{nvrtc.getProgramLog(prog)}") from e
        cubin = nvrtc.getCUBIN(prog)
    finally:
        nvrtc.destroyProgram(prog)
    if cache:
        _cache.put(source, arch, version, opts, cubin, ".cubin")
    return cubin


def build_ptx(source: str, arch: str = "sm_90", *, numerics: Numerics = "strict") -> str:
    """The PTX NVRTC generates for ``source`` on ``arch`` (uncached; for inspection and tests: e.g.
    ``div.s64``/``rem.s64`` count the 64-bit integer divides, each a ~70-instruction call)."""
    from cupy_backends.cuda.libs import nvrtc

    prog = nvrtc.createProgram(source, "agnostic_kernel.cu", [], [])
    try:
        try:
            nvrtc.compileProgram(prog, _options(arch, numerics))
        except nvrtc.NVRTCError as e:
            raise BuildError(f"NVRTC failed for {arch}: {e}\n{nvrtc.getProgramLog(prog)}") from e
        ptx = nvrtc.getPTX(prog)
    finally:
        nvrtc.destroyProgram(prog)
    return ptx.decode() if isinstance(ptx, bytes) else ptx


def _device_arch(device: Any = None) -> str:
    import torch

    major, minor = torch.cuda.get_device_capability(device)
    return f"sm_{major}{minor}"


def kernel_params(a: LaunchArgs) -> list:
    """The kernel's parameters as CuPy passes them: pointers as uint64, then the sizes as int32 or
    int64, the kernel's ``const int``/``const long long`` (``a.size_bits``); CuPy sizes each argument
    by its numpy type, so a mismatch would shift every later parameter."""
    import numpy as np

    size = np.int32 if a.size_bits == 32 else np.int64
    return [np.uint64(p) for p in a.pointers] + [size(v) for v in a.sizes]


class CudaKernel(GpuKernel):
    """A compiled C kernel for NVIDIA GPUs: ``kernel(inputs, outputs, sizes=None)`` (see GpuKernel)."""

    def __init__(self, kernel: CKernel, arch: str, numerics: Numerics = "strict"):
        self.kernel, self.arch, self.numerics = kernel, arch, numerics
        self.cubin = build_cubin(kernel.source, arch, numerics=numerics)
        self._function = None  # loaded lazily: building needs no GPU, loading does

    def _load(self):
        if self._function is None:
            from cupy.cuda import function

            module = function.Module()
            module.load(self.cubin)
            self._module = module  # keep the module alive as long as its function
            self._function = module.get_function(self.kernel.name)
        return self._function

    def _launch(self, a: LaunchArgs, device: Any, stream: int) -> None:
        import cupy
        import torch

        with cupy.cuda.Device(device.index if device.index is not None else torch.cuda.current_device()):
            fn = self._load()
            fn((a.grid, 1, 1), (a.block, 1, 1), kernel_params(a), stream=cupy.cuda.ExternalStream(stream))


def compile_c(ir: KernelIR, target: Any = None, *, numerics: Numerics = "strict", arch: str | None = None,
              mode: str | None = None) -> CudaKernel:
    """The CUDA C candidate for ``ir`` on an NVIDIA ``target`` (a Target; its ``arch`` is the sm).

    >>> k = compile_c(ir, get_target("h100"))        # builds now; loads on the first call  # doctest: +SKIP
    """
    if arch is None:
        if target is not None and getattr(target, "vendor", "nvidia") != "nvidia":
            raise ValueError(f"CUDA C targets NVIDIA GPUs; got vendor {target.vendor!r} ({target.name})")
        arch = getattr(target, "arch", None) or _device_arch()
    kernel = render(ir, CUDA, numerics=numerics, mode=mode)
    log.debug("CUDA C kernel %s (%s) for %s", kernel.name, kernel.mode, arch)
    return CudaKernel(kernel, arch, numerics)
