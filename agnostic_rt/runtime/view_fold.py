"""Fold chains of ATen view ops in a compiled program into one ``as_strided`` view each.

Between library calls a program keeps views (GPT-2's attention: ``view -> view -> permute`` around
every matmul; the forward's views saved for backward): metadata only, but each is an ATen call
through its OpOverload (~4-6 us of host time each on our dev machine), and a small model on a GPU is
host-bound. Every view op's result layout is a function of its input's layout, which the graph's
fake values record, so a chain ending at node ``v`` over a non-view ``root`` is
``root.as_strided(v's sizes, strides, root's offset + v's relative offset)``: one Tensor-method call
(~2 us), and still a real view (same storage, version counter and autograd as the chain's end). A
chain only the program's own ops read is reinterpreted instead (Inductor's ``reinterpret_tensor``,
cheaper still): inside a program nothing tells the two apart.

That holds while ``root`` has the layout the graph recorded. Graph inputs are guarded by Dynamo and
our kernels' outputs are allocated in the recorded layout, but a library op could in principle
return another layout than its fake implementation, so each call compares ``root``'s strides (one
tuple compare) and replays the original chain when they differ. Chains a mutating op reads, and
anything with symbolic sizes, are left alone.
"""

from __future__ import annotations

import logging

import torch
import torch.fx as fx

aten = torch.ops.aten
log = logging.getLogger("agnostic_rt.runtime.view_fold")

#: Ops whose result is a view of their first argument.
VIEW_OPS = frozenset({
    aten.view.default, aten._unsafe_view.default, aten.permute.default, aten.t.default, aten.transpose.int,
    aten.unsqueeze.default, aten.squeeze.dim, aten.squeeze.dims, aten.squeeze.default, aten.expand.default,
    aten.alias.default, aten.slice.Tensor, aten.select.int, aten.as_strided.default, aten.diagonal.default,
    aten.unfold.default,
})
#: Ops returning a list of views of their first argument (read through getitem).
MULTI_VIEW_OPS = frozenset({aten.split.Tensor, aten.split_with_sizes.default, aten.unbind.int})

def view_source(n: fx.Node) -> fx.Node | None:
    """The node ``n`` is a view of, or None when ``n`` is not a view op (a getitem of a split is)."""
    if n.op != "call_function" or not n.args or not isinstance(n.args[0], fx.Node):
        return None
    if n.target in VIEW_OPS:
        return n.args[0]
    src = n.args[0]
    if getattr(n.target, "__name__", None) in ("getitem", "_getitem") and src.op == "call_function" \
            and src.target in MULTI_VIEW_OPS and isinstance(src.args[0], fx.Node):
        return src.args[0]
    return None


def _step(n: fx.Node) -> tuple:
    """How view node ``n`` is made from the tensor it views: (op, args after that tensor, kwargs,
    getitem index or None). A getitem of a split is the split's op, then the item."""
    if n.target in VIEW_OPS:
        return n.target, n.args[1:], dict(n.kwargs), None
    split = n.args[0]
    return split.target, split.args[1:], dict(split.kwargs), n.args[1]


#: Inductor's reinterpretation: a tensor over another's storage, not a view (no autograd link, its own
#: version counter), in C++ without argument parsing (~1.7 us against ~3.4 us for ``as_strided``).
_guards = getattr(getattr(torch._C, "_dynamo", None), "guards", None)  # Inductor's C++ helpers, where present
_reinterpret = getattr(_guards, "_reinterpret_tensor", None)


class ViewOf:
    """The end of a view chain as one ``as_strided`` view of its root; the chain itself when the
    root's layout is not the recorded one.

    ``internal``: only ops inside the program read the result (it is not returned, so not saved for
    the backward or seen by the caller, and fold_views leaves chains a mutating op reads alone), so
    nothing can tell a view from a reinterpretation of the root's storage, which is cheaper, unless
    autograd records the program (then it stays a view)."""

    def __init__(self, size, stride, offset: int, root_stride: tuple[int, ...], steps: list[tuple],
                 internal: bool = False):
        self.size, self.stride, self.offset, self.root_stride = tuple(size), tuple(stride), offset, root_stride
        self.steps = steps  # _step() of each node of the chain, root outwards
        self.internal = internal and _reinterpret is not None
        self.__name__ = self.__qualname__ = "view_of"

    def __call__(self, root: torch.Tensor) -> torch.Tensor:
        if root.stride() == self.root_stride:
            # Programs run with autograd off (aot_autograd calls them so); a caller that records
            # gradients through one gets a real view.
            if self.internal and not (root.requires_grad and torch.is_grad_enabled()):
                return _reinterpret(root, self.size, self.stride, self.offset)
            return root.as_strided(self.size, self.stride, root.storage_offset() + self.offset)
        return self.replay(root)

    def replay(self, root: torch.Tensor) -> torch.Tensor:
        t = root
        for target, args, kwargs, item in self.steps:
            t = target(t, *args, **kwargs)
            if item is not None:
                t = t[item]
        return t


