"""Replay a spot price/availability trace and compare placement policies on one training job.

    agnostic-rt simulate                              # the shipped trace, a 256 GPU-hour job on 8 GPUs
    agnostic-rt simulate my_trace.csv --gpu-hours 512 --gpus 8 --plot sim.png
    agnostic-rt simulate prices.json                  # an `aws ec2 describe-spot-price-history` export
    agnostic-rt simulate --generate trace.csv --seed 3 --hours 120

Policies (the job is ``gpu_hours`` of work on the reference GPU, H100 by default, on ``gpus`` GPUs):

- ``on-demand``: the cheapest on-demand market of the baseline vendor (NVIDIA); never interrupted.
- ``spot-restart``: what a SkyPilot managed spot job gives a single-vendor run: the cheapest spot
  market of the baseline vendor; on preemption it loses the work since the last periodic checkpoint
  and relaunches on the cheapest available spot market of that vendor (EAGER_NEXT_REGION), or waits.
- ``agnostic``: ours. Every spot and on-demand market of every vendor, ranked by
  :class:`~agnostic_rt.placement.policy.PlacementPolicy` (cost to finish incl. the move, hysteresis);
  on a spot notice it checkpoints at once (no lost work) and moves, and it moves on price.

A move or relaunch costs ``MoveCosts.move_hours``: checkpoint write+read through the bucket,
provisioning and recompiling, billed at the new machine's price with no progress.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..targets import KNOWN_TARGETS
from .feeds import Offer, TableFeed, accelerator_target
from .policy import Hysteresis, JobProfile, MoveCosts, PlacementPolicy
from .trace import (
    Market,
    MarketState,
    Trace,
    TraceParams,
    generate_trace,
    read_trace,
    shipped_trace_path,
    write_trace,
)

__all__ = ["SimJob", "SimResult", "simulate", "POLICIES", "main", "plot_results", "format_table"]

log = logging.getLogger("agnostic_rt.placement.simulate")

POLICIES = ("on-demand", "spot-restart", "agnostic")


@dataclass(frozen=True)
class SimJob:
    """The job the simulator places: ``gpu_hours`` of work on one ``reference`` GPU, run on ``gpus`` GPUs.

    >>> SimJob(gpu_hours=256, gpus=8).speed("MI300X") > 0
    True
    """

    gpu_hours: float = 256.0
    gpus: int = 8
    reference: str = "h100"
    checkpoint_gb: float = 30.0  # model + optimizer state written per checkpoint
    checkpoint_interval_h: float = 1.0  # periodic checkpoints (what spot-restart falls back to)
    move: MoveCosts = field(default_factory=MoveCosts)
    baseline_vendors: tuple[str, ...] = ("nvidia",)

    def __post_init__(self) -> None:
        if self.gpu_hours <= 0 or self.gpus < 1:
            raise ValueError(f"gpu_hours={self.gpu_hours} must be > 0 and gpus={self.gpus} >= 1")
        if self.checkpoint_interval_h <= 0:
            raise ValueError(f"checkpoint_interval_h={self.checkpoint_interval_h} must be > 0")

    def profile(self, remaining_gpu_hours: float) -> JobProfile:
        """The policy's view of the remaining work (per GPU; every cost scales by ``gpus`` alike)."""
        return JobProfile.from_gpu_hours(max(remaining_gpu_hours, 1e-9) / self.gpus, self.reference,
                                         checkpoint_bytes=self.checkpoint_gb * 1e9)

    def speed(self, accelerator: str) -> float:
        """Work rate of one ``accelerator`` in reference GPU-hours per hour (roofline with MFU)."""
        probe = JobProfile(1, 1e15)
        return probe.step_time(KNOWN_TARGETS[self.reference]) / probe.step_time(accelerator_target(accelerator))

    def move_hours(self, accelerator: str) -> float:
        return self.move.move_hours(self.profile(1.0), accelerator_target(accelerator))


