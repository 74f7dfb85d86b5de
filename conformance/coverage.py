"""Coverage: how much of a model's ATen graphs runs in generated kernels rather than ATen fallbacks.

    python -m agnostic_rt.conformance.coverage gpt2 bert --target h100

Compiles each graph (forward and backward) exactly as the "agnostic" backend does, up to and
including kernel generation, but runs the step eagerly (no interpreter), so a report takes seconds.
Library calls (matmul, attention) are not counted against coverage; ATen views left between library
calls are metadata-only and counted on their own line.
"""

from __future__ import annotations

import argparse
import functools
import json

import torch

from agnostic_rt import passes
from agnostic_rt.config import Options
from agnostic_rt.decomp import decompositions_for
from agnostic_rt.targets import Target, get_target


def graph_coverage(gm, target: Target, options: Options) -> dict:
    """Partition ``gm`` and generate its kernels; the coverage of what would run where."""
    from agnostic_rt import backends

    if options.passes:
        gm = passes.optimize(gm, target, numerics=options.numerics)
    groups = passes.partition(gm, target)
    backend = backends.for_target(target, options)
    compiled = {k for k, g in enumerate(groups) if g.kind == "kernel" and backend.compile(g) is not None}
    from agnostic_rt.passes.partitioner import coverage

    report = coverage(groups, compiled)
    report["kernels"] = len(compiled)
    return report


def zoo_coverage(name: str, target: str = "h100", batch: int = 2, training: bool = True) -> dict[str, dict]:
    """Coverage per graph ("forward", "backward" or "inference") of zoo model ``name``."""
    from torch._dynamo.backends.common import aot_autograd
    from torch._functorch.aot_autograd import make_boxed_func
    from torch._functorch.partitioners import min_cut_rematerialization_partition

    from agnostic_rt.conformance.zoo import ZOO

    tgt = get_target(target).with_device("cpu")
    options = Options.from_user({"target": target, "interpret": True})
    reports: dict[str, dict] = {}

    def compiler(gm, example_inputs, kind):
        reports[kind] = graph_coverage(gm, tgt, options)
        return make_boxed_func(gm.forward)

    backend = aot_autograd(
        fw_compiler=functools.partial(compiler, kind="forward"),
        bw_compiler=functools.partial(compiler, kind="backward"),
        inference_compiler=functools.partial(compiler, kind="inference"),
        decompositions=decompositions_for(tgt),
        partition_fn=min_cut_rematerialization_partition,
        keep_inference_input_mutations=True,
    )
    entry = ZOO[name]
    model = entry.build()
    model.train(training)
    inputs, labels = entry.example(batch)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=backend)
    if training:
        entry.loss(compiled(*inputs), labels).backward()
    else:
        with torch.no_grad():
            compiled(*inputs)
    torch._dynamo.reset()
    return reports


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", default=["mlp", "cnn", "gpt2", "gpt2_eager", "bert", "bert_eager"])
    ap.add_argument("--target", default="h100")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    from agnostic_rt.config import configure_logging

    configure_logging()
    table = {m: zoo_coverage(m, args.target) for m in args.models}
    if args.json:
        print(json.dumps(table, indent=1))
        return
    print(f"{'graph':<22}{'generated':>10}{'fallback':>9}{'share':>8}{'views':>7}{'library':>8}{'kernels':>8}"
          "  fallback ops")
    for m, graphs in table.items():
        for kind, r in graphs.items():
            print(f"{m + ':' + kind:<22}{r['generated']:>10}{r['fallback']:>9}{r['generated_share']:>8.1%}"
                  f"{r['views']:>7}{r['library']:>8}{r['kernels']:>8}  {r['fallback_ops']}")


if __name__ == "__main__":
    main()
