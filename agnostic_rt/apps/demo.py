"""``agnostic-rt demo``: train GPT-2, survive a spot notice, resume in a fresh process, compare.

    agnostic-rt demo                          # ~4 minutes on a busy 2-core CPU machine (1 min CPU)
    agnostic-rt demo --steps 40 --notice-at 25 --out /tmp/demo

What happens:

1. The placement policy picks the best local device (``select_device(PlacementPolicy(...))``).
2. Two worker processes train the zoo's GPT-2 (4 layers, 256 wide) under
   ``torch.compile(backend="agnostic")`` on the same batches: the *reference* runs uninterrupted;
   the *run* is guarded by ``agnostic_rt.spot_guard`` watching an AWS metadata endpoint, which here
   is a loopback server this process starts (IMDSv2 token + ``spot/instance-action``).
3. Midway this process arms the server: the run's watcher sees the spot notice, the guard
   checkpoints at the next step boundary and the worker exits with ``EXIT_PREEMPTED`` (75).
4. The policy chooses where to go next: locally another device when one exists, else the CPU; in
   the cloud, the SkyPilot task for the next machine (``any_of`` NVIDIA and AMD spot markets) is
   written to ``next-task.yaml`` with the ``sky jobs launch`` command (nothing is launched).
5. A fresh worker process calls ``agnostic_rt.resume`` on that device and finishes the run.
6. The summary compares the resumed losses with the reference, and ``demo.png`` plots both curves
   plus the simulated cost of the same job at full scale under each placement policy.

The task is learnable on purpose (tokens from a 64-word slice of the vocabulary, target = token + 1),
so the loss falls visibly within a few dozen steps. If the agnostic backend fails to compile, the
worker says so and falls back to eager (the summary names the backend that ran).
"""

from __future__ import annotations

import argparse
import http.server
import json
import logging
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["main", "MetadataServer", "DemoResult"]

log = logging.getLogger("agnostic_rt.apps.demo")

SLICE = 64  # tokens come from the first SLICE ids: every step sees every word, so it learns fast


# ---- the loopback cloud metadata server --------------------------------------------------------------


class MetadataServer:
    """A loopback stand-in for EC2's instance metadata service (IMDSv2), as far as spot notices go.

    ``PUT /latest/api/token`` returns a token; ``GET /latest/meta-data/spot/instance-action`` is 404
    until :meth:`arm`, then 200 with ``{"action": "terminate", "time": <now + 2 min>}`` (EC2's format).

    >>> with MetadataServer() as imds:
    ...     imds.arm()      # an AWSWatcher polling imds.url now sees a spot interruption notice
    """

    def __init__(self) -> None:
        armed = self._armed = threading.Event()
        token = "agnostic-rt-demo-token"

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PUT(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path == "/latest/api/token":
                    self._reply(200, token)
                else:
                    self._reply(404, "")

            def do_GET(self) -> None:  # noqa: N802
                if self.path != "/latest/meta-data/spot/instance-action":
                    self._reply(404, "")
                elif self.headers.get("X-aws-ec2-metadata-token") != token:
                    self._reply(401, "")
                elif armed.is_set():
                    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 120))
                    self._reply(200, json.dumps({"action": "terminate", "time": when}))
                else:
                    self._reply(404, "")

            def _reply(self, status: int, body: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:  # keep the console for the progress bars
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="agnostic_rt-imds",
                                        daemon=True)
        self._thread.start()

    def arm(self) -> None:
        """From now on the endpoint reports a spot interruption."""
        self._armed.set()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> MetadataServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ---- the worker: one training process ----------------------------------------------------------------


def _batch(entry: Any, batch: int, step: int, device: Any) -> tuple[Any, Any]:
    (ids,), _ = entry.example(batch, seed=step)
    ids = ids % SLICE
    return ids.to(device), ((ids + 1) % SLICE).to(device)


