"""Extraction: one e-node per needed e-class, minimising DAG cost (a shared class is paid once).

Extractors over one plain problem (:class:`Problem`: classes -> candidate nodes with a cost and
child classes), so they run on our e-graphs and on extraction-gym's serialized e-graphs alike:

* :func:`greedy` -- bottom-up, each class takes the node with the least tree cost (egg's extractor,
  driven by a worklist). Fast; blind to sharing, so it misses multi-output wins such as merged QKV.
* :func:`ilp` -- exact DAG cost through ``scipy.optimize.milp`` (HiGHS): a binary per node, "a chosen
  node needs one node in each child class", and order variables that forbid cycles. Acyclicity
  constraints are only needed on edges inside a strongly connected component of the class graph.
* :func:`neighbourhood` -- large-neighbourhood search: the exact ILP on small windows of the e-graph
  around the current solution, every other class held to its current node. On e-graphs too large for
  the whole ILP (TENSAT's BERT: its LP relaxation alone takes longer than the whole search) it finds
  the multi-output sharing greedy cannot see. Each accepted step lowers the DAG cost, so the result
  is never worse than its start.
* :func:`search` -- the entry point for near-optimal extraction: the whole ILP on small e-graphs,
  greedy then neighbourhood search on large ones.

Every result is checked acyclic (:func:`is_acyclic`) before it is returned.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import networkx as nx
import numpy as np

log = logging.getLogger("agnostic_rt.extract")


@dataclass
class Problem:
    """``classes[c]`` lists candidate nodes ``(key, cost, children)``; ``roots`` must be computed."""

    classes: dict[object, list[tuple[object, float, tuple]]]
    roots: list[object]

    @property
    def num_nodes(self) -> int:
        return sum(len(v) for v in self.classes.values())


@dataclass
class Extraction:
    choice: dict[object, int]  # class -> index of the chosen node in problem.classes[class]
    cost: float  # DAG cost
    method: str
    seconds: float
    optimal: bool = False
    notes: dict = field(default_factory=dict)


_EPS = 1e-9


def load_serialized(path: str) -> Problem:
    """An e-graph in egraph-serialize JSON (extraction-gym): nodes {op, cost, eclass, children}."""
    import json

    with open(path) as f:
        data = json.load(f)
    nodes = data["nodes"]
    classes: dict[object, list] = {}
    for key, node in nodes.items():
        kids = tuple(nodes[ch]["eclass"] for ch in node["children"])
        classes.setdefault(node["eclass"], []).append((key, float(node["cost"]), kids))
    return Problem(classes, list(data["root_eclasses"]))


def reachable(problem: Problem, choice: dict[object, int]) -> list[object]:
    seen, stack, order = set(), list(problem.roots), []
    while stack:
        c = stack.pop()
        if c in seen:
            continue
        seen.add(c)
        order.append(c)
        stack.extend(problem.classes[c][choice[c]][2])
    return order


def dag_cost(problem: Problem, choice: dict[object, int]) -> float:
    """Cost of the extracted DAG: each class reachable from the roots counted once."""
    return sum(problem.classes[c][choice[c]][1] for c in reachable(problem, choice))


def is_acyclic(problem: Problem, choice: dict[object, int]) -> bool:
    state: dict[object, int] = {}  # 1 = on the stack, 2 = done
    for root in problem.roots:
        stack = [(root, False)]
        while stack:
            c, leaving = stack.pop()
            if leaving:
                state[c] = 2
                continue
            if state.get(c) == 2:
                continue
            if state.get(c) == 1:
                return False
            state[c] = 1
            stack.append((c, True))
            for k in problem.classes[c][choice[c]][2]:
                if state.get(k) == 1:
                    return False
                if state.get(k) != 2:
                    stack.append((k, False))
    return True


def computable(problem: Problem) -> set[object]:
    """The classes some finite, acyclic term can compute (a fixpoint from the leaves up).

    A class outside it has every node depending, directly or not, on the class itself or on an empty
    class: no extractor can compute it.
    """
    waiting: dict[tuple[object, int], int] = {}  # node -> child classes not yet known computable
    users: dict[object, list[tuple[object, int]]] = {}
    done: set[object] = set()
    work: list[object] = []
    for c, nodes in problem.classes.items():
        for i, (_, _, kids) in enumerate(nodes):
            kids = set(kids)
            if c in kids:
                continue
            if not kids and c not in done:
                done.add(c)
                work.append(c)
            waiting[(c, i)] = len(kids)
            for k in kids:
                users.setdefault(k, []).append((c, i))
    while work:
        k = work.pop()
        for c, i in users.get(k, ()):
            waiting[(c, i)] -= 1
            if waiting[(c, i)] == 0 and c not in done:
                done.add(c)
                work.append(c)
    return done


def greedy(problem: Problem) -> Extraction:
    """Least tree cost per class, computed with a worklist from the leaves up."""
    start = time.perf_counter()
    parents: dict[object, list[tuple[object, int]]] = {c: [] for c in problem.classes}
    best: dict[object, float] = {}
    choice: dict[object, int] = {}
    heap: list[tuple[float, int, object, int]] = []
    tie = 0
    # A tiny cost on every node keeps tree costs strictly increasing along edges (zero-cost nodes
    # exist: views, TENSAT's no-ops), which is what makes the greedy choice acyclic.
    eps = _EPS
    for c, nodes in problem.classes.items():
        for i, (_, cost, kids) in enumerate(nodes):
            if c in kids:
                continue  # a node that needs its own class can never be chosen first
            for k in set(kids):
                parents[k].append((c, i))
            if not kids:
                heap.append((cost + eps, tie, c, i))
                tie += 1
    heapq.heapify(heap)
    # Dijkstra-like: a class is settled when popped with its least tree cost (costs are positive).
    while heap:
        cost, _, c, i = heapq.heappop(heap)
        if c in best:
            continue
        best[c] = cost
        choice[c] = i
        for pc, pi in parents[c]:
            if pc in best:
                continue
            _, pcost, pkids = problem.classes[pc][pi]
            kids = set(pkids)
            if all(k in best for k in kids):
                heapq.heappush(heap, (pcost + eps + sum(best[k] for k in kids), tie, pc, pi))
                tie += 1
    missing = [r for r in problem.roots if r not in choice]
    if missing:
        raise ValueError(f"greedy extraction: no finite-cost term for root classes {missing[:5]}")
    ext = Extraction(choice, 0.0, "greedy", 0.0, notes={"tree_cost": best})
    ext.cost = dag_cost(problem, choice)
    ext.seconds = time.perf_counter() - start
    return ext


def prune(problem: Problem) -> Problem:
    """Keep classes reachable from the roots and nodes that can be part of a finite extraction."""
    classes = {c: [(i, n) for i, n in enumerate(nodes) if c not in n[2]]
               for c, nodes in problem.classes.items()}
    # A node with an empty child class can never be chosen; emptying a class can doom its parents'
    # nodes in turn, so propagate through a parent index instead of re-scanning everything.
    users: dict[object, list[object]] = {}
    for c, nodes in classes.items():
        for _, n in nodes:
            for k in n[2]:
                users.setdefault(k, []).append(c)
    work = [c for c, nodes in classes.items() if not nodes]
    while work:
        empty = work.pop()
        for c in users.get(empty, ()):
            nodes = classes[c]
            if not nodes:
                continue
            kept = [(i, n) for i, n in nodes if all(classes.get(k) for k in n[2])]
            if len(kept) != len(nodes):
                classes[c] = kept
                if not kept:
                    work.append(c)
    seen, stack = set(), list(problem.roots)
    while stack:
        c = stack.pop()
        if c in seen:
            continue
        seen.add(c)
        for _, n in classes[c]:
            stack.extend(n[2])
    kept = {c: classes[c] for c in seen}
    pruned = Problem({c: [n for _, n in nodes] for c, nodes in kept.items()}, list(problem.roots))
    pruned.index_map = {c: [i for i, _ in nodes] for c, nodes in kept.items()}  # pruned -> original
    return pruned


def ilp(problem: Problem, time_limit: float = 10.0, warm: Extraction | None = None,
        node_limit: int | None = None, cutoff: float | None = None) -> Extraction:
    """Exact DAG-cost extraction by integer programming (HiGHS). Stopped by ``node_limit``
    (branch-and-bound nodes: the same answer on every machine) or ``time_limit`` (a safety net: a
    warning says the machine's speed decided), the best feasible solution found (marked not
    optimal), or ``warm`` when HiGHS found none better."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_matrix

    start = time.perf_counter()
    p = prune(problem)
    cls_list = list(p.classes)
    cidx = {c: i for i, c in enumerate(cls_list)}
    node_of: list[tuple[object, int]] = [(c, i) for c in cls_list for i in range(len(p.classes[c]))]
    nidx = {cn: j for j, cn in enumerate(node_of)}
    n_nodes, n_cls = len(node_of), len(cls_list)

    graph = nx.DiGraph()
    graph.add_nodes_from(range(n_cls))
    for c in cls_list:
        for _, _, kids in p.classes[c]:
            graph.add_edges_from((cidx[c], cidx[k]) for k in kids)
    comp = {}
    for k, scc in enumerate(nx.strongly_connected_components(graph)):
        for v in scc:
            comp[v] = k
    cyclic_cls = sorted({v for v in range(n_cls) if any(comp[u] == comp[v] for u in graph.successors(v))})
    tpos = {v: n_nodes + i for i, v in enumerate(cyclic_cls)}
    n_vars = n_nodes + len(tpos)
    big = len(tpos) + 1

    rows, cols, vals, lo, hi = [], [], [], [], []

    def constraint(entries, lower, upper):
        r = len(lo)
        for col, v in entries:
            rows.append(r)
            cols.append(col)
            vals.append(v)
        lo.append(lower)
        hi.append(upper)

    class_cols = {c: [(nidx[(c, i)], 1.0) for i in range(len(p.classes[c]))] for c in cls_list}
    for c in cls_list:  # at most one node per class
        constraint(class_cols[c], 0.0, 1.0)
    for r in set(p.roots):
        constraint(class_cols[r], 1.0, 1.0)
    for c in cls_list:
        for i, (_, _, kids) in enumerate(p.classes[c]):
            j = nidx[(c, i)]
            for k in set(kids):
                # chosen node -> some node of the child class chosen
                constraint(class_cols[k] + [(j, -1.0)], 0.0, np.inf)
                a, b = cidx[c], cidx[k]
                if a in tpos and b in tpos and comp[a] == comp[b]:
                    # chosen node -> order(c) >= order(child) + 1, so no cycle can be chosen
                    constraint([(tpos[a], 1.0), (tpos[b], -1.0), (j, -float(big))], 1.0 - big, np.inf)

    cost = np.zeros(n_vars)
    for j, (c, i) in enumerate(node_of):
        cost[j] = p.classes[c][i][1]
    if cutoff is not None:  # a known solution's cost bounds the search (scipy's HiGHS takes no MIP start)
        constraint([(j, cost[j]) for j in range(n_nodes) if cost[j]], -np.inf, cutoff + _EPS)
    integrality = np.zeros(n_vars)
    integrality[:n_nodes] = 1
    lb = np.zeros(n_vars)
    ub = np.concatenate([np.ones(n_nodes), np.full(len(tpos), float(big))])
    matrix = coo_matrix((vals, (rows, cols)), shape=(len(lo), n_vars)).tocsr()
    options = {"time_limit": time_limit, "disp": False}
    if node_limit is not None:
        options["node_limit"] = node_limit
    solve_start = time.perf_counter()
    res = milp(cost, constraints=LinearConstraint(matrix, lo, hi), integrality=integrality,
               bounds=Bounds(lb, ub), options=options)
    if res.status == 1 and time.perf_counter() - solve_start >= time_limit:
        log.warning("ILP extraction stopped on its %.1f s clock (%d variables): the extraction depends on "
                    "this machine's speed; a node limit should bound it", time_limit, n_vars)
    notes = {"variables": n_vars, "constraints": len(lo), "cyclic_classes": len(tpos), "status": res.status,
             "mip_nodes": getattr(res, "mip_node_count", None),
             "message": res.message}
    if res.x is None:
        if warm is None:
            raise RuntimeError(f"ILP extraction found no solution: {res.message}")
        log.info("ILP extraction found no solution in %.1fs (%s); keeping %s", time_limit, res.message,
                 warm.method)
        return Extraction(dict(warm.choice), warm.cost, warm.method + "(ilp-timeout)",
                          time.perf_counter() - start, notes=notes)
    choice: dict[object, int] = {}
    for j, (c, i) in enumerate(node_of):
        if res.x[j] > 0.5:
            choice[c] = p.index_map[c][i]
    # Classes not needed by the chosen DAG keep any valid node (they are unreachable).
    for c in problem.classes:
        if c not in choice and warm is not None and c in warm.choice:
            choice[c] = warm.choice[c]
    if not is_acyclic(problem, choice):
        raise RuntimeError("ILP extraction produced a cycle (a bug in the formulation)")
    ext = Extraction(choice, dag_cost(problem, choice), "ilp", time.perf_counter() - start,
                     optimal=res.status == 0, notes=notes)
    if warm is not None and warm.cost < ext.cost:  # a timed-out ILP may be worse than greedy
        return Extraction(dict(warm.choice), warm.cost, warm.method, ext.seconds, notes=notes)
    return ext


