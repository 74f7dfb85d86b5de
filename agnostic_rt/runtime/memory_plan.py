"""Buffer reuse in a compiled program: a kernel writes into the storage of a buffer that is dead.

A program allocates every generated kernel's outputs. Most of them are intermediates that die a
few calls later (a layer's activations between its matmuls), and a later kernel needs a buffer of
the same size. :func:`plan_buffers` walks the program once, in execution order, and hands each
kernel output that does not escape the program the storage of a dead buffer of the same device,
dtype and byte size, as Inductor's wrapper does (``buf7 = buf3; del buf3  # reuse``). The kernel
call gets ``reuse=(donor or None, ...)``; the launcher views the donor's storage in the output's
layout instead of allocating (see ``triton_launch.stage_call``). Allocations per call fall (a
tenth to a quarter of the bytes on the zoo's transformer programs, bench/memory_plan.py), and the
reused storage was just touched, so it is likely still in L2. The live peak cannot fall (every
storage alive at the peak is still needed); the plan only makes sure it does not rise.

What a buffer is, and when it is dead, comes from the graph alone:

* Storage classes: every tensor value belongs to the storage it was allocated with. A kernel output
  or an ATen op whose schema says its results alias nothing owns a fresh storage; a view (an op
  whose schema result carries alias info, ``_unsafe_view`` whose schema does not say it, a folded
  ``ViewOf``, a split's item) joins its source's.
* A class is dead after the last node that reads any of its members. A class is never donated
  (pinned) when it escapes -- a graph input, a program output (saved activations included), a
  constant -- or when a node we cannot reason about reads it (a higher-order op, an opaque
  callable): its result could alias anything it was given.
* A donor must be dead strictly before the kernel that takes it, so no kernel reads and writes one
  storage. Only kernel outputs that do not escape take donors: what reaches the caller or autograd
  is always a fresh tensor, never a view of a program temporary.

The launcher re-checks each donor at run time (dtype, and the storage is large enough), and
allocates when a check fails, so a plan can cost a reuse but never correctness. Symbolic sizes are
left alone.
"""

from __future__ import annotations

import heapq
import logging
import operator
from dataclasses import dataclass, field

import torch
import torch.fx as fx

log = logging.getLogger("agnostic_rt.runtime.memory_plan")

__all__ = ["plan_buffers", "MemoryPlan", "span_bytes", "returns_fresh"]


@dataclass
class MemoryPlan:
    """What :func:`plan_buffers` did to one program (kept in ``program.meta["agnostic_memory"]``)."""

    # "Kernel outputs" include planned matmul outputs (agnostic_rt/runtime/library_out.py: PlannedOut).
    reused: int = 0  # kernel outputs written into a dead buffer's storage
    kernel_outputs: int = 0  # kernel outputs in the program
    allocated_bytes_before: int = 0  # bytes the program's own storages take per call without reuse
    allocated_bytes_after: int = 0
    peak_bytes_before: int = 0  # most bytes of program storages alive at once (inputs not counted)
    peak_bytes_after: int = 0
    donors: dict[str, str] = field(default_factory=dict)  # kernel output -> the buffer it reuses


def span_bytes(shape, stride, itemsize: int) -> int:
    """Bytes a tensor of this layout addresses from its storage's start (0 when it is empty)."""
    if any(s == 0 for s in shape):
        return 0
    return (1 + sum((s - 1) * st for s, st in zip(shape, stride))) * itemsize


def _is_getitem(n: fx.Node) -> bool:
    return n.op == "call_function" and (n.target is operator.getitem or getattr(n.target, "__name__", "") in (
        "getitem", "_getitem"))


def _accepts_reuse(target) -> bool:
    return bool(getattr(target, "accepts_reuse", False))


def _kernel_output(n: fx.Node) -> bool:
    """An item of a generated kernel's call: a buffer the launcher allocates when it is called."""
    return _is_getitem(n) and isinstance(n.args[0], fx.Node) and _accepts_reuse(n.args[0].target)


def _static_bytes(n: fx.Node) -> tuple[torch.device, torch.dtype, int] | None:
    """(device, dtype, bytes) of the storage a fresh tensor value needs, or None (not a tensor, or
    symbolic)."""
    val = n.meta.get("val")
    if not isinstance(val, torch.Tensor):
        return None
    try:
        shape, stride = tuple(val.shape), tuple(val.stride())
    except Exception:  # layouts without strides
        return None
    if not all(type(v) is int for v in (*shape, *stride)):
        return None
    return val.device, val.dtype, span_bytes(shape, stride, val.element_size())


