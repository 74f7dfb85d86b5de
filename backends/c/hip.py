"""HIP C: KernelIR -> C source (cstyle, HIP dialect) -> code object through hiprtc -> hip-python launch.

Building works without an AMD GPU: hip-python's hiprtc loads ``$ROCM_PATH/lib/libhiprtc.so``; in
ROCm 5.2 (Debian's packages) hiprtc lives inside ``libamdhip64.so``, so :func:`ensure_hiprtc` points
``ROCM_PATH`` at a folder holding a ``libhiprtc.so`` symlink to it when no real one is found::

    code = build_code_object(render(ir, HIP).source, "gfx90a")   # an ELF code object

ROCm 5.2's compiler does not know gfx940/gfx941/gfx942 (MI300): its comgr aborts the whole process
(``munmap_chunk(): invalid pointer``) instead of returning an error, so :func:`build_code_object`
refuses those arches up front unless a newer hiprtc is found (see :func:`supported_archs`).

The launch path (hipModuleLoadData / hipModuleLaunchKernel) is written to hip-python's documented
API but is UNTESTED ON HARDWARE: there is no AMD GPU anywhere this project runs.
"""

from __future__ import annotations

import ctypes
import glob
import logging
import os
import re
from pathlib import Path
from typing import Any

from agnostic_rt.backends.lowering.kernel_ir import KernelIR

from .build import BinaryCache, BuildError, GpuKernel, LaunchArgs, cache_root
from .cstyle import HIP, CKernel, Numerics, render

log = logging.getLogger("agnostic_rt.backends.c.cstyle")

__all__ = ["ARCHS", "ensure_hiprtc", "hiprtc_version", "supported_archs", "build_code_object", "HipKernel",
           "compile_c", "BuildError", "kernel_params"]

#: Architectures the tests build for.
ARCHS = ("gfx90a",)
#: MI300 parts, which need ROCm >= 5.7 (hiprtc 5.2 crashes the process on them).
_MI300 = ("gfx940", "gfx941", "gfx942")

_cache = BinaryCache("hip")


def ensure_hiprtc() -> None:
    """Make hip-python find a hiprtc before its first call (it resolves the library lazily)."""
    if os.environ.get("ROCM_PATH"):
        return
    for real in ("/opt/rocm/lib/libhiprtc.so",):
        if os.path.exists(real):
            os.environ["ROCM_PATH"] = str(Path(real).parent.parent)
            return
    candidates = sorted(glob.glob("/usr/lib/*/libamdhip64.so*")) + sorted(glob.glob("/usr/lib/libamdhip64.so*"))
    if not candidates:
        raise BuildError("no hiprtc found: install ROCm (Debian: libamdhip64-dev, rocm-device-libs) or set ROCM_PATH")
    lib = cache_root() / "rocm" / "lib"
    lib.mkdir(parents=True, exist_ok=True)
    link = lib / "libhiprtc.so"
    if not link.exists():
        try:
            link.symlink_to(candidates[0])
        except FileExistsError:  # another process made it first
            pass
    os.environ["ROCM_PATH"] = str(lib.parent)
    log.debug("hiprtc: using %s through %s", candidates[0], link)


def rocm_version() -> tuple[int, int]:
    """ROCm's version, from the runtime library's file name or ``$ROCM_PATH/.info/version``.

    (hiprtcVersion() is no help: ROCm 5.2's answers 9.0.)
    """
    ensure_hiprtc()
    root = Path(os.environ["ROCM_PATH"])
    info = root / ".info" / "version"
    text = info.read_text() if info.exists() else os.path.realpath(root / "lib" / "libhiprtc.so")
    m = re.search(r"(\d+)\.(\d+)\.\d+", text)
    if not m:
        raise BuildError(f"cannot tell the ROCm version from {text!r}")
    return int(m.group(1)), int(m.group(2))


def hiprtc_version() -> str:
    """``"rocm-5.2"``: part of every cache key."""
    major, minor = rocm_version()
    return f"rocm-{major}.{minor}"


def supported_archs() -> tuple[str, ...]:
    """The gfx arches this hiprtc builds (MI300 only from ROCm 5.7 on)."""
    base = ("gfx908", "gfx90a")
    return base + _MI300 if rocm_version() >= (5, 7) else base


