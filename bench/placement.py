"""Placement simulation figures for BENCHMARKS.md: the shipped trace under the three policies.

    python bench/placement.py                 # prints the section and appends it to BENCHMARKS.md
    python bench/placement.py --dry-run       # prints it only

Appends one "## Placement simulation" section per run, in a single write (others append to the
file too; it is never rewritten). The plot goes to bench/placement.png.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
from pathlib import Path

from agnostic_rt.placement.policy import Hysteresis, PlacementPolicy
from agnostic_rt.placement.simulate import SimJob, format_table, plot_results, simulate
from agnostic_rt.placement.trace import SHIPPED_TRACE_PARAMS, read_trace, shipped_trace_path

ROOT = Path(__file__).resolve().parent.parent


def section(job: SimJob) -> str:
    trace = read_trace(shipped_trace_path())
    results = simulate(trace, job)
    # Ablation: our policy held to NVIDIA, to show what the AMD markets add on their own.
    nvidia_only = PlacementPolicy(move=job.move, hysteresis=Hysteresis(0.10, 2.0), vendors=("nvidia",))
    ablation = simulate(trace, job, ["agnostic"], policy=nvidia_only)["agnostic"]
    ablation.policy = "agnostic, NVIDIA only (ablation)"
    plot = plot_results(trace, results, ROOT / "bench" / "placement.png")
    p = SHIPPED_TRACE_PARAMS
    markets = "\n".join(f"  - {m}" for m in p.describe()["markets"])
    ours, spot, od = results["agnostic"], results["spot-restart"], results["on-demand"]
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    summaries = {k: {kk: round(vv, 2) if isinstance(vv, float) else vv for kk, vv in v.summary().items()}
                 for k, v in results.items()}
    return f"""
## Placement simulation

{date}, dev/CI machine ({platform.machine()}, no GPU needed: a replay). Command:
`agnostic-rt simulate --gpu-hours {job.gpu_hours:g} --gpus {job.gpus} --checkpoint-gb {job.checkpoint_gb:g} \
--checkpoint-interval-h {job.checkpoint_interval_h:g}` (also `python bench/placement.py`).

Trace: the shipped `agnostic_rt/placement/data/spot_trace.csv`, synthetic, from
`generate_trace(TraceParams(hours={p.hours:g}, step_h={p.step_h:g}, volatility={p.volatility:g}, \
reversion_per_h={p.reversion_per_h:g}, seed={p.seed}))`: log spot prices mean-revert (Ornstein-Uhlenbeck)
around a fraction of on-demand; capacity is a two-state Markov chain (reclaims per hour, mean outage). \
Markets:
{markets}

Job: {job.gpu_hours:g} {job.reference.upper()}-hours of work on {job.gpus} GPUs per machine, \
{job.checkpoint_gb:g} GB
checkpoints every {job.checkpoint_interval_h:g} h; a move or relaunch costs {job.move.provision_s:g} s \
provisioning
+ {job.move.recompile_s:g} s recompile + checkpoint write+read at {job.move.bandwidth / 1e9:g} GB/s. Speeds \
are the
Targets' bf16 rooflines at an assumed MFU (NVIDIA 0.40, AMD 0.30), not measurements. Baselines use NVIDIA \
only.

{format_table({**results, ablation.policy: ablation})}

Ours costs {ours.cost_usd / od.cost_usd:.0%} of on-demand and {ours.cost_usd / spot.cost_usd:.0%} of \
single-vendor
spot with restart, finishing in {ours.hours:.1f} h (on-demand {od.hours:.1f} h, spot-restart \
{spot.hours:.1f} h).
Held to NVIDIA our policy costs {ablation.cost_usd / od.cost_usd:.0%} of on-demand: the rest of the gain over
spot-restart is moving on price and checkpointing on the notice (no lost work); the AMD markets add the \
difference. Plot: `bench/placement.png` ({plot.name}).
Raw: `{json.dumps(summaries)}`
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--gpu-hours", type=float, default=256.0)
    ap.add_argument("--gpus", type=int, default=8)
    args = ap.parse_args()
    text = section(SimJob(gpu_hours=args.gpu_hours, gpus=args.gpus))
    print(text)
    if not args.dry_run:
        with (ROOT / "BENCHMARKS.md").open("a") as f:
            f.write(text)  # one append: never rewrite a file others append to


if __name__ == "__main__":
    main()
