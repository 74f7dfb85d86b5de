"""The optimiser on the graphs torch's own ops make (op_db in the conformance suite's op tier): each
test is one cause of an ``e-graph optimiser failed`` warning found there, on a small graph that
shows it. The never-raise guard keeps such graphs correct, but unoptimised and with a warning."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch

CPU = {"target": "cpu", "eager_fallback": False}
H100_INTERPRETED = {"target": "h100", "interpret": True}


def _compile_and_run(fn, *args, options: dict, caplog: pytest.LogCaptureFixture):
    """``fn`` compiled with backend="agnostic" and run once; returns (result, the optimiser's warnings)."""
    with caplog.at_level(logging.WARNING, logger="agnostic_rt.passes"):
        out = torch.compile(fn, backend="agnostic", options=options)(*args)
    warnings = [r.getMessage() for r in caplog.records if r.name == "agnostic_rt.passes" and r.levelno >= logging.WARNING]
    return out, warnings


def test_tensor_constant_loads_inside_aot_autograds_fake_mode(caplog):
    # masked.sum and friends: torch.tensor(0.0) is a get_attr constant, whose value the loader reads
    # with .item() -- while aot_autograd has its FakeTensorMode active around the compiler.
    def fn(x, mask):
        return torch.where(mask, x, torch.tensor(0.0)).sum()

    x, mask = torch.randn(8), torch.rand(8) > 0.5
    out, warnings = _compile_and_run(fn, x, mask, options=CPU, caplog=caplog)
    assert warnings == []
    torch.testing.assert_close(out, fn(x, mask))


def test_constant_folding_runs_on_real_values_inside_aot_autograds_fake_mode(caplog):
    # lerp, logspace, quantile: a pointwise op over a scalar `full` is folded by running it on real
    # scalars; under the caller's fake mode those were fake, and .item() raised DataDependentOutput.
    def fn(x):
        w = torch.full((), 0.4)
        return x * torch.where(w.abs() >= 0.5, w - 1, w)

    x = torch.randn(4, 4)
    out, warnings = _compile_and_run(fn, x, options=CPU, caplog=caplog)
    assert warnings == []
    torch.testing.assert_close(out, fn(x))


def test_data_dependent_sizes_are_costed_without_a_deprecation_warning(caplog):
    # nonzero's row count is an unbacked size with no hint: the cost model prices it at a default
    # (torch 2.13's optimization_hint), not through the deprecated ShapeEnv.size_hint and its warning.
    # config.patch, not monkeypatch: pytest >= 9.2 restores a module attribute missing from its
    # __dict__ by deleting it, which hides a torch config entry for every later test.
    def fn(x):
        return torch.nonzero(x > 0).float() * 2 + 1

    x = torch.randn(4, 4)
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out, logged = _compile_and_run(fn, x, options=CPU, caplog=caplog)
    assert logged == []
    assert [str(w.message) for w in caught if "passes" in w.filename] == []
    torch.testing.assert_close(out, fn(x))


def test_data_dependent_calls_stay_apart_as_barriers():
    # Two nonzero(x > 0) are equal, but each binds its own unbacked row count (u0, u1) that its users'
    # sizes and runtime asserts name: merging them would leave u1 computed by nobody.
    from torch.fx.experimental.proxy_tensor import make_fx

    from agnostic_rt.passes.egraph import Barrier
    from agnostic_rt.passes.fx_bridge import FxEGraph

    def fn(x):
        return torch.nonzero(x > 0).float() * 2, torch.nonzero(x > 0).float() + 1

    gm = make_fx(fn, tracing_mode="symbolic")(torch.randn(4, 4))
    fg = FxEGraph(gm)
    calls = [n for n in gm.graph.nodes if n.target is torch.ops.aten.nonzero.default]
    classes = {fg.eg.find(fg.node_class[n]) for n in calls}
    assert len(calls) == 2 and len(classes) == 2
    assert all(isinstance(fg.fx_enode[n].op, Barrier) for n in calls)
