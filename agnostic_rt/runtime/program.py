"""The compiled program: one straight-line Python function that runs groups over buffers in order.

Built as an FX graph and turned into Python source once, so a call does no interpretation,
no re-tracing and no per-node dict lookups: ATen groups are inlined as direct calls, generated
kernels appear as calls to their launchers.
"""

from __future__ import annotations

import functools
import logging
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import networkx as nx
import torch
import torch.fx as fx

from .layouts import conform_library_outputs, direct_views, trust_layouts
from .library_out import inline_planned_outputs

log = logging.getLogger("agnostic_rt.runtime.program")


@dataclass
class ProgramStats:
    kernels: int = 0  # groups that run as generated kernels
    library: int = 0  # library calls (matmul, conv, attention) through ATen
    aten: int = 0  # nodes run node by node through ATen
    kernel_nodes: int = 0  # graph nodes covered by generated kernels
    fallback_ops: dict[str, int] = field(default_factory=dict)
    coverage: dict = field(default_factory=dict)  # passes.partition.coverage(): generated / views / fallback


def build_program(gm: fx.GraphModule, groups: Sequence, kernels: dict[int, Callable]) -> fx.GraphModule:
    """Rewrite ``gm`` so each group in ``kernels`` (group index -> launcher) runs as one call.

    Groups without a launcher keep their nodes. Units (a kernel call, or one kept node) are emitted
    in a topological order of the contracted graph, ties broken by original position (a kernel at
    its last node's place), so a group need not be convex in graph order: a node between its first
    and last member that reads a group output simply runs after the kernel.
    """
    from agnostic_rt.passes.partitioner import coverage

    stats = ProgramStats()
    owner: dict[fx.Node, int] = {}
    for gi, group in enumerate(groups):
        if gi in kernels:
            for n in group.nodes:
                owner[n] = gi
            stats.kernels += 1
            stats.kernel_nodes += len(group.nodes)
        elif group.kind == "library":
            stats.library += 1
        else:
            stats.aten += len(group.nodes)
    stats.coverage = coverage(list(groups), set(kernels))
    stats.fallback_ops = dict(stats.coverage["fallback_ops"])
    if not kernels:
        gm.meta["agnostic_stats"] = stats
        return gm

    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    unit_of = {n: ("k", owner[n]) if n in owner else ("n", n) for n in gm.graph.nodes}
    dag = nx.DiGraph()
    pos: dict = {}
    for n in gm.graph.nodes:
        u = unit_of[n]
        pos[u] = max(pos.get(u, -1), order[n])
        dag.add_node(u)
        for i in n.all_input_nodes:
            if unit_of[i] != u:
                dag.add_edge(unit_of[i], u)
    # Placeholders first and the output last, whatever the tie-breaking does.
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            pos[unit_of[n]] = -1_000_000 + order[n]
        elif n.op == "output":
            pos[unit_of[n]] = 10**12

    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for u in nx.lexicographical_topological_sort(dag, key=lambda u: pos[u]):
        if u[0] == "n":
            node = u[1]
            env[node] = graph.node_copy(node, lambda n: env[n])
            continue
        group = groups[u[1]]
        call = graph.call_function(kernels[u[1]], tuple(env[i] for i in group.inputs))
        for k, out in enumerate(group.outputs):
            env[out] = graph.call_function(operator.getitem, (call, k))  # a plain subscript in the source
            env[out].meta = dict(out.meta)
    out = fx.GraphModule(gm, graph)
    out.meta["agnostic_stats"] = stats
    return out


def boxed(program: fx.GraphModule, cudagraphs: bool = False) -> Callable:
    """aot_autograd's boxed calling convention: the callee takes (and may clear) the arg list.

    ``cudagraphs``: replay the program as a CUDA graph once its shapes proved static (see
    :class:`CudaGraphRunner`); ignored unless the program's inputs are CUDA tensors.
    """
    from torch._functorch.aot_autograd import make_boxed_func

    final_calls(program)
    if cudagraphs:
        return make_boxed_func(CudaGraphRunner(program))
    return make_boxed_func(program.forward)


