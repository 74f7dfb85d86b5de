"""Exact host work per step of agnostic's and Inductor's GPU programs, counted, not timed: on the
shared 2-core dev machine a step's time moves by ±15% between processes and even between blocks of
one process, so a few-percent host change only shows in counts.

Both compiles are bench/host_overhead.py's (its ``stubbed_launches``, ``rewritten_programs`` and
``inductor_step``): the H100 program in interpret mode with every Triton launch a no-op through the
launcher's GPU path, and Inductor's Triton code for the CPU device with its launchers' runner
stubbed; ``--library stub`` (the default) stubs both sides' library calls too (they allocate their
outputs, or return their ``out=``). After warm-up, cProfile records ``--steps`` whole steps of each
(forward, eager loss and backward for training), and the rows give per step:

- ``calls``: every Python-level call the profiler sees (Python functions and the builtins they
  call), the step's host work in Python's own unit, outside the programs included (Dynamo's guards,
  aot's wrappers, the loss);
- ``allocs``: calls of the C++ allocator entry points (``_empty_strided_cpu``/``_cuda``) that both
  programs and the library stubs use;
- ``reinterpret``: ``_reinterpret_tensor`` calls (views without a check, donors reused);
- agnostic only: ``checks``, the step's ``stride()``, ``data_ptr()`` and ``storage_offset()`` calls
  (the layout tests of its program, and any made outside it), ``conformed`` (library outputs checked
  once) and ``view_of`` (views made through ``ViewOf``);
- Inductor only: ``asserts``, its ``assert_size_stride`` calls.

cProfile sees a C function only when Python calls it directly: one called through a
``functools.partial`` (agnostic's ATen calls, ``program.fast_op``, and a planned matmul's ``out=``
binding) is not counted, on either tree; with ``--library stub`` the library calls of both sides are
Python stubs and are counted.

    python bench/host_calls.py --models mlp gpt2 bert --modes inference training
"""

from __future__ import annotations

import argparse
import cProfile
import json
import platform
import pstats
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import host_overhead as ho  # noqa: E402  (a sibling bench script, not an installed module)

WARMUP = 5


def _per_step(profile: cProfile.Profile, steps: int) -> dict[str, float]:
    stats = pstats.Stats(profile).stats  # (file, line, name) -> (primitive calls, calls, ...)

    def calls(*names: str) -> float:
        return sum(v[1] for k, v in stats.items() if any(n in k[2] for n in names)) / steps

    return {
        "calls": sum(v[1] for v in stats.values()) / steps,
        "allocs": calls("_empty_strided_cpu", "_empty_strided_cuda"),
        "reinterpret": calls("_reinterpret_tensor"),
        "checks": calls("'stride'", "'data_ptr'", "'storage_offset'"),
        "conformed": sum(v[1] for k, v in stats.items() if k[2] == "conformed") / steps,
        "view_of": sum(v[1] for k, v in stats.items()
                       if k[2] == "__call__" and k[0].endswith("view_fold.py")) / steps,
        "asserts": calls("assert_size_stride"),
    }


def _profiled(step, steps: int) -> dict[str, float]:
    for _ in range(WARMUP):
        step()
    profile = cProfile.Profile()
    for _ in range(steps):
        step.zero()
        profile.enable()
        step.run()
        profile.disable()
    return _per_step(profile, steps)


def measure(model: str, mode: str, steps: int, library: str = "stub") -> dict:
    case = ho._Case(model, "cpu", 2, dict(ho.OPTIONS))
    torch.set_num_threads(1)
    torch._dynamo.reset()
    stub = library == "stub"
    row: dict = {"model": model, "mode": mode, "steps": steps, "library": library}
    with ho.stubbed_launches():
        agnostic = ho.Step(case, "agnostic", mode)
        with ho.rewritten_programs(meter=False, stub_library=stub) if stub else ho.contextlib.nullcontext():
            agnostic()  # compiles
        row["agnostic"] = _profiled(agnostic, steps)
        inductor = ho.inductor_step(case, mode, stub)
        if "step" in inductor:
            row["inductor"] = _profiled(inductor["step"], steps)
        else:
            row["inductor_error"] = inductor.get("inductor_error")
    torch._dynamo.reset()
    return row


HEAD = ("| model | mode | agnostic calls | Inductor calls | agnostic allocs | Inductor allocs "
        "| agnostic reinterpret | Inductor reinterpret | agnostic checks | conformed | view_of "
        "| Inductor asserts |")


def table(rows: list[dict]) -> str:
    lines = [HEAD, "|" + "---|" * (HEAD.count("|") - 1)]
    for r in rows:
        a, i = r["agnostic"], r.get("inductor") or {}

        def f(d: dict, k: str) -> str:
            return f"{d[k]:.0f}" if k in d else "—"

        lines.append(f"| {r['model']} | {r['mode']} | {f(a, 'calls')} | {f(i, 'calls')} | {f(a, 'allocs')} | "
                     f"{f(i, 'allocs')} | {f(a, 'reinterpret')} | {f(i, 'reinterpret')} | {f(a, 'checks')} | "
                     f"{f(a, 'conformed')} | {f(a, 'view_of')} | {f(i, 'asserts')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["mlp", "gpt2", "bert"])
    ap.add_argument("--modes", nargs="+", default=["inference", "training"])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--library", choices=["stub", "run"], default="stub")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    rows = [measure(m, mode, args.steps, args.library) for m in args.models for mode in args.modes]
    machine = (f"{platform.machine()}; torch {torch.__version__}; Python {platform.python_version()}; "
               f"exact counts per step (cProfile over {args.steps} steps after {WARMUP} warm-up), "
               f"library {args.library}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {"machine": machine, "argv": argv or sys.argv[1:], "rows": rows}
        args.json.write_text(json.dumps(report, indent=1))
    print(f"Machine: {machine}.\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
