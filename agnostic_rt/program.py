"""The compiled program: one straight-line Python function that runs groups over buffers in order.

Built as an FX graph and turned into Python source once, so a call does no interpretation,
no re-tracing and no per-node dict lookups: ATen groups are inlined as direct calls, generated
kernels appear as calls to their launchers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch.fx as fx

log = logging.getLogger("agnostic_rt.program")


@dataclass
class ProgramStats:
    kernels: int = 0  # groups that run as generated kernels
    library: int = 0  # library calls (matmul, conv, attention) through ATen
    aten: int = 0  # nodes run node by node through ATen
    kernel_nodes: int = 0  # graph nodes covered by generated kernels
    fallback_ops: dict[str, int] = field(default_factory=dict)


def build_program(gm: fx.GraphModule, groups: Sequence, kernels: dict[int, Callable]) -> fx.GraphModule:
    """Rewrite ``gm`` so each group in ``kernels`` (group index -> launcher) runs as one call.

    Groups without a launcher keep their nodes. A kernel call is placed where the group's last
    node was; the partitioner guarantees nothing between a group's first and last node reads a
    group output (its groups are convex in graph order).
    """
    stats = ProgramStats()
    owner: dict[fx.Node, int] = {}
    for gi, group in enumerate(groups):
        for n in group.nodes:
            owner[n] = gi
        if gi in kernels:
            stats.kernels += 1
            stats.kernel_nodes += len(group.nodes)
        elif group.kind == "library":
            stats.library += 1
        else:
            stats.aten += len(group.nodes)
    if not kernels:
        gm.meta["agnostic_stats"] = stats
        return gm

    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    last_of = {gi: groups[gi].nodes[-1] for gi in kernels}
    for node in gm.graph.nodes:
        gi = owner.get(node)
        if gi is None or gi not in kernels:
            env[node] = graph.node_copy(node, lambda n: env[n])
            continue
        if node is not last_of[gi]:
            continue
        group = groups[gi]
        call = graph.call_function(kernels[gi], tuple(env[i] for i in group.inputs))
        for k, out in enumerate(group.outputs):
            env[out] = graph.call_function(_getitem, (call, k))
            env[out].meta = dict(out.meta)
    out = fx.GraphModule(gm, graph)
    out.meta["agnostic_stats"] = stats
    return out


def _getitem(seq, i):
    return seq[i]


_getitem.__module__ = "operator"  # prints as a plain subscript in the generated source


def boxed(program: fx.GraphModule) -> Callable:
    """aot_autograd's boxed calling convention: the callee takes (and may clear) the arg list."""
    from torch._functorch.aot_autograd import make_boxed_func

    return make_boxed_func(program.forward)


def count_generated(program: fx.GraphModule) -> ProgramStats:
    return program.meta.get("agnostic_stats", ProgramStats())


__all__ = ["build_program", "boxed", "ProgramStats", "count_generated"]
