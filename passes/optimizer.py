"""The optimiser: FX -> e-graph -> saturate -> extract by the target's cost model -> FX.

:func:`optimize_graph` is the one flow both entry points use (passes.optimize after aot_autograd,
passes.rewrite_before_autograd before it). The result is kept only when the cost model says it is
cheaper than the graph that came in, so the optimiser never makes a graph worse by its own measure.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import networkx as nx
import torch.fx as fx

from agnostic_rt.targets import KNOWN_TARGETS, Target, host_cpu_target

from .cost import CostModel
from .egraph import Barrier, ENode
from .extract import Extraction, Problem, computable, dag_cost, greedy, ilp, is_acyclic
from .fx_bridge import FxEGraph, Leaf, OutputOf
from .pattern import Rule
from .rules import rules_for
from .runner import Runner, RunReport

log = logging.getLogger("agnostic_rt.optimize")


@dataclass
class Limits:
    """Bounds on saturation and on the exact extractor.

    Nodes and iterations are what bound a normal run, so a graph compiles the same on every machine.
    The time limit is only a safety net far above any zoo graph's saturation (measured: at most 0.2 s
    on the dev machine, 0.8 s inside the test suite): a wall-clock stop makes the result depend on
    the machine's speed and load, which once cost GPT-2 its attention rewrite on a slow CI run.
    """

    node_limit: int = 20_000
    iter_limit: int = 10
    time_limit: float = 10.0
    ilp_max_nodes: int = 3_000  # the exact extractor runs on e-graphs up to this size
    # Branch-and-bound nodes bound the exact extractor (every zoo and gym e-graph it runs on is
    # solved at the root: 1 node); its clock is a safety net, like time_limit.
    ilp_node_limit: int = 200
    ilp_time_limit: float = 20.0
    exact: str = "auto"  # "auto" (ILP when a multi-output rule fired), "always", "never"


@dataclass
class OptimizeReport:
    nodes_before: int = 0
    nodes_after: int = 0
    egraph_nodes: int = 0
    egraph_classes: int = 0
    run: RunReport | None = None
    extraction: str = ""
    cost_before: float = 0.0
    cost_after: float = 0.0
    changed: bool = False
    seconds: dict = field(default_factory=dict)
    per_target: dict = field(default_factory=dict)  # target -> {"before": s, "after": s}

    def summary(self) -> dict:
        return {"nodes_before": self.nodes_before, "nodes_after": self.nodes_after,
                "egraph_nodes": self.egraph_nodes, "egraph_classes": self.egraph_classes,
                "extraction": self.extraction, "cost_before_s": self.cost_before, "cost_after_s": self.cost_after,
                "changed": self.changed, "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
                "per_target": self.per_target, "run": self.run.summary() if self.run else None}


# Rules whose wins are multi-output (one node serving several classes): greedy cannot see them.
_MULTI_OUTPUT_RULES = frozenset({"merge-shared-input-addmm"})


def build_problem(fg: FxEGraph, cost: Callable[[int, ENode], float]) -> tuple[Problem, dict]:
    """The extraction problem of an e-graph, with pinned classes restricted to their pinned node.

    An output whose pinned node can no longer be computed (a rule made it read its own class) gets
    its own problem class, :class:`OutputOf`, and its e-class is freed of the pin.
    """
    eg = fg.eg
    pins = fg.pinned_roots()

    def entries(cid, nodes):
        return [(n, cost(cid, n), tuple(eg.find(c) for c in n.children)) for n in nodes]

    classes: dict[object, list] = {cid: entries(cid, [pins[cid]] if cid in pins else cls.nodes)
                                   for cid, cls in eg.classes.items()}
    roots = list(dict.fromkeys(eg.find(r) for r in fg.root_sequence()))
    problem = Problem(classes, roots)
    outputs = {eg.find(fg.node_class[n]) for n in fg.output_fx_nodes}
    outputs = {c for c in outputs if not isinstance(pins[c].op, (Barrier, Leaf))}
    while stuck := _self_dependent(problem, outputs):
        log.debug("outputs whose top node reads their own class, extracted apart: %s", sorted(stuck))
        for cid in stuck:
            classes[OutputOf(cid)] = classes[cid]
            classes[cid] = entries(cid, eg[cid].nodes)
        outputs -= stuck
        problem.roots = [OutputOf(r) if r in stuck else r for r in problem.roots]
    return problem, pins


def _self_dependent(problem: Problem, candidates: set[int]) -> set[int]:
    """The candidate classes that cannot be computed because every node needs the class itself.

    Among the classes no term computes, those on a cycle; the others wait on something else (often
    one of these), and freeing them would only duplicate their pinned node.
    """
    ok = computable(problem)
    stuck = [c for c in problem.classes if c not in ok]
    if not candidates.intersection(stuck):
        return set()
    graph = nx.DiGraph()
    for c in stuck:
        graph.add_edges_from((c, k) for _, _, kids in problem.classes[c] for k in kids if k not in ok)
    cyclic = set()
    for scc in nx.strongly_connected_components(graph):
        if len(scc) > 1 or any(graph.has_edge(c, c) for c in scc):
            cyclic |= scc
    return cyclic & candidates


def extract(fg: FxEGraph, cost: Callable[[int, ENode], float], limits: Limits,
            multi_output: bool) -> tuple[Problem, Extraction]:
    problem, _ = build_problem(fg, cost)
    ext = greedy(problem)
    want_exact = limits.exact == "always" or (limits.exact == "auto" and multi_output)
    if want_exact and problem.num_nodes <= limits.ilp_max_nodes:
        ext = ilp(problem, time_limit=limits.ilp_time_limit, warm=ext, node_limit=limits.ilp_node_limit)
    if not is_acyclic(problem, ext.choice):
        raise RuntimeError("extraction produced a cycle")
    return problem, ext


def original_cost(fg: FxEGraph, cost: Callable[[int, ENode], float]) -> float:
    """The cost of the graph as it came in (each distinct node once)."""
    eg = fg.eg
    total = 0.0
    for enode in dict.fromkeys(eg.canonical(n) for n in fg.original_nodes):
        total += cost(eg.lookup(enode), enode)
    return total


def optimize_graph(gm: fx.GraphModule, target: Target, numerics: str = "strict", *,
                   rules: list[Rule] | None = None, params: set[str] | None = None,
                   limits: Limits | None = None, dump=None,
                   report_targets: tuple[Target, ...] = ()) -> tuple[fx.GraphModule, OptimizeReport]:
    """Optimise one ATen graph for ``target``; returns the graph to use and a report.

    >>> gm2, report = optimize_graph(gm, get_target("h100"))  # doctest: +SKIP
    """
    limits = limits or Limits()
    report = OptimizeReport(nodes_before=len(gm.graph.nodes))
    t0 = time.perf_counter()
    fg = FxEGraph(gm, params=params)
    t1 = time.perf_counter()
    run = Runner(fg.eg, rules if rules is not None else rules_for(numerics), node_limit=limits.node_limit,
                 iter_limit=limits.iter_limit, time_limit=limits.time_limit).run()
    t2 = time.perf_counter()
    model = CostModel(target)
    cache: dict[tuple[int, ENode], float] = {}

    def cost(cid: int, node: ENode) -> float:
        key = (fg.eg.find(cid), node)
        if key not in cache:
            cache[key] = model.node_cost(fg.eg, cid, node)
        return cache[key]

    multi = any(run.fired.get(r) for r in _MULTI_OUTPUT_RULES)
    problem, ext = extract(fg, cost, limits, multi)
    t3 = time.perf_counter()
    report.run, report.extraction = run, ext.method
    report.egraph_nodes, report.egraph_classes = fg.eg.num_nodes, fg.eg.num_classes
    report.cost_before, report.cost_after = original_cost(fg, cost), ext.cost
    out = gm
    # Keep the input unless the gain is real: more than a nanosecond and a millionth of the cost.
    if report.cost_before - report.cost_after > max(1e-9, 1e-6 * report.cost_before):
        choice = {c: problem.classes[c][i][0] for c, i in ext.choice.items()}
        out = fg.to_fx(choice)
        out.graph.lint()
        out.recompile()
        report.changed = True
    t4 = time.perf_counter()
    report.nodes_after = len(out.graph.nodes)
    report.seconds = {"load": t1 - t0, "saturate": t2 - t1, "extract": t3 - t2, "emit": t4 - t3, "total": t4 - t0}
    for other in report_targets:
        other_model = CostModel(other)

        def other_cost(cid, node, _m=other_model):
            return _m.node_cost(fg.eg, cid, node)

        other_problem, other_ext = extract(fg, other_cost, limits, multi)
        report.per_target[other.name] = {"before": original_cost(fg, other_cost), "after": other_ext.cost,
                                         "check": dag_cost(other_problem, other_ext.choice)}
    if dump is not None and getattr(dump, "enabled", False):
        dump.json("egraph_report.json", report.summary())
        dump.text("rules_fired.txt", "\n".join(f"{n}\t{c}" for n, c in run.fired.most_common()) + "\n")
    log.info("optimised %d -> %d nodes for %s: e-graph %d nodes/%d classes, %s after %d iterations, "
             "cost %.3g -> %.3g s (%s), %.3fs", report.nodes_before, report.nodes_after, target.name,
             report.egraph_nodes, report.egraph_classes, run.stop_reason, run.iterations, report.cost_before,
             report.cost_after, ext.method, report.seconds["total"])
    return out, report


def all_targets() -> tuple[Target, ...]:
    return (host_cpu_target(), *KNOWN_TARGETS.values())
