"""Compare eager, aot_eager, Inductor and agnostic on the model zoo (``agnostic-rt bench``).

For every (backend, model) a fresh process measures the first call (compile + run) with cold caches,
then a second process with the same cache folders measures it warm. Steady ms/step comes from one
more fresh process per model that compiles every backend and times them in interleaved rounds
(the order rotating each round), so drift on a shared machine hits all backends alike; the median
over ``--steps`` rounds after warm-up. Inference runs under ``torch.no_grad()`` in eval mode; a
training step is forward + loss + backward (no optimizer, so every backend does the same work).
"dynamo" is ``torch.compile(backend="eager")``: Dynamo's capture and guards with no compiler, the
floor every torch.compile backend pays.

    agnostic-rt bench --models mlp gpt2 --steps 30
    python bench/compare.py --device cuda --backends eager inductor agnostic
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

BACKENDS = ("eager", "dynamo", "aot_eager", "inductor", "agnostic")
MODES = ("inference", "training")


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


class _Case:
    """One zoo model's inputs on ``device`` and the step functions built for it."""

    def __init__(self, model_name: str, device: str, batch: int | None, options: dict):
        import torch

        from agnostic_rt.conformance.zoo import get

        torch.set_num_threads(max(1, os.cpu_count() or 1))
        self.entry, self.device, self.options = get(model_name), device, options
        inputs, target = self.entry.example(batch)
        self.inputs = tuple(x.to(device) for x in inputs)
        self.target = target.to(device)

    def step_fn(self, backend: str, mode: str, options: dict | None = None) -> Callable[[], object]:
        """A fresh model compiled by ``backend`` (agnostic with ``options``, else the case's); calling the
        result runs one inference or training step; its ``model`` attribute is the model."""
        import torch

        model = self.entry.build().to(self.device).train(mode == "training")
        if backend == "eager":
            fn = model
        elif backend == "agnostic":
            fn = torch.compile(model, backend="agnostic", options=self.options if options is None else options)
        else:
            fn = torch.compile(model, backend="eager" if backend == "dynamo" else backend)
        entry, inputs, target = self.entry, self.inputs, self.target

        def step():
            if mode == "inference":
                with torch.no_grad():
                    return fn(*inputs)
            loss = entry.loss(fn(*inputs), target)
            loss.backward()
            return loss

        step.model = model
        return step


def measure(model_name: str, backend: str, device: str, steps: int, batch: int | None, options: dict) -> dict:
    """Run in the child: first-call seconds (and, with ``steps``, steady ms) for inference and training."""
    import torch

    case = _Case(model_name, device, batch, options)
    result: dict = {"model": model_name, "backend": backend}
    for mode in MODES:
        torch._dynamo.reset()
        step = case.step_fn(backend, mode)
        t0 = time.perf_counter()
        step()
        _sync(device)
        result[f"{mode}_first_s"] = time.perf_counter() - t0
        for _ in range(5):
            step()
        _sync(device)
        if steps:
            times = []
            for _ in range(steps):
                t0 = time.perf_counter()
                step()
                _sync(device)
                times.append((time.perf_counter() - t0) * 1e3)
            result[f"{mode}_ms"] = statistics.median(times)
    return result


def steady_interleaved(model_name: str, backends: list[str], device: str, steps: int, batch: int | None,
                       options: dict) -> dict[str, dict]:
    """Steady ms per backend and mode, all backends compiled in this process and timed in rounds."""
    import torch

    case = _Case(model_name, device, batch, options)
    out: dict[str, dict] = {b: {} for b in backends}
    for mode in MODES:
        torch._dynamo.reset()  # one model's compiles per mode stay under Dynamo's recompile limit
        steps_by = {b: case.step_fn(b, mode) for b in backends}
        for step in steps_by.values():
            for _ in range(5):
                step()
        _sync(device)
        times: dict[str, list[float]] = {b: [] for b in backends}
        for r in range(steps):
            for b in backends[r % len(backends):] + backends[:r % len(backends)]:
                t0 = time.perf_counter()
                steps_by[b]()
                _sync(device)
                times[b].append((time.perf_counter() - t0) * 1e3)
        for b in backends:
            out[b][f"{mode}_ms"] = statistics.median(times[b])
    return out


def _child(args: argparse.Namespace) -> int:
    if args.steady_child:
        res = steady_interleaved(args.steady_child, args.backends, args.device, args.steps, args.batch,
                                 json.loads(args.options))
    else:
        res = measure(args.child, args.backends[0], args.device, 0, args.batch, json.loads(args.options))
    print("RESULT " + json.dumps(res))
    return 0


