"""Equality saturation: search every rule, apply the matches, rebuild, repeat -- within limits.

The :class:`BackoffScheduler` keeps one exploding rule (associativity, merges) from starving the
rest: a rule that matches more than its budget in one iteration is banned for a while, and both its
budget and its ban double each time (egg's scheduler, same idea).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from .analysis import Refused
from .egraph import EGraph
from .pattern import Rule

log = logging.getLogger("agnostic_rt.runner")


@dataclass
class BackoffScheduler:
    match_limit: int = 1000
    ban_length: int = 3
    _times_banned: Counter = field(default_factory=Counter)
    _banned_until: dict[str, int] = field(default_factory=dict)

    def allowed(self, rule: Rule, iteration: int) -> bool:
        return self._banned_until.get(rule.name, -1) <= iteration

    def limit(self, rule: Rule) -> int:
        return self.match_limit << self._times_banned[rule.name]

    def ban(self, rule: Rule, iteration: int, n_matches: int) -> None:
        n = self._times_banned[rule.name]
        self._banned_until[rule.name] = iteration + (self.ban_length << n)
        self._times_banned[rule.name] = n + 1
        log.debug("banning %s for %d iterations (%d matches > %d)", rule.name, self.ban_length << n,
                  n_matches, self.match_limit << n)

    def any_banned(self, iteration: int) -> bool:
        return any(until > iteration for until in self._banned_until.values())

    def unban_all(self) -> None:
        self._banned_until.clear()


@dataclass
class RunReport:
    iterations: int = 0
    stop_reason: str = ""
    seconds: float = 0.0
    fired: Counter = field(default_factory=Counter)  # rule -> matches that changed the e-graph
    refused: Counter = field(default_factory=Counter)  # rule -> right sides the analysis rejected
    nodes: int = 0
    classes: int = 0

    def summary(self) -> dict:
        return {"iterations": self.iterations, "stop_reason": self.stop_reason,
                "seconds": round(self.seconds, 4), "nodes": self.nodes, "classes": self.classes,
                "fired": dict(self.fired.most_common()), "refused": dict(self.refused.most_common())}


class Runner:
    """Run ``rules`` on ``egraph`` to saturation or a limit.

    >>> report = Runner(egraph, rules, node_limit=20_000, iter_limit=10, time_limit=1.0).run()  # doctest: +SKIP
    """

    def __init__(self, egraph: EGraph, rules: list[Rule], *, node_limit: int = 20_000, iter_limit: int = 12,
                 time_limit: float = 2.0, scheduler: BackoffScheduler | None = None):
        self.egraph = egraph
        self.rules = rules
        self.node_limit = node_limit
        self.iter_limit = iter_limit
        self.time_limit = time_limit
        self.scheduler = scheduler or BackoffScheduler()

    def run(self) -> RunReport:
        eg, report = self.egraph, RunReport()
        start = time.perf_counter()
        deadline = start + self.time_limit
        for it in range(self.iter_limit):
            report.iterations = it + 1
            version = eg.version
            matches = []
            for rule in self.rules:
                if not self.scheduler.allowed(rule, it):
                    continue
                limit = self.scheduler.limit(rule)
                found = rule.search(eg, limit)
                if len(found) > limit:
                    self.scheduler.ban(rule, it, len(found))
                    continue
                matches.append((rule, found))
                if time.perf_counter() > deadline:
                    break
            for rule, found in matches:
                for m in found:
                    try:
                        new = rule.apply(m)
                        if new is not None and eg.union(m.root, new):
                            report.fired[rule.name] += 1
                    except Refused as e:
                        report.refused[rule.name] += 1
                        log.debug("rule %s refused: %s", rule.name, e)
                    except Exception as e:  # a bug in one rule costs that match, not the compile
                        report.refused[rule.name] += 1
                        log.debug("rule %s failed on a match: %s: %s", rule.name, type(e).__name__, e)
                if eg.num_nodes > self.node_limit:
                    break
            eg.rebuild()
            if eg.num_nodes > self.node_limit:
                report.stop_reason = "node_limit"
                break
            if time.perf_counter() > deadline:
                report.stop_reason = "time_limit"
                log.warning("e-graph saturation stopped at its %.1f s time limit after %d iterations (%d nodes): "
                            "the rewrites found depend on this machine's speed", self.time_limit, it + 1,
                            eg.num_nodes)
                break
            if eg.version == version:
                if self.scheduler.any_banned(it):  # quiet only because rules sit out: let them in
                    self.scheduler.unban_all()
                    continue
                report.stop_reason = "saturated"
                break
        else:
            report.stop_reason = "iter_limit"
        report.seconds = time.perf_counter() - start
        report.nodes, report.classes = eg.num_nodes, eg.num_classes
        return report
