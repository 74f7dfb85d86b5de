"""View chains in compiled programs fold into one reinterpretation each, and stay correct when the
layout they were recorded for does not hold."""

from __future__ import annotations

import torch
import torch.fx as fx
from torch.fx.experimental.proxy_tensor import make_fx

from agnostic_rt.runtime.view_fold import VIEW_OPS, ViewOf, fold_views

aten = torch.ops.aten


def _traced(fn, *args) -> fx.GraphModule:
    return make_fx(fn, tracing_mode="fake")(*args)


def _targets(gm: fx.GraphModule) -> list:
    return [n.target for n in gm.graph.nodes if n.op == "call_function"]


def _attention_heads(x, w):
    """addmm -> view -> view -> permute -> matmul: GPT-2's head split between two library calls."""
    y = torch.mm(x.view(-1, 32), w).view(2, 8, 4, 8).permute(0, 2, 1, 3)
    return torch.matmul(y, y.transpose(-1, -2)).sum()


def test_a_chain_between_library_calls_becomes_one_call_and_gives_the_same_result():
    x, w = torch.randn(2, 8, 32), torch.randn(32, 32)
    gm = _traced(_attention_heads, x, w)
    views_before = sum(t in VIEW_OPS for t in _targets(gm))
    want = gm(x, w)
    assert fold_views(gm) == 6
    folded = [t for t in _targets(gm) if isinstance(t, ViewOf)]
    views_after = sum(t in VIEW_OPS for t in _targets(gm))
    assert (views_before, views_after, len(folded)) == (9, 0, 6)
    torch.testing.assert_close(gm(x, w), want, rtol=0, atol=0)


def test_a_root_in_another_layout_replays_the_chain():
    """Recorded for a contiguous input; called with a transposed one of the same sizes (which a
    library op could in principle return): reinterpreting would read the wrong elements."""
    def fn(a):
        return a.t().unsqueeze(0) * 1

    gm = _traced(fn, torch.randn(4, 6))
    assert fold_views(gm) == 1
    other = torch.randn(6, 4).t()
    assert other.shape == (4, 6) and not other.is_contiguous()
    torch.testing.assert_close(gm(other), fn(other), rtol=0, atol=0)


def test_split_outputs_fold_through_getitem():
    def fn(qkv):
        q, k, v = qkv.split(8, dim=-1)
        return q.view(4, 2, 4) * k.view(4, 2, 4) + v.view(4, 2, 4)

    x = torch.randn(4, 24)
    gm = _traced(fn, x)
    want = gm(x)
    assert fold_views(gm) == 3
    assert aten.split.Tensor not in _targets(gm) and aten.split_with_sizes.default not in _targets(gm)
    torch.testing.assert_close(gm(x), want, rtol=0, atol=0)


def test_views_the_graph_returns_stay_views_of_their_root():
    """Returned (and saved-for-backward) views fold too, into real views: same storage and version
    counter as the chain's end, so autograd's in-place checks still see them."""
    def fn(a):
        return a.view(2, 6).t()

    x = torch.randn(3, 4)
    gm = _traced(fn, x)
    assert fold_views(gm) == 1
    out = gm(x)
    torch.testing.assert_close(out, fn(x), rtol=0, atol=0)
    assert out._base is x and out.data_ptr() == x.data_ptr()
    x.add_(1)
    assert out._version == x._version


def test_views_a_mutating_op_reads_are_left_alone():
    def fn(a):
        a.view(12).add_(1)
        return a * 2

    gm = _traced(fn, torch.randn(3, 4))
    assert fold_views(gm) == 0


def test_symbolic_sizes_are_left_alone():
    gm = make_fx(lambda a: a.view(-1, 2).t() * 1, tracing_mode="symbolic")(torch.randn(4, 6))
    assert fold_views(gm) == 0


def test_gradients_flow_through_a_folded_view():
    w = torch.randn(3, 4, requires_grad=True)
    gm = _traced(lambda a: a.t().unsqueeze(0) * 2, w.detach())
    assert fold_views(gm) == 1
    gm(w).sum().backward()
    torch.testing.assert_close(w.grad, torch.full((3, 4), 2.0))


def test_a_chain_only_the_program_reads_is_reinterpreted_and_a_returned_one_stays_a_view():
    def fn(x, w):
        y = torch.mm(x.view(-1, 8), w.t())  # both views are read only by the mm
        return y, x.view(-1, 8)  # this one is returned

    x, w = torch.randn(2, 4, 8), torch.randn(8, 8)
    gm = _traced(fn, x, w)
    want = gm(x, w)
    assert fold_views(gm) == 3
    folded = {n.name: n.target for n in gm.graph.nodes if isinstance(n.target, ViewOf)}
    assert sorted(v.internal for v in folded.values()) == [False, True, True]
    y, v = gm(x, w)
    torch.testing.assert_close(y, want[0], rtol=0, atol=0)
    assert v._base is x  # returned: a real view, sharing x's version counter
    internal = next(v for v in folded.values() if v.internal)
    root = w if internal.size == (8, 8) and internal.stride == (1, 8) else x
    r = internal(root)
    assert r._base is None and r.untyped_storage().data_ptr() == root.untyped_storage().data_ptr()


def _view_ofs(gm: fx.GraphModule) -> list[ViewOf]:
    return [t for t in _targets(gm) if isinstance(t, ViewOf)]


def test_a_view_returned_only_to_autograd_is_reinterpreted_unless_its_root_is_visible_or_an_input():
    # Output 0 is the caller's; 1 and 2 are saved for backward (hidden). (x*3).t() has a root
    # nothing visible shares: reinterpreted. y.t() views the visible y: a real view, so an in-place
    # change of y still bumps the saved tensor's version counter. x.t() views an input: a real view.
    def fn(x):
        y = x * 2
        return y, (x * 3).t(), y.t(), x.t()
    x = torch.randn(4, 8)
    gm = _traced(fn, x)
    fold_views(gm, frozenset({1, 2, 3}))
    internal = [v.internal for v in _view_ofs(gm)]
    assert internal == [True, False, False]
    out = gm(x)
    for got, want in zip(out, fn(x)):
        torch.testing.assert_close(got, want)
    assert out[2]._base is out[0] and out[3]._base is x


def test_without_hidden_outputs_every_returned_view_stays_a_view():
    gm = _traced(lambda x: (x * 3).t(), torch.randn(4, 8))
    fold_views(gm)
    assert [v.internal for v in _view_ofs(gm)] == [False]


def test_a_backward_graph_hides_every_output_and_a_forward_without_metadata_none():
    from agnostic_rt.runtime.view_fold import hidden_outputs

    gm = _traced(lambda x: (x * 2, x * 3), torch.randn(4))
    assert hidden_outputs(gm, "backward") == frozenset({0, 1})
    assert hidden_outputs(gm, "forward") == frozenset()  # no aot_autograd tracing context here
    assert hidden_outputs(gm, "inference") == frozenset()
