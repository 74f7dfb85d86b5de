"""Layouts a final program can trust, and the checks it stops making because of them.

Inductor's wrapper checks nothing about its own buffers: it allocated them. Ours did too, so:

- every path of a launcher (generated, staged, ATen fallback) returns its outputs exactly in the
  launcher's ``out_specs``, 16-byte aligned at the start of their storage
  (``backends/triton/launch.py``: ``fallback_outputs`` copies ATen's other layouts);
- a library call's output (mm, SDPA) is checked once, where it is made (:func:`conformed`), when
  two or more readers would otherwise each check it; like Inductor's ``assert_size_stride`` after
  an extern call, but a wrong layout is copied into the recorded one instead of raising.

Readers of such a value then skip their checks: an internal view of it is a direct
``_reinterpret_tensor`` call (:func:`direct_views`), a launcher reads it and writes into it as a
``reuse=`` donor without a stride, alignment or storage test (:func:`trust_layouts`). Programs run
behind aot_autograd with gradients off (a Function's forward, a backward without create_graph, an
inference graph none of whose inputs requires grad), so none of these values requires grad and a
view of one may be a reinterpretation (``ViewOf.internal``'s runtime test always passes there).
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx

from .memory_plan import returns_fresh, span_bytes
from .view_fold import ViewOf, _reinterpret

Layout = tuple  # (shape, stride, dtype), ints only


def conformed(t: torch.Tensor, shape: tuple, stride: tuple, dtype: torch.dtype) -> torch.Tensor:
    """``t`` when it has the recorded layout and dtype at its storage's start, 16-byte aligned; else
    :func:`recorded_copy` (a library may pick another layout than its fake implementation recorded).
    Strides of size-1 dimensions may differ (libraries and fake kernels often disagree there, at
    batch 1): every element is at the same address either way, so readers that index with the
    recorded strides read the same values, and a copy per call would buy nothing."""
    if t.dtype == dtype and not t.storage_offset() and t.data_ptr() % 16 == 0:
        actual = t.stride()
        if actual == stride or (len(actual) == len(stride) == len(shape)
                                and all(a == s or n == 1 for a, s, n in zip(actual, stride, shape))):
            return t
    return recorded_copy(t, shape, stride, dtype)


def recorded_copy(t: torch.Tensor, shape: tuple, stride: tuple, dtype: torch.dtype) -> torch.Tensor:
    """A copy of ``t`` in a fresh storage of the recorded layout."""
    return torch.empty_strided(shape, stride, dtype=dtype, device=t.device).copy_(t)


def kernel_output_layout(n: fx.Node) -> Layout | None:
    """(shape, stride, dtype) of ``n`` when it is an output of one of our kernels' calls (an item
    of a launcher's tuple): the launcher's promise."""
    if not (n.op == "call_function" and n.target is operator.getitem and isinstance(n.args[0], fx.Node)):
        return None
    call, k = n.args[0], n.args[1]
    specs = getattr(call.target, "out_specs", None) if getattr(call.target, "accepts_reuse", False) else None
    if not specs or not isinstance(k, int) or k >= len(specs):
        return None
    shape, stride, dtype = specs[k]
    return tuple(shape), tuple(stride), dtype


def trusted_layout(n: fx.Node) -> Layout | None:
    """The layout ``n`` always has at its storage's start, 16-byte aligned: a kernel's output, a
    :func:`conformed` value or a library call's planned ``out=`` (agnostic_rt/runtime/library_out.py: its
    recorded layout); None when nothing promises one."""
    if n.op == "call_function" and n.target is conformed:
        return tuple(n.args[1]), tuple(n.args[2]), n.args[3]
    if n.op == "call_function" and getattr(n.target, "planned_out", False):
        return static_layout(n)
    return kernel_output_layout(n)


def static_layout(n: fx.Node) -> Layout | None:
    """(shape, stride, dtype) of ``n``'s strided tensor value when all are ints; else None."""
    val = n.meta.get("val")
    if not isinstance(val, torch.Tensor) or val.layout != torch.strided:
        return None
    layout = (tuple(val.shape), tuple(val.stride()), val.dtype)
    return layout if all(type(v) is int for v in (*layout[0], *layout[1])) else None


def _is_library_value(n: fx.Node) -> bool:
    """A tensor an ATen op makes fresh (no alias in its schema), or an item of one's tuple."""
    if n.op != "call_function":
        return False
    if n.target is operator.getitem and isinstance(n.args[0], fx.Node):
        n = n.args[0]
        if n.op != "call_function":
            return False
    op = getattr(n.target, "aten_op", n.target)
    return isinstance(op, torch._ops.OpOverload) and returns_fresh(op)


