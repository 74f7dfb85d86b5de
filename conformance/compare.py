"""Comparing a compiled result with eager's, the way torch.testing.assert_close does, plus a score.

The verdict is assert_close's own (per-dtype default rtol/atol, NaNs equal, exact for integers and
bools). The score, ``error_ratio = max |a - b| / (atol + rtol |b|)``, says how far inside or outside
the tolerance the worst element is (<= 1 passes), so the report can rank and plot errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._pytree import tree_flatten

from .accuracy import TOLERANCES


@dataclass(frozen=True)
class Comparison:
    """The outcome of comparing two (nested) outputs.

    >>> compare(torch.ones(3), torch.ones(3)).passed
    True
    """

    passed: bool
    error_ratio: float  # worst element's |a-b| / (atol + rtol|b|); 0 for exact matches
    abs_error: float
    where: str  # which leaf was worst ("out[1]")
    message: str


def tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """(rtol, atol) that torch.testing.assert_close uses for ``dtype`` (0, 0 for exact dtypes)."""
    return TOLERANCES.get(dtype, (0.0, 0.0))


def _leaf_score(actual: torch.Tensor, expected: torch.Tensor) -> tuple[float, float]:
    if actual.numel() == 0:
        return 0.0, 0.0
    a, e = actual.detach(), expected.detach()
    if a.is_complex() or e.is_complex():
        a, e = torch.view_as_real(a.resolve_conj()), torch.view_as_real(e.resolve_conj())
    if not (a.is_floating_point() or e.is_floating_point()):
        diff = (a.to(torch.int64) != e.to(torch.int64)) if a.dtype != torch.bool else (a != e)
        bad = float(diff.sum().item())
        return (float("inf") if bad else 0.0), bad
    rtol, atol = tolerance(e.dtype)
    a64, e64 = a.double(), e.double()
    same = (a64 == e64) | (a64.isnan() & e64.isnan())
    diff = torch.where(same, torch.zeros_like(a64), (a64 - e64).abs())
    diff = torch.nan_to_num(diff, nan=float("inf"))
    abs_err = float(diff.max().item())
    if abs_err == 0.0:
        return 0.0, 0.0
    ratio = float((diff / (atol + rtol * e64.abs().nan_to_num(posinf=0.0))).max().item())
    return ratio, abs_err


def compare(actual: Any, expected: Any) -> Comparison:
    """Compare nested outputs leaf by leaf with assert_close's defaults (equal_nan=True).

    >>> compare(torch.tensor([1.0]), torch.tensor([1.1])).passed
    False
    """
    flat_a, spec_a = tree_flatten(actual)
    flat_e, spec_e = tree_flatten(expected)
    if spec_a != spec_e:
        return Comparison(False, float("inf"), float("inf"), "out",
                          f"output structure differs: {spec_a} vs {spec_e}")
    worst = Comparison(True, 0.0, 0.0, "", "")
    for i, (a, e) in enumerate(zip(flat_a, flat_e)):
        where = f"out[{i}]" if len(flat_a) > 1 else "out"
        if not isinstance(e, torch.Tensor):
            if a != e and not (isinstance(e, float) and e != e and a != a):
                return Comparison(False, float("inf"), float("inf"), where, f"{where}: {a!r} != {e!r}")
            continue
        if not isinstance(a, torch.Tensor):
            return Comparison(False, float("inf"), float("inf"), where,
                              f"{where}: got {type(a).__name__}, expected a tensor")
        if a.shape != e.shape or a.dtype != e.dtype:
            return Comparison(False, float("inf"), float("inf"), where,
                              f"{where}: got {a.dtype}{list(a.shape)}, expected {e.dtype}{list(e.shape)}")
        ratio, abs_err = _leaf_score(a, e)
        try:
            torch.testing.assert_close(a.detach(), e.detach(), equal_nan=True, check_stride=False,
                                       check_device=False)
            ok, msg = True, ""
        except AssertionError as exc:
            ok, msg = False, f"{where}: " + " ".join(str(exc).split())
        if not ok:
            return Comparison(False, ratio, abs_err, where, msg)
        if ratio >= worst.error_ratio:
            worst = Comparison(True, ratio, max(abs_err, worst.abs_error), where, "")
    return worst
