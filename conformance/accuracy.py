"""Accuracy rules shared by tests, the conformance suite and benchmarks.

The model rule is PyTorch's compiler-benchmark check: with an fp64 golden reference,
``rmse(compiled, ref64) <= m * rmse(eager, ref64) + tol / 10`` (m = 2, or 3 for bf16).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

# Per-dtype tolerances of torch.testing.assert_close (rtol, atol).
TOLERANCES = {
    torch.float64: (1e-7, 1e-7),
    torch.float32: (1.3e-6, 1e-5),
    torch.float16: (1e-3, 1e-5),
    torch.bfloat16: (1.6e-2, 1e-5),
}
MODEL_TOL = {torch.float32: 1e-4, torch.float16: 1e-3, torch.bfloat16: 1e-2, torch.float64: 1e-7}


@dataclass(frozen=True)
class RuleResult:
    passed: bool
    compiled_error: float  # rmse(compiled, fp64 reference)
    eager_error: float  # rmse(eager, fp64 reference)
    bound: float

    def __str__(self) -> str:
        verdict = "pass" if self.passed else "FAIL"
        return (f"{verdict}: compiled err {self.compiled_error:.3g} vs bound {self.bound:.3g} "
                f"(eager err {self.eager_error:.3g})")


def rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.sqrt(torch.mean((a.double() - b.double()) ** 2)).item()


def fp64_rule(compiled: torch.Tensor, eager: torch.Tensor, ref64: torch.Tensor,
              tol: float | None = None) -> RuleResult:
    """Check one tensor against the fp64-reference rule.

    >>> x = torch.randn(8, dtype=torch.float64)
    >>> fp64_rule(x.float(), x.float(), x).passed
    True
    """
    if compiled.shape != ref64.shape:
        return RuleResult(False, float("inf"), 0.0, 0.0)
    if not torch.isfinite(compiled).all() and torch.isfinite(eager).all():
        return RuleResult(False, float("nan"), rmse(eager, ref64), 0.0)
    dtype = eager.dtype
    tol = MODEL_TOL.get(dtype, 1e-4) if tol is None else tol
    mult = 3.0 if dtype == torch.bfloat16 else 2.0
    ce, ee = rmse(compiled, ref64), rmse(eager, ref64)
    bound = mult * ee + tol / 10
    return RuleResult(ce <= bound, ce, ee, bound)


def fp64_rule_all(compiled: Iterable[torch.Tensor], eager: Iterable[torch.Tensor],
                  ref64: Iterable[torch.Tensor], tol: float | None = None) -> list[RuleResult]:
    return [fp64_rule(c, e, r, tol) for c, e, r in zip(compiled, eager, ref64, strict=True)]
