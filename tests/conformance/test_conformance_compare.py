"""Comparison rules of the conformance suite: assert_close's verdicts, scores and the fp64 fallback."""

from __future__ import annotations

import torch

from agnostic_rt.conformance.compare import compare
from agnostic_rt.conformance.ops import _fp64_fallback
from agnostic_rt.conformance.results import Result


def test_nans_in_the_same_place_compare_equal():
    x = torch.tensor([1.0, float("nan")])
    assert compare(x.clone(), x).passed


def test_integers_must_match_exactly():
    c = compare(torch.tensor([1, 2, 4]), torch.tensor([1, 2, 3]))
    assert not c.passed and c.error_ratio == float("inf")


def test_error_ratio_is_distance_over_tolerance():
    e = torch.tensor([1.0])
    c = compare(e + 2e-5, e)  # float32: atol 1e-5, rtol 1.3e-6 -> tolerance 1.13e-5
    assert not c.passed and 1.7 < c.error_ratio < 1.8


def test_dtype_mismatch_fails():
    assert not compare(torch.ones(2, dtype=torch.float16), torch.ones(2)).passed


def _failed() -> Result:
    return Result("op", "cpu", "op", "float32", "forward", "fail", message="not close")


def test_fp64_fallback_accepts_compiled_closer_to_fp64_than_eager():
    ref = torch.zeros(3, dtype=torch.float64)
    eager, compiled = torch.full((3,), 4e-5), torch.zeros(3)
    r = _failed()
    _fp64_fallback(r, [eager], [compiled], [ref])
    assert r.status == "pass" and r.extra["fp64_fallback"]


def test_fp64_fallback_rejects_compiled_further_from_fp64_than_eager():
    ref = torch.zeros(3, dtype=torch.float64)
    eager, compiled = torch.full((3,), 1e-7), torch.full((3,), 4e-5)
    r = _failed()
    _fp64_fallback(r, [eager], [compiled], [ref])
    assert r.status == "fail"