@dataclass
class SimResult:
    """One policy's run over the trace."""

    policy: str
    cost_usd: float = 0.0
    hours: float = math.inf  # completion time (inf when the trace and its extension ran out)
    lost_work_h: float = 0.0  # reference GPU-hours of work redone after preemptions
    overhead_h: float = 0.0  # machine-hours billed while provisioning, loading, recompiling
    moves: int = 0  # machine changes after the start (relaunches included)
    preemptions: int = 0
    finished: bool = False
    timeline: list[tuple[float, float, float]] = field(default_factory=list)  # (t, progress, cost)
    events: list[tuple[float, str, str]] = field(default_factory=list)  # (t, kind, where)

    def summary(self) -> dict:
        d = asdict(self)
        d.pop("timeline")
        d.pop("events")
        return d


# A chooser sees (t, offers, current, since_move_h, remaining reference GPU-hours) and names where to run.
Chooser = Callable[[float, list[Offer], "Offer | None", float, float], "Offer | None"]


def _offers(snap: dict[Market, MarketState], od_fallback: dict[str, float]) -> list[Offer]:
    out = []
    for (cloud, region, acc), s in sorted(snap.items()):
        out.append(Offer(cloud, region, acc, True, s.spot_price, s.available, "trace"))
        od = s.on_demand_price if s.on_demand_price is not None else od_fallback.get(acc)
        if od is not None:
            out.append(Offer(cloud, region, acc, False, od, True, "trace"))
    return out


def _per_work(job: SimJob, o: Offer) -> float:
    return o.price_per_hour / job.speed(o.accelerator)


def _on_demand(job: SimJob) -> Chooser:
    def choose(t, offers, current, since, remaining):
        if current is not None:
            return current
        cands = [o for o in offers if not o.spot and o.target.vendor in job.baseline_vendors]
        return min(cands, key=lambda o: (_per_work(job, o), o.key), default=None)
    return choose


def _spot_restart(job: SimJob) -> Chooser:
    def choose(t, offers, current, since, remaining):
        if current is not None:
            return current
        cands = [o for o in offers if o.spot and o.available and o.target.vendor in job.baseline_vendors]
        return min(cands, key=lambda o: (_per_work(job, o), o.key), default=None)
    return choose


def _agnostic(job: SimJob, policy: PlacementPolicy) -> Chooser:
    def choose(t, offers, current, since, remaining):
        try:
            return policy.decide(offers, job.profile(remaining), current, since).offer
        except LookupError:
            return None
    return choose


