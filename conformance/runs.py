"""Which targets a conformance run exercises, and how.

Every run covers the CPU (measured); a CUDA or ROCm GPU when this process sees one (measured); the
H100 and MI300X kernels through the Triton interpreter on CPU tensors (interpreted, everywhere); and
the compile-only builds of the kernel tier (Triton for sm_80, sm_90, gfx90a, gfx942; NVRTC for sm_80,
sm_90; hiprtc for gfx90a).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .results import TargetInfo

# Builds the kernel tier checks whatever hardware is here: (name, family, arch).
BUILD_TARGETS: tuple[tuple[str, str, str], ...] = (
    ("triton-sm_80", "cuda", "sm_80"),
    ("triton-sm_90", "cuda", "sm_90"),
    ("triton-gfx90a", "hip", "gfx90a"),
    ("triton-gfx942", "hip", "gfx942"),
    # NVRTC for the sm the CUDA C tests build (backends.cuda_c.ARCHS): A100 and H100.
    ("nvrtc-sm_80", "nvrtc", "sm_80"),
    ("nvrtc-sm_90", "nvrtc", "sm_90"),
    # hiprtc of ROCm 5.2 (Debian's) builds gfx90a; MI300's gfx942 needs ROCm >= 5.7.
    ("hiprtc-gfx90a", "hiprtc", "gfx90a"),
)


@dataclass(frozen=True)
class TargetRun:
    """One way of running the compiled code: the backend options and the device tensors live on.

    >>> TargetRun("cpu", "measured", {"target": "cpu"}).device
    'cpu'
    """

    name: str
    mode: str  # "measured" | "interpreted"
    options: dict[str, Any] = field(default_factory=dict, hash=False)
    device: str = "cpu"
    description: str = ""

    def info(self) -> TargetInfo:
        return TargetInfo(self.name, self.mode, self.description, dict(self.options))


def available_runs(names: list[str] | None = None) -> list[TargetRun]:
    """The target runs possible in this process, optionally only those named.

    >>> [r.name for r in available_runs(["cpu"])]
    ['cpu']
    """
    # eager_fallback off: by default the CPU runs a graph the passes leave alone as Dynamo captured
    # it (that is eager's numerics); the suite checks the compiled ATen program, which is ours.
    runs = [TargetRun("cpu", "measured", {"target": "cpu", "eager_fallback": False}, "cpu",
                      "host CPU, the compiled ATen program")]
    if torch.cuda.is_available():
        vendor = "rocm" if torch.version.hip else "cuda"
        name = torch.cuda.get_device_name(0)
        runs.append(TargetRun(vendor, "measured", {"target": "cuda:0"}, "cuda:0", f"{name} (measured)"))
    runs += [
        TargetRun("h100-interp", "interpreted", {"target": "h100", "interpret": True}, "cpu",
                  "H100 (sm_90) kernels run by the Triton interpreter on CPU"),
        TargetRun("mi300x-interp", "interpreted", {"target": "mi300x", "interpret": True}, "cpu",
                  "MI300X (gfx942) kernels run by the Triton interpreter on CPU"),
    ]
    if names:
        known = {r.name for r in runs} | {"cuda", "rocm"}
        bad = [n for n in names if n not in known]
        if bad:
            raise ValueError(f"unknown conformance target(s) {bad}; "
                             f"expected some of: {', '.join(sorted(known))}")
        runs = [r for r in runs if r.name in names]
    return runs
