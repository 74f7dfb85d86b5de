"""The e-graph engine: congruence, hashcons, e-matching, the runner's limits and backoff, and the FX
bridge's promises (barriers, outputs, multi-output nodes, symbolic sizes)."""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch.fx.experimental.proxy_tensor import make_fx

from agnostic_rt.passes.egraph import SLOT, Barrier, EGraph, ENode
from agnostic_rt.passes.extract import greedy
from agnostic_rt.passes.fx_bridge import FxEGraph
from agnostic_rt.passes.optimizer import build_problem, optimize_graph
from agnostic_rt.passes.pattern import Attr, P, Rule, Var, ematch
from agnostic_rt.passes.rules import get_rule, rules_for
from agnostic_rt.passes.runner import BackoffScheduler, Runner
from agnostic_rt.targets import get_target

aten = torch.ops.aten


def _plain() -> EGraph:
    return EGraph(make_data=lambda g, n: None, merge_data=lambda a, b: a)


def test_union_makes_parents_congruent_after_rebuild():
    g = _plain()
    x, y = g.add(ENode("x", (), ())), g.add(ENode("y", (), ()))
    fx_, fy = g.add(ENode("f", (x,), (SLOT,))), g.add(ENode("f", (y,), (SLOT,)))
    gfx, gfy = g.add(ENode("g", (fx_,), (SLOT,))), g.add(ENode("g", (fy,), (SLOT,)))
    g.union(x, y)
    g.rebuild()
    assert g.find(fx_) == g.find(fy) and g.find(gfx) == g.find(gfy)
    assert g.num_classes == 3


def test_hashcons_shares_identical_nodes():
    g = _plain()
    x = g.add(ENode("x", (), ()))
    assert g.add(ENode("f", (x,), (SLOT, 2))) == g.add(ENode("f", (x,), (SLOT, 2)))
    assert g.add(ENode("f", (x,), (SLOT, 3))) != g.add(ENode("f", (x,), (SLOT, 2)))


def _graph(fn, *inputs, mode="fake"):
    # functionalised, as aot_autograd's graphs are: dropout is bernoulli.p, not bernoulli_
    return make_fx(torch.func.functionalize(fn), tracing_mode=mode)(*inputs)


def test_ematch_binds_repeated_variables_to_one_class():
    gm = _graph(lambda x, y: (x * y) + (x * x), torch.randn(3), torch.randn(3))
    fg = FxEGraph(gm)
    same = P(aten.mul.Tensor, Var("a"), Var("a"))
    hits = [s for cid in list(fg.eg.classes) for s in ematch(fg.eg, same, cid)]
    assert len(hits) == 1


def test_identical_pure_nodes_become_one_class():
    gm = _graph(lambda x: torch.relu(x) + torch.relu(x), torch.randn(4))
    fg = FxEGraph(gm)
    relus = [c for c, n in fg.eg.nodes() if n.op == aten.relu.default]
    assert len(relus) == 1


def test_random_ops_are_barriers_never_merged():
    def fn(x):
        return F.dropout(x, 0.5, training=True) + F.dropout(x, 0.5, training=True)

    gm = _graph(fn, torch.randn(8))
    fg = FxEGraph(gm)
    barriers = [n for _, n in fg.eg.nodes() if isinstance(n.op, Barrier)]
    assert len(barriers) >= 2 and len({fg.eg.find(c) for _, c in fg.barriers}) == len(fg.barriers)


def test_barriers_keep_their_order_and_count_through_optimisation():
    def fn(x):
        a = torch.rand_like(x) * 1
        b = torch.rand_like(x) * 1
        return b - a

    gm = _graph(fn, torch.randn(8))
    out, report = optimize_graph(gm, get_target("h100"))
    assert report.changed  # the "* 1"s went
    rand = [n for n in out.graph.nodes if "rand" in str(n.target)]
    assert len(rand) == 2
    torch.manual_seed(0)
    want = gm(torch.randn(8))
    torch.manual_seed(0)
    got = out(torch.randn(8))
    torch.testing.assert_close(got, want)


def test_outputs_keep_count_and_order():
    def fn(x, y):
        return y * 1, x.t().t(), x + 0

    x, y = torch.randn(3, 4), torch.randn(2)
    gm = _graph(fn, x, y)
    out, _ = optimize_graph(gm, get_target("cpu"))
    for want, got in zip(gm(x, y), out(x, y)):
        torch.testing.assert_close(got, want)
    assert len(out(x, y)) == 3