def _worker(args: argparse.Namespace) -> int:
    """One training process. Prints ``STEP n loss`` lines for the parent; exits 75 when preempted."""
    import contextlib

    import torch

    import agnostic_rt
    from agnostic_rt.conformance.zoo import ZOO

    # The reference and the run share the machine; one thread each is also deterministic.
    torch.set_num_threads(1)
    entry = ZOO["gpt2"]
    device = agnostic_rt.select_device(args.device)
    model = entry.build(seed=0).to(device.torch_device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    state = agnostic_rt.TrainingState(model=model, optimizer=opt, step=0)
    print(f"DEVICE {device}", flush=True)
    if args.worker == "resume":
        ckpt = agnostic_rt.resume(state, args.ckpt, device=args.device)
        print(f"RESUMED {state.step} {ckpt.uri if ckpt else '-'}", flush=True)
    compiled: Any = torch.compile(model, backend=args.backend)
    backend = args.backend
    if args.worker == "run":
        guard: Any = agnostic_rt.spot_guard(state, args.ckpt, every=args.every, clouds=["aws"],
                                            urls={"aws": args.metadata_url}, interval=0.1)
    else:
        guard = contextlib.nullcontext()
    with guard:
        while state.step < args.steps:
            x, y = _batch(entry, args.batch, state.step, device.torch_device)
            try:
                loss = entry.loss(compiled(x), y)
                loss.backward()
            except Exception as exc:  # the demo must finish: say so, and train eagerly
                if compiled is model:
                    raise
                reason = str(exc).strip().splitlines()[-1][:160]
                print(f"BACKEND eager (backend {backend!r} failed: {type(exc).__name__}: {reason})",
                      flush=True)
                opt.zero_grad(set_to_none=True)
                compiled, backend = model, "eager"
                loss = entry.loss(compiled(x), y)
                loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            print(f"STEP {state.step + 1} {loss.item():.6f}", flush=True)
            if args.worker == "run":
                guard.step()  # advances state.step; on a notice: checkpoint, exit 75
            else:
                state.step += 1
    print(f"BACKEND {backend}", flush=True)
    print("DONE", flush=True)
    return 0


# ---- the parent: orchestration, progress, summary, plot ----------------------------------------------


@dataclass
class Phase:
    """What one worker process reported."""

    role: str
    device: str = ""
    losses: dict[int, float] = field(default_factory=dict)
    resumed_from: int | None = None
    backend: str = ""
    notes: list[str] = field(default_factory=list)
    returncode: int | None = None
    log_path: Path | None = None


@dataclass
class DemoResult:
    """Everything the summary and the plot need (also written as summary.json)."""

    steps: int
    notice_armed_at: int | None
    checkpoint_step: int | None
    exit_code: int | None
    first_device: str
    next_device: str
    phases: dict[str, Phase]
    max_abs_diff: float
    sky_yaml: str
    sky_command: str
    costs: dict[str, float]
    wall_s: float
    png: str


def _spawn(args: argparse.Namespace, role: str, device: str, out: Path,
           extra: Sequence[str] = ()) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "agnostic_rt.apps.demo", "--worker", role, "--device", device,
           "--steps", str(args.steps), "--batch", str(args.batch), "--lr", str(args.lr),
           "--backend", args.backend, "--ckpt", str(out / "checkpoints"), *extra]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    logf = open(out / f"worker-{role}.log", "w")  # noqa: SIM115 (closed when the process is reaped)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=logf, text=True, env=env)
    proc._agnostic_log = logf  # type: ignore[attr-defined]
    return proc


def _pump(proc: subprocess.Popen, role: str, q: queue.Queue) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        q.put((role, line.rstrip("\n")))
    q.put((role, None))


def _parse(phase: Phase, line: str) -> int | None:
    """Record one worker line; returns the step number for STEP lines."""
    kind, _, rest = line.partition(" ")
    if kind == "STEP":
        n, loss = rest.split()
        phase.losses[int(n)] = float(loss)
        return int(n)
    if kind == "DEVICE":
        phase.device = rest
    elif kind == "RESUMED":
        phase.resumed_from = int(rest.split()[0])
    elif kind == "BACKEND":
        if rest.startswith("eager ("):
            phase.notes.append(rest)
        phase.backend = rest.split(" ", 1)[0]
    return None


