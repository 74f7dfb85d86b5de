"""Buffer reuse: kernel outputs that die inside a program give their storage to later kernel outputs
of the same size; nothing that is alive, escapes or is read by an opaque call is ever reused."""

from __future__ import annotations

import json
import operator

import pytest
import torch
import torch.fx as fx

from agnostic_rt.backends.triton.launch import _output_in, fallback_outputs
from agnostic_rt.config import Options
from agnostic_rt.runtime.memory_plan import plan_buffers, span_bytes

aten = torch.ops.aten


class Kernel:
    """A stand-in launcher: ``fn`` of its inputs, written into an output laid over the donor it is
    given (as KernelLauncher does through stage_call). Records what it was given."""

    accepts_reuse = True

    def __init__(self, fn, shape, dtype=torch.float32):
        self.fn = fn
        self.out_specs = [(tuple(shape), torch.empty(shape).stride(), dtype)]
        self.given: list = []
        self.__name__ = "kernel"

    def __call__(self, *ins, reuse=None):
        self.given.append(reuse)
        spec = self.out_specs[0]
        out = _output_in(reuse[0] if reuse else None, spec, torch.device("cpu"))
        out.copy_(self.fn(*ins))
        return (out,)


class Program:
    """Builds a program graph the way build_program does: kernel calls read through getitem."""

    def __init__(self):
        self.g = fx.Graph()
        self.kernels: list[Kernel] = []

    def input(self, name, shape):
        n = self.g.placeholder(name)
        n.meta["val"] = torch.empty(shape)
        return n

    def kernel(self, fn, *ins, shape=(4, 8), dtype=torch.float32):
        k = Kernel(fn, shape, dtype)
        self.kernels.append(k)
        call = self.g.call_function(k, tuple(ins))
        out = self.g.call_function(operator.getitem, (call, 0))
        out.meta["val"] = torch.empty(shape, dtype=dtype)
        return out

    def aten(self, op, *args):
        n = self.g.call_function(op, args)
        n.meta["val"] = op(*(a.meta["val"] if isinstance(a, fx.Node) else a for a in args))
        return n

    def opaque(self, fn, *ins):
        n = self.g.call_function(fn, tuple(ins))
        n.meta["val"] = fn(*(a.meta["val"] for a in ins))
        return n

    def build(self, *outs) -> fx.GraphModule:
        self.g.output(tuple(outs))
        return fx.GraphModule(torch.nn.Module(), self.g)


def _chain():
    p = Program()
    x = p.input("x", (4, 8))
    a = p.kernel(lambda t: t * 2, x)
    b = p.kernel(lambda t: t + 1, a)
    c = p.kernel(lambda t: t.exp(), b)
    d = p.kernel(lambda t: t - 3, c)
    return p, p.build(d), (a, b, c, d)


def test_a_dead_buffer_is_reused_by_a_later_output_of_the_same_size_and_results_do_not_change():
    p, gm, (a, b, c, d) = _chain()
    x = torch.randn(4, 8)
    want = gm(x)[0].clone()
    plan = plan_buffers(gm)
    # a dies at b's kernel; c is the first output allocated after that. d is the program's output.
    assert plan.donors == {c.name: a.name}
    assert (plan.reused, plan.kernel_outputs) == (1, 4)
    assert plan.allocated_bytes_after == plan.allocated_bytes_before - 4 * 8 * 4
    assert plan.peak_bytes_after <= plan.peak_bytes_before
    got = gm(x)[0]
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert p.kernels[2].given[-1][0] is not None and p.kernels[3].given[-1] is None


def test_a_buffer_is_not_reused_while_a_view_of_it_is_alive():
    p = Program()
    x = p.input("x", (4, 8))
    a = p.kernel(lambda t: t * 2, x)
    v = p.aten(aten.view.default, a, [8, 4])  # keeps a's storage alive until d reads it
    b = p.kernel(lambda t: t + 1, a)
    c = p.kernel(lambda t: t.exp(), b)
    d = p.kernel(lambda t, u: t.view(4, 8) + u, v, c)
    gm = p.build(d)
    x_ = torch.randn(4, 8)
    want = gm(x_)[0].clone()
    plan = plan_buffers(gm)
    assert a.name not in plan.donors.values()
    torch.testing.assert_close(gm(x_)[0], want, rtol=0, atol=0)