def _trusting_readers(n: fx.Node, layout: Layout) -> int:
    """How many checks of ``n`` a trusted ``layout`` would save: internal folded views of it, and
    launcher calls reading it in that layout or taking it as a donor."""
    saved = 0
    for u in n.users:
        if u.op != "call_function":
            continue
        if isinstance(u.target, ViewOf) and u.target.internal and u.args[0] is n and u.target.root_stride == layout[1]:
            saved += 1
        elif hasattr(u.target, "trust"):
            strides = u.target.in_strides
            saved += sum(1 for a, s in zip(u.args, strides) if a is n and tuple(s) == layout[1])
            saved += sum(1 for d in (u.kwargs.get("reuse") or ()) if d is n)
    return saved


def conform_library_outputs(gm: fx.GraphModule) -> int:
    """Check each library output once where two or more readers would check it (see module doc);
    all its uses then read the :func:`conformed` value. Returns the values conformed."""
    made = 0
    for n in list(gm.graph.nodes):
        if not _is_library_value(n):
            continue
        layout = static_layout(n)
        if layout is None or trusted_layout(n) is not None or _trusting_readers(n, layout) < 2:
            continue
        with gm.graph.inserting_after(n):
            c = gm.graph.call_function(conformed, (n, *layout))
        c.meta = dict(n.meta)
        n.replace_all_uses_with(c, delete_user_cb=lambda u, c=c: u is not c)
        made += 1
    if made:
        gm.recompile()
    return made


def direct_views(gm: fx.GraphModule) -> int:
    """Call Inductor's ``_reinterpret_tensor`` directly for each internal folded view of a value of
    trusted layout (``ViewOf.__call__``'s stride test and autograd queries always pass there: a
    Python frame, a stride tuple and two queries less, ~1 us a view). Run on the final program (the
    memory plan reads ``ViewOf`` nodes as views). Returns the calls made direct."""
    if _reinterpret is None:
        return 0
    made = 0
    for n in gm.graph.nodes:
        view = n.target
        if not (n.op == "call_function" and isinstance(view, ViewOf) and view.internal):
            continue
        layout = trusted_layout(n.args[0])
        if layout is None or layout[1] != view.root_stride:
            continue
        n.target, n.args = _reinterpret, (n.args[0], view.size, view.stride, view.offset)
        made += 1
    if made:
        gm.recompile()
    return made


def trust_layouts(gm: fx.GraphModule) -> int:
    """Tell each launcher (``KernelLauncher.trust``) which of its inputs and ``reuse=`` donors have
    a trusted layout, so its steady-state call need not check them. Returns the call sites told."""
    told = 0
    for node in gm.graph.nodes:
        trust = getattr(node.target, "trust", None) if node.op == "call_function" else None
        if trust is None:
            continue
        launcher = node.target
        inputs = [_arrives_as(a, want) for a, want in zip(node.args, launcher.in_strides)]
        reuse = node.kwargs.get("reuse") or ()
        trust(inputs, [donor_fits(d, spec) for d, spec in zip(reuse, launcher.out_specs)])
        told += 1
    return told


def _arrives_as(arg, stride: tuple[int, ...]) -> bool:
    """``arg`` always comes in ``stride``, 16-byte aligned: a trusted value of that layout, or a
    reinterpretation of one at an offset that keeps the alignment (:func:`direct_views`)."""
    if not isinstance(arg, fx.Node):
        return False
    layout = trusted_layout(arg)
    if layout is not None:
        return layout[1] == tuple(stride)
    if arg.op == "call_function" and _reinterpret is not None and arg.target is _reinterpret:
        root, _, view_stride, offset = arg.args
        layout = trusted_layout(root) if isinstance(root, fx.Node) else None
        return layout is not None and tuple(view_stride) == tuple(stride) and offset * layout[2].itemsize % 16 == 0
    return False


def donor_fits(donor, spec) -> bool:
    """``donor`` has a trusted layout and its storage holds an output of ``spec`` from its start."""
    layout = trusted_layout(donor) if isinstance(donor, fx.Node) else None
    if layout is None:
        return False
    shape, stride, dtype = spec
    return layout[2] == dtype and span_bytes(*layout[:2], dtype.itemsize) >= span_bytes(shape, stride, dtype.itemsize)


__all__ = ["conformed", "recorded_copy", "kernel_output_layout", "trusted_layout", "conform_library_outputs", "direct_views",
           "trust_layouts", "static_layout", "donor_fits"]