def test_multi_output_ops_round_trip_through_getitem():
    def fn(x, w, b):
        y, mean, rstd = aten.native_layer_norm.default(x, [8], w, b, 1e-5)
        return torch.relu(y * 1), mean

    args = torch.randn(4, 8), torch.randn(8), torch.randn(8)
    gm = _graph(fn, *args)
    out, report = optimize_graph(gm, get_target("cpu"))
    assert report.changed
    assert any(n.target is operator.getitem for n in out.graph.nodes)
    for want, got in zip(gm(*args), out(*args)):
        torch.testing.assert_close(got, want)


def test_symbolic_sizes_are_kept_and_rules_still_fire():
    gm = _graph(lambda x: torch.relu(x.transpose(0, 1).transpose(0, 1) * 1), torch.randn(5, 3), mode="symbolic")
    out, report = optimize_graph(gm, get_target("cpu"))
    assert report.changed and report.run.fired["mul-by-one"] >= 1
    x = torch.randn(7, 2)
    torch.testing.assert_close(out(x), gm(x))


def test_runner_stops_at_the_node_limit():
    # commutativity and associativity of add explode; the node limit stops them
    comm = Rule("add-comm", P(aten.add.Tensor, Var("a"), Var("b")), P(aten.add.Tensor, Var("b"), Var("a")))
    assoc = Rule("add-assoc", P(aten.add.Tensor, P(aten.add.Tensor, Var("a"), Var("b")), Var("c")),
                 P(aten.add.Tensor, Var("a"), P(aten.add.Tensor, Var("b"), Var("c"))))
    xs = [torch.randn(2) for _ in range(8)]
    gm = _graph(lambda *xs: sum(xs[1:], xs[0]), *xs)
    report = Runner(FxEGraph(gm).eg, [comm, assoc], node_limit=300, iter_limit=50, time_limit=30).run()
    assert report.stop_reason == "node_limit"


def test_a_stop_on_the_clock_is_reported(caplog):
    # the time limit is a safety net; when it decides, the result depends on the machine: say so
    comm = Rule("add-comm", P(aten.add.Tensor, Var("a"), Var("b")), P(aten.add.Tensor, Var("b"), Var("a")))
    xs = [torch.randn(2) for _ in range(4)]
    gm = _graph(lambda *xs: sum(xs[1:], xs[0]), *xs)
    with caplog.at_level("WARNING", logger="agnostic_rt.runner"):
        report = Runner(FxEGraph(gm).eg, [comm], iter_limit=50, time_limit=0.0).run()
    assert report.stop_reason == "time_limit" and report.iterations == 1
    assert "time limit" in caplog.text and "machine's speed" in caplog.text


def test_backoff_bans_an_exploding_rule_and_the_others_still_fire():
    comm = Rule("add-comm", P(aten.add.Tensor, Var("a"), Var("b")), P(aten.add.Tensor, Var("b"), Var("a")))
    xs = [torch.randn(2) for _ in range(6)]
    gm = _graph(lambda *xs: torch.relu(sum(xs[1:], xs[0]) * 1), *xs)
    scheduler = BackoffScheduler(match_limit=2, ban_length=2)
    report = Runner(FxEGraph(gm).eg, [comm, get_rule("mul-by-one")], iter_limit=4, scheduler=scheduler).run()
    assert scheduler._times_banned["add-comm"] >= 1
    assert report.fired["mul-by-one"] == 1


def test_rule_right_side_cannot_introduce_new_variables():
    try:
        Rule("bad", P(aten.neg.default, Var("x")), P(aten.add.Tensor, Var("x"), Var("y")))
    except ValueError as e:
        assert "unbound" in str(e)
    else:
        raise AssertionError("a right side using an unbound variable was accepted")


def test_analysis_refuses_a_rewrite_that_changes_the_shape():
    wrong = Rule("wrong", P(aten.sum.dim_IntList, Var("x"), Attr("d")), Var("x"))
    gm = _graph(lambda x: torch.relu(x.sum(0)), torch.randn(3, 4))
    report = Runner(FxEGraph(gm).eg, [wrong]).run()
    assert report.refused["wrong"] >= 1 and not report.fired["wrong"]


def test_extraction_of_an_unrewritten_graph_reproduces_it():
    gm = _graph(lambda x, w: torch.relu(x @ w).sum(), torch.randn(3, 4), torch.randn(4, 5))
    fg = FxEGraph(gm)
    Runner(fg.eg, rules_for("strict")).run()
    problem, _ = build_problem(fg, lambda c, n: 1.0)
    ext = greedy(problem)
    new = fg.to_fx({c: problem.classes[c][i][0] for c, i in ext.choice.items()})
    x, w = torch.randn(3, 4), torch.randn(4, 5)
    torch.testing.assert_close(new(x, w), gm(x, w))