def test_what_an_opaque_call_reads_and_what_escapes_are_never_reused():
    p = Program()
    x = p.input("x", (4, 8))
    a = p.kernel(lambda t: t * 2, x)
    o = p.opaque(torch.sigmoid, a)  # could return a view of a: a's storage is pinned
    b = p.kernel(lambda t: t + 1, x)
    keep = p.kernel(lambda t: t * 3, b)  # returned to the caller: never a donor, never a reuser
    c = p.kernel(lambda t: t.exp(), keep)
    e = p.kernel(lambda t: t - 1, c)
    f = p.kernel(lambda t, u: t + u, e, o)
    gm = p.build(f, keep)
    plan = plan_buffers(gm)
    assert a.name not in plan.donors.values()
    assert keep.name not in plan.donors.values() and keep.name not in plan.donors
    assert f.name not in plan.donors
    assert plan.donors  # b died before e: the plan did reuse something else
    x_ = torch.randn(4, 8)
    out, kept = gm(x_)
    torch.testing.assert_close(kept, (x_ + 1) * 3)


def test_only_same_dtype_and_size_are_reused():
    p = Program()
    x = p.input("x", (4, 8))
    a = p.kernel(lambda t: t * 2, x)
    b = p.kernel(lambda t: t.sum(1, keepdim=True), a, shape=(4, 1))
    c = p.kernel(lambda t: t.half(), b, shape=(4, 1), dtype=torch.float16)
    d = p.kernel(lambda t: t.float().expand(4, 16) * 1, c, shape=(4, 16))
    gm = p.build(d)
    assert plan_buffers(gm).reused == 0


def _after_a_matmul(kernels: int):
    """mm -> relu -> *2 (-> +1): a library result followed by ``kernels`` kernels of its size."""
    p = Program()
    x, w = p.input("x", (4, 8)), p.input("w", (8, 8))
    outs = [p.aten(aten.mm.default, x, w)]
    for fn in [torch.relu, lambda t: t * 2, lambda t: t + 1][:kernels]:
        outs.append(p.kernel(fn, outs[-1]))
    return p.build(outs[-1]), outs


def test_a_library_result_is_a_donor():
    x, w = torch.randn(4, 8), torch.randn(8, 8)
    # The matmul's reader is the first kernel, which cannot take its storage; the second can.
    gm, _ = _after_a_matmul(2)
    assert plan_buffers(gm).donors == {}
    gm, (m, _, b, _) = _after_a_matmul(3)
    want = gm(x, w)[0].clone()
    assert plan_buffers(gm).donors == {b.name: m.name}
    torch.testing.assert_close(gm(x, w)[0], want, rtol=0, atol=0)


def test_a_reuse_that_would_raise_the_peak_is_dropped():
    """a dies, a large library result lives and dies, then c could take a's storage: holding a's
    storage across the large buffer would make a higher peak than freeing it."""
    p = Program()
    x = p.input("x", (4, 8))
    w = p.input("w", (8, 4096))
    a = p.kernel(lambda t: t * 2, x)
    b = p.kernel(lambda t: t + 1, a)
    big = p.aten(aten.mm.default, b, w)
    s = p.aten(aten.sum.dim_IntList, big, [1], True)
    c = p.kernel(lambda t, u: t * u, b, s)
    d = p.kernel(lambda t: t - 1, c)
    gm = p.build(d)
    plan = plan_buffers(gm)
    assert plan.reused == 0
    assert plan.peak_bytes_after == plan.peak_bytes_before
    # Without the large buffer in between, the same reuse is kept.
    p = Program()
    x = p.input("x", (4, 8))
    a = p.kernel(lambda t: t * 2, x)
    b = p.kernel(lambda t: t + 1, a)
    c = p.kernel(lambda t: t * t, b)
    d = p.kernel(lambda t: t - 1, c)
    assert plan_buffers(p.build(d)).donors == {c.name: a.name}