def _run_phases(args: argparse.Namespace, out: Path, procs: dict[str, subprocess.Popen],
                phases: dict[str, Phase], progress: Any, bars: dict[str, Any], on_step: Any = None) -> None:
    q: queue.Queue = queue.Queue()
    for role, proc in procs.items():
        threading.Thread(target=_pump, args=(proc, role, q), daemon=True).start()
    open_streams = set(procs)
    while open_streams:
        role, line = q.get()
        if line is None:
            open_streams.discard(role)
            continue
        step = _parse(phases[role], line)
        if step is not None:
            progress.update(bars[role], completed=step)
            if on_step is not None:
                on_step(role, step)
    for role, proc in procs.items():
        phases[role].returncode = proc.wait()
        proc._agnostic_log.close()  # type: ignore[attr-defined]
        phases[role].log_path = out / f"worker-{role}.log"


def _fail(phase: Phase, expected: str) -> RuntimeError:
    tail = phase.log_path.read_text().strip().splitlines()[-15:] if phase.log_path else []
    return RuntimeError(f"demo worker {phase.role!r} exited with {phase.returncode} ({expected}); "
                        f"log {phase.log_path}:\n" + "\n".join(tail))


def _next_device(policy: Any, first_spec: str) -> str:
    """Another local device when one exists (chosen by the policy), else the CPU."""
    import agnostic_rt

    found = agnostic_rt.devices()
    first = agnostic_rt.select_device(first_spec, candidates=found)
    others = [d for d in found if (d.vendor, d.index) != (first.vendor, first.index)]
    chosen = agnostic_rt.select_device(policy, candidates=others) if others else first
    return "cpu" if chosen.vendor == "cpu" else str(chosen.torch_device)


def _sky_handoff(out: Path, job_steps: int, flops_per_step: float, run_id: str) -> tuple[str, str, Any]:
    """The cloud half of the hand-off: the policy's ranking of the offers table -> a SkyPilot task YAML."""
    from agnostic_rt.placement.feeds import TableFeed
    from agnostic_rt.placement.policy import JobProfile, PlacementPolicy
    from agnostic_rt.placement.skypilot import launch, plan_next_machine
    from agnostic_rt.training.migrate import EXIT_PREEMPTED

    job = JobProfile(job_steps, flops_per_step, checkpoint_bytes=0.0)
    # The next machine runs this demo's own resume worker against the mounted checkpoint bucket.
    entrypoint = (f"python -m agnostic_rt.apps.demo --worker resume --device fastest --steps {job_steps} "
                  "--ckpt $AGNOSTIC_RT_RESUME_FROM")
    decision, cfg = plan_next_machine(TableFeed(), job, bucket="s3://YOUR-BUCKET/agnostic-rt", run_id=run_id,
                                      entrypoint=entrypoint, policy=PlacementPolicy(allow_on_demand=False),
                                      preempt_exit_code=EXIT_PREEMPTED)
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        handoff = launch(cfg, yaml_path=out / "next-task.yaml", use_skypilot=False)
    return str(handoff.yaml_path), handoff.command, decision


def _simulated_costs() -> dict[str, float]:
    from agnostic_rt.placement.simulate import SimJob, simulate
    from agnostic_rt.placement.trace import read_trace, shipped_trace_path

    res = simulate(read_trace(shipped_trace_path()), SimJob())
    return {k: r.cost_usd for k, r in res.items()}


