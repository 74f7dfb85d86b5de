"""Library calls that write into outputs the program planned, as Inductor's wrapper calls
``extern_kernels.mm(a, b, out=buf)``.

mm, addmm, bmm and baddbmm have ``out=`` overloads: given an output of the right shape they write
it where it is, in its strides. So the program can decide where their results live, as it does for
its kernels' outputs:

- the memory plan hands them dead buffers (agnostic_rt/runtime/memory_plan.py), and
- the rest come from the allocator Inductor's wrappers use.

Either way the layout is the recorded one, at the start of an aligned storage. Their readers trust
it (agnostic_rt/runtime/layouts.py) without the check a library's own allocation needs
(:func:`layouts.conformed`).

Two forms of one call site:

- :class:`PlannedOut`, from the partitioned program to the final one. The memory plan sees it as a
  kernel: ``accepts_reuse``, ``out_specs``, a tuple of one output.
- :func:`inline_planned_outputs` (run from ``program.final_calls``) makes each one two straight
  calls in the program's source: the buffer (the device's fast allocator, ``_empty_strided_cpu``
  or ``_cuda``, or the donor reinterpreted by ``_reinterpret_tensor``) and the binding with
  ``out=`` (``torch.mm(a, b, out=buf)``).

Programs run behind aot_autograd with gradients off, where ``out=`` is allowed; see layouts.py.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable

import torch
import torch.fx as fx

from agnostic_rt.backends.triton.launch import _output_in, fast_allocator

from .layouts import donor_fits, static_layout
from .memory_plan import span_bytes
from .view_fold import _reinterpret

aten = torch.ops.aten

#: The library ops whose ``.default`` call is replaced by its binding with ``out=``.
OUT_OPS = (aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default)

Spec = tuple  # (shape, stride, dtype), ints only


def _named(fn: Callable, name: str, **attrs) -> Callable:
    """``fn`` under a name FX gives its global in the program's source, with ``attrs`` for the tools
    that read programs."""
    call = functools.partial(fn)
    call.__name__ = call.__qualname__ = name
    call.__module__ = __name__
    for k, v in attrs.items():
        setattr(call, k, v)
    return call


@functools.cache
def out_call(op: torch._ops.OpOverload) -> Callable:
    """``torch.<op>(..., out=buf)``: the Python binding (Inductor's wrappers call it too), which
    picks the ``.out`` overload for the ``out=`` it is given. ``aten_op`` names the op it computes,
    ``planned_out`` says its result is its ``out=``, in the recorded layout (``layouts.trusted_layout``)."""
    binding = getattr(torch._C._VariableFunctions, op.overloadpacket.__name__)
    return _named(binding, f"{op.overloadpacket.__name__}_out", aten_op=op, planned_out=True)


class PlannedOut:
    """One library call site whose output the program places: a fresh buffer from the device's
    allocator, or the storage of the dead buffer the memory plan passes as ``reuse=(donor,)``."""

    #: The program's memory plan may pass ``reuse=`` (agnostic_rt/runtime/memory_plan.py).
    accepts_reuse = True

    def __init__(self, op: torch._ops.OpOverload, spec: Spec, device: torch.device):
        self.aten_op = op  # what it computes (bench/launch_count.py counts it as a library call)
        self.spec = spec
        self.out_specs = [spec]
        self.device = device
        self.call = out_call(op)  # the bench may replace it (a stub, a timer) before the program is final
        self.alloc = fast_allocator(device)
        self.need = span_bytes(spec[0], spec[1], spec[2].itemsize)
        # FX names the program's call after these.
        self.__name__ = self.__qualname__ = f"planned_{op.overloadpacket.__name__}"

    def __call__(self, *args, reuse: tuple | None = None, **kwargs) -> tuple[torch.Tensor]:
        out = _output_in(reuse[0] if reuse else None, self.spec, self.device, self.alloc, self.need)
        return (self.call(*args, **kwargs, out=out),)

    def __repr__(self) -> str:
        return f"PlannedOut({self.aten_op}, {self.spec})"


def plan_library_outputs(gm: fx.GraphModule) -> int:
    """Make each :data:`OUT_OPS` call of static layout a :class:`PlannedOut` call site (before the
    memory plan, which may then give it a donor). Returns the call sites made."""
    made = 0
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n.target not in OUT_OPS:
            continue
        spec = static_layout(n)
        if spec is None or n.meta["val"].device.type == "meta":
            continue
        with gm.graph.inserting_before(n):
            call = gm.graph.call_function(PlannedOut(n.target, spec, n.meta["val"].device), n.args, n.kwargs)
        with gm.graph.inserting_after(call):
            item = gm.graph.call_function(operator.getitem, (call, 0))
        item.meta = dict(n.meta)
        n.replace_all_uses_with(item)
        gm.graph.erase_node(n)
        made += 1
    if made:
        gm.recompile()
    return made


def inline_planned_outputs(gm: fx.GraphModule) -> int:
    """Replace each :class:`PlannedOut` call site by its buffer and its ``out=`` call (module doc).
    A donor of a layout the program trusts, its storage large enough (``layouts.donor_fits``), is
    reinterpreted directly; another one goes through the launcher's checked ``_output_in``, which
    allocates when the donor does not fit. Returns the call sites inlined."""
    made = 0
    g = gm.graph
    for n in list(g.nodes):
        planned = n.target
        if n.op != "call_function" or not isinstance(planned, PlannedOut):
            continue
        items = list(n.users)
        if not all(u.target is operator.getitem and u.args[1] == 0 for u in items):
            continue  # read other than as its one item: left as it is (still correct)
        kwargs = dict(n.kwargs)
        donor = (kwargs.pop("reuse", None) or (None,))[0]
        shape, stride, dtype = planned.spec
        with g.inserting_before(n):
            # The allocator and the reinterpretation are called as they are (no wrapper: the source
            # reads _empty_strided_cpu(...) or _reinterpret_tensor(...), as Inductor's wrapper does).
            if donor is None:
                buf = g.call_function(planned.alloc, (shape, stride, dtype))
            elif donor_fits(donor, planned.spec) and _reinterpret is not None:
                buf = g.call_function(_reinterpret, (donor, shape, stride, 0))
            else:
                checked = _named(functools.partial(_output_in, spec=planned.spec, device=planned.device,
                                                   alloc=planned.alloc, need=planned.need), "planned_reuse_checked")
                buf = g.call_function(checked, (donor,))
            call = g.call_function(planned.call, n.args, {**kwargs, "out": buf})
        if items:
            call.meta = dict(items[0].meta)
        for u in items:
            u.replace_all_uses_with(call)
            g.erase_node(u)
        g.erase_node(n)
        made += 1
    if made:
        gm.recompile()
    return made


__all__ = ["OUT_OPS", "PlannedOut", "out_call", "plan_library_outputs", "inline_planned_outputs"]