def test_the_launcher_checks_the_donor_and_allocates_when_it_does_not_fit():
    cpu = torch.device("cpu")
    spec = ((4, 8), (8, 1), torch.float32)
    same = torch.empty(4, 8)
    out = _output_in(same, spec, cpu)
    assert out.data_ptr() == same.data_ptr() and out.shape == (4, 8) and out.stride() == (8, 1)
    offset = torch.empty(40)[8:].view(4, 8)  # a donor viewing its storage past the start: reused from the start
    assert _output_in(offset, spec, cpu).data_ptr() == offset.untyped_storage().data_ptr()
    bigger = torch.empty(64)
    out = _output_in(bigger, spec, cpu)
    assert out.untyped_storage().data_ptr() == bigger.untyped_storage().data_ptr() and out.stride() == (8, 1)
    for bad in (torch.empty(4, 8, dtype=torch.float16), torch.empty(16), None):
        out = _output_in(bad, spec, cpu)
        assert out.shape == (4, 8) and out.dtype == torch.float32
        if bad is not None:
            assert out.untyped_storage().data_ptr() != bad.untyped_storage().data_ptr()
    assert span_bytes((4, 8), (1, 4), 4) == 128 and span_bytes((0, 8), (8, 1), 4) == 0


def test_fallback_outputs_never_alias_an_input_or_each_other():
    x = torch.randn(4, 8)
    outs = fallback_outputs(lambda t: (t.view(8, 4), t * 2, (t * 2).view(32)), [x])
    ptrs = [o.untyped_storage().data_ptr() for o in outs]
    assert x.untyped_storage().data_ptr() not in ptrs
    assert len(set(ptrs)) == 3
    torch.testing.assert_close(outs[0], x.view(8, 4))


def _block(x, w1, w2):
    h = torch.mm(x, w1)
    h = torch.nn.functional.gelu(h) * torch.sigmoid(h)
    h = torch.mm(h, w2)
    h = torch.tanh(h) + 1.0
    h = torch.mm(h, w2)
    return torch.relu(h) * 2.0


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
def test_compiled_programs_reuse_buffers_and_match_without_reuse(tmp_path, training):
    torch.manual_seed(0)
    x, w1, w2 = torch.randn(16, 32), torch.randn(32, 32), torch.randn(32, 32)
    results = []
    for reuse in (True, False):
        torch._dynamo.reset()
        args = [t.clone().requires_grad_(training) for t in (x, w1, w2)]
        fn = torch.compile(_block, backend="agnostic", options={
            "target": "h100", "interpret": True, "reuse_buffers": reuse, "debug_dir": str(tmp_path / str(reuse))})
        if training:
            out = fn(*args)
            out.sum().backward()
            results.append([out.detach(), *(a.grad for a in args)])
        else:
            with torch.no_grad():
                results.append([fn(*args), fn(*args)])
    plans = [json.loads(f.read_text()) for f in sorted((tmp_path / "True").glob("*/3_memory_plan.json"))]
    assert len(plans) == (2 if training else 1) and sum(p["reused"] for p in plans) > 0
    assert not list((tmp_path / "False").glob("*/3_memory_plan.json"))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_reuse_buffers_is_an_option():
    assert Options.from_user({}).reuse_buffers is True
    assert Options.from_user({"reuse_buffers": False}).reuse_buffers is False
    with pytest.raises(ValueError, match="reuse_buffers"):
        Options.from_user({"reuse_buffers": "no"})


def test_an_unsafe_view_keeps_its_source_alive():
    # _unsafe_view's schema claims a fresh result, but it views its input: a's storage stays live
    # until u's last reader, so neither the kernel b nor the matmul m may write into it.
    from agnostic_rt.runtime.library_out import inline_planned_outputs, plan_library_outputs

    p = Program()
    x, w = p.input("x", (4, 8)), p.input("w", (8, 8))
    a = p.kernel(lambda t: t * 2, x)
    u = p.aten(aten._unsafe_view.default, a, [8, 4])
    b = p.kernel(lambda t: t + 1, x)
    m = p.aten(aten.mm.default, b, w)
    out = p.kernel(lambda t, v: t + v.reshape(4, 8), m, u)
    gm = p.build(out)
    xv, wv = torch.randn(4, 8), torch.randn(8, 8)
    want = (xv + 1) @ wv + xv * 2
    plan_library_outputs(gm)
    assert a.name not in plan_buffers(gm).donors.values()
    inline_planned_outputs(gm)
    torch.testing.assert_close(gm(xv, wv)[0], want)
