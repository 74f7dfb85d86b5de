"""The conformance run: tiers x targets, expected failures applied, progress shown, one Report out.

    from agnostic_rt.conformance.suite import SuiteConfig, run_suite
    report = run_suite(SuiteConfig(level="quick"))
    report.exit_code()   # 0 when nothing unexpected happened
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .expect import Expectations
from .results import Report, Result, TierNote
from .runs import BUILD_TARGETS, TargetRun, available_runs

log = logging.getLogger("agnostic_rt.conformance")

TIERS = ("op", "model", "kernel", "migration")

# Model tier plans: (model, check) per target mode. "training" = forward + backward of one step,
# "inference" = no-grad forward, "train-curve" = a short SGD run's loss curve.
# The Triton interpreter runs generated kernels at Python speed: a training curve of the MLP takes
# minutes there, so the quick tier checks one training step on interpreted targets and leaves their
# curves, and the transformers' interpreted training, to --full or to a GPU.
QUICK_MODELS = {
    "measured": [("mlp", "inference"), ("mlp", "training"), ("cnn", "training"), ("gpt2", "training"),
                 ("bert", "inference"), ("mlp", "train-curve")],
    "interpreted": [("mlp", "training")],
}
FULL_MODELS = {
    "measured": [(m, c) for m in ("mlp", "cnn", "gpt2", "gpt2_eager", "bert", "bert_eager")
                 for c in ("inference", "training")] + [(m, "train-curve") for m in ("mlp", "cnn", "gpt2")],
    "interpreted": [(m, c) for m in ("mlp", "cnn") for c in ("inference", "training", "train-curve")]
    + [("gpt2", "inference"), ("bert", "inference")],
}
CURVE_STEPS = {"quick": 8, "full": 12}


@dataclass
class SuiteConfig:
    """What one run covers.

    >>> SuiteConfig(level="quick", tiers=["op"], targets=["cpu"]).level
    'quick'
    """

    level: str = "quick"  # "quick" | "full"
    tiers: list[str] = field(default_factory=lambda: list(TIERS))
    targets: list[str] | None = None  # TargetRun names; None = every available one
    ops: list[str] | None = None  # op_db names (op tier); None = the level's plan
    dtypes: list[str] | None = None  # restrict the op tier to these dtypes ("float32", "bool", ...)
    models: list[str] | None = None  # zoo names (model tier); None = the level's plan
    max_samples: int | None = None  # per op and dtype; None = the level's default
    expect_dir: Path | None = None  # expected-failure files; None = the package's data folder
    collect_expect: bool = False  # rewrite the expected-failure files from this run
    progress: bool = True
    # Append each result as one JSON line here as it is found (a run killed halfway keeps its results).
    stream: Path | None = None
    # Test hook: replaces torch.compile(fn, backend="agnostic", options=...) in the op and model tiers.
    compile_fn: Callable[[Callable, TargetRun], Callable] | None = None

    def __post_init__(self) -> None:
        if self.level not in ("quick", "full"):
            raise ValueError(f"unknown level {self.level!r}; expected 'quick' or 'full'")
        bad = [t for t in self.tiers if t not in TIERS]
        if bad:
            raise ValueError(f"unknown tier(s) {bad}; expected some of: {', '.join(TIERS)}")


class _Progress:
    """rich progress bars on stderr (one per tier), or nothing."""

    def __init__(self, enabled: bool):
        self.bar = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("[bold]{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TextColumn("{task.fields[now]}"),
                                console=Console(stderr=True), transient=False)

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        if self.bar is None:
            yield
            return
        with self.bar:
            yield

    def task(self, name: str, total: int):
        if self.bar is None:
            return None
        return self.bar.add_task(name, total=total, now="")

    def step(self, task, now: str = "") -> None:
        if self.bar is not None and task is not None:
            t = next(t for t in self.bar.tasks if t.id == task)
            total = max(t.total or 0, t.completed + 1)  # a tier that finds more work than it planned
            self.bar.update(task, advance=1, total=total, now=now[:40])


# Loggers on which a launcher says a kernel failed at its first launch and its group ran through ATen.
_LAUNCH_LOGGERS = ("agnostic_rt.triton_launch", "agnostic_rt.emitters")


class _LaunchFallbacks(logging.Handler):
    """Kernels that failed at their first launch while one case ran. The case's numerics still
    hold (ATen ran the group), so it is not failed; the kernel did not run, and the report says so."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "failed at its first launch" in str(record.msg):
            self.seen.append(" ".join(record.getMessage().split())[:300])

    @contextlib.contextmanager
    def watching(self) -> Iterator[_LaunchFallbacks]:
        self.seen = []
        loggers = [logging.getLogger(n) for n in _LAUNCH_LOGGERS]
        for lg in loggers:
            lg.addHandler(self)
        try:
            yield self
        finally:
            for lg in loggers:
                lg.removeHandler(self)


