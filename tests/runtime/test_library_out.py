"""agnostic_rt/runtime/library_out.py: matmuls write into outputs the program places (a fresh buffer, or a
dead buffer the memory plan hands them), and their readers trust that layout; results never change."""

from __future__ import annotations

import operator

import torch
from kernel_harness import compile_fn
from test_memory_plan import Program

from agnostic_rt.backends.triton.launch import fast_allocator
from agnostic_rt.runtime.layouts import conformed
from agnostic_rt.runtime.library_out import PlannedOut, inline_planned_outputs, plan_library_outputs
from agnostic_rt.runtime.memory_plan import plan_buffers
from agnostic_rt.runtime.program import final_calls
from agnostic_rt.runtime.view_fold import _reinterpret, fold_views

aten = torch.ops.aten


def _matmuls(x, w, w2, b, a, bm):
    # m1 dies at the tanh kernel, before m2 is made: the plan hands m2 its storage
    m1 = x @ w
    t = torch.tanh(m1) * 2
    m2 = t @ w2
    y = torch.addmm(b, x, w2)
    bb = torch.baddbmm(torch.bmm(a, bm), a, bm, beta=0.5, alpha=2.0)
    return torch.exp(m2 / 16) + y, bb * 2


def _args():
    return (torch.randn(8, 16), torch.randn(16, 16), torch.randn(16, 16), torch.randn(16), torch.randn(2, 4, 5),
            torch.randn(2, 5, 4))


def _planned(fn, *args):
    c = compile_fn(fn, *args)
    fold_views(c.program)
    made = plan_library_outputs(c.program)
    return c, made


def _targets(gm):
    return [n.target for n in gm.graph.nodes if n.op == "call_function"]


def test_matmuls_write_into_planned_outputs_a_dead_buffer_among_them_and_results_match():
    args = _args()
    c, made = _planned(_matmuls, *args)
    assert made == 5  # mm, mm, addmm, bmm, baddbmm
    plan = plan_buffers(c.program)
    m1, m2 = (n for n in c.program.graph.nodes if isinstance(n.target, PlannedOut) and n.target.aten_op == aten.mm.default)
    item = {n.args[0]: n for n in c.program.graph.nodes if n.target is operator.getitem}
    assert plan.donors.get(item[m2].name) == item[m1].name
    # Before the program is final, the call sites run as they are.
    for got, want in zip(c(*args), _matmuls(*args)):
        torch.testing.assert_close(got, want)

    final_calls(c.program)
    targets = _targets(c.program)
    assert not any(isinstance(t, PlannedOut) for t in targets)
    outs = [n for n in c.program.graph.nodes if getattr(n.target, "planned_out", False)]
    bufs = [n.kwargs["out"].target for n in outs]
    reused, fresh = bufs.count(_reinterpret), bufs.count(fast_allocator(torch.device("cpu")))
    assert len(outs) == 5 and reused >= 1 and reused + fresh == 5 and len(plan.donors) >= reused
    assert conformed not in targets  # a planned output is trusted as made, never checked
    # The kernels reading a planned output skip its checks.
    assert sum(sum(ln._trusted_in) for ln in c.launchers.values()) >= 3
    for _ in range(3):
        for got, want in zip(c(*args), _matmuls(*args)):
            torch.testing.assert_close(got, want)


def test_a_planned_output_reuses_the_donor_storage_and_allocates_when_it_does_not_fit():
    cpu = torch.device("cpu")
    x, w = torch.randn(4, 8), torch.randn(8, 8)
    planned = PlannedOut(aten.mm.default, ((4, 8), (8, 1), torch.float32), cpu)
    donor = torch.empty(64)[32:]  # its storage holds the output from the start
    (out,) = planned(x, w, reuse=(donor,))
    assert out.untyped_storage().data_ptr() == donor.untyped_storage().data_ptr() and out.storage_offset() == 0
    torch.testing.assert_close(out, x @ w)
    for bad in (torch.empty(16), torch.empty(32, dtype=torch.float16), None):
        (out,) = planned(x, w, reuse=(bad,))
        assert bad is None or out.untyped_storage().data_ptr() != bad.untyped_storage().data_ptr()
        assert out.stride() == (8, 1)
        torch.testing.assert_close(out, x @ w)


def test_a_donor_of_untrusted_layout_is_checked_where_it_is_reused():
    # cumsum's result (an ATen op's own allocation) dies at the kernel, then the mm takes its storage
    p = Program()
    x, w = p.input("x", (4, 8)), p.input("w", (8, 8))
    s = p.aten(aten.cumsum.default, x, 1)
    k = p.kernel(lambda t: t * 2, s)
    m = p.aten(aten.mm.default, k, w)
    out = p.kernel(lambda t: t + 1, m)
    gm = p.build(out)
    assert plan_library_outputs(gm) == 1
    assert plan_buffers(gm).donors != {}
    xv, wv = torch.randn(4, 8), torch.randn(8, 8)
    want = (xv.cumsum(1) * 2 @ wv) + 1
    inline_planned_outputs(gm)
    names = [getattr(t, "__name__", "") for t in _targets(gm)]
    assert "planned_reuse_checked" in names and _reinterpret not in _targets(gm)
    for _ in range(2):
        torch.testing.assert_close(gm(xv, wv)[0], want)


def test_symbolic_or_other_ops_are_left_to_the_library():
    p = Program()
    x = p.input("x", (4, 8))
    s = p.aten(aten.cumsum.default, x, 1)  # no out= planned for it
    gm = p.build(p.kernel(lambda t: t + 1, s))
    assert plan_library_outputs(gm) == 0
