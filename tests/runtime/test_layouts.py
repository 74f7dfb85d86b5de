"""agnostic_rt/runtime/layouts.py: the layouts a final program trusts (kernel outputs, library outputs
checked once) and the checks its views and launchers stop making; wrong layouts never misread."""

from __future__ import annotations

import torch
from kernel_harness import compile_fn

from agnostic_rt.runtime.layouts import conformed
from agnostic_rt.runtime.program import final_calls
from agnostic_rt.runtime.view_fold import _reinterpret, fold_views


def _kernel_view_library_kernel(x, w):
    # a kernel, a view of its output read by a library call, a second kernel reading the first's output
    y = torch.exp(x) * 2
    m = y.view(25, 4) @ w
    return torch.tanh(m) * y.view(25, 4)[:, :3], m


def test_a_program_reinterprets_views_of_its_kernels_outputs_and_trusts_their_readers():
    x, w = torch.randn(100), torch.randn(4, 3)
    c = compile_fn(_kernel_view_library_kernel, x, w)
    fold_views(c.program)
    final_calls(c.program)
    targets = [n.target for n in c.program.graph.nodes]
    assert _reinterpret in targets  # the view the mm reads
    readers = [ln for ln in c.launchers.values() if ln._trusted_in]
    assert any(any(ln._trusted_in) for ln in readers)  # the sigmoid kernel reads the exp kernel's output
    for _ in range(2):
        for got, want in zip(c(x, w), _kernel_view_library_kernel(x, w)):
            torch.testing.assert_close(got, want)


def test_a_kernel_fallen_back_to_aten_in_another_layout_still_feeds_its_trusting_readers():
    x, w = torch.randn(100), torch.randn(4, 3)
    c = compile_fn(_kernel_view_library_kernel, x, w)
    fold_views(c.program)
    final_calls(c.program)
    producer = next(ln for ln in c.launchers.values() if "exp" in " ".join(ln.ops))
    fallback = producer.fallback
    # ATen's answer every other element of a bigger storage: another stride than the kernel's
    producer.fallback = lambda *a: tuple(torch.empty(2 * o.numel())[::2].copy_(o) for o in fallback(*a))
    producer._failed = True
    for got, want in zip(c(x, w), _kernel_view_library_kernel(x, w)):
        torch.testing.assert_close(got, want)


def _library_read_twice(x, w, w2):
    # a library output read by a kernel and, through a view, by another library call
    m = x @ w
    return torch.exp(m) * 2, m.view(4, 6) @ w2


def _final(fn, *args):
    c = compile_fn(fn, *args)
    fold_views(c.program)
    return c


def test_a_library_output_with_two_trusting_readers_is_checked_once_and_then_trusted():
    args = torch.randn(6, 5), torch.randn(5, 4), torch.randn(6, 3)
    c = _final(_library_read_twice, *args)
    final_calls(c.program)
    targets = [n.target for n in c.program.graph.nodes]
    assert targets.count(conformed) == 1 and _reinterpret in targets
    assert any(any(ln._trusted_in) for ln in c.launchers.values())
    for _ in range(2):
        for got, want in zip(c(*args), _library_read_twice(*args)):
            torch.testing.assert_close(got, want)


def test_a_library_output_in_another_layout_is_copied_into_the_recorded_one():
    args = torch.randn(6, 5), torch.randn(5, 4), torch.randn(6, 3)
    c = _final(_library_read_twice, *args)
    mm = next(n for n in c.program.graph.nodes if n.target == torch.ops.aten.mm.default and n.args[1].name == "w_1")

    def column_major(a, b):  # what a library could return: right values, another layout
        return torch.mm(a, b).t().contiguous().t()

    column_major.aten_op = torch.ops.aten.mm.default
    mm.target = column_major
    c.program.recompile()
    final_calls(c.program)
    for _ in range(2):
        for got, want in zip(c(*args), _library_read_twice(*args)):
            torch.testing.assert_close(got, want)


def test_conformed_keeps_a_tensor_in_its_layout_and_copies_one_that_is_not():
    t = torch.randn(4, 6)
    assert conformed(t, (4, 6), (6, 1), torch.float32) is t
    for other in (t.t().contiguous().t(), torch.randn(30)[2:26].view(4, 6)):
        out = conformed(other, (4, 6), (6, 1), torch.float32)
        assert out.stride() == (6, 1) and out.storage_offset() == 0 and out.data_ptr() % 16 == 0
        torch.testing.assert_close(out, other)


def test_conformed_keeps_a_tensor_whose_strides_differ_only_on_size_one_dims():
    # what a library may return at batch 1: the batch dim's stride is not the fake kernel's
    t = torch.randn(24).as_strided((1, 4, 6), (7, 6, 1))
    assert conformed(t, (1, 4, 6), (24, 6, 1), torch.float32) is t
    # a reader indexing with the recorded strides reads the same elements
    torch.testing.assert_close(_reinterpret(t, (1, 4, 6), (24, 6, 1), 0), t)
    wrong = torch.randn(24).as_strided((1, 4, 6), (24, 1, 4))  # a size-4 dim's stride differs: copied
    out = conformed(wrong, (1, 4, 6), (24, 6, 1), torch.float32)
    assert out is not wrong and out.stride() == (24, 6, 1)
    torch.testing.assert_close(out, wrong)


def _chain(x, w1, w2):
    h = torch.mm(x, w1)  # read by a kernel and, through a view, by a library call: conformed
    side = h.view(32, 16) @ w2[:16]
    h = torch.nn.functional.gelu(h) * torch.sigmoid(h)
    h = torch.mm(h, w2)
    h = torch.tanh(h) + 1.0  # its input's storage is dead after it: a donor
    h = torch.mm(h, w2)
    return torch.relu(h) * 2.0, side


def test_the_steady_state_path_with_trusted_inputs_and_donors_matches_eager():
    """End to end on the launchers' generated steady-state call (as on a GPU: the binary's runner,
    here a fake one running the interpreted kernel), with the memory plan's donors and the layouts
    the final program trusts: the same results call after call."""
    from test_triton_launch import _FakeJit

    from agnostic_rt.backends.triton.launch import KernelLauncher
    from agnostic_rt.runtime.memory_plan import plan_buffers

    args = torch.randn(16, 32), torch.randn(32, 32), torch.randn(32, 32)
    c = compile_fn(_chain, *args)
    for node in c.program.graph.nodes:
        ln = node.target
        if isinstance(ln, KernelLauncher):
            gpu = KernelLauncher(ln.gk, ln.sizes, ln.in_strides, ln.out_specs, interpret=False, autotune=False,
                                 fallback=ln.fallback, ops=ln.ops, device=torch.device("cpu"))
            gpu.fn = _FakeJit(ln.gk.function(interpret=True), ln.kernel.constexprs)
            node.target = gpu
    c.program.recompile()
    fold_views(c.program)
    plan = plan_buffers(c.program)
    final_calls(c.program)
    launchers = [n.target for n in c.program.graph.nodes if isinstance(n.target, KernelLauncher)]
    assert plan.reused > 0 and any(any(ln._trusted_donor) for ln in launchers)
    assert any(any(ln._trusted_in) for ln in launchers)
    for _ in range(3):
        for got, want in zip(c(*args), _chain(*args)):
            torch.testing.assert_close(got, want)
    assert all(ln._fast is not None and ln.fn.calls[1:] and set(ln.fn.calls[1:]) == {"direct"} for ln in launchers)
    # the trusted donors were taken by a plain reinterpretation, not _output_in's checks
    assert all("reinterpret" in ln._fast.__code__.co_names for ln in launchers if any(ln._trusted_donor))
