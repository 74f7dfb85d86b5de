"""The kernels generated in this process, and building any of them for a GPU target without a GPU.

    from .registry import generated_kernels, build_for
    for k in generated_kernels():
        build_for(k, "gfx942")          # or "sm_90", "sm_80", "gfx90a", or a Target / part name

Generated source is written to a file (``@triton.jit`` reads its function's source from disk) and
loaded as a module twice when needed: once compiled (a ``JITFunction``, what ``triton.compile`` and
real launches take) and once under the interpreter (an ``InterpretedFunction`` running NumPy on CPU
tensors). Triton decides which at decoration time from TRITON_INTERPRET, so the loader sets and
restores it around the module's execution.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from .emit import TritonKernelSource

log = logging.getLogger("agnostic_rt.registry")
_lock = threading.Lock()

#: GPUTarget arguments per arch name (backend, arch, warp size).
GPU_TARGETS: dict[str, tuple[str, int | str, int]] = {
    "sm_80": ("cuda", 80, 32), "sm_90": ("cuda", 90, 32), "gfx90a": ("hip", "gfx90a", 64),
    "gfx942": ("hip", "gfx942", 64),
}


def cache_dir() -> Path:
    """Root of agnostic_rt's on-disk cache: AGNOSTIC_RT_CACHE_DIR, else ~/.cache/agnostic_rt."""
    root = os.environ.get("AGNOSTIC_RT_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache",
                                                                   "agnostic_rt")
    return Path(root)


@dataclass
class GeneratedKernel:
    """One generated kernel: its IR, Triton source, the file it was loaded from, and loaded forms."""

    kernel: TritonKernelSource
    path: Path
    _modules: dict[bool, ModuleType] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.kernel.name

    @property
    def source(self) -> str:
        return self.kernel.source

    @property
    def ir(self):
        return self.kernel.ir

    def function(self, interpret: bool):
        """The ``@triton.jit`` function, decorated compiled (False) or interpreted (True)."""
        with _lock:
            mod = self._modules.get(interpret)
            if mod is None:
                mod = _load_module(self.path, f"agnostic_rt_kernel_{self.name}{'_interp' if interpret else ''}",
                                   interpret)
                self._modules[interpret] = mod
        return getattr(mod, self.name)


_KERNELS: dict[str, GeneratedKernel] = {}


def register(kernel: TritonKernelSource, debug_dir: str | None = None) -> GeneratedKernel:
    """Record ``kernel`` (deduplicated by name, which is a hash of its source) and write its file."""
    if debug_dir is not None:  # every compile that uses the kernel dumps it, even when already known
        d = Path(debug_dir) / "kernels"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{kernel.name}.py").write_text(kernel.source)
        (d / f"{kernel.name}.ir.txt").write_text(kernel.ir.render())
    with _lock:
        known = _KERNELS.get(kernel.name)
        if known is not None:
            return known
        folder = cache_dir() / "kernels"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{kernel.name}.py"
        if not path.exists() or path.read_text() != kernel.source:
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(kernel.source)
            os.replace(tmp, path)  # atomic: another process may be reading the same kernel
        entry = GeneratedKernel(kernel, path)
        _KERNELS[kernel.name] = entry
        return entry


def generated_kernels() -> list[GeneratedKernel]:
    """Every kernel generated in this process so far, in generation order."""
    with _lock:
        return list(_KERNELS.values())


def _prepare_triton() -> None:
    # Import everything of Triton's that is decorated at import time *before* any module is loaded
    # with TRITON_INTERPRET=1: otherwise triton.language's own helpers would be decorated as
    # interpreted functions and compiled kernels could no longer call them.
    import triton  # noqa: F401
    import triton.language  # noqa: F401
    import triton.language.extra.libdevice  # noqa: F401

    try:
        import triton.experimental.gluon  # noqa: F401
    except Exception:  # older Triton without gluon
        pass


def _load_module(path: Path, name: str, interpret: bool) -> ModuleType:
    _prepare_triton()
    old = os.environ.get("TRITON_INTERPRET")
    if interpret:
        os.environ["TRITON_INTERPRET"] = "1"
    else:
        os.environ.pop("TRITON_INTERPRET", None)
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    finally:
        if old is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = old
    if interpret:
        from .interp_libdevice import HELPER_SHIMS, interp_range, libdevice

        module.libdevice = libdevice  # the interpreter has no libdevice (see interp_libdevice)
        module.range = interp_range  # loop bounds computed from sizes, on Triton 3.6 + NumPy >= 2.4
        for name, shim in HELPER_SHIMS.items():
            if hasattr(module, name):  # NumPy reductions instead of a per-element combine loop
                setattr(module, name, shim)
    return module


def default_constexprs(kernel: TritonKernelSource) -> dict[str, int]:
    """Block sizes for a compile-only build (the launcher picks its own per device)."""
    from .launch import candidate_configs

    cfg = candidate_configs(kernel, kernel.ir.xnumel_hint, kernel.ir.rnumel_hint, interpret=False)[0]
    return {k: v for k, v in cfg.items() if k in kernel.constexprs}


def build_for(kernel: GeneratedKernel | TritonKernelSource, target, num_warps: int = 4,
              constexprs: dict[str, int] | None = None):
    """Compile ``kernel`` for a GPU with ``triton.compile`` (no GPU needed) and return the result.

    ``target``: an arch ("sm_80", "sm_90", "gfx90a", "gfx942"), a part name ("h100", "mi300x") or a
    :class:`~agnostic_rt.targets.Target`. The returned ``CompiledKernel``'s ``asm`` holds the PTX/cubin
    or AMDGCN/hsaco.
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if isinstance(kernel, TritonKernelSource):
        kernel = register(kernel)
    arch = target
    if not isinstance(target, str) or target not in GPU_TARGETS:
        from agnostic_rt.targets import get_target

        arch = get_target(target).arch
    if arch not in GPU_TARGETS:
        raise ValueError(f"no GPUTarget for {target!r}; expected one of: {', '.join(GPU_TARGETS)} or a GPU part")
    backend, gpu_arch, warp = GPU_TARGETS[arch]
    consts = constexprs or default_constexprs(kernel.kernel)
    src = ASTSource(fn=kernel.function(interpret=False),
                    signature={**kernel.kernel.signature, **{c: "constexpr" for c in kernel.kernel.constexprs}},
                    constexprs=consts)
    # FMA contraction on, as nvcc and hipcc compile ATen's own kernels (and silences 3.9's warning).
    return triton.compile(src, target=GPUTarget(backend, gpu_arch, warp),
                          options={"num_warps": num_warps, "enable_fp_fusion": True})


__all__ = ["GeneratedKernel", "generated_kernels", "build_for", "register", "cache_dir", "GPU_TARGETS"]
