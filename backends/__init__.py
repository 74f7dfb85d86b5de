"""Code generation and launch, one module per target family."""

from __future__ import annotations

from agnostic_rt.config import Options
from agnostic_rt.targets import Target

from .aten import AtenBackend

__all__ = ["for_target", "AtenBackend"]


def for_target(target: Target, options: Options):
    """The backend that compiles groups for ``target``: ATen on the CPU, Triton on NVIDIA and AMD GPUs
    (also in interpret mode, where the GPU kernels run through the Triton interpreter on CPU tensors)."""
    if target.generates_kernels:
        from agnostic_rt.backends.kernel_backend import KernelBackend

        return KernelBackend(target, options)
    return AtenBackend(target)