class CudaGraphRunner:
    """Runs a program eagerly once (compiles and autotunes its kernels), captures it in a
    ``torch.cuda.CUDAGraph`` on the second call, and replays the graph from then on.

    Inputs whose address did not change between the first two calls (parameters, buffers) are used
    in place; the others are copied into static buffers before each replay. A call where a
    supposedly fixed input moved, or any input is not a CUDA tensor (symbolic sizes, CPU scalars),
    runs eagerly instead. Outputs in the graph's pool are cloned out so a later replay cannot
    overwrite a tensor the caller still holds (activations saved for the backward); outputs that are
    inputs or views of them (weights saved for the backward) are remade from the caller's arguments
    (:func:`output_plan`).
    """

    def __init__(self, program: fx.GraphModule):
        self.program = program
        self.fn = program.forward
        self.__name__ = "cudagraph_program"
        self.calls = 0
        self.graph = None
        self.disabled = False
        self.first_ptrs: list[int] | None = None
        # Placeholders the program writes into (copy_ into an input): they must be used in place.
        self.mutated = {i for i, n in enumerate(n for n in program.graph.nodes if n.op == "placeholder")
                        if any(u.op == "call_function" and "copy_" in str(u.target) and u.args[0] is n
                               for u in n.users)}

    def _eligible(self, args) -> bool:
        import torch

        return all(isinstance(a, torch.Tensor) and a.is_cuda for a in args)

    def __call__(self, *args):
        if self.disabled:
            return self.fn(*args)
        if self.graph is not None:
            return self._replay(args)
        self.calls += 1
        if not self._eligible(args):
            self.disabled = True
            log.debug("CUDA graphs off for this program: an input is not a CUDA tensor")
            return self.fn(*args)
        if self.calls == 1:
            self.first_ptrs = [a.data_ptr() for a in args]
            return self.fn(*args)
        return self._capture(args)

    def _capture(self, args):
        import torch

        self.fixed = [i for i, a in enumerate(args) if a.data_ptr() == self.first_ptrs[i]]
        moved = [i for i in range(len(args)) if i not in self.fixed]
        if any(i in self.mutated for i in moved):
            self.disabled = True
            log.debug("CUDA graphs off for this program: a mutated input changes address")
            return self.fn(*args)
        self.static = list(args)
        for i in moved:
            self.static[i] = args[i].clone()
        self.moved = moved
        self.fixed_ptrs = [args[i].data_ptr() for i in self.fixed]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            self.fn(*self.static)  # warm the allocator on a side stream, as capture requires
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self.static_out = self.fn(*self.static)
        except Exception as e:  # a host sync or a CPU op inside: not capturable, run eagerly
            log.warning("CUDA graph capture failed; this program runs without it: %r", e)
            self.disabled = True
            return self.fn(*args)
        self.graph = graph
        self.out_plan = None  # made at the first replay (output_plan)
        log.info("captured a CUDA graph (%d inputs, %d copied per call)", len(args), len(moved))
        return self._replay(args)

    def _replay(self, args):
        for i, p in zip(self.fixed, self.fixed_ptrs):
            if args[i].data_ptr() != p:
                return self.fn(*args)  # a parameter was replaced: this call runs eagerly
        for i in self.moved:
            self.static[i].copy_(args[i])
        self.graph.replay()
        if self.out_plan is None:
            self.out_plan = output_plan(self.static, self.static_out)
        return take_outputs(self.out_plan, self.static_out, args)


def output_plan(static_in: Sequence, static_out) -> list | None:
    """How each output of a captured program reaches the caller: ``("input", i, input stride, size,
    stride, offset)`` when it lives in graph input ``i``'s storage (the input itself, or a view of it: a weight saved for
    the backward), remade from the caller's own argument, which holds the same values, so nothing is
    copied; None for a tensor in the graph's pool, which is cloned out, since the next replay
    overwrites it while the caller may still hold it (activations saved for the backward). The whole
    plan is None when the outputs are not a flat tuple or list (then every tensor is cloned)."""
    import torch

    if not isinstance(static_out, (list, tuple)):
        return None
    owner = {}
    for i, a in enumerate(static_in):
        if isinstance(a, torch.Tensor) and a.numel():
            owner.setdefault(a.untyped_storage().data_ptr(), i)
    plan: list = []
    for o in static_out:
        i = owner.get(o.untyped_storage().data_ptr()) if isinstance(o, torch.Tensor) and o.numel() else None
        if i is None:
            plan.append(None)
        else:
            plan.append(("input", i, static_in[i].stride(), tuple(o.shape), o.stride(),
                         o.storage_offset() - static_in[i].storage_offset()))
    return plan