class _Classes:
    """Union-find over tensor values: which storage each value lives in."""

    def __init__(self) -> None:
        self.parent: dict[fx.Node, fx.Node] = {}
        self.pinned: set[fx.Node] = set()

    def new(self, n: fx.Node, pinned: bool = False) -> None:
        self.parent[n] = n
        if pinned:
            self.pinned.add(n)

    def find(self, n: fx.Node) -> fx.Node | None:
        if n not in self.parent:
            return None
        while self.parent[n] is not n:
            self.parent[n] = self.parent[self.parent[n]]
            n = self.parent[n]
        return n

    def join(self, n: fx.Node, sources: list[fx.Node]) -> None:
        """``n`` aliases ``sources``. Views of two storages at once (never made by ATen's view ops)
        make one class of two storages, which the planner cannot model: pinned."""
        roots = {r for r in (self.find(s) for s in sources) if r is not None}
        if not roots:
            self.new(n, pinned=True)
            return
        root = next(iter(roots))
        self.parent[n] = root
        if len(roots) > 1:
            for r in roots:
                self.parent[r] = root
            self.pinned.add(root)

    def pin(self, n: fx.Node) -> None:
        r = self.find(n)
        if r is not None:
            self.pinned.add(r)

    def is_pinned(self, n: fx.Node) -> bool:
        return self.find(n) in self.pinned


def _tensor_args(n: fx.Node) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg((n.args, n.kwargs), found.append)
    return found


def _classify(g: fx.Graph) -> tuple[_Classes, set[fx.Node]]:
    """Storage classes of every value of ``g``, and the fresh storages (class roots) a kernel or an
    alias-free ATen op allocates."""
    from .view_fold import is_folded_view

    cls = _Classes()
    fresh: set[fx.Node] = set()
    for n in g.nodes:
        if n.op in ("placeholder", "get_attr"):
            cls.new(n, pinned=True)
        elif n.op == "output":
            for a in _tensor_args(n):
                cls.pin(a)
        elif n.op != "call_function":  # call_module / call_method: opaque
            for a in _tensor_args(n):
                cls.pin(a)
            cls.new(n, pinned=True)
        elif _is_getitem(n) and isinstance(n.args[0], fx.Node) and n.args[0] in cls.parent:
            src = n.args[0]
            if src in fresh and src not in cls.pinned and cls.find(src) is src and _holds_tuple(src):
                cls.new(n)  # an item of an alias-free multi-output call: its own storage
                fresh.add(n)
            else:
                cls.join(n, [src])
        elif _accepts_reuse(n.target):
            cls.new(n)  # a tuple of fresh outputs; each item is a class of its own (above)
            fresh.add(n)
        elif is_folded_view(n.target):
            cls.join(n, [n.args[0]])
        elif isinstance(n.target, torch._ops.OpOverload):
            if returns_fresh(n.target):
                cls.new(n)
                fresh.add(n)
            else:
                cls.join(n, _tensor_args(n))
        else:  # an opaque callable (higher-order op, a launcher that plans its own outputs, ...)
            for a in _tensor_args(n):
                cls.pin(a)
            cls.new(n, pinned=True)
    return cls, fresh


#: Ops whose result shares its input's storage although their schema says nothing of it.
_UNANNOTATED_VIEWS = frozenset({torch.ops.aten._unsafe_view.default})


def returns_fresh(op: torch._ops.OpOverload) -> bool:
    """Whether ATen op ``op``'s results are storages of their own: no alias in its schema, and not
    a view whose schema does not say so."""
    return op not in _UNANNOTATED_VIEWS and not any(r.alias_info is not None for r in op._schema.returns)


def _holds_tuple(n: fx.Node) -> bool:
    """A call whose value is a tuple of tensors (read through getitem), not a tensor itself."""
    return _accepts_reuse(n.target) or (isinstance(n.target, torch._ops.OpOverload)
                                        and len(n.target._schema.returns) > 1)