def build_code_object(source: str, arch: str = "gfx90a", *, numerics: Numerics = "strict", cache: bool = True) -> bytes:
    """Compile ``source`` for ``arch`` into an AMDGPU code object (ELF); raises BuildError with the log."""
    if arch not in supported_archs():
        raise BuildError(f"hiprtc of {hiprtc_version()} cannot build for {arch!r} (it knows {', '.join(supported_archs())}); "
                         f"MI300 (gfx940-942) needs ROCm >= 5.7")
    from hip import hiprtc

    # numerics="fast" changes only the emitted intrinsics: clang's -ffast-math would also assume no
    # NaNs and fold away the NaN checks of maximum/minimum/argmax, which is not an approximation.
    opts = [f"--offload-arch={arch}", "-O3"]
    version = hiprtc_version()
    if cache and (hit := _cache.get(source, arch, version, opts, ".hsaco")) is not None:
        return hit
    err, prog = hiprtc.hiprtcCreateProgram(source.encode(), b"agnostic_kernel.hip", 0, [], [])
    if err != hiprtc.hiprtcResult.HIPRTC_SUCCESS:
        raise BuildError(f"hiprtcCreateProgram failed: {err}")
    # No hiprtcDestroyProgram below: through hip-python on ROCm 5.2 it segfaults the process, so
    # each build leaks its program (a few kB; builds are cached on disk).
    (err,) = hiprtc.hiprtcCompileProgram(prog, len(opts), [o.encode() for o in opts])
    if err != hiprtc.hiprtcResult.HIPRTC_SUCCESS:
        _, size = hiprtc.hiprtcGetProgramLogSize(prog)
        buf = bytearray(size)
        hiprtc.hiprtcGetProgramLog(prog, buf)
        raise BuildError(f"hiprtc failed for {arch}: {err}\n{bytes(buf).decode(errors='replace')}")
    _, size = hiprtc.hiprtcGetCodeSize(prog)
    code = bytearray(size)
    hiprtc.hiprtcGetCode(prog, code)
    code = bytes(code)
    if cache:
        _cache.put(source, arch, version, opts, code, ".hsaco")
    return code


class HipKernel(GpuKernel):
    """A compiled C kernel for AMD GPUs: ``kernel(inputs, outputs, sizes=None)`` (see GpuKernel;
    UNTESTED on hardware)."""

    def __init__(self, kernel: CKernel, arch: str, numerics: Numerics = "strict"):
        self.kernel, self.arch = kernel, arch
        self.code = build_code_object(kernel.source, arch, numerics=numerics)
        self._function = None

    def _load(self):
        if self._function is None:
            from hip import hip

            err, module = hip.hipModuleLoadData(self.code)
            _check(err, "hipModuleLoadData")
            err, fn = hip.hipModuleGetFunction(module, self.kernel.name.encode())
            _check(err, "hipModuleGetFunction")
            self._module, self._function = module, fn
        return self._function

    def _launch(self, a: LaunchArgs, device: Any, stream: int) -> None:
        from hip import hip

        (err,) = hip.hipModuleLaunchKernel(self._load(), a.grid, 1, 1, a.block, 1, 1, 0,
                                           hip.hipStream_t.fromObj(stream), None, kernel_params(a))
        _check(err, "hipModuleLaunchKernel")


def kernel_params(a: LaunchArgs) -> tuple:
    """The kernel's parameters for hipModuleLaunchKernel: pointers, then the sizes as int32 or int64,
    as the kernel declares them (``a.size_bits``), laid out as its parameters (hip-python pads for
    alignment)."""
    size = ctypes.c_int32 if a.size_bits == 32 else ctypes.c_int64
    return tuple(ctypes.c_void_p(p) for p in a.pointers) + tuple(size(v) for v in a.sizes)


def _check(err, what: str) -> None:
    from hip import hip

    if err != hip.hipError_t.hipSuccess:
        raise RuntimeError(f"{what} failed: {err}")


def compile_c(ir: KernelIR, target: Any = None, *, numerics: Numerics = "strict", arch: str | None = None,
              mode: str | None = None) -> HipKernel:
    """The HIP C candidate for ``ir`` on an AMD ``target`` (its ``arch``, e.g. gfx90a)."""
    if arch is None:
        if target is None or getattr(target, "vendor", None) != "amd":
            raise ValueError(f"HIP C needs an AMD target; got {target!r}")
        arch = target.arch
    kernel = render(ir, HIP, numerics=numerics, mode=mode)
    return HipKernel(kernel, arch, numerics)