def _run(name: str, trace: Trace, job: SimJob, choose: Chooser, checkpoint_on_notice: bool,
         od_fallback: dict[str, float], max_hours: float) -> SimResult:
    res = SimResult(name)
    ticks = list(trace.snapshots())
    step = (ticks[-1][0] - ticks[0][0]) / max(1, len(ticks) - 1) or 1.0
    progress = saved = cost = overhead_left = 0.0
    loc: Offer | None = None
    since_move = math.inf
    since_ckpt = 0.0
    started = False
    t0 = ticks[0][0]
    i = 0
    while True:
        # Past the trace's end the last state holds (an exported history stops at its last change).
        t, snap = ticks[i] if i < len(ticks) else (ticks[-1][0] + (i - len(ticks) + 1) * step, ticks[-1][1])
        t_next = ticks[i + 1][0] if i + 1 < len(ticks) else t + step
        dt = t_next - t
        i += 1
        if t - t0 > max_hours:
            break
        offers = _offers(snap, od_fallback)
        if loc is not None and loc.spot and not snap[(loc.cloud, loc.region, loc.accelerator)].available:
            res.preemptions += 1
            if checkpoint_on_notice:  # the notice (>= 30 s) lets us checkpoint at the next step boundary
                saved = progress
            res.lost_work_h += progress - saved
            progress = saved
            res.events.append((t - t0, "preempted", str(loc)))
            loc = None
        # After a preemption there is no current machine: every choice is a move (and priced so).
        nxt = choose(t, offers, loc, since_move, job.gpu_hours - progress)
        if nxt is not None and (loc is None or nxt.key != loc.key):
            if started:
                res.moves += 1
            saved = progress  # a chosen move checkpoints first; a relaunch resumes from `saved`
            overhead_left = job.move_hours(nxt.accelerator)
            since_move, since_ckpt = 0.0, 0.0
            res.events.append((t - t0, "move" if started else "start", str(nxt)))
            loc, started = nxt, True
        if loc is not None:
            state = snap[(loc.cloud, loc.region, loc.accelerator)]
            price = (state.spot_price if loc.spot else loc.price_per_hour) * job.gpus
            busy = min(overhead_left, dt)
            productive = dt - busy
            rate = job.gpus * job.speed(loc.accelerator)
            need = (job.gpu_hours - progress) / rate
            if productive >= need:
                elapsed = busy + need
                res.overhead_h += busy
                cost += price * elapsed
                progress = job.gpu_hours
                res.timeline.append((t - t0 + elapsed, progress, cost))
                res.cost_usd, res.hours, res.finished = cost, t - t0 + elapsed, True
                res.events.append((res.hours, "done", str(loc)))
                return res
            overhead_left -= busy
            res.overhead_h += busy
            progress += rate * productive
            cost += price * dt
            since_ckpt += dt
            if since_ckpt >= job.checkpoint_interval_h:
                saved, since_ckpt = progress, 0.0
        since_move += dt
        res.timeline.append((t_next - t0, progress, cost))
    res.cost_usd = cost
    return res


def simulate(trace: Trace, job: SimJob = SimJob(), policies: Sequence[str] = POLICIES,
             policy: PlacementPolicy | None = None, max_hours: float | None = None) -> dict[str, SimResult]:
    """Run each named policy over ``trace`` for ``job``.

    >>> res = simulate(read_trace(shipped_trace_path()), SimJob(gpu_hours=256, gpus=8))
    >>> sorted(res)
    ['agnostic', 'on-demand', 'spot-restart']
    """
    unknown = [p for p in policies if p not in POLICIES]
    if unknown:
        raise ValueError(f"unknown policies {unknown}; expected some of: {', '.join(POLICIES)}")
    # On-demand prices a trace lacks come from the offers table (cheapest per accelerator).
    od_fallback: dict[str, float] = {}
    for o in TableFeed().offers():
        if not o.spot:
            od_fallback[o.accelerator] = min(o.price_per_hour, od_fallback.get(o.accelerator, math.inf))
    ours = policy or PlacementPolicy(move=job.move, hysteresis=Hysteresis(margin=0.10, min_dwell_h=2.0))
    choosers = {
        "on-demand": (_on_demand(job), False),
        "spot-restart": (_spot_restart(job), False),
        "agnostic": (_agnostic(job, ours), True),
    }
    limit = max_hours if max_hours is not None else max(10 * trace.duration_h, 50 * job.gpu_hours / job.gpus)
    return {p: _run(p, trace, job, *choosers[p], od_fallback, limit) for p in policies}


