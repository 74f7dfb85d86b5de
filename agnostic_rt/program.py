"""The compiled program: one straight-line Python function that runs groups over buffers in order.

Built as an FX graph and turned into Python source once, so a call does no interpretation,
no re-tracing and no per-node dict lookups: ATen groups are inlined as direct calls, generated
kernels appear as calls to their launchers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import networkx as nx
import torch.fx as fx

log = logging.getLogger("agnostic_rt.program")


@dataclass
class ProgramStats:
    kernels: int = 0  # groups that run as generated kernels
    library: int = 0  # library calls (matmul, conv, attention) through ATen
    aten: int = 0  # nodes run node by node through ATen
    kernel_nodes: int = 0  # graph nodes covered by generated kernels
    fallback_ops: dict[str, int] = field(default_factory=dict)
    coverage: dict = field(default_factory=dict)  # passes.partition.coverage(): generated / views / fallback


def build_program(gm: fx.GraphModule, groups: Sequence, kernels: dict[int, Callable]) -> fx.GraphModule:
    """Rewrite ``gm`` so each group in ``kernels`` (group index -> launcher) runs as one call.

    Groups without a launcher keep their nodes. Units (a kernel call, or one kept node) are emitted
    in a topological order of the contracted graph, ties broken by original position (a kernel at
    its last node's place), so a group need not be convex in graph order: a node between its first
    and last member that reads a group output simply runs after the kernel.
    """
    from agnostic_rt.passes.partition import coverage

    stats = ProgramStats()
    owner: dict[fx.Node, int] = {}
    for gi, group in enumerate(groups):
        if gi in kernels:
            for n in group.nodes:
                owner[n] = gi
            stats.kernels += 1
            stats.kernel_nodes += len(group.nodes)
        elif group.kind == "library":
            stats.library += 1
        else:
            stats.aten += len(group.nodes)
    stats.coverage = coverage(list(groups), set(kernels))
    stats.fallback_ops = dict(stats.coverage["fallback_ops"])
    if not kernels:
        gm.meta["agnostic_stats"] = stats
        return gm

    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    unit_of = {n: ("k", owner[n]) if n in owner else ("n", n) for n in gm.graph.nodes}
    dag = nx.DiGraph()
    pos: dict = {}
    for n in gm.graph.nodes:
        u = unit_of[n]
        pos[u] = max(pos.get(u, -1), order[n])
        dag.add_node(u)
        for i in n.all_input_nodes:
            if unit_of[i] != u:
                dag.add_edge(unit_of[i], u)
    # Placeholders first and the output last, whatever the tie-breaking does.
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            pos[unit_of[n]] = -1_000_000 + order[n]
        elif n.op == "output":
            pos[unit_of[n]] = 10**12

    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for u in nx.lexicographical_topological_sort(dag, key=lambda u: pos[u]):
        if u[0] == "n":
            node = u[1]
            env[node] = graph.node_copy(node, lambda n: env[n])
            continue
        group = groups[u[1]]
        call = graph.call_function(kernels[u[1]], tuple(env[i] for i in group.inputs))
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
