"""Results and the report's data model: one :class:`Result` per checked case, gathered in a :class:`Report`.

The JSON written from a Report is the suite's stable, machine-readable output (schema documented in
``conformance/SCHEMA.md``; ``SCHEMA_VERSION`` changes whenever a field changes meaning or goes away).
"""

from __future__ import annotations

import platform
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from typing import Any

SCHEMA_VERSION = 1

# pass: compiled matches; fail: an unexpected miscompare or error; xfail: a failure listed in the
# target's expected-failure file; xpass: a listed failure that now passes (reported, and unexpected);
# skip: not applicable here (the reason says why: eager itself raises, nondeterministic op, no hardware).
STATUSES = ("pass", "fail", "xfail", "xpass", "skip")
UNEXPECTED = ("fail", "xpass")


@dataclass
class Result:
    """One checked case.

    >>> Result("op", "cpu", "sigmoid", "float32", "forward", "pass").unexpected
    False
    """

    tier: str  # "op" | "model" | "kernel" | "migration"
    target: str  # a TargetRun name: "cpu", "cuda", "h100-interp", "sm_90", ...
    case: str  # op name (with variant), zoo model, kernel name, migration scenario
    dtype: str  # "float32", ..., or "" where it does not apply
    check: str  # "forward" | "backward" | "inference" | "training" | "train-curve" | "build" | ...
    status: str  # one of STATUSES
    # How far from the tolerance the worst compared element was: max |a-b| / (atol + rtol |b|) for
    # ops, compiled_error / bound for models. <= 1 passes; None where nothing numeric was compared.
    error_ratio: float | None = None
    abs_error: float | None = None  # the largest absolute difference seen
    sample: str = ""  # which sample/tensor was worst: "sample 3: input f32[5,5], args (f32[5],)"
    message: str = ""  # why it failed / was skipped / is expected to fail
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)  # tier-specific data (loss curves, ...)

    @property
    def key(self) -> str:
        """The expected-failure key: ``case:dtype:check``."""
        return f"{self.case}:{self.dtype}:{self.check}"

    @property
    def unexpected(self) -> bool:
        return self.status in UNEXPECTED


@dataclass
class TargetInfo:
    """How a target was exercised: ``measured`` (ran on its own hardware), ``interpreted`` (kernels
    for the part ran through the Triton interpreter on CPU) or ``compiled`` (built only)."""

    name: str
    mode: str
    description: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TierNote:
    """A whole tier or tier/target pair that did not run, and why (shown plainly in the report)."""

    tier: str
    target: str
    status: str  # "not available" | "no cases" | "skipped" | "kernel fallbacks"
    message: str


@dataclass
class Report:
    """Everything one run found.

    >>> r = Report(level="quick"); r.add(Result("op", "cpu", "add", "float32", "forward", "fail"))
    >>> r.exit_code()
    1
    """

    level: str  # "quick" | "full" | "custom"
    results: list[Result] = field(default_factory=list)
    targets: list[TargetInfo] = field(default_factory=list)
    notes: list[TierNote] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    finished: float | None = None

    def add(self, result: Result) -> Result:
        self.results.append(result)
        return result

    def counts(self) -> dict[str, dict[str, dict[str, int]]]:
        """``{tier: {target: {status: n}}}`` with every status present (zeros included)."""
        out: dict[str, dict[str, dict[str, int]]] = {}
        for r in self.results:
            out.setdefault(r.tier, {}).setdefault(r.target, dict.fromkeys(STATUSES, 0))[r.status] += 1
        return out

    def unexpected(self) -> list[Result]:
        return [r for r in self.results if r.unexpected]

    def worst(self, n: int = 20) -> list[Result]:
        """The ``n`` results furthest from their tolerance (any status but skip)."""
        scored = [r for r in self.results if r.error_ratio is not None and r.status != "skip"]
        return sorted(scored, key=lambda r: -_finite(r.error_ratio))[:n]

    def exit_code(self) -> int:
        """0 when every result is pass, xfail or skip; 1 on any unexpected result."""
        return 1 if self.unexpected() else 0

    def to_json(self) -> dict[str, Any]:
        import torch

        totals = Counter(r.status for r in self.results)
        return {
            "schema_version": SCHEMA_VERSION,
            "level": self.level,
            "started": self.started,
            "finished": self.finished,
            "environment": {
                "torch": torch.__version__,
                "python": platform.python_version(),
                "machine": platform.machine(),
                "cuda_available": torch.cuda.is_available(),
                "hip": torch.version.hip,
            },
            "targets": [asdict(t) for t in self.targets],
            "notes": [asdict(n) for n in self.notes],
            "totals": {s: totals.get(s, 0) for s in STATUSES},
            "counts": self.counts(),
            "passed": self.exit_code() == 0,
            "worst": [_result_json(r) for r in self.worst()],
            "results": [_result_json(r) for r in self.results],
        }


def _finite(x: float | None) -> float:
    if x is None or x != x:  # NaN sorts as the worst
        return float("inf")
    return x


def _result_json(r: Result) -> dict[str, Any]:
    d = asdict(r)
    for k in ("error_ratio", "abs_error"):
        v = d[k]
        if v is not None and (v != v or v in (float("inf"), float("-inf"))):
            d[k] = str(v)  # JSON has no NaN/inf: "nan", "inf"
    d["key"] = r.key
    return d


# The top-level keys of the JSON report and of each result in it (documented in SCHEMA.md).
REPORT_KEYS = ("schema_version", "level", "started", "finished", "environment", "targets", "notes", "totals",
               "counts", "passed", "worst", "results")
RESULT_KEYS = tuple(f.name for f in fields(Result)) + ("key",)