def restrict(problem: Problem,
             allowed: Callable[[object], list[int]]) -> tuple[Problem, dict[object, list[int]]]:
    """The sub-problem where class ``c`` may only use nodes ``allowed(c)``, cut to the classes those
    nodes reach from the roots; with, per class, the original index of each node kept."""
    classes: dict[object, list] = {}
    back: dict[object, list[int]] = {}
    stack = list(problem.roots)
    while stack:
        c = stack.pop()
        if c in classes:
            continue
        idx = allowed(c)
        back[c] = idx
        classes[c] = [problem.classes[c][i] for i in idx]
        for i in idx:
            stack.extend(problem.classes[c][i][2])
    return Problem(classes, list(problem.roots)), back


def _window(problem: Problem, choice: dict[object, int], seed: object, fixed: set[object],
            users: dict[object, set[object]], radius: int, max_readers: int) -> set[object]:
    """Classes free to change around ``seed``: the seed, the solution's classes that read it, those
    that read one of its inputs (siblings: the users of one input are what a merged node can serve;
    inputs read by more than ``max_readers`` classes, such as constants, are not followed), and the
    classes outside the solution their nodes reach within ``radius`` steps (the new nodes a merge
    needs; with ``fixed`` empty, classes of the solution too). Every class outside keeps its node."""
    win = {seed} | users.get(seed, set())
    for k in problem.classes[seed][choice[seed]][2]:
        if len(users.get(k, ())) <= max_readers:
            win |= users.get(k, set())
    frontier = list(win)
    for _ in range(radius):
        nxt = []
        for c in frontier:
            for _, _, kids in problem.classes[c]:
                for k in kids:
                    if k not in win and k not in fixed:
                        win.add(k)
                        nxt.append(k)
        frontier = nxt
    return win