def plan_buffers(gm: fx.GraphModule) -> MemoryPlan:
    """Give each non-escaping kernel output of ``gm`` a dead buffer's storage where one of the same
    (device, dtype, bytes) is free; rewrites the kernel calls' ``reuse=`` and recompiles. Returns
    (and keeps in ``gm.meta["agnostic_memory"]``) what it did."""
    g = gm.graph
    nodes = list(g.nodes)
    pos = {n: i for i, n in enumerate(nodes)}
    cls, fresh = _classify(g)

    # Each storage's size and the position after which nothing reads it.
    death: dict[fx.Node, int] = {}
    for n in nodes:
        root = cls.find(n)
        if root is None:
            continue
        last = max((pos[u] for u in n.users), default=pos[n])
        death[root] = max(death.get(root, -1), last)
    size: dict[fx.Node, tuple] = {}
    for r in fresh:
        if not _holds_tuple(r) and cls.find(r) is r:
            s = _static_bytes(r)
            if s is not None:
                size[r] = s

    # A kernel's outputs are allocated when it is called, an ATen result where its node runs.
    born = {r: pos[r.args[0]] if _kernel_output(r) else pos[r] for r in size}
    donor_of = _greedy(nodes, pos, cls, size, death)
    plan = MemoryPlan(kernel_outputs=sum(1 for n in size if _kernel_output(n)))
    plan.allocated_bytes_before, plan.peak_bytes_before, _ = _account(born, size, death, {})
    # Holding a donor's storage from its death to the reuse can raise the peak where the program
    # allocates in between: drop the reuses whose wait spans the peak until it is no higher.
    while True:
        plan.allocated_bytes_after, plan.peak_bytes_after, peak_at = _account(born, size, death, donor_of)
        if plan.peak_bytes_after <= plan.peak_bytes_before:
            break
        spanning = [out for out, d in donor_of.items() if death[d] < peak_at < born[out]]
        if not spanning:
            break
        for out in spanning:
            del donor_of[out]
    plan.reused = len(donor_of)
    plan.donors = {out.name: d.name for out, d in donor_of.items()}
    calls: dict[fx.Node, list] = {}
    for out, donor in donor_of.items():
        call, k = out.args[0], out.args[1]
        calls.setdefault(call, [None] * len(call.target.out_specs))[k] = donor
    for call, reuse in calls.items():
        call.kwargs = {**call.kwargs, "reuse": tuple(reuse)}
    if calls:
        gm.recompile()
        log.debug("buffer reuse: %d of %d kernel outputs write into dead buffers", plan.reused,
                  plan.kernel_outputs)
    gm.meta["agnostic_memory"] = plan
    return plan


def _greedy(nodes, pos, cls: _Classes, size: dict, death: dict) -> dict[fx.Node, fx.Node]:
    """In execution order, each unpinned kernel output takes the most recently freed dead storage of
    its (device, dtype, bytes), if any. Returns reuser -> donor (the value last holding the storage)."""
    donor_of: dict[fx.Node, fx.Node] = {}
    free: dict[tuple, list[fx.Node]] = {}  # key -> dead storages (a node holding each), last freed last
    busy: list[tuple[int, int, fx.Node]] = []  # (death, position, holder) of live plannable storages
    for n in nodes:
        p = pos[n]
        while busy and busy[0][0] < p:
            _, _, holder = heapq.heappop(busy)
            free.setdefault(size[holder], []).append(holder)
        if n in size and not cls.is_pinned(n) and not _kernel_output(n):
            heapq.heappush(busy, (death[n], p, n))  # an ATen result: a donor once dead
            continue
        if not _accepts_reuse(n.target):
            continue
        for out in sorted((u for u in n.users if _is_getitem(u)), key=pos.__getitem__):
            if out not in size or cls.is_pinned(out):
                continue
            donors = free.get(size[out])
            if donors:
                donor_of[out] = donors.pop()
            heapq.heappush(busy, (death[out], pos[out], out))
    return donor_of


def _account(born: dict, size: dict, death: dict, donor_of: dict) -> tuple[int, int, int]:
    """With the reuses ``donor_of``: bytes the program allocates per call, the peak bytes of its live
    storages, and the position of that peak."""
    owner_end: dict[fx.Node, int] = {}  # each allocated storage, until its last owner dies
    for r in size:
        first = r
        while first in donor_of:
            first = donor_of[first]
        owner_end[first] = max(owner_end.get(first, -1), death[r])
    events: list[tuple[int, int]] = []  # (position, +bytes at an allocation / -bytes after the last death)
    for r, end in owner_end.items():
        events += [(born[r], size[r][2]), (end + 1, -size[r][2])]
    peak, at = _peak(events)
    return sum(size[r][2] for r in owner_end), peak, at


def _peak(events: list[tuple[int, int]]) -> tuple[int, int]:
    """(most bytes alive at once, the first position where that is reached)."""
    live = peak = at = 0
    for p, delta in sorted(events):  # at one position, frees (negative) before allocations
        live += delta
        if live > peak:
            peak, at = live, p
    return peak, at
