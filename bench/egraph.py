"""E-graph optimiser benchmark: for each zoo graph, nodes before/after, e-graph size, saturation and
extraction time, and estimated cost before/after per target. Appends a section to BENCHMARKS.md
under "## E-graph" (one write).

    python bench/egraph.py                       # all zoo models, inference and training, CPU graphs
    python bench/egraph.py --flavour h100        # graphs decomposed as for a GPU target (core ATen)
    python bench/egraph.py --models gpt2 --no-append
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from agnostic_rt.apps.bench_compare import publish, script_command, utc_stamp

ROOT = Path(__file__).resolve().parents[1]
COST_TARGETS = ("cpu", "h100", "mi300x")


def capture(entry, training: bool, target):
    """The graphs passes.optimize sees for one zoo model: (kind, gm) pairs, plus the pre-autograd
    rewrite's time and report."""

    from agnostic_rt import passes
    from agnostic_rt.backend import make_aot

    graphs, pre = [], {}

    def compiler(gm, example_inputs, kind):
        graphs.append((kind, gm))
        return gm.forward if hasattr(gm, "forward") else gm

    def backend(gm, example_inputs):
        t = time.perf_counter()
        gm2 = passes.rewrite_before_autograd(gm, example_inputs, target)
        pre["seconds"] = pre.get("seconds", 0.0) + time.perf_counter() - t
        report = getattr(gm2, "_agnostic_report", None)
        if report is not None:
            pre.setdefault("fired", {}).update(report.run.fired)
        aot = make_aot(target, compiler)
        return aot(gm2, example_inputs)

    torch._dynamo.reset()
    model = entry.build()
    model.train(training)
    inputs, label = entry.example()
    compiled = torch.compile(model, backend=backend)
    if training:
        entry.loss(compiled(*inputs), label).backward()
    else:
        with torch.no_grad():
            compiled(*inputs)
    return graphs, pre


def main() -> None:
    from agnostic_rt.conformance.zoo import ZOO
    from agnostic_rt.passes.optimizer import optimize_graph
    from agnostic_rt.targets import get_target

    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*", default=list(ZOO))
    ap.add_argument("--flavour", default="cpu", help="the target whose graphs are optimised (cpu, h100, ...)")
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args()
    target = get_target(args.flavour)
    others = tuple(get_target(t) for t in COST_TARGETS)

    head = ("| model | mode | graph | nodes before → after | e-graph nodes/classes | saturate s | "
            "extract s | optimise s | stop | "
            + " | ".join(f"{t} cost µs before → after" for t in COST_TARGETS) + " |")
    rows = [head, "|" + "---|" * (9 + len(COST_TARGETS))]
    notes, failures = [], []
    for name in args.models:
        for training in (False, True):
            mode = "training" if training else "inference"
            graphs, pre = capture(ZOO[name], training, target)
            if pre.get("fired"):
                fired = ", ".join(f"{k}×{v}" for k, v in sorted(pre["fired"].items())
                                  if "sdpa" in k or "merge" in k)
                notes.append(f"- {name} {mode}: before autograd ({pre['seconds']:.2f} s): "
                             f"{fired or 'no attention/merge'}")
            total = 0.0
            for kind, gm in graphs:
                try:
                    out, rep = optimize_graph(gm, target, report_targets=others)
                except Exception as e:  # passes.optimize would keep the graph; the table says why
                    failures.append(f"{name} {mode} {kind}")
                    rows.append(f"| {name} | {mode} | {kind} | {len(gm.graph.nodes)} | failed: "
                                f"{type(e).__name__}: {str(e)[:120]} |" + " |" * (5 + len(COST_TARGETS)))
                    print(rows[-1], flush=True)
                    continue
                total += rep.seconds["total"]
                costs = " | ".join(f"{rep.per_target[t]['before'] * 1e6:.1f} → "
                                   f"{rep.per_target[t]['after'] * 1e6:.1f}"
                                   for t in (o.name for o in others))
                rows.append(f"| {name} | {mode} | {kind} | {rep.nodes_before} → {rep.nodes_after} | "
                            f"{rep.egraph_nodes}/{rep.egraph_classes} | {rep.seconds['saturate']:.3f} | "
                            f"{rep.seconds['extract']:.3f} | {rep.seconds['total']:.3f} | "
                            f"{rep.run.stop_reason} | {costs} |")
                print(rows[-1], flush=True)
            notes.append(f"- {name} {mode}: optimise time over its {len(graphs)} graph(s) after autograd: "
                         f"{total:.3f} s")
    notes.append(f"- optimiser failures (graph left unchanged): {', '.join(failures) or 'none'}")
    now, cmd = utc_stamp(), script_command(ROOT)
    section = "\n".join([
        "", f"## E-graph — {args.flavour} graphs, {now}", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, Python "
        f"{platform.python_version()} (shared with other engineers while measured). Command: `{cmd}`.",
        "Each row is one graph passes.optimize receives after aot_autograd (strict numerics). Costs are the",
        "cost model's estimates for the graph as given and as extracted, per target; 'optimise s' is the",
        "whole pass (load, saturate, extract, emit).", "", *rows, "", *notes, ""])
    publish(section, None if args.no_append else ROOT / "BENCHMARKS.md")


if __name__ == "__main__":
    main()