def _plot(result: DemoResult, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, (ax, ax_cost) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [1.7, 1]})
    ref, run, res = (result.phases[r] for r in ("reference", "run", "resume"))
    xs = sorted(ref.losses)
    ax.plot(xs, [ref.losses[s] for s in xs], color="0.6", lw=6, alpha=0.6, label="uninterrupted")
    xs = sorted(run.losses)
    ax.plot(xs, [run.losses[s] for s in xs], "o-", ms=3, color="tab:blue",
            label=f"run on {result.first_device}")
    xs = sorted(res.losses)
    ax.plot(xs, [res.losses[s] for s in xs], "s-", ms=3, color="tab:orange",
            label=f"resumed in a new process on {result.next_device}")
    if result.checkpoint_step is not None:
        ax.axvline(result.checkpoint_step + 0.5, color="tab:red", ls="--", lw=1)
        ax.annotate("spot notice -> checkpoint\n-> hand-off",
                    (result.checkpoint_step + 0.5, ax.get_ylim()[1]),
                    xytext=(6, -30), textcoords="offset points", color="tab:red", fontsize=8)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(f"GPT-2 (zoo), backend={res.backend or run.backend}; max |resumed - uninterrupted| = "
                 f"{result.max_abs_diff:.2e}", fontsize=9)
    ax.legend(fontsize=8)
    names = list(result.costs)
    bars = ax_cost.bar(names, [result.costs[n] for n in names],
                       color=["tab:gray", "tab:blue", "tab:green"][: len(names)])
    for b, n in zip(bars, names):
        ax_cost.annotate(f"${result.costs[n]:,.0f}", (b.get_x() + b.get_width() / 2, b.get_height()),
                         ha="center", va="bottom", fontsize=8)
    ax_cost.set_ylabel("USD")
    ax_cost.set_title("same job at 256 H100-hours on 8 GPUs:\nsimulated cost per policy (shipped spot trace)",
                      fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_demo(args: argparse.Namespace) -> DemoResult:
    """The parent side of the demo (see the module docstring)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    import agnostic_rt
    from agnostic_rt.placement.policy import JobProfile, PlacementPolicy

    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # a fresh run: never resume an old demo's state
    # ~6 x params x tokens FLOPs per step (GPT-2 here: 3.7M parameters, batch x 64 tokens).
    flops_per_step = 6 * 3.7e6 * args.batch * 64
    policy = PlacementPolicy(job=JobProfile(args.steps, flops_per_step))
    first = agnostic_rt.select_device(policy)
    first_spec = "cpu" if first.vendor == "cpu" else str(first.torch_device)
    phases = {r: Phase(r) for r in ("reference", "run", "resume")}
    armed_at: list[int] = []
    columns = (TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[note]}"), TimeElapsedColumn())
    with MetadataServer() as imds, Progress(*columns, transient=False) as progress:
        bars = {
            "reference": progress.add_task(f"uninterrupted ({first_spec})", total=args.steps, note=""),
            "run": progress.add_task(f"spot run ({first_spec})", total=args.steps, note=""),
        }

        def on_step(role: str, step: int) -> None:
            if role == "run" and step >= args.notice_at and not armed_at:
                imds.arm()
                armed_at.append(step)
                progress.update(bars["run"], note=f"[red]spot notice at step {step}")

        procs = {
            "reference": _spawn(args, "reference", first_spec, out),
            "run": _spawn(args, "run", first_spec, out,
                          ["--metadata-url", imds.url, "--every", str(args.every)]),
        }
        _run_phases(args, out, procs, phases, progress, bars, on_step)
        for role in ("reference", "run"):
            if phases[role].returncode not in (0, agnostic_rt.EXIT_PREEMPTED):
                raise _fail(phases[role], "expected 0 or EXIT_PREEMPTED")
        exit_code = phases["run"].returncode
        ckpt = agnostic_rt.latest_checkpoint(out / "checkpoints")
        ckpt_step = ckpt.step if ckpt is not None else None
        progress.update(bars["run"], note=f"[red]exit {exit_code}: checkpoint at step {ckpt_step}")
        next_spec = _next_device(policy, first_spec)
        sky_yaml, sky_cmd, _ = _sky_handoff(out, args.steps, flops_per_step, "demo")
        bars["resume"] = progress.add_task(f"resumed in a new process ({next_spec})", total=args.steps,
                                           completed=ckpt_step or 0, note="")
        procs = {"resume": _spawn(args, "resume", next_spec, out)}
        _run_phases(args, out, procs, phases, progress, bars)
        if phases["resume"].returncode != 0:
            raise _fail(phases["resume"], "expected 0")
        progress.update(bars["resume"], note=f"resumed from step {phases['resume'].resumed_from}")
    ref, res = phases["reference"].losses, phases["resume"].losses
    common = sorted(set(ref) & set(res))
    diff = max((abs(ref[s] - res[s]) for s in common), default=float("nan"))
    result = DemoResult(
        steps=args.steps, notice_armed_at=armed_at[0] if armed_at else None, checkpoint_step=ckpt_step,
        exit_code=exit_code, first_device=phases["run"].device or first_spec,
        next_device=phases["resume"].device or next_spec, phases=phases, max_abs_diff=diff, sky_yaml=sky_yaml,
        sky_command=sky_cmd, costs=_simulated_costs(), wall_s=0.0, png=str(out / "demo.png"),
    )
    _plot(result, out / "demo.png")
    result.wall_s = time.time() - t0
    summary = {k: v for k, v in result.__dict__.items() if k != "phases"}
    summary["phases"] = {r: {**p.__dict__, "log_path": str(p.log_path)} for r, p in phases.items()}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return result


def _print_summary(r: DemoResult) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="agnostic-rt demo", show_header=False)
    run, res = r.phases["run"], r.phases["resume"]
    t.add_row("model", "zoo GPT-2 (4 layers, 256 wide, 3.7M parameters)")
    t.add_row("backend", f"{res.backend or run.backend}"
              + (f"  [yellow]{'; '.join(run.notes)}" if run.notes else ""))
    t.add_row("trained on", r.first_device)
    if r.exit_code == 75:
        t.add_row("spot notice", f"armed at step {r.notice_armed_at}; "
                                 f"checkpoint committed at step {r.checkpoint_step}; "
                                 f"worker exited {r.exit_code} (EXIT_PREEMPTED)")
    else:
        t.add_row("spot notice", f"[yellow]the run finished (exit {r.exit_code}) before the notice was seen")
    t.add_row("resumed on", f"{r.next_device}, fresh process, from step {res.resumed_from}")
    t.add_row("loss", f"{r.phases['reference'].losses.get(1, float('nan')):.3f} -> "
                      f"{res.losses.get(r.steps, float('nan')):.3f} after {r.steps} steps")
    t.add_row("resumed vs uninterrupted",
              f"max |loss difference| = {r.max_abs_diff:.2e} over the resumed steps")
    t.add_row("cloud hand-off", f"{r.sky_yaml}  (launch: {r.sky_command})")
    base = r.costs.get("on-demand")
    t.add_row("simulated cost", ", ".join(f"{k} ${v:,.0f}" + (f" ({v / base:.0%})" if base else "")
                                          for k, v in r.costs.items()) + "  (256 H100-hours, shipped trace)")
    t.add_row("plot", r.png)
    t.add_row("wall time", f"{r.wall_s:.0f} s")
    Console().print(t)


def main(argv: list[str] | None = None) -> int:
    """``agnostic-rt demo`` (and, with ``--worker``, one of its training processes)."""
    ap = argparse.ArgumentParser(prog="agnostic-rt demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20, help="training steps in all (default 20)")
    ap.add_argument("--notice-at", type=int, default=None,
                    help="step at which the spot notice is played (default: half)")
    ap.add_argument("--batch", type=int, default=2, help="sequences per step (64 tokens each; default 2)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--every", type=int, default=10,
                    help="periodic checkpoint interval in steps (default 10)")
    ap.add_argument("--backend", default="agnostic", help="torch.compile backend (default agnostic)")
    ap.add_argument("--out", default="agnostic-rt-demo", help="output folder (default ./agnostic-rt-demo)")
    ap.add_argument("--worker", choices=("reference", "run", "resume"), help=argparse.SUPPRESS)
    ap.add_argument("--device", default="fastest", help=argparse.SUPPRESS)
    ap.add_argument("--ckpt", help=argparse.SUPPRESS)
    ap.add_argument("--metadata-url", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return _worker(args)
    if args.steps < 2:
        print(f"agnostic-rt demo: --steps={args.steps} must be >= 2", file=sys.stderr)
        return 2
    args.notice_at = args.notice_at or args.steps // 2
    if not 1 <= args.notice_at < args.steps:
        print(f"agnostic-rt demo: --notice-at={args.notice_at} must be in [1, {args.steps - 1}]",
              file=sys.stderr)
        return 2
    try:
        result = run_demo(args)
    except RuntimeError as exc:
        print(f"agnostic-rt demo failed: {exc}", file=sys.stderr)
        return 1
    _print_summary(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
