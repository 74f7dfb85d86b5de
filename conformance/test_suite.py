"""The conformance suite as pytest tests (collected by ``pytest --pyargs agnostic_rt.conformance``).

One test per case of the plan (see :mod:`conformance.suite`); what the suite calls xfail is a pytest
xfail with the expected-failure file's reason, an xpass fails the test (the list must be updated).
"""

from __future__ import annotations

import pytest

from agnostic_rt.conformance.plugin import setting, write_report


def _config(pytestconfig):
    from agnostic_rt.conformance.suite import TIERS, SuiteConfig

    tiers = setting(pytestconfig, "tiers")
    targets = setting(pytestconfig, "targets")
    return SuiteConfig(level=setting(pytestconfig, "level") or "quick",
                       tiers=tiers.split(",") if tiers else list(TIERS),
                       targets=targets.split(",") if targets else None, progress=False)


def _cases(config) -> list[tuple[str, str, tuple]]:
    """(tier, target, case) triples of the plan, cheap to enumerate at collection."""
    from agnostic_rt.conformance import ops
    from agnostic_rt.conformance.runs import BUILD_TARGETS, available_runs
    from agnostic_rt.conformance.suite import Suite

    cfg = _config(config)
    runs = available_runs(cfg.targets)
    out: list[tuple[str, str, tuple]] = []
    if "op" in cfg.tiers:
        db = ops.load_op_db()
        for run in runs:
            out += [("op", run.name, (c.name, c.dtype)) for c in ops.plan(cfg.level, run, db)]
    if "model" in cfg.tiers:
        suite = Suite(cfg)
        for run in runs:
            out += [("model", run.name, mc) for mc in suite.model_cases(run)]
    if "kernel" in cfg.tiers:
        out += ([("kernel", "triton-interpreter", ("interpret",))]
                + [("kernel", n, ("build",)) for n, _, _ in BUILD_TARGETS])
    if "migration" in cfg.tiers:
        out.append(("migration", "*", ("scenarios",)))
    return out


def pytest_generate_tests(metafunc):
    if "conformance_case" in metafunc.fixturenames:
        cases = _cases(metafunc.config)
        metafunc.parametrize("conformance_case", cases, ids=[f"{t}-{g}-{'-'.join(c)}" for t, g, c in cases])


@pytest.fixture(scope="session")
def conformance_suite(pytestconfig):
    from agnostic_rt.conformance.suite import Suite

    suite = Suite(_config(pytestconfig))
    pytestconfig._agnostic_conformance_suite = suite
    yield suite
    write_report(pytestconfig)


def _run_case(suite, tier: str, target: str, case: tuple) -> list:
    import torch

    from agnostic_rt.conformance import kernels, ops
    from agnostic_rt.conformance.runs import available_runs

    before = len(suite.report.results)
    if tier == "op":
        run = available_runs([target])[0]
        db = ops.load_op_db()
        limit = ops.QUICK_MAX_SAMPLES if suite.config.level == "quick" else ops.FULL_MAX_SAMPLES
        for r in ops.check_op(db[case[0]], ops.OpCase(*case), run, max_samples=limit):
            suite.add(r)
        torch._dynamo.reset()
    elif tier == "model":
        suite.add(suite.check_model_case(available_runs([target])[0], *case))
    elif tier == "kernel":
        suite.add(kernels.kernel_check(target))
    else:
        suite.run_migration(available_runs(None))
    return suite.report.results[before:]


def test_conformance(conformance_case, conformance_suite):
    tier, target, case = conformance_case
    results = _run_case(conformance_suite, tier, target, case)
    bad = [r for r in results if r.unexpected]
    if bad:
        pytest.fail("\n".join(f"{r.status.upper()} {r.key} on {r.target}: {r.sample} {r.message}"
                              for r in bad), pytrace=False)
    xfails = [r for r in results if r.status == "xfail"]
    if xfails:
        pytest.xfail("; ".join(f"{r.key}: {r.message[:200]}" for r in xfails))
    if results and all(r.status == "skip" for r in results):
        pytest.skip("; ".join(r.message for r in results)[:300])
