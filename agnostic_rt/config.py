"""Configuration in one place: the options ``torch.compile(..., options={...})`` accepts.

Defaults can be overridden by the environment (``AGNOSTIC_RT_<NAME>``) and then by options.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["Options", "NUMERICS", "EMITTERS", "configure_logging"]

NUMERICS = ("strict", "fast")
#: Which code a fused group becomes on a GPU target: Triton, the C family (CUDA C through NVRTC/CuPy,
#: HIP C through hiprtc/hip-python), or whichever of the two runs faster (timed on first use).
EMITTERS = ("triton", "c", "autotune")


@dataclass(frozen=True)
class Options:
    """Compile options.

    >>> Options.from_user({"numerics": "fast"}).numerics
    'fast'
    """

    target: str = "auto"  # auto | cpu | cuda | rocm | cuda:N | a part name (h100, mi300x, ...)
    numerics: str = "strict"  # strict: exact + reassoc rules; fast: also approx rules
    passes: bool = True  # run the e-graph optimiser
    debug_dir: str | None = None  # dump graphs, rules fired, costs and generated source here
    # Run generated Triton kernels through the Triton interpreter on CPU tensors (no GPU needed).
    interpret: bool = False
    # Autotune kernel configs by measurement on first use (GPU only).
    autotune: bool = True
    # Capture the program in a CUDA graph when shapes are static (GPU only).
    cudagraphs: bool = False
    # Generated kernels write intermediates into the storage of dead buffers of the same size
    # (agnostic_rt/runtime/memory_plan.py) instead of allocating.
    reuse_buffers: bool = True
    # triton | c | autotune: what fused groups are emitted as on GPU targets. "c" falls back to Triton
    # (debug log) where the C toolchain is missing or a group has no C form; in interpret mode C
    # kernels run on the CPU through g++ (backends/c/host.py). "autotune" times both on the GPU.
    emitter: str = "triton"
    # On targets without generated kernels (the CPU), a graph the passes left unchanged runs as Dynamo
    # captured it, under eager autograd: aot_autograd's runtime wrappers cost more there than they save.
    eager_fallback: bool = True

    @classmethod
    def from_user(cls, options: dict[str, Any] | None) -> Options:
        values: dict[str, Any] = {}
        names = {f.name: f for f in fields(cls)}
        for f in fields(cls):
            env = os.environ.get(f"AGNOSTIC_RT_{f.name.upper()}")
            if env is not None:
                values[f.name] = _parse_env(f, env)
        for key, value in (options or {}).items():
            if key not in names:
                raise ValueError(
                    f"unknown option {key!r} for backend='agnostic'; valid options: {', '.join(names)}"
                )
            values[key] = value
        opts = cls(**values)
        opts.validate()
        return opts

    def validate(self) -> None:
        from .targets import get_target

        if self.numerics not in NUMERICS:
            raise ValueError(f"unknown numerics {self.numerics!r}; expected one of: {', '.join(NUMERICS)}")
        if self.emitter not in EMITTERS:
            raise ValueError(f"unknown emitter {self.emitter!r}; expected one of: {', '.join(EMITTERS)}")
        for name in ("passes", "interpret", "autotune", "cudagraphs", "reuse_buffers", "eager_fallback"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"option {name!r} must be True or False, got {getattr(self, name)!r}")
        if self.debug_dir is not None and not isinstance(self.debug_dir, (str, os.PathLike)):
            raise ValueError(f"option 'debug_dir' must be a path, got {self.debug_dir!r}")
        if not isinstance(self.target, str):
            raise ValueError(f"option 'target' must be a string, got {self.target!r}")
        if self.interpret:
            get_target(self.target if self.target not in ("auto", "cuda") else "h100")
        else:
            get_target(self.target)  # raises with the list of valid targets

    def replace(self, **kw: Any) -> Options:
        return dataclasses.replace(self, **kw)


def _parse_env(f: dataclasses.Field, raw: str) -> Any:
    if f.type in ("bool", bool):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    return raw


_LOG_CONFIGURED = False


def configure_logging() -> None:
    """AGNOSTIC_RT_LOG=debug|info|warning turns on the ``agnostic_rt.*`` loggers (once)."""
    global _LOG_CONFIGURED
    if _LOG_CONFIGURED:
        return
    _LOG_CONFIGURED = True
    level = os.environ.get("AGNOSTIC_RT_LOG")
    if not level:
        return
    logger = logging.getLogger("agnostic_rt")
    logger.setLevel(level.upper())
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[%(name)s] %(levelname)s %(message)s"))
        logger.addHandler(handler)
