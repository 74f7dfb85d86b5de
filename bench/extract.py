"""Extraction benchmark on the public TENSAT e-graphs (extraction-gym): DAG cost and time of the
greedy, the near-optimal search and the exact (ILP, HiGHS) extractors; every extraction is checked
acyclic. Appends a section to BENCHMARKS.md under "## Extraction" (one write).

    python bench/extract.py                      # vgg, resnet50, bert; ILP limited to 120 s each
    python bench/extract.py --ilp-time 30 --search-time 8 --no-append
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

from agnostic_rt.apps.bench_compare import publish, script_command, utc_stamp

ROOT = Path(__file__).resolve().parents[1]
GYM = Path("/work/shared/data/extraction-gym")


def main() -> None:
    import scipy

    from agnostic_rt.passes.extract import greedy, ilp, is_acyclic, load_serialized, search

    ap = argparse.ArgumentParser()
    ap.add_argument("--graphs", nargs="*", default=["vgg", "resnet50", "bert"])
    ap.add_argument("--ilp-time", type=float, default=120.0)
    ap.add_argument("--search-time", type=float, default=8.0)
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args()
    rows = ["| e-graph | nodes / classes | greedy DAG cost | greedy s | search DAG cost | search s "
            "| search method | ILP DAG cost | ILP s | ILP status | acyclic |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in args.graphs:
        p = load_serialized(str(GYM / f"{name}_acyclic.json"))
        g = greedy(p)
        s = search(p, time_limit=args.search_time)
        e = ilp(p, time_limit=args.ilp_time, warm=g)
        status = ("optimal" if e.optimal else f"time limit ({e.method} kept)" if e.method != "ilp"
                  else "time limit")
        acyclic = is_acyclic(p, g.choice) and is_acyclic(p, s.choice) and is_acyclic(p, e.choice)
        rows.append(f"| {name} | {p.num_nodes} / {len(p.classes)} | {g.cost:.6g} | {g.seconds:.3f} "
                    f"| {s.cost:.6g} | {s.seconds:.1f} | {s.method} | {e.cost:.6g} | {e.seconds:.1f} "
                    f"| {status} | {acyclic} |")
        print(rows[-1], flush=True)
    now, cmd = utc_stamp(), script_command(ROOT)
    section = "\n".join([
        "", f"## Extraction — TENSAT e-graphs (extraction-gym), {now}", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, scipy "
        f"{scipy.__version__} (HiGHS through scipy.optimize.milp; shared with other engineers while "
        f"measured). Command: `{cmd}`.",
        "Costs are TENSAT's per-operator runtimes; DAG cost counts each chosen node once. 'search' is",
        f"passes.extract.search with a {args.search_time:.0f} s limit (the whole ILP up to 3000 nodes,",
        "greedy and neighbourhood search above; 'search s' of the first graph includes HiGHS's first start).",
        f"The ILP is given the greedy result as a fallback and a {args.ilp_time:.0f} s limit; 'ILP s'",
        "includes building the model.",
        "", *rows, ""])
    publish(section, None if args.no_append else ROOT / "BENCHMARKS.md")


if __name__ == "__main__":
    main()
