"""What the C-family builders and launchers share: the on-disk binary cache, argument packing
(:func:`launch_args`) and the GPU launchers' call (:class:`GpuKernel`).

A binary is keyed by (source hash, arch, compiler version, options): a new NVRTC or ROCm, another
GPU generation or another flag never reuses a stale binary. Writes are atomic (temp file + rename),
so concurrent processes at worst compile twice.

    cache = BinaryCache("cuda")
    blob = cache.get(source, "sm_90", "nvrtc-13.5", ["-arch=sm_90"]) or compile_and_put(...)
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cstyle import CKernel

log = logging.getLogger("agnostic_rt.backends.c.cstyle")


def cache_root() -> Path:
    """``$AGNOSTIC_RT_CACHE_DIR`` or ``~/.cache/agnostic_rt``: the root the Triton registry uses too."""
    from agnostic_rt.backends.triton.registry import cache_dir

    return cache_dir()


class BinaryCache:
    """Compiled kernels of one family (``"cuda"``, ``"hip"``, ``"host"``) under ``cache_root()/kernels``."""

    def __init__(self, family: str, root: Path | None = None):
        self.family, self.root = family, root

    @property
    def dir(self) -> Path:
        # Resolved at each use, so AGNOSTIC_RT_CACHE_DIR set after import still counts.
        return (self.root or cache_root()) / "kernels" / self.family

    @staticmethod
    def key(source: str, arch: str, compiler: str, options: Sequence[str]) -> str:
        h = hashlib.sha256()
        for part in (source, arch, compiler, "\0".join(options)):
            h.update(part.encode())
            h.update(b"\x00\x01")
        return h.hexdigest()[:32]

    def path(self, source: str, arch: str, compiler: str, options: Sequence[str], suffix: str) -> Path:
        return self.dir / f"{self.key(source, arch, compiler, options)}.{arch}{suffix}"

    def get(self, source: str, arch: str, compiler: str, options: Sequence[str], suffix: str = ".bin") -> bytes | None:
        p = self.path(source, arch, compiler, options, suffix)
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            return None
        log.debug("binary cache hit %s", p)
        return data

    def put(self, source: str, arch: str, compiler: str, options: Sequence[str], data: bytes,
            suffix: str = ".bin") -> Path:
        p = self.path(source, arch, compiler, options, suffix)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, p)
        return p


class BuildError(RuntimeError):
    """A C kernel did not compile; the message carries the compiler's log and the arch."""


@dataclass(frozen=True)
class LaunchArgs:
    """One launch of a C kernel, whatever runs it: grid and block, then the kernel's parameters in
    order (buffer addresses, inputs then outputs, and the size values), and the width the sizes are
    passed in: ``size_bits`` 32 (``int``) or 64 (``long long``), the kernel's index width."""

    grid: int
    block: int
    pointers: tuple[int, ...]
    sizes: tuple[int, ...]
    size_bits: int = 64


def launch_args(kernel: CKernel, inputs: Sequence[Any], outputs: Sequence[Any],
                sizes: Mapping[str, int] | None = None, max_grid: int = 1 << 16) -> LaunchArgs | None:
    """Check the tensors against the kernel's IR and pack its parameters; None: nothing to launch.

    ``sizes`` overrides the IR's size hints by name; a kernel indexing in 32 bits refuses sizes some
    index of it would overflow at (ValueError). Shared by the CUDA (CuPy), HIP (hip-python) and host
    (ctypes) launchers, which differ only in how they hand these values to the driver: each packs the
    sizes as ``int32`` or ``int64`` by ``size_bits``.

    >>> a = launch_args(kernel, [x], [out], {"s0": 8192})      # doctest: +SKIP
    """
    ir = kernel.ir
    if len(inputs) != len(ir.inputs) or len(outputs) != len(ir.outputs):
        raise ValueError(f"{kernel.name} takes {len(ir.inputs)} inputs and {len(ir.outputs)} outputs, "
                         f"got {len(inputs)} and {len(outputs)}")
    values = {s.name: s.hint for s in ir.sizes}
    values.update(sizes or {})
    grid, block = kernel.launch(values, max_grid=max_grid)
    if grid == 0:
        return None
    kernel.check_sizes(values)
    return LaunchArgs(grid, block, tuple(int(t.data_ptr()) for t in (*inputs, *outputs)),
                      tuple(int(values[s.name]) for s in ir.sizes), kernel.index_bits)


class GpuKernel:
    """The call of a C kernel launcher on a torch GPU: ``kernel(inputs, outputs, sizes=None)``.

    ``inputs``/``outputs`` are GPU tensors in the IR's order (outputs preallocated by the caller,
    with the strides the IR's store indices assume); ``sizes`` maps size-argument names to values
    (default: the hints the IR was generated with). The arguments are packed by :func:`launch_args`
    and launched on torch's current stream of the tensors' device (ROCm torch names its devices and
    streams "cuda" too); subclasses (``cuda_c.CudaKernel``, ``hip_c.HipKernel``) implement only
    :meth:`_launch`, which hands them to the vendor's driver API.
    """

    kernel: CKernel

    def __call__(self, inputs: Sequence[Any], outputs: Sequence[Any], sizes: Mapping[str, int] | None = None) -> None:
        import torch

        a = launch_args(self.kernel, inputs, outputs, sizes)
        if a is None:
            return
        device = outputs[0].device if outputs else inputs[0].device
        self._launch(a, device, torch.cuda.current_stream(device).cuda_stream)

    def _launch(self, a: LaunchArgs, device: Any, stream: int) -> None:
        """Launch the kernel with ``a`` on ``device`` (a torch.device) and ``stream`` (a raw stream handle)."""
        raise NotImplementedError