def format_table(results: dict[str, SimResult]) -> str:
    """A Markdown table of the results (what the CLI prints and the benchmark appends)."""
    base = results.get("on-demand")
    lines = ["| policy | cost (USD) | vs on-demand | completion (h) | lost work (GPU-h) | overhead (h) | moves | preemptions |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results.values():
        rel = f"{r.cost_usd / base.cost_usd:.0%}" if base and base.cost_usd else "-"
        hours = f"{r.hours:.1f}" if r.finished else "unfinished"
        lines.append(f"| {r.policy} | {r.cost_usd:,.0f} | {rel} | {hours} | {r.lost_work_h:.1f} | "
                     f"{r.overhead_h:.1f} | {r.moves} | {r.preemptions} |")
    return "\n".join(lines)


def plot_results(trace: Trace, results: dict[str, SimResult], path: str | Path, title: str = "") -> Path:
    """Three panels: spot prices (gaps where capacity is gone), progress, and cumulative cost."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_p, ax_w, ax_c) = plt.subplots(3, 1, figsize=(10, 10), sharex=True)
    t0 = trace.rows[0].time_h
    for m in trace.markets:
        rows = [r for r in trace.rows if r.market == m]
        ax_p.plot([r.time_h - t0 for r in rows], [r.spot_price if r.available else math.nan for r in rows],
                  lw=1, label=f"{m[0]}/{m[1]} {m[2]}")
    ax_p.set_ylabel("spot USD / GPU-h")
    ax_p.legend(fontsize=7, ncol=3)
    for r in results.values():
        ts = [0.0] + [p[0] for p in r.timeline]
        (line,) = ax_w.plot(ts, [0.0] + [p[1] for p in r.timeline], label=r.policy)
        ax_c.plot(ts, [0.0] + [p[2] for p in r.timeline], label=f"{r.policy}: ${r.cost_usd:,.0f}", color=line.get_color())
        for t, kind, _ in r.events:
            if kind in ("move", "preempted"):
                ax_w.axvline(t, color=line.get_color(), lw=0.5, alpha=0.4, ls="--" if kind == "preempted" else ":")
    ax_w.set_ylabel("work done (GPU-h)")
    ax_w.legend(fontsize=8)
    ends = [r.hours for r in results.values() if r.finished]
    if ends:
        ax_c.set_xlim(0, max(ends) * 1.1)
    ax_c.set_ylabel("cumulative cost (USD)")
    ax_c.set_xlabel("hours")
    ax_c.legend(fontsize=8)
    fig.suptitle(title or f"placement simulation: {Path(trace.source).name}")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    """``agnostic-rt simulate``: see the module docstring."""
    ap = argparse.ArgumentParser(prog="agnostic-rt simulate", description=__doc__.split("\n\n")[0])
    ap.add_argument("trace", nargs="?", help="trace CSV or AWS spot-price JSON export (default: the shipped trace)")
    ap.add_argument("--gpu-hours", type=float, default=256.0, help="work in reference-GPU hours (default 256)")
    ap.add_argument("--gpus", type=int, default=8, help="GPUs per machine (default 8)")
    ap.add_argument("--reference", default="h100", choices=sorted(KNOWN_TARGETS), help="the GPU the work is measured on")
    ap.add_argument("--checkpoint-gb", type=float, default=30.0)
    ap.add_argument("--checkpoint-interval-h", type=float, default=1.0)
    ap.add_argument("--policies", default=",".join(POLICIES), help=f"comma-separated subset of {','.join(POLICIES)}")
    ap.add_argument("--plot", default="simulate.png", help="PNG path (default simulate.png); '' for none")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--generate", metavar="OUT.csv", help="write a synthetic trace and exit")
    ap.add_argument("--seed", type=int, default=TraceParams.seed)
    ap.add_argument("--hours", type=float, default=TraceParams.hours)
    args = ap.parse_args(argv)
    if args.generate:
        path = write_trace(generate_trace(TraceParams(hours=args.hours, seed=args.seed)), args.generate)
        print(f"wrote {path}")
        return 0
    try:
        trace = read_trace(args.trace or shipped_trace_path())
        job = SimJob(args.gpu_hours, args.gpus, args.reference, args.checkpoint_gb, args.checkpoint_interval_h)
        results = simulate(trace, job, [p.strip() for p in args.policies.split(",") if p.strip()])
    except (ValueError, FileNotFoundError) as exc:
        print(f"agnostic-rt simulate: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({k: v.summary() for k, v in results.items()}, indent=2))
    else:
        print(f"trace: {trace.source} ({trace.duration_h:g} h, {len(trace.markets)} markets); job: "
              f"{job.gpu_hours:g} {job.reference.upper()}-hours on {job.gpus} GPUs")
        print(format_table(results))
    if args.plot:
        print(f"plot: {plot_results(trace, results, args.plot)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
