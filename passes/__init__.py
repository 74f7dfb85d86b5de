"""Graph optimisation: the e-graph, rewrite rules, analyses, cost models, extraction, partitioning."""

from __future__ import annotations

import logging

import torch.fx as fx

from agnostic_rt.passes.partitioner import Group, partition
from agnostic_rt.targets import Target

log = logging.getLogger("agnostic_rt.passes")

__all__ = ["optimize", "rewrite_before_autograd", "partition", "Group"]


def optimize(gm: fx.GraphModule, target: Target, numerics: str = "strict", dump=None) -> fx.GraphModule:
    """FX -> e-graph -> saturate -> extract by ``target``'s cost model -> FX.

    Placeholders and outputs (count, order, values) are preserved, so the tensors a forward graph
    saves for its backward stay intact. Any failure inside the optimiser logs a warning and returns
    ``gm`` unchanged: the optimiser never breaks a model. The returned graph's
    ``meta["agnostic_optimize"]`` holds the run's OptimizeReport (estimated cost before and after).
    """
    from .optimizer import all_targets, optimize_graph

    def run() -> fx.GraphModule:
        report_targets = all_targets() if dump is not None and getattr(dump, "enabled", False) else ()
        out, report = optimize_graph(gm, target, numerics, dump=dump, report_targets=report_targets)
        out.meta["agnostic_optimize"] = report
        return out

    return _never_raises("e-graph optimiser", gm, run)


def rewrite_before_autograd(gm: fx.GraphModule, example_inputs, target: Target, numerics: str = "strict"):
    """Rewrites that change what autograd differentiates (attention -> SDPA, QKV merge).

    Returns an ATen graph over the same inputs when a rewrite paid off, else ``gm`` itself; never
    raises (a failure logs a warning and returns ``gm``).
    """
    from .before_autograd import rewrite

    return _never_raises("rewrite before autograd", gm, lambda: rewrite(gm, example_inputs, target, numerics))


def _never_raises(stage: str, gm: fx.GraphModule, run) -> fx.GraphModule:
    """``run()``, or ``gm`` unchanged when it fails: an optimisation must never break a user's model."""
    from .fx_bridge import Unsupported

    try:
        return run()
    except Unsupported as e:
        log.debug("%s: graph left unchanged: %s", stage, e)
    except Exception as e:
        log.warning("%s failed (%s: %s); graph left unchanged", stage, type(e).__name__, e,
                    exc_info=log.isEnabledFor(logging.DEBUG))
    return gm
