"""The compile path for one ATen graph: optimise -> partition -> compile groups -> program."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import torch.fx as fx

from . import backends, passes
from .config import Options
from .debug import DebugDump
from .runtime.library_out import plan_library_outputs
from .runtime.memory_plan import plan_buffers
from .runtime.program import boxed, build_program
from .runtime.view_fold import fold_views, hidden_outputs
from .targets import Target

log = logging.getLogger("agnostic_rt.pipeline")


def compile_graph(gm: fx.GraphModule, example_inputs, *, target: Target, options: Options, kind: str,
                  gains: dict[str, tuple[float, int]] | None = None) -> Callable:
    """Compile one forward, backward or inference graph into a boxed program for ``target``.

    ``gains[kind]`` records (what the program is estimated to save over ``gm`` run through ATen in
    seconds -- the optimiser's cost before minus after, infinite with a generated kernel -- and the
    nodes of ``gm``), so the backend can weigh the saving against aot_autograd's runtime.
    """
    dump = DebugDump(options.debug_dir, kind)
    dump.graph("0_aten", gm)
    gain, nodes = 0.0, len(gm.graph.nodes)
    if options.passes:
        gm = passes.optimize(gm, target, numerics=options.numerics, dump=dump)
        dump.graph("1_optimized", gm)
        report = gm.meta.get("agnostic_optimize")
        if report is not None and report.changed:
            gain = report.cost_before - report.cost_after
    groups = passes.partition(gm, target)
    backend = backends.for_target(target, options)
    kernels = {}
    for gi, group in enumerate(groups):
        if group.kind != "kernel":
            continue
        launcher = backend.compile(group)
        if launcher is None:
            log.debug("group %d (%s) not generated; its nodes run through ATen", gi, ", ".join(group.ops))
            continue
        kernels[gi] = launcher
    if gains is not None:
        gains[kind] = (float("inf") if kernels else gain, nodes)
    program = build_program(gm, groups, kernels)
    fold_views(program, hidden_outputs(program, kind))
    if kernels:  # matmuls write into buffers the program places, as its kernels do
        plan_library_outputs(program)
    reused = 0
    if options.reuse_buffers and kernels:
        plan = plan_buffers(program)
        dump.json("3_memory_plan.json", dataclasses.asdict(plan))
        reused = plan.reused
    dump.graph("2_program", program)
    stats = program.meta["agnostic_stats"]
    log.info("%s graph for %s: %d kernels, %d library calls, %d ATen nodes, %d kernel outputs in reused buffers",
             kind, target.name, stats.kernels, stats.library, stats.aten, reused)
    return boxed(program, cudagraphs=options.cudagraphs and target.torch_device.startswith("cuda"))
