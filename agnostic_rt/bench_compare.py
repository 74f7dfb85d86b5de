"""Compare eager, aot_eager, Inductor and agnostic on the model zoo (``agnostic-rt bench``).

For every (backend, model) a fresh process measures the first call (compile + run) with cold caches,
then a second process with the same cache folders measures it warm; steady ms/step is the median
over ``--steps`` calls after warm-up. Inference runs under ``torch.no_grad()`` in eval mode; a
training step is forward + loss + backward (no optimizer, so every backend does the same work).

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
from datetime import datetime, timezone
from pathlib import Path

BACKENDS = ("eager", "aot_eager", "inductor", "agnostic")


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(model_name: str, backend: str, device: str, steps: int, batch: int | None, options: dict) -> dict:
    """Run in the child: first-call seconds and steady ms for inference and training."""
    import torch

    from agnostic_rt.conformance.zoo import get

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    entry = get(model_name)
    inputs, target = entry.example(batch)
    inputs = tuple(x.to(device) for x in inputs)
    target = target.to(device)
    result: dict = {"model": model_name, "backend": backend}
    for mode in ("inference", "training"):
        torch._dynamo.reset()
        model = entry.build().to(device).train(mode == "training")
        if backend == "eager":
            fn = model
        elif backend == "agnostic":
            fn = torch.compile(model, backend="agnostic", options=options)
        else:
            fn = torch.compile(model, backend=backend)

        def step(fn=fn, mode=mode):  # bound now: one step function per mode
            if mode == "inference":
                with torch.no_grad():
                    return fn(*inputs)
            loss = entry.loss(fn(*inputs), target)
            loss.backward()
            return loss

        t0 = time.perf_counter()
        step()
        _sync(device)
        result[f"{mode}_first_s"] = time.perf_counter() - t0
        for _ in range(5):
            step()
        _sync(device)
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            step()
            _sync(device)
            times.append((time.perf_counter() - t0) * 1e3)
        result[f"{mode}_ms"] = statistics.median(times)
    return result


def _child(args: argparse.Namespace) -> int:
    res = measure(args.child, args.backends[0], args.device, args.steps, args.batch, json.loads(args.options))
    print("RESULT " + json.dumps(res))
    return 0


def _run_child(model: str, backend: str, args: argparse.Namespace, env: dict) -> dict:
    cmd = [sys.executable, "-m", "agnostic_rt.bench_compare", "--child", model, "--backends", backend,
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


def run(args: argparse.Namespace) -> list[dict]:
    rows = []
    for model in args.models:
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
            for mode in ("inference", "training"):
                row[f"{mode}_warm_first_s"] = warm.get(f"{mode}_first_s")
            rows.append(row)
            print(_row_text(row), flush=True)
    return rows


def _fmt(v, unit: str) -> str:
    return "—" if v is None else f"{v:.3g}{unit}"


def _row_text(r: dict) -> str:
    if "error" in r:
        return f"| {r['model']} | {r['backend']} | error: {r['error'][:120]} | | | | | |"
    return (f"| {r['model']} | {r['backend']} | {_fmt(r['inference_first_s'], ' s')} / "
            f"{_fmt(r.get('inference_warm_first_s'), ' s')} | {_fmt(r['inference_ms'], ' ms')} | "
            f"{_fmt(r['training_first_s'], ' s')} / {_fmt(r.get('training_warm_first_s'), ' s')} | "
            f"{_fmt(r['training_ms'], ' ms')} |")


def table(rows: list[dict]) -> str:
    head = ("| model | backend | inference first call cold / warm | inference steady | "
            "training first call cold / warm | training steady |\n|---|---|---|---|---|---|")
    lines = [head] + [_row_text(r) for r in rows]
    # Steady-state ratio eager / agnostic per model: > 1 means agnostic is faster.
    by = {(r["model"], r["backend"]): r for r in rows if "error" not in r}
    ratios = []
    for model in dict.fromkeys(r["model"] for r in rows):
        e, a = by.get((model, "eager")), by.get((model, "agnostic"))
        if e and a:
            ratios.append(f"| {model} | {e['inference_ms'] / a['inference_ms']:.2f}x | "
                          f"{e['training_ms'] / a['training_ms']:.2f}x |")
    if ratios:
        lines += ["", "| model | eager/agnostic inference | eager/agnostic training |", "|---|---|---|"] + ratios
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
    args = p.parse_args(argv)
    if args.child:
        return _child(args)
    rows = run(args)
    text = table(rows)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    if args.append:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        cmd = "agnostic-rt bench " + " ".join(argv if argv is not None else sys.argv[1:])
        with open(args.append, "a") as f:
            f.write(f"\n### Zoo: eager vs aot_eager vs Inductor vs agnostic ({stamp})\n\n"
                    f"Machine: {machine_description(args.device)}. Command: `{cmd}`. First call = compile + "
                    f"run in a fresh process (cold caches / warm caches); steady = median ms over "
                    f"{args.steps} steps after 5 warm-up steps.\n\n{text}\n")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
