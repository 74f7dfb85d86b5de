"""Helpers the rule families share: variables, and conditions over the analysis."""

from __future__ import annotations

from typing import Any

import torch

from agnostic_rt.passes.analysis import same_shape
from agnostic_rt.passes.pattern import Match, Var

aten = torch.ops.aten
X, Y, Z, A, B, C = (Var(n) for n in "xyzabc")


def number(v: Any) -> bool:
    """A plain Python number (bools are not numbers here: True * x is a cast)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def same_as_root(m: Match, name: str) -> bool:
    """The bound class has the root's shape and dtype (the right side may replace the root)."""
    d, r = m.data(name), m.root_data
    return d.is_tensor and r.is_tensor and d.dtype == r.dtype and same_shape(d.shape, r.shape)


def floating(m: Match, *names: str) -> bool:
    return all(m.data(n).is_tensor and m.data(n).dtype.is_floating_point for n in names)


def norm_dim(d: int, ndim: int) -> int:
    return d + ndim if d < 0 else d


def static(shape: Any) -> bool:
    return shape is not None and all(isinstance(s, int) for s in shape)
