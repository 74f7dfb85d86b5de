"""The ATen backend: every group runs through ATen's own kernels (the CPU target, and fallbacks)."""

from __future__ import annotations

from collections.abc import Callable

from agnostic_rt.targets import Target


class AtenBackend:
    """Compiles nothing: the program inlines each group's ATen calls as they are."""

    name = "aten"

    def __init__(self, target: Target):
        self.target = target

    def compile(self, group) -> Callable | None:
        return None