def take_outputs(plan: list | None, static_out, args: Sequence):
    """The caller's outputs of one replay, following :func:`output_plan`."""
    if plan is None:
        return _clone_out(static_out)
    outs = []
    for o, how in zip(static_out, plan):
        if how is None:
            outs.append(_clone_out(o))
            continue
        _, i, in_stride, size, stride, offset = how
        a = args[i]
        if a.stride() != in_stride:  # laid out unlike the static copy the graph read: take the graph's
            outs.append(_clone_out(o))
        elif offset == 0 and size == tuple(a.shape) and stride == in_stride:
            outs.append(a)
        else:
            outs.append(a.as_strided(size, stride, a.storage_offset() + offset))
    return type(static_out)(outs)


def _clone_out(out):
    import torch

    if isinstance(out, torch.Tensor):
        return out.clone()
    if isinstance(out, (list, tuple)):
        return type(out)(_clone_out(o) for o in out)
    return out


#: Overloads a Python binding picks only when given arguments a program's node never passes for a
#: ``.default`` overload (an ``out=`` tensor, an ``out_dtype``).
_BINDING_PICKS_ONLY_WHEN_ASKED = frozenset({"default", "out", "dtype", "dtype_out"})


@functools.cache
def fast_op(target: Callable) -> Callable:
    """The cheapest call equal to ATen overload ``target`` (others are returned as they are).

    ``OpOverload.__call__`` is a Python frame around ``_op`` (~5.4 us per ``mm`` of host time on the
    dev machine, against ~3.6 us for ``_op``). The ``torch.<op>`` binding (~1.6 us: its argument
    parser, no JIT-schema matching) is what Inductor's wrappers call, and is used where it cannot
    pick another overload than ``target`` (``.default``, and the packet's other overloads need an
    argument the node does not pass). Small models on a GPU are host-bound: a GPT-2 training step
    makes ~60 such calls."""
    if not isinstance(target, torch._ops.OpOverload):
        return target
    packet = target.overloadpacket
    binding = getattr(torch._C._VariableFunctions, packet.__name__, None)
    if (target.namespace == "aten" and target._overloadname == "default" and callable(binding)
            and set(packet.overloads()) <= _BINDING_PICKS_ONLY_WHEN_ASKED):
        call = functools.partial(binding)
    else:
        call = functools.partial(target._op)
    # FX names a call's global after these (the program's source reads aten_mm(...)).
    call.__name__ = call.__qualname__ = f"{target.namespace}_{packet.__name__}"
    call.__module__ = __name__
    call.aten_op = target  # what it calls, for tools that read programs (bench/launch_count.py)
    return call


def final_calls(program: fx.GraphModule) -> None:
    """The program's calls made as cheap as what it is now allows, once nothing rewrites it any more:
    planned library outputs as their buffer and ``out=`` call (agnostic_rt/runtime/library_out.py), other
    library outputs checked once where several readers would check them, ATen calls through their
    bindings, views of values of trusted layout as reinterpretations, launchers told which inputs
    and donors they can trust (agnostic_rt/runtime/layouts.py). Only for programs aot_autograd calls (with
    gradients off): a view made a reinterpretation carries no autograd link."""
    inline_planned_outputs(program)
    conform_library_outputs(program)
    direct_calls(program)
    direct_views(program)
    trust_layouts(program)


def direct_calls(program: fx.GraphModule) -> None:
    """Point every ATen call of ``program`` at :func:`fast_op`'s callable, once it is final."""
    changed = False
    for node in program.graph.nodes:
        if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
            node.target = fast_op(node.target)
            changed = True
    if changed:
        program.recompile()


def count_generated(program: fx.GraphModule) -> ProgramStats:
    return program.meta.get("agnostic_stats", ProgramStats())


__all__ = ["build_program", "boxed", "final_calls", "ProgramStats", "count_generated", "CudaGraphRunner", "output_plan",
           "take_outputs", "fast_op", "direct_calls"]