def neighbourhood(problem: Problem, start: Extraction, *, radius: int = 6, max_window: int | None = None,
                  max_readers: int = 6, grow_through_solution: bool = False, deadline: float | None = None,
                  ilp_node_limit: int = 200, ilp_time_limit: float = 3.0) -> Extraction:
    """Large-neighbourhood search from ``start``: for each class the solution pays for (dearest
    first), solve the exact ILP over its window (:func:`_window`) with every other class held to its
    current node, and keep the answer when it lowers the DAG cost. Rounds repeat until one improves
    nothing; a later round solves only windows holding a class the previous round changed, and no
    window twice (heuristics: the fixed surroundings of a skipped window may have changed).
    ``deadline`` (a ``time.perf_counter()`` value) stops the search between windows with the best
    solution so far."""
    t0 = time.perf_counter()
    cur = Extraction(dict(start.choice), start.cost, start.method, 0.0)
    tried: set[frozenset] = set()
    windows = improved_windows = 0
    improved = True
    dirty: set[object] | None = None  # classes whose node the previous round changed
    while improved:
        improved = False
        before = dict(cur.choice)
        used = reachable(problem, cur.choice)
        used_set = set(used)
        users: dict[object, set[object]] = {}
        for c in used:
            for k in problem.classes[c][cur.choice[c]][2]:
                users.setdefault(k, set()).add(c)
        seeds = sorted((c for c in used if problem.classes[c][cur.choice[c]][1] > 0),
                       key=lambda c: -problem.classes[c][cur.choice[c]][1])
        covered: set[object] = set()  # classes some window of this round was free to change
        for seed in seeds:
            if deadline is not None and time.perf_counter() > deadline:
                break
            if seed not in used_set or seed in covered:  # gone from the solution, or already searched
                continue
            fixed = set() if grow_through_solution else used_set
            win = _window(problem, cur.choice, seed, fixed, users, radius, max_readers)
            key = frozenset(win)
            if key in tried or (max_window is not None and len(win) > max_window):
                continue
            if dirty is not None and win.isdisjoint(dirty):
                continue  # nothing in it changed since the last round
            tried.add(key)
            covered |= win
            windows += 1
            sub, back = restrict(problem, lambda c, win=win, choice=cur.choice:
                                 list(range(len(problem.classes[c]))) if c in win else [choice[c]])
            try:
                e = ilp(sub, time_limit=ilp_time_limit, node_limit=ilp_node_limit, cutoff=cur.cost)
            except RuntimeError:
                continue  # no solution within the limits: keep the current one
            log.debug("window of %d classes around %s: %d ILP variables, %.2f s, DAG cost %.6g", len(win),
                      seed, e.notes["variables"], e.seconds, e.cost)
            new = dict(cur.choice)
            for c, i in e.choice.items():
                if back.get(c):
                    new[c] = back[c][i]
            cost = dag_cost(problem, new)
            if cost < cur.cost - _EPS and is_acyclic(problem, new):
                cur = Extraction(new, cost, cur.method, 0.0)
                improved_windows += 1
                improved = True  # later windows of this round start from the new solution
        dirty = {c for c, i in cur.choice.items() if before.get(c) != i}
    cur.method = f"{start.method}+lns"
    cur.seconds = time.perf_counter() - t0
    cur.notes = {"windows": windows, "improving_windows": improved_windows}
    return cur


