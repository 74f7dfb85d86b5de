"""Which emitter runs a fused group: Triton, the C family, or whichever of the two is faster.

The Triton backend lowers a group to one KernelIR; ``options.emitter`` decides what that IR becomes:

* ``"triton"``: the Triton kernel (both vendors; the Triton interpreter in interpret mode).
* ``"c"``: CUDA C through NVRTC, launched with CuPy (NVIDIA), or HIP C through hiprtc, launched with
  hip-python (AMD). In interpret mode the same C, rendered for the host dialect, runs on CPU tensors
  through g++ (backends/c/host.py). Where the toolchain is not importable or the IR has no C form
  (a BuildError, an op the C renderer lacks) the group is emitted as Triton, with a debug line.
* ``"autotune"``: on a GPU, both candidates run on first use and the faster one is kept; the winner
  is cached on disk per (both sources, device, software versions, sizes). Without a GPU there is
  nothing to time: Triton.

    launcher = c_launcher(ir, target, spec, numerics="strict", interpret=False)   # CLauncher or raises
    launcher = EmitterAutotuner({"triton": t, "c": c}, key)                       # times both once
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from agnostic_rt.targets import Target

from .lowering.kernel_ir import KernelIR
from .triton.launch import TuningCache, device_key, fallback_outputs, stage_call

log = logging.getLogger("agnostic_rt.emitters")

__all__ = ["LaunchSpec", "CLauncher", "CUnavailable", "c_kernel", "c_launcher", "EmitterAutotuner", "choice_key"]


class CUnavailable(Exception):
    """No C path here for this group: toolchain missing, arch refused, or an op without a C form."""


@dataclass
class LaunchSpec:
    """What a launcher needs besides the kernel: the group's concrete layout and its ATen fallback."""

    sizes: Sequence[int]  # one value per ``ir.sizes``, in order
    in_strides: Sequence[tuple[int, ...]]
    out_specs: Sequence[tuple[tuple[int, ...], tuple[int, ...], torch.dtype]]
    fallback: Callable
    ops: Sequence[str]
    device: torch.device | None = None


def c_kernel(ir: KernelIR, target: Target, *, numerics: str = "strict", interpret: bool = False) -> Any:
    """The C kernel for ``ir``: ``kernel(inputs, outputs, sizes)``; raises :class:`CUnavailable`.

    >>> k = c_kernel(ir, get_target("h100"), interpret=True)   # g++ on this CPU  # doctest: +SKIP
    """
    try:
        if interpret:
            from .c import host as c_host

            if not c_host.available():
                raise CUnavailable("no g++ to run C kernels on the CPU")
            return c_host.HostKernel.build(ir, numerics=numerics)
        if target.vendor == "nvidia":
            from .c import cuda as cuda_c

            return cuda_c.compile_c(ir, target, numerics=numerics)
        if target.vendor == "amd":
            from .c import hip as hip_c

            return hip_c.compile_c(ir, target, numerics=numerics)
    except CUnavailable:
        raise
    except Exception as e:  # ImportError (no CuPy / hip-python), BuildError, NotImplementedError (an op)
        raise CUnavailable(f"{type(e).__name__}: {e}") from e
    raise CUnavailable(f"no C dialect for vendor {target.vendor!r}")


def c_launcher(ir: KernelIR, target: Target, spec: LaunchSpec, *, numerics: str = "strict",
               interpret: bool = False) -> CLauncher:
    """A :class:`CLauncher` for ``ir`` on ``target`` (built now; raises :class:`CUnavailable`)."""
    return CLauncher(c_kernel(ir, target, numerics=numerics, interpret=interpret), ir, spec)