class Suite:
    """Runs the tiers and keeps the expectations of every target it meets."""

    def __init__(self, config: SuiteConfig):
        self.config = config
        self.report = Report(level=config.level)
        self.expectations: dict[str, Expectations] = {}
        self.progress = _Progress(config.progress)
        self.fallbacks = _LaunchFallbacks()

    def expect(self, target: str) -> Expectations:
        if target not in self.expectations:
            self.expectations[target] = Expectations.load(target, self.config.expect_dir)
        return self.expectations[target]

    def add(self, result: Result) -> Result:
        self.expect(result.target).apply(result)
        if self.config.stream is not None:
            import json

            from .results import _result_json

            with open(self.config.stream, "a") as f:
                f.write(json.dumps(_result_json(result)) + "\n")
        if result.unexpected:
            log.warning("%s %s on %s: %s", result.status.upper(), result.key, result.target, result.message[:200])
        return self.report.add(result)

    # ---- tiers ------------------------------------------------------------------------------------

    def run_ops(self, runs: list[TargetRun]) -> None:
        from . import ops

        db = ops.load_op_db()
        limit = self.config.max_samples or (ops.QUICK_MAX_SAMPLES if self.config.level == "quick" else ops.FULL_MAX_SAMPLES)
        for run in runs:
            cases = ops.plan(self.config.level, run, db, self.config.ops, self.config.dtypes)
            task = self.progress.task(f"op tier: {run.name}", len(cases))
            for case in cases:
                op = db.get(case.name)
                if op is None:
                    self.add(Result("op", run.name, case.name, case.dtype, "forward", "skip",
                                    message=f"not in torch {torch.__version__}'s op_db"))
                else:
                    try:
                        with self.fallbacks.watching() as fb:
                            found = ops.check_op(op, case, run, max_samples=limit, compile_fn=self.config.compile_fn)
                        for r in found:
                            r.extra = {**(r.extra or {}), **({"kernel_fallbacks": fb.seen} if fb.seen else {})}
                    except Exception as exc:  # noqa: BLE001 - one broken case must not end the run
                        log.exception("conformance suite error on %s %s", case.name, case.dtype)
                        found = [Result("op", run.name, case.name, case.dtype, "forward", "fail", error_ratio=float("inf"),
                                        message=f"conformance suite error {type(exc).__name__}: {exc}"[:600])]
                    for r in found:
                        self.add(r)
                    torch._dynamo.reset()
                self.progress.step(task, case.name)

    def model_cases(self, run: TargetRun) -> list[tuple[str, str]]:
        """(zoo model, check) pairs the level's plan runs on ``run``."""
        plan = QUICK_MODELS if self.config.level == "quick" else FULL_MODELS
        return [(m, c) for m, c in plan[run.mode] if not self.config.models or m in self.config.models]

    def check_model_case(self, run: TargetRun, name: str, check: str) -> Result:
        """One model-tier case: "inference", "training" or "train-curve" of zoo model ``name`` on ``run``."""
        from . import models, zoo

        t0 = time.perf_counter()
        base = dict(tier="model", target=run.name, case=name, dtype="float32", check=check)
        compiled = None
        if self.config.compile_fn is not None:
            compiled = self.config.compile_fn(zoo.get(name).build().to(run.device), run)
        try:
            if check == "train-curve":
                cc = models.check_training_curve(zoo.get(name), steps=CURVE_STEPS[self.config.level],
                                                 options=dict(run.options), device=run.device, compiled_model=compiled)
                res = cc.result
                r = Result(**base, status="pass" if cc.passed else "fail",
                           error_ratio=res.compiled_error / max(res.bound, 1e-30), abs_error=res.compiled_error,
                           sample=f"loss curve, {cc.steps} steps", message=str(res),
                           extra={"compiled": cc.compiled, "eager": cc.eager, "fp64": cc.ref64})
            else:
                mc = models.check_model(zoo.get(name), training=check == "training", options=dict(run.options),
                                        device=run.device, compiled_model=compiled)
                where, res = mc.worst()
                r = Result(**base, status="pass" if mc.passed else "fail",
                           error_ratio=res.compiled_error / max(res.bound, 1e-30), abs_error=res.compiled_error,
                           sample=where, message=str(res), extra={"tensors": len(mc.results)})
        except Exception as exc:  # noqa: BLE001 - the backend must never crash a model eager runs
            r = Result(**base, status="fail", error_ratio=float("inf"),
                       message=f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:600])
        r.seconds = time.perf_counter() - t0
        torch._dynamo.reset()
        return r

    def run_models(self, runs: list[TargetRun]) -> None:
        for run in runs:
            cases = self.model_cases(run)
            task = self.progress.task(f"model tier: {run.name}", len(cases))
            for name, check in cases:
                with self.fallbacks.watching() as fb:
                    r = self.check_model_case(run, name, check)
                if fb.seen:
                    r.extra = {**(r.extra or {}), "kernel_fallbacks": fb.seen}
                self.add(r)
                self.progress.step(task, f"{name} {check}")

    def run_kernels(self, runs: list[TargetRun]) -> None:
        from . import kernels

        quick = self.config.level == "quick"
        limit = kernels.QUICK_BUILD_LIMIT if quick else None
        models = [m for m in (kernels.QUICK_ALONE_MODELS if quick else kernels.FULL_ALONE_MODELS)
                  if not self.config.models or m in self.config.models]
        # The alone checks' kernels are not known yet: the bar's total grows as they come (see step).
        known = len(kernels.generated_kernels() or [])
        task = self.progress.task("kernel tier", (min(known, limit or known) + 1) * len(BUILD_TARGETS) + 1)

        def add(r: Result) -> None:
            self.add(r)
            self.progress.step(task, f"{r.target} {r.case}")

        kernels.run_kernel_tier(add, self.report.notes, limit, runs, models)

    def run_migration(self, runs: list[TargetRun]) -> None:
        from .migration import run_migration_tier

        task = self.progress.task("migration tier", 2 + int(torch.cuda.is_available()))

        def add(r: Result) -> None:
            self.add(r)
            self.progress.step(task, r.case)

        run_migration_tier(add, self.report.notes, [r.name for r in runs])

    # ---- the run ----------------------------------------------------------------------------------

    def run(self) -> Report:
        cfg = self.config
        runs = available_runs(cfg.targets)
        self.report.targets = [r.info() for r in runs]
        from .results import TargetInfo

        if "kernel" in cfg.tiers:
            self.report.targets.append(TargetInfo("triton-interpreter", "interpreted", "Triton interpreter on CPU (kernel tier)"))
            self.report.targets += [TargetInfo(n, "compiled", f"{fam} build for {arch}; compiled only, never run")
                                    for n, fam, arch in BUILD_TARGETS]
        if not torch.cuda.is_available():
            self.report.notes.append(TierNote("*", "cuda/rocm", "skipped", "no GPU in this process: nothing "
                                              "was measured on GPU hardware; GPU targets are interpreted or compiled only"))
        with self.progress.running():
            if "op" in cfg.tiers:
                self.run_ops(runs)
            if "model" in cfg.tiers:
                self.run_models(runs)
            if "kernel" in cfg.tiers:
                self.run_kernels(runs)
            if "migration" in cfg.tiers:
                self.run_migration(runs)
        self.report.finished = time.time()
        self._note_fallbacks()
        if cfg.collect_expect:
            for exp in self.expectations.values():
                entries = exp.collect(self.report.results)
                if entries != exp.entries or exp.path is None or not exp.path.exists():
                    path = exp.write(entries, cfg.expect_dir)
                    log.warning("wrote %d expected failures to %s", len(entries), path)
            # The run that regenerated the lists is judged by them, as later runs will be.
            for r in self.report.results:
                if r.status == "xpass":
                    r.status, r.message = "pass", "passes (removed from the expected failures)"
                else:
                    self.expect(r.target).apply(r)
        return self.report


    def _note_fallbacks(self) -> None:
        """One note per tier and target whose cases ran kernels through ATen after a failed launch."""
        by: dict[tuple[str, str], list[Result]] = {}
        for r in self.report.results:
            if (r.extra or {}).get("kernel_fallbacks"):
                by.setdefault((r.tier, r.target), []).append(r)
        for (tier, target), rs in by.items():
            first = rs[0].extra["kernel_fallbacks"][0]
            self.report.notes.append(TierNote(
                tier, target, "kernel fallbacks",
                f"{len(rs)} case(s) ran a generated kernel's ops through ATen after it failed at its first "
                f"launch (numerics held; the kernel did not run): {', '.join(r.key for r in rs[:8])}"
                f"{' ...' if len(rs) > 8 else ''}; first: {first}"))


def run_suite(config: SuiteConfig) -> Report:
    """Run the suite described by ``config``.

    >>> run_suite(SuiteConfig(tiers=["kernel"], progress=False)).exit_code()  # doctest: +SKIP
    0
    """
    return Suite(config).run()


