"""Targets: frozen descriptions of the hardware that cost models and code generators read.

Nothing below the compile entry reads ``torch.cuda`` directly: it reads a :class:`Target`. That is
what lets one machine without a GPU compile, cost and check code for an H100 or an MI300X.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass, field, replace

import torch

__all__ = ["Target", "KNOWN_TARGETS", "current_target", "get_target", "host_cpu_target"]

_TF = 1e12
_TB = 1e12


@dataclass(frozen=True)
class Target:
    """One kind of device, as the compiler sees it.

    >>> get_target("h100").warp_size
    32
    """

    name: str  # registry key, e.g. "h100", "mi300x", "cpu"
    vendor: str  # "nvidia" | "amd" | "cpu"
    arch: str  # "sm_90", "gfx942", "x86_64"
    warp_size: int  # threads per warp / wavefront (1 on the CPU)
    sm_count: int  # SMs (NVIDIA), CUs (AMD), cores (CPU)
    mem_bandwidth: float  # bytes per second, achievable device-memory bandwidth
    peak_flops: tuple[tuple[str, float], ...]  # (dtype name, FLOP/s) pairs, dense
    launch_overhead_s: float = 5e-6  # per kernel launch (or per ATen call on the CPU)
    l2_bytes: int = 0
    torch_device: str = "cpu"  # the torch device type its tensors live on ("cuda" on ROCm too)
    # Free-form facts that matter only to one emitter (e.g. AMD's matrix_instr_nonkdim).
    extra: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    @property
    def generates_kernels(self) -> bool:
        """Whether fused groups are generated as kernels (GPU) or run through ATen (CPU)."""
        return self.vendor in ("nvidia", "amd")

    def flops(self, dtype: torch.dtype | str) -> float:
        """Peak dense FLOP/s for ``dtype`` (fp32 rate for anything not listed)."""
        key = str(dtype).replace("torch.", "")
        table = dict(self.peak_flops)
        return table.get(key, table["float32"])

    def with_device(self, device: str) -> Target:
        return replace(self, torch_device=device)


def _gpu(name, vendor, arch, warp, sms, bw_tb, fp32, tf32, bf16, fp8, l2_mb, launch_us):
    flops = (
        ("float32", fp32 * _TF),
        ("tfloat32", tf32 * _TF),
        ("float16", bf16 * _TF),
        ("bfloat16", bf16 * _TF),
        ("float8_e4m3fn" if vendor == "nvidia" else "float8_e4m3fnuz", fp8 * _TF),
        ("float64", fp32 / 2 * _TF),
    )
    return Target(
        name=name, vendor=vendor, arch=arch, warp_size=warp, sm_count=sms,
        mem_bandwidth=bw_tb * _TB, peak_flops=flops, launch_overhead_s=launch_us * 1e-6,
        l2_bytes=int(l2_mb * 2**20), torch_device="cuda",
    )


# Datasheet figures (dense, no sparsity). Bandwidth is the datasheet's; measured copies reach
# ~90% of it (KINDS.md: 4.3 TB/s on an H200's 4.8).
KNOWN_TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        _gpu("h100", "nvidia", "sm_90", 32, 132, 3.35, 67, 495, 989, 1979, 50, 4),
        _gpu("h200", "nvidia", "sm_90", 32, 132, 4.8, 67, 495, 989, 1979, 60, 4),
        _gpu("a100", "nvidia", "sm_80", 32, 108, 2.04, 19.5, 156, 312, 312, 40, 5),
        _gpu("mi300x", "amd", "gfx942", 64, 304, 5.3, 163.4, 653.7, 1307, 2615, 256, 8),
        _gpu("mi250x", "amd", "gfx90a", 64, 220, 3.28, 47.9, 47.9, 383, 383, 16, 8),
    )
}

# Device-name substrings -> registry key, for what torch.cuda.get_device_name reports.
_NAME_HINTS = (("h200", "h200"), ("h100", "h100"), ("a100", "a100"), ("mi300", "mi300x"), ("mi250", "mi250x"))
_ARCH_HINTS = {"sm_90": "h100", "sm_80": "a100", "gfx942": "mi300x", "gfx90a": "mi250x"}


@functools.cache
def host_cpu_target() -> Target:
    """The CPU this process runs on: cores and a conservative streaming bandwidth and FLOP rate."""
    cores = os.cpu_count() or 1
    per_core_fp32 = 32e9  # AVX2 FMA at ~2 GHz: 2 x 8-wide x 2 FLOP
    return Target(
        name="cpu", vendor="cpu", arch=platform.machine() or "unknown", warp_size=1, sm_count=cores,
        mem_bandwidth=min(10e9 * cores, 100e9),
        peak_flops=(("float32", per_core_fp32 * cores), ("float64", per_core_fp32 * cores / 2),
                    ("bfloat16", per_core_fp32 * cores / 2), ("float16", per_core_fp32 * cores / 4)),
        launch_overhead_s=2e-6, l2_bytes=2 * 2**20, torch_device="cpu",
    )


def _cuda_device_target(index: int) -> Target:
    """The registry entry that matches a visible torch.cuda device (NVIDIA or ROCm build)."""
    props = torch.cuda.get_device_properties(index)
    name = props.name.lower()
    arch = getattr(props, "gcnArchName", "") or f"sm_{props.major}{props.minor}"
    arch = arch.split(":")[0]  # ROCm reports e.g. "gfx942:sramecc+:xnack-"
    key = next((k for hint, k in _NAME_HINTS if hint in name), None) or _ARCH_HINTS.get(arch)
    device = f"cuda:{index}"
    if key is not None:
        base = KNOWN_TARGETS[key]
        return replace(base, sm_count=props.multi_processor_count, torch_device=device)
    # An unlisted part: keep what the driver tells us, borrow rates from the nearest known family.
    vendor = "amd" if torch.version.hip else "nvidia"
    base = KNOWN_TARGETS["mi250x" if vendor == "amd" else "a100"]
    return replace(base, name=name.replace(" ", "-"), arch=arch, sm_count=props.multi_processor_count,
                   warp_size=64 if vendor == "amd" else 32, torch_device=device)


def get_target(spec: str | Target = "auto") -> Target:
    """Resolve a target spec: "auto", "cpu", "cuda", "rocm", "cuda:1", or a part name ("h100").

    A part name gives that part's description even when no such device is here (compile-only
    and interpreted runs).
    """
    if isinstance(spec, Target):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"target must be a str or Target, got {type(spec).__name__}")
    s = spec.strip().lower()
    if s == "auto":
        return current_target()
    if s == "cpu":
        return host_cpu_target()
    if s in KNOWN_TARGETS:
        return KNOWN_TARGETS[s]
    if s in ("cuda", "rocm", "hip") or s.startswith("cuda:"):
        want_amd = s in ("rocm", "hip")
        index = int(s.split(":", 1)[1]) if ":" in s else 0
        if torch.cuda.is_available() and index < torch.cuda.device_count():
            if want_amd and not torch.version.hip:
                raise RuntimeError(f"target {spec!r}: this torch build is for CUDA, not ROCm")
            return _cuda_device_target(index)
        raise RuntimeError(
            f"target {spec!r}: no such device in this process (torch.cuda.is_available()="
            f"{torch.cuda.is_available()}); to compile for a part that is not here name it: "
            f"{', '.join(KNOWN_TARGETS)}"
        )
    raise ValueError(
        f"unknown target {spec!r}; expected one of: auto, cpu, cuda, rocm, a device string like "
        f"'cuda:1', or a part name ({', '.join(KNOWN_TARGETS)})"
    )


def current_target(device: torch.device | str | None = None) -> Target:
    """The Target for ``device`` (default: the current accelerator if any, else the CPU).

    >>> current_target("cpu").vendor
    'cpu'
    """
    if device is not None:
        dev = torch.device(device)
        if dev.type == "cpu":
            return host_cpu_target()
        if dev.type == "cuda":
            return _cuda_device_target(dev.index if dev.index is not None else torch.cuda.current_device())
        raise ValueError(f"unsupported device type {dev.type!r}; expected 'cpu' or 'cuda'")
    if torch.cuda.is_available():
        return _cuda_device_target(torch.cuda.current_device())
    return host_cpu_target()
