"""Graph optimisation: the e-graph, rewrite rules, analyses, cost models, extraction, partitioning."""

from __future__ import annotations

import torch.fx as fx

from agnostic_rt.targets import Target

from .partition import Group, partition

__all__ = ["optimize", "rewrite_before_autograd", "partition", "Group"]


def optimize(gm: fx.GraphModule, target: Target, numerics: str = "strict", dump=None) -> fx.GraphModule:
    """FX -> e-graph -> saturate -> extract by ``target``'s cost model -> FX.

    Until the e-graph lands this returns ``gm`` unchanged.
    """
    return gm


def rewrite_before_autograd(gm: fx.GraphModule, example_inputs, target: Target, numerics: str = "strict"):
    """Rewrites that change what autograd differentiates (attention -> SDPA, QKV merge).

    Until the e-graph lands this returns ``gm`` unchanged.
    """
    return gm