def search(problem: Problem, time_limit: float = 8.0, slack: float = 1.0, exact_max_nodes: int = 3_000,
           ilp_node_limit: int = 200) -> Extraction:
    """Near-optimal DAG extraction for any size. Up to ``exact_max_nodes`` nodes: the whole
    :func:`ilp` from greedy. Above: greedy, then :func:`neighbourhood` twice -- over every node with
    small windows (two-way merges), then over the nodes whose least tree cost is within ``1 + slack``
    times their class's best (the candidates a DAG can profit from; the others only widen windows: on
    TENSAT's BERT they bring back the cyclic classes) with windows as large as they come (merges of
    every reader of one input). Never worse than greedy; stops between windows once ``time_limit``
    seconds have passed."""
    t0 = time.perf_counter()
    deadline = t0 + time_limit
    g = greedy(problem)
    if problem.num_nodes <= exact_max_nodes:
        e = ilp(problem, time_limit=time_limit, warm=g, node_limit=ilp_node_limit)
        e.seconds = time.perf_counter() - t0
        return e
    best = g.notes["tree_cost"]
    inf = float("inf")
    small = neighbourhood(problem, g, radius=3, max_window=64, grow_through_solution=True, deadline=deadline,
                          ilp_node_limit=ilp_node_limit)

    def near(c: object) -> list[int]:
        keep = []
        for i, (_, cost, kids) in enumerate(problem.classes[c]):
            tree = cost + _EPS + sum(best.get(k, inf) for k in set(kids)) if c not in kids else inf
            if i == small.choice.get(c) or tree <= (1 + slack) * best.get(c, inf) + _EPS:
                keep.append(i)
        return keep

    sub, back = restrict(problem, near)
    pos = {c: {i: j for j, i in enumerate(idx)} for c, idx in back.items()}
    start = Extraction({c: pos[c][i] for c, i in small.choice.items() if c in pos}, small.cost, "greedy", 0.0)
    wide = neighbourhood(sub, start, deadline=deadline, ilp_node_limit=ilp_node_limit)
    choice = dict(small.choice)
    choice.update({c: back[c][i] for c, i in wide.choice.items()})
    cost = dag_cost(problem, choice)
    if not is_acyclic(problem, choice) or cost > g.cost + _EPS:
        raise RuntimeError("neighbourhood search lost acyclicity or cost (a bug)")
    return Extraction(choice, cost, "greedy+lns", time.perf_counter() - t0,
                      notes={"greedy_cost": g.cost, "small_windows": small.notes["windows"],
                             "wide_windows": wide.notes["windows"],
                             "stopped_on_clock": time.perf_counter() > deadline})