def _run_child(model: str, backend: str | list[str], args: argparse.Namespace, env: dict,
               steady: bool = False) -> dict:
    which = ["--steady-child", model] if steady else ["--child", model]
    cmd = [sys.executable, "-m", "agnostic_rt.apps.bench_compare", *which, "--backends",
           *([backend] if isinstance(backend, str) else backend),
           "--device", args.device, "--steps", str(args.steps), "--options", args.options]
    if args.batch:
        cmd += ["--batch", str(args.batch)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    return {"model": model, "backend": backend, "error": " | ".join(tail)}


def machine_description(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
    else:
        name = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    return f"{name}; torch {torch.__version__}; Python {platform.python_version()}"


def utc_stamp() -> str:
    """When a benchmark section was measured, as BENCHMARKS.md headings give it."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def script_command(root: Path) -> str:
    """The command that ran this benchmark script, as a reader would retype it from ``root``."""
    import shlex

    return "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], root), *sys.argv[1:]])


def publish(section: str, path: Path | str | None) -> None:
    """Print a benchmark's markdown section and append it to ``path`` (BENCHMARKS.md) unless None;
    one write, since several engineers append their own sections."""
    print(section)
    if path is not None:
        with open(path, "a") as f:
            f.write(section)


def run(args: argparse.Namespace) -> list[dict]:
    rows = []
    for model in args.models:
        first = len(rows)
        for backend in args.backends:
            if args.inprocess:
                # One process for everything (a lent GPU's minutes are scarce): steady times are
                # comparable, first-call times are not cold.
                try:
                    row = measure(model, backend, args.device, args.steps, args.batch, json.loads(args.options))
                except Exception as exc:  # one backend failing must not hide the others' figures
                    row = {"model": model, "backend": backend, "error": f"{type(exc).__name__}: {exc}"}
                rows.append(row)
                print(_row_text(row), flush=True)
                continue
            with tempfile.TemporaryDirectory() as cache:
                env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=f"{cache}/inductor",
                           AGNOSTIC_RT_CACHE_DIR=f"{cache}/agnostic", TRITON_CACHE_DIR=f"{cache}/triton")
                cold = _run_child(model, backend, args, env)
                warm = _run_child(model, backend, args, env) if backend != "eager" else cold
            row = dict(cold)
            for mode in MODES:
                row[f"{mode}_warm_first_s"] = warm.get(f"{mode}_first_s")
            rows.append(row)
        if not args.inprocess:
            steady = _run_child(model, args.backends, args, dict(os.environ), steady=True)
            for row in rows[first:]:
                if "error" in steady:
                    row.setdefault("error", f"steady run: {steady['error']}")
                else:
                    row.update(steady[row["backend"]])
                print(_row_text(row), flush=True)
    return rows


def _fmt(v, unit: str) -> str:
    return "—" if v is None else f"{v:.3g}{unit}"


def _row_text(r: dict) -> str:
    if "error" in r:
        return f"| {r['model']} | {r['backend']} | error: {r['error'][:120]} | | | | | |"
    return (f"| {r['model']} | {r['backend']} | {_fmt(r['inference_first_s'], ' s')} / "
            f"{_fmt(r.get('inference_warm_first_s'), ' s')} | {_fmt(r.get('inference_ms'), ' ms')} | "
            f"{_fmt(r['training_first_s'], ' s')} / {_fmt(r.get('training_warm_first_s'), ' s')} | "
            f"{_fmt(r.get('training_ms'), ' ms')} |")


def table(rows: list[dict]) -> str:
    head = ("| model | backend | inference first call cold / warm | inference steady | "
            "training first call cold / warm | training steady |\n|---|---|---|---|---|---|")
    lines = [head] + [_row_text(r) for r in rows]
    # Steady-state ratio eager / agnostic per model: > 1 means agnostic is faster.
    by = {(r["model"], r["backend"]): r for r in rows if "error" not in r}
    ratios = []
    for model in dict.fromkeys(r["model"] for r in rows):
        e = by.get((model, "eager"))
        cells = []
        for other in ("agnostic", "dynamo"):
            o = by.get((model, other))
            cells += [f"{e[k] / o[k]:.2f}x" if e and o and e.get(k) and o.get(k) else "—"
                      for k in ("inference_ms", "training_ms")]
        if e:
            ratios.append(f"| {model} | " + " | ".join(cells) + " |")
    if ratios:
        lines += ["", "| model | eager/agnostic inference | eager/agnostic training | eager/dynamo inference "
                  "| eager/dynamo training |", "|---|---|---|---|---|"] + ratios
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from agnostic_rt.conformance.zoo import ZOO

    p = argparse.ArgumentParser(prog="agnostic-rt bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(ZOO), choices=list(ZOO))
    p.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--options", default="{}", help="JSON options for backend='agnostic'")
    p.add_argument("--append", default=None, help="append the table to this markdown file (BENCHMARKS.md)")
    p.add_argument("--json", default=None, help="write the raw rows here")
    p.add_argument("--inprocess", action="store_true",
                   help="measure everything in this process (steady times only; first calls are not cold)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--steady-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child or args.steady_child:
        return _child(args)
    rows = run(args)
    text = table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    cmd = "agnostic-rt bench " + " ".join(argv if argv is not None else sys.argv[1:])
    publish(f"\n### Zoo: eager vs Dynamo vs aot_eager vs Inductor vs agnostic ({utc_stamp()})\n\n"
            f"Machine: {machine_description(args.device)}. Command: `{cmd}`. First call = compile + "
            f"run in a fresh process (cold caches / warm caches); steady = median ms over "
            f"{args.steps} interleaved rounds of all backends in one fresh process, after 5 "
            f"warm-up steps; dynamo = torch.compile(backend='eager'), Dynamo with no compiler.\n\n{text}\n"
            if args.append else text, args.append)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
