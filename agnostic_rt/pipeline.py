"""The compile path for one ATen graph: optimise -> partition -> compile groups -> program."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch.fx as fx

from . import backends, passes
from .config import Options
from .debug import DebugDump
from .program import boxed, build_program
from .targets import Target

log = logging.getLogger("agnostic_rt.pipeline")


def compile_graph(gm: fx.GraphModule, example_inputs, *, target: Target, options: Options, kind: str) -> Callable:
    """Compile one forward, backward or inference graph into a boxed program for ``target``."""
    dump = DebugDump(options.debug_dir, kind)
    dump.graph("0_aten", gm)
    if options.passes:
        gm = passes.optimize(gm, target, numerics=options.numerics, dump=dump)
        dump.graph("1_optimized", gm)
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
    program = build_program(gm, groups, kernels)
    dump.graph("2_program", program)
    stats = program.meta["agnostic_stats"]
    log.info("%s graph for %s: %d kernels, %d library calls, %d ATen nodes",
             kind, target.name, stats.kernels, stats.library, stats.aten)
    return boxed(program, cudagraphs=options.cudagraphs and target.torch_device.startswith("cuda"))
