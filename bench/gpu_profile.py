"""Where a zoo step's time goes: host (Python, dispatch, launches) or device (kernels), per backend.

For each model x mode x backend: compile + 5 warm-up steps, then ``--steps`` timed steps (steady =
start to after ``torch.cuda.synchronize``; host = start until the step's Python call returns, before
the sync), then ``--prof-steps`` steps under torch.profiler, which gives per step the device busy time
(sum of kernel/memcpy/memset durations; overlapping kernels are not merged), the device launches,
the top-level ATen ops dispatched on the CPU, and the top host entries (self CPU; Python time counts
as the self time of the region it runs in: Dynamo's, aot's CompiledFunction, or gpu_profile::step)
and device kernels.
Verdict: "host-bound" when host ms >= device busy ms. The host column is measured without the
profiler (which inflates host time); the profiled host time is in the JSON as ``host_prof_ms``.

    python bench/gpu_profile.py --models mlp gpt2 --json out/profile.json
    python bench/gpu_profile.py --device cpu --models mlp --backends eager agnostic --steps 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function

from agnostic_rt.apps.bench_compare import MODES, _Case, _sync, machine_description
from agnostic_rt.conformance.zoo import ZOO

STEP = "gpu_profile::step"  # the record_function around each profiled step; its self time is Python


def _top(counter: Counter, steps: int, n: int = 5) -> list[list]:
    return [[name[:60], round(us / steps / 1e3, 4)] for name, us in counter.most_common(n)]


def _is_top_aten(evt) -> bool:
    """An aten:: op not called from inside another aten:: op (what the program itself dispatched)."""
    if not evt.name.startswith("aten::"):
        return False
    parent = evt.cpu_parent
    while parent is not None:
        if parent.name.startswith("aten::"):
            return False
        parent = parent.cpu_parent
    return True


def summarise(events, steps: int, on_cuda: bool) -> dict:
    """Per-step figures from a profiler's ``events()`` over ``steps`` steps."""
    # Annotations mirrored onto the GPU timeline (record_function, Dynamo's regions) are not kernels.
    device = [e for e in events
              if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)]
    # Host events that start inside a step (any thread: CUDA backward runs on autograd's device thread);
    # the sync after each step is outside, so waiting is not counted as host work.
    spans = [(e.time_range.start, e.time_range.end) for e in events
             if e.name == STEP and e.device_type == DeviceType.CPU]
    host = [e for e in events if e.device_type == DeviceType.CPU
            and any(a <= e.time_range.start <= b for a, b in spans)]
    host_self: Counter = Counter()
    for e in host:
        host_self[e.name] += e.self_cpu_time_total
    dev_time: Counter = Counter()
    for e in device:
        dev_time[e.name] += e.time_range.elapsed_us()
    step_us = [(b - a) for a, b in spans]
    return {
        "host_prof_ms": statistics.median(step_us) / 1e3 if step_us else None,
        "device_busy_ms": sum(dev_time.values()) / steps / 1e3 if on_cuda else None,
        "launches": len(device) / steps if on_cuda else None,
        "aten_ops": sum(map(_is_top_aten, host)) / steps,
        "top_host": _top(host_self, steps),
        "top_device": _top(dev_time, steps),
    }


def profile_row(case: _Case, backend: str, mode: str, steps: int, prof_steps: int) -> dict:
    """One model x mode x backend: steady and host ms, then the profiler's per-step summary."""
    torch._dynamo.reset()
    device, on_cuda = case.device, case.device.startswith("cuda")
    step = case.step_fn(backend, mode)
    for _ in range(6):  # compile + 5 warm-up steps
        step()
    _sync(device)
    steady, host = [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        t1 = time.perf_counter()
        _sync(device)
        steady.append((time.perf_counter() - t0) * 1e3)
        host.append((t1 - t0) * 1e3)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(prof_steps):
            with record_function(STEP):
                step()
            _sync(device)
    row = {"steady_ms": statistics.median(steady), "host_ms": statistics.median(host),
           **summarise(prof.events(), prof_steps, on_cuda)}
    busy = row["device_busy_ms"]
    row["verdict"] = ("n/a (cpu)" if busy is None
                      else "host-bound" if row["host_ms"] >= busy else "device-bound")
    return row


def _f(v, fmt: str = "{:.3g}") -> str:
    return "—" if v is None else fmt.format(v)


def table(rows: list[dict]) -> str:
    lines = ["| model | mode | backend | steady ms | host ms | device busy ms | launches | aten ops | "
             "verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        head = f"| {r['model']} | {r['mode']} | {r['backend']} |"
        if "error" in r:
            lines.append(f"{head} error: {r['error'][:120]} | | | | | |")
            continue
        lines.append(f"{head} {_f(r['steady_ms'])} | {_f(r['host_ms'])} | {_f(r['device_busy_ms'])} | "
                     f"{_f(r['launches'], '{:.0f}')} | {_f(r['aten_ops'], '{:.0f}')} | {r['verdict']} |")
    return "\n".join(lines)


def top_lists(rows: list[dict]) -> str:
    out = []
    for r in (r for r in rows if "error" not in r):
        key = f"{r['model']}/{r['mode']}/{r['backend']}"
        for which in ("host", "device"):
            items = "; ".join(f"{name} {ms:.3g}" for name, ms in r[f"top_{which}"]) or "—"
            out.append(f"top {which} {key} (ms/step): {items}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["mlp", "gpt2"], choices=list(ZOO))
    p.add_argument("--backends", nargs="+", default=["eager", "inductor", "agnostic"])
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=30, help="timed steady steps")
    p.add_argument("--prof-steps", type=int, default=10, help="steps under the profiler")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--options", default="{}", help="JSON options for backend='agnostic'")
    p.add_argument("--json", default=None, help="write the rows here (rewritten after each row)")
    args = p.parse_args(argv)
    rows: list[dict] = []
    machine = machine_description(args.device)
    for model in args.models:
        case = _Case(model, args.device, args.batch, json.loads(args.options))
        for mode in args.modes:
            for backend in args.backends:
                row = {"model": model, "mode": mode, "backend": backend}
                try:
                    row.update(profile_row(case, backend, mode, args.steps, args.prof_steps))
                except Exception as exc:  # one backend failing must not hide the others' figures
                    row["error"] = f"{type(exc).__name__}: {exc}"[:300]
                rows.append(row)
                print(f"{model} {mode} {backend}: " + json.dumps({k: v for k, v in row.items()
                                                                   if not k.startswith("top_")}), flush=True)
                if args.json:  # a stage killed by its time limit still leaves the rows it finished
                    Path(args.json).write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    torch._dynamo.reset()
    print(f"machine: {machine}")
    print(table(rows))
    print(top_lists(rows))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
