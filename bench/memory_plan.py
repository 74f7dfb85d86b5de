"""What buffer reuse (agnostic_rt/runtime/memory_plan.py) does to each zoo program: kernel outputs that write
into a dead buffer, bytes the program allocates per call, and its planned peak of live storages.

The programs are compiled for a GPU part (default h100) and one step runs in interpret mode on the
CPU, so this needs no GPU; the figures are the plan's own accounting (static, from the graph's
shapes), read from the debug_dir dump each compiled graph leaves (``3_memory_plan.json``). They are
not allocator measurements: graph inputs are not counted, and the CUDA caching allocator rounds sizes.

    python bench/memory_plan.py --models mlp cnn gpt2 bert --batch 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch


def plans(model: str, training: bool, target: str, batch: int) -> list[tuple[str, dict]]:
    """(graph kind, memory plan) of each program the step compiles."""
    from agnostic_rt.conformance.zoo import ZOO

    entry = ZOO[model]
    with tempfile.TemporaryDirectory() as tmp:
        torch._dynamo.reset()
        module = entry.build()
        module.train(training)
        inputs, labels = entry.example(batch)
        compiled = torch.compile(module, backend="agnostic",
                                 options={"target": target, "interpret": True, "debug_dir": tmp})
        if training:
            entry.loss(compiled(*inputs), labels).backward()
        else:
            with torch.no_grad():
                compiled(*inputs)
        found = []
        for d in sorted(Path(tmp).iterdir()):
            f = d / "3_memory_plan.json"
            if f.exists():
                found.append((d.name.split("_", 2)[-1], json.loads(f.read_text())))
        torch._dynamo.reset()
        return found


def _kib(n: int) -> str:
    return f"{n / 1024:,.0f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["mlp", "cnn", "gpt2", "bert"])
    p.add_argument("--target", default="h100")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--json", default=None, help="write the rows here too")
    args = p.parse_args(argv)
    rows = []
    for model in args.models:
        for training in (False, True):
            for kind, plan in plans(model, training, args.target, args.batch):
                rows.append({"model": model, "graph": kind,
                             **{k: v for k, v in plan.items() if k != "donors"}})
    lines = ["| model | graph | kernel outputs | reused | allocated KiB/call before → after "
             "| planned peak KiB before → after |", "|---|---|---|---|---|---|"]
    for r in rows:
        cut = (1 - r["allocated_bytes_after"] / r["allocated_bytes_before"]
               if r["allocated_bytes_before"] else 0.0)
        lines.append(f"| {r['model']} | {r['graph']} | {r['kernel_outputs']} | {r['reused']} | "
                     f"{_kib(r['allocated_bytes_before'])} → {_kib(r['allocated_bytes_after'])} "
                     f"(−{cut:.0%}) | "
                     f"{_kib(r['peak_bytes_before'])} → {_kib(r['peak_bytes_after'])} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