def _static_layout(n: fx.Node) -> tuple | None:
    val = n.meta.get("val")
    if not isinstance(val, torch.Tensor):
        return None
    try:
        layout = (tuple(val.shape), tuple(val.stride()), val.storage_offset())
    except Exception:  # sparse or other layouts without strides
        return None
    ints = all(type(v) is int for v in (*layout[0], *layout[1], layout[2]))
    return layout if ints else None


def _has_nodes(args) -> bool:
    found = []
    fx.node.map_arg(args, found.append)
    return bool(found)


def fold_views(gm: fx.GraphModule, hidden_outputs: frozenset[int] = frozenset()) -> int:
    """Replace each view chain's end, where a non-view op or the output reads it, by one
    :class:`ViewOf` call on the chain's root; the chain's nodes nothing else reads go away. Returns
    the chains folded.

    ``hidden_outputs``: output positions nobody but autograd reads (a forward's saved tensors, a
    backward's gradients; see :func:`hidden_outputs`). A chain returned only there is
    reinterpreted like an internal one when its root is a value the program made that no visible
    output shares: then nothing can modify that storage in place behind the saved tensor's version
    counter, and a view and a reinterpretation cannot be told apart."""
    graph = gm.graph
    folded = 0
    out = graph.output_node()
    outs = out.args[0] if isinstance(out.args[0], (tuple, list)) else (out.args[0],)
    visible = {_root(v) for i, v in enumerate(outs) if isinstance(v, fx.Node) and i not in hidden_outputs}
    for n in list(graph.nodes):
        if view_source(n) is None:
            continue
        readers = [u for u in n.users if view_source(u) is not n and u.target not in MULTI_VIEW_OPS]
        if not readers or any(_mutates(u) for u in n.users):
            continue
        chain, root = [n], view_source(n)
        while view_source(root) is not None:
            chain.append(root)
            root = view_source(root)
        steps = [_step(c) for c in reversed(chain)]
        end, base = _static_layout(n), _static_layout(root)
        if end is None or base is None or any(_has_nodes(step[1:]) for step in steps):
            continue
        hidden = root.op != "placeholder" and root not in visible and all(
            i in hidden_outputs for i, v in enumerate(outs) if v is n)
        with graph.inserting_before(n):
            internal = all(u.op == "call_function" or (u is out and hidden) for u in readers)
            new = graph.call_function(ViewOf(end[0], end[1], end[2] - base[2], base[1], steps, internal), (root,))
        new.meta = dict(n.meta)
        n.replace_all_uses_with(new, delete_user_cb=readers.__contains__)
        folded += 1
    if folded:
        for n in reversed(list(graph.nodes)):  # views (and splits) nothing reads any more
            if not n.users and (view_source(n) is not None or n.target in MULTI_VIEW_OPS):
                graph.erase_node(n)
        gm.recompile()
        log.debug("folded %d view chains", folded)
    return folded


def is_folded_view(target) -> bool:
    """A call :func:`fold_views` made, or ``layouts.direct_views`` made of one: one view (or
    reinterpretation) of its first argument."""
    return isinstance(target, ViewOf) or (target is _reinterpret and _reinterpret is not None)


def _root(n: fx.Node) -> fx.Node:
    while view_source(n) is not None:
        n = view_source(n)
    return n


def hidden_outputs(gm: fx.GraphModule, kind: str) -> frozenset[int]:
    """Output positions of an aot_autograd graph only autograd reads: all of a backward's (gradients)
    and a forward's saved tensors, which follow its visible returns (effect tokens, mutated
    inputs, user outputs, the bases aliased outputs are regenerated from, the RNG offset: aot's
    ``fw_metadata``, as Inductor reads it). Empty when that is unknown."""
    out = gm.graph.output_node().args[0]
    n = len(out) if isinstance(out, (tuple, list)) else 1
    if kind == "backward":
        return frozenset(range(n))
    if kind != "forward":
        return frozenset()
    from torch._guards import TracingContext

    ctx = TracingContext.try_get()
    meta = getattr(ctx, "fw_metadata", None)
    try:
        visible = (meta.num_forward_returns + meta.num_outputs_rng_offset
                   + len(getattr(meta, "tokens", None) or ()))
    except (AttributeError, TypeError):
        return frozenset()
    return frozenset(range(visible, n))


def _mutates(n: fx.Node) -> bool:
    schema = getattr(n.target, "_schema", None)
    return bool(schema is not None and schema.is_mutable)


__all__ = ["fold_views", "is_folded_view", "ViewOf", "view_source", "VIEW_OPS", "hidden_outputs"]
