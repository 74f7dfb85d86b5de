"""The kernel groups the backend forms for one training step of a zoo model, with the real values
of each group's inputs, so that the kernel tier can run every generated kernel alone.

    for g in kernel_groups("mlp", run):          # run: an interpreted TargetRun (h100-interp, ...)
        launcher = g.compile()                    # the backend's own launcher, or None (ATen runs it)
        got, want = launcher(*g.values), g.reference(*g.values)

The step is compiled through Dynamo and aot_autograd exactly as ``backend="agnostic"`` configures
them (``passes.rewrite_before_autograd``, then ``backend.make_aot``: the target's decompositions
and partitioner); each forward and backward graph then goes through the first two stages of
``pipeline.compile_graph`` (``passes.optimize``, ``passes.partition``) and runs through ATen under
an ``fx.Interpreter`` that keeps the value of every kernel group's input. The kernels themselves
come from ``backends.for_target(...).compile(group)``, the call the pipeline makes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.fx as fx

from .runs import TargetRun

#: The batch every capture uses: odd, so that no generated kernel's sizes are all powers of two and
#: the masks of the last block are exercised.
BATCH = 3


@dataclass
class KernelGroup:
    """One kernel group of one graph, and what its inputs held when the model ran."""

    model: str
    graph: str  # "forward0", "backward0", ... in the order aot_autograd compiled them
    index: int  # the group's position among the graph's kernel groups
    group: object  # passes.partition.Group
    backend: object  # the target's backend (KernelBackend)
    values: list = field(default_factory=list)  # one per group.inputs, in that order

    @property
    def case(self) -> str:
        """The name results use: ``mlp.backward0.k3``."""
        return f"{self.model}.{self.graph}.k{self.index}"

    def compile(self) -> Callable | None:
        """The launcher the backend makes for this group (None: the group runs through ATen)."""
        return self.backend.compile(self.group)

    def reference(self, *args) -> tuple:
        """The group's FX nodes evaluated through ATen: the reference for its kernel."""
        from agnostic_rt.backends.kernel_backend import group_module

        g = self.group
        return tuple(group_module(g.nodes, g.inputs, g.outputs)(*args))

    def shapes(self) -> str:
        """``f32[3, 256], f32[256] -> f32[3, 256]`` for the report's sample column."""
        outs = [o.meta.get("val") for o in self.group.outputs]
        return f"{_describe(self.values)} -> {_describe(outs)}"


def _describe(values) -> str:
    short = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16", torch.float64: "f64",
             torch.int64: "i64", torch.int32: "i32", torch.bool: "b8"}
    parts = []
    for v in values:
        if isinstance(v, torch.Tensor):
            parts.append(f"{short.get(v.dtype, str(v.dtype))}{list(v.shape)}")
        else:
            parts.append(repr(v))
    return ", ".join(parts)


class _Recorder(fx.Interpreter):
    """Runs a graph through ATen and keeps a copy of the values of ``wanted`` nodes."""

    def __init__(self, gm: fx.GraphModule, wanted: set[fx.Node]):
        super().__init__(gm)
        self.wanted = wanted
        self.values: dict[fx.Node, object] = {}

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        if n in self.wanted:
            self.values[n] = _snapshot(out) if isinstance(out, torch.Tensor) else out
        return out


def _snapshot(t: torch.Tensor) -> torch.Tensor:
    """A copy with ``t``'s exact layout (strides, offset, and overlap: a stride-0 broadcast buffer stays
    one), so that the kernel sees what it saw in the model; ``clone()`` would make it contiguous."""
    t = t.detach()
    return torch.empty(0, dtype=t.dtype, device=t.device).set_(t.untyped_storage().clone(), t.storage_offset(),
                                                                t.shape, t.stride())


def kernel_groups(model_name: str, run: TargetRun, batch: int = BATCH) -> list[KernelGroup]:
    """Every kernel group of one training step (forward + backward) of zoo model ``model_name`` as
    the backend compiles it for ``run`` (an interpreted target), each with its inputs' values."""
    from functorch.compile import make_boxed_func

    from agnostic_rt import backends, passes
    from agnostic_rt.backend import make_aot, resolve_target
    from agnostic_rt.config import Options
    from agnostic_rt.passes.partitioner import KERNEL

    from . import zoo

    options = Options.from_user(dict(run.options))
    entry = zoo.get(model_name)
    model = entry.build()
    inputs, labels = entry.example(batch=batch)
    target = resolve_target(options, inputs)
    backend = backends.for_target(target, options)
    found: list[KernelGroup] = []
    counts: dict[str, int] = {}

    def compile_graph(gm: fx.GraphModule, example_inputs, kind: str):
        # pipeline.compile_graph up to the partition; the program is the optimised graph run by ATen.
        if options.passes:
            gm = passes.optimize(gm, target, numerics=options.numerics)
        groups = [g for g in passes.partition(gm, target) if g.kind == KERNEL]
        graph = f"{kind}{counts.get(kind, 0)}"
        counts[kind] = counts.get(kind, 0) + 1
        mine = [KernelGroup(model_name, graph, k, g, backend) for k, g in enumerate(groups)]
        found.extend(mine)
        wanted = {n for g in groups for n in g.inputs}

        def program(*args):
            rec = _Recorder(gm, wanted)
            out = rec.run(*args)
            for kg in mine:
                kg.values = [rec.values[n] for n in kg.group.inputs]
            return out

        return make_boxed_func(program)

    aot = make_aot(target, compile_graph)

    def dynamo_backend(gm: fx.GraphModule, example_inputs):
        if options.passes:
            gm = passes.rewrite_before_autograd(gm, example_inputs, target, numerics=options.numerics)
        return aot(gm, example_inputs)

    torch._dynamo.reset()
    try:
        compiled = torch.compile(model, backend=dynamo_backend)
        entry.loss(compiled(*inputs), labels).backward()
    finally:
        torch._dynamo.reset()
    return found