class CLauncher:
    """Runs one C kernel for one group, as KernelLauncher does a Triton one: restrides inputs the
    kernel was not generated for (a call with an input no copy can fit, see ``fit_layout``, runs
    through ATen), allocates outputs, launches; a failing first launch switches the group to its
    ATen fallback with a warning."""

    emitter = "c"

    def __init__(self, kernel: Any, ir: KernelIR, spec: LaunchSpec):
        self.kernel, self.ir, self.spec = kernel, ir, spec
        self.sizes = {s.name: int(v) for s, v in zip(ir.sizes, spec.sizes)}
        self._device = spec.device
        self._launched = False
        self._failed = False
        self.__name__ = self.__qualname__ = getattr(getattr(kernel, "kernel", None), "name", ir.name)
        self.out_specs = spec.out_specs

    accepts_reuse = True  # see KernelLauncher

    def __call__(self, *inputs: torch.Tensor, reuse: Sequence[torch.Tensor | None] | None = None
                 ) -> tuple[torch.Tensor, ...]:
        spec = self.spec
        if self._failed:
            return fallback_outputs(spec.fallback, inputs, spec.out_specs)
        staged = stage_call(inputs, spec.in_strides, spec.out_specs, self.ir, self._device, reuse)
        if staged is None:
            log.debug("C kernel %s (%s): an input layout it cannot read; this call runs through ATen",
                      self.__name__, ", ".join(spec.ops))
            return fallback_outputs(spec.fallback, inputs, spec.out_specs)
        ins, outs, self._device = staged
        if self._launched:
            self.kernel(ins, outs, self.sizes)
            return tuple(outs)
        try:
            self.kernel(ins, outs, self.sizes)
        except Exception as e:
            log.warning("C kernel %s (%s) failed at its first launch; its ops run through ATen: %s",
                        self.__name__, ", ".join(spec.ops), e)
            self._failed = True
            return fallback_outputs(spec.fallback, inputs, spec.out_specs)
        self._launched = True
        return tuple(outs)


class EmitterAutotuner:
    """Times each candidate launcher once on its first call (GPU only) and keeps the fastest.

    ``candidates`` maps an emitter name to a launcher, best guess first; ``key`` names the pair of
    sources (see :func:`choice_key`). The winner is cached on disk next to the block-size winners
    (``<cache>/autotune/``) under (device, software versions, sizes), so later processes skip timing.
    A candidate that falls back to ATen at its first launch never wins.
    """

    def __init__(self, candidates: Mapping[str, Callable], key: str, sizes: Sequence[int]):
        self.candidates = dict(candidates)
        self.key, self.skey = key, "s" + "-".join(str(int(s)) for s in sizes)
        self.chosen: str | None = None
        first = next(iter(self.candidates.values()))
        self.__name__ = self.__qualname__ = getattr(first, "__name__", "kernel")
        self.out_specs = getattr(first, "out_specs", ())
        # The memory plan's reuse= is passed on to the chosen launcher, so every candidate must take it.
        self.accepts_reuse = all(getattr(c, "accepts_reuse", False) for c in self.candidates.values())

    def __call__(self, *inputs: torch.Tensor, reuse: Sequence[torch.Tensor | None] | None = None
                 ) -> tuple[torch.Tensor, ...]:
        if self.chosen is None:
            self.chosen = self._choose(inputs)
        if reuse is None:
            return self.candidates[self.chosen](*inputs)
        return self.candidates[self.chosen](*inputs, reuse=reuse)

    def _choose(self, inputs) -> str:
        names = list(self.candidates)
        dev = next((t.device for t in inputs if isinstance(t, torch.Tensor)), None)
        if dev is None or dev.type != "cuda":
            return names[0]
        cache = TuningCache()
        dkey = _choice_device_key(str(dev))
        hit = cache.get(self.key, dkey, self.skey)
        if isinstance(hit, dict) and hit.get("emitter") in self.candidates:
            return hit["emitter"]
        from triton.testing import do_bench

        best, best_t = names[0], float("inf")
        for name, launcher in self.candidates.items():
            try:
                launcher(*inputs)  # the first launch compiles, loads and (Triton) tunes block sizes
                if getattr(launcher, "_failed", False):
                    continue
                t = do_bench(lambda launcher=launcher: launcher(*inputs), warmup=3, rep=20)
            except Exception as e:
                log.debug("emitter %s of %s does not run: %s", name, self.__name__, e)
                continue
            log.debug("emitter %s of %s: %.4f ms", name, self.__name__, t)
            if t < best_t:
                best, best_t = name, t
        cache.put(self.key, dkey, self.skey, {"emitter": best, "ms": best_t})
        log.debug("emitter for %s at %s: %s", self.__name__, self.skey, best)
        return best


def choice_key(*sources: str) -> str:
    """The cache key of an emitter choice: the candidates' sources, in the order they are offered."""
    h = hashlib.sha256()
    for s in ("emitter", *sources):
        h.update(s.encode())
        h.update(b"\x00\x01")
    return "emitter-" + h.hexdigest()[:24]


def _choice_device_key(device: str) -> str:
    """device_key plus the C compiler's version (a new NVRTC/hiprtc may change the winner)."""
    parts = [device_key(device)]
    try:
        if torch.version.hip:
            from .c.hip import hiprtc_version

            parts.append(hiprtc_version())
        else:
            from .c.cuda import nvrtc_version

            parts.append(nvrtc_version())
    except Exception:  # the C candidate then never built; the key only needs to be stable
        pass
    return "-".join(parts)
