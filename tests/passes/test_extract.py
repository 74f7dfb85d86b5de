"""Extraction: DAG cost, acyclicity, greedy against the exact ILP and the neighbourhood search, on
hand-made problems, random ones and the public TENSAT e-graphs from extraction-gym."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agnostic_rt.passes.extract import (
    Problem,
    dag_cost,
    greedy,
    ilp,
    is_acyclic,
    load_serialized,
    neighbourhood,
    search,
)

GYM = Path("/work/shared/data/extraction-gym")


def _shared_problem() -> Problem:
    # Two roots can each be computed alone (cost 3 each) or from one shared node (cost 4) plus a free
    # projection each: tree cost prefers the separate nodes, DAG cost the shared one.
    return Problem({
        "r1": [("alone1", 3.0, ()), ("proj1", 0.1, ("shared",))],
        "r2": [("alone2", 3.0, ()), ("proj2", 0.1, ("shared",))],
        "shared": [("merged", 4.0, ())],
    }, ["r1", "r2"])


def test_dag_cost_counts_a_shared_class_once():
    p = _shared_problem()
    assert dag_cost(p, {"r1": 1, "r2": 1, "shared": 0}) == pytest.approx(4.2)


def test_greedy_misses_the_shared_node_and_ilp_finds_it():
    p = _shared_problem()
    g, e = greedy(p), ilp(p)
    assert g.cost == pytest.approx(6.0) and e.cost == pytest.approx(4.2) and e.optimal


def test_ilp_never_chooses_a_cycle():
    # a's cheapest node needs b, and b's cheapest needs a: the only acyclic choice pays for a leaf
    p = Problem({"a": [("a_from_b", 0.1, ("b",)), ("a_leaf", 5.0, ())],
                 "b": [("b_from_a", 0.1, ("a",)), ("b_leaf", 7.0, ())]}, ["a"])
    e = ilp(p)
    assert is_acyclic(p, e.choice) and e.cost == pytest.approx(5.0)
    g = greedy(p)
    assert is_acyclic(p, g.choice) and g.cost == pytest.approx(5.0)


@pytest.mark.parametrize("name", ["vgg", "resnet50"])
def test_tensat_egraphs_extract_acyclic_and_ilp_is_no_worse(name):
    p = load_serialized(str(GYM / f"{name}_acyclic.json"))
    g = greedy(p)
    e = ilp(p, time_limit=30, warm=g)
    assert is_acyclic(p, g.choice) and is_acyclic(p, e.choice)
    assert e.cost <= g.cost + 1e-9


def test_the_ilp_is_bounded_by_nodes_and_says_when_the_clock_stopped_it(caplog):
    p = load_serialized(str(GYM / "resnet50_acyclic.json"))
    g = greedy(p)
    e = ilp(p, time_limit=30, warm=g, node_limit=1_000)  # solved at the root, well inside the node bound
    assert e.optimal and e.notes["mip_nodes"] <= 1_000 and e.cost <= g.cost + 1e-9
    assert "clock" not in caplog.text
    stopped = ilp(p, time_limit=1e-9, warm=g, node_limit=1_000)
    assert not stopped.optimal and stopped.cost <= g.cost + 1e-9
    assert "stopped on its" in caplog.text and "machine's speed" in caplog.text


def _merge_problem() -> Problem:
    # Three products of one input x, read by one root: three matmuls (tree cost 3 each), or the
    # projections of one merged matmul (cost 5 for all three). Greedy, by tree cost, takes the three
    # matmuls (9 + x); the DAG optimum pays the merged one once (5 + x). The merge also offers a
    # tempting cycle: y's cheapest node reads the root.
    return Problem({
        "root": [("add3", 0.5, ("q", "k", "v"))],
        "q": [("mm_q", 3.0, ("x",)), ("split_q", 0.0, ("qkv",))],
        "k": [("mm_k", 3.0, ("x",)), ("split_k", 0.0, ("qkv",))],
        "v": [("mm_v", 3.0, ("x",)), ("split_v", 0.0, ("qkv",))],
        "qkv": [("mm_qkv", 5.0, ("x", "w"))],
        "w": [("concat_w", 0.1, ())],
        "x": [("input", 1.0, ()), ("from_root", 0.0, ("root",))],
    }, ["root"])


def test_search_finds_the_merge_greedy_misses():
    p = _merge_problem()
    g = greedy(p)
    assert g.cost == pytest.approx(10.5)
    exact = ilp(p)
    assert exact.optimal and exact.cost == pytest.approx(6.6)
    for e in (search(p), search(p, exact_max_nodes=0), neighbourhood(p, g)):
        # exact_max_nodes=0 and neighbourhood() take the large-e-graph path: windows, not the whole ILP
        assert is_acyclic(p, e.choice) and e.cost == pytest.approx(6.6), e.method
    assert search(p, exact_max_nodes=0).method == "greedy+lns"


def test_search_never_chooses_a_cycle():
    p = Problem({"a": [("a_from_b", 0.1, ("b",)), ("a_leaf", 5.0, ())],
                 "b": [("b_from_a", 0.1, ("a",)), ("b_leaf", 7.0, ())]}, ["a"])
    e = search(p, exact_max_nodes=0)
    assert is_acyclic(p, e.choice) and e.cost == pytest.approx(5.0)


@st.composite
def _problems(draw) -> Problem:
    # Random e-graphs: class i's nodes read lower classes, plus a few back edges that make cycles.
    n = draw(st.integers(2, 9))
    classes = {}
    for i in range(n):
        nodes = []
        for j in range(draw(st.integers(1, 3))):
            kids = draw(st.lists(st.integers(0, n - 1), max_size=3))
            kids = tuple(k for k in kids if k < i or draw(st.booleans()))
            cost = draw(st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0]))
            nodes.append((f"n{i}_{j}", cost, kids))
        nodes.append((f"leaf{i}", 4.0, ()))  # every class computable
        classes[i] = nodes
    return Problem(classes, [n - 1])


@settings(max_examples=60, deadline=None)
@given(_problems())
def test_search_is_acyclic_never_worse_than_greedy_never_better_than_the_optimum(p):
    g = greedy(p)
    exact = ilp(p)
    e = search(p, exact_max_nodes=0)
    assert is_acyclic(p, e.choice)
    assert e.cost == pytest.approx(dag_cost(p, e.choice))
    assert exact.cost - 1e-9 <= e.cost <= g.cost + 1e-9


@pytest.mark.parametrize("name", ["vgg", "resnet50"])
def test_search_is_optimal_on_the_small_tensat_egraphs(name):
    p = load_serialized(str(GYM / f"{name}_acyclic.json"))
    e = search(p)
    assert e.optimal and is_acyclic(p, e.choice) and e.cost <= greedy(p).cost + 1e-9


def test_search_on_tensat_bert_is_acyclic_and_never_worse_than_greedy():
    # The cost reached within the clock depends on the machine; bench/extract.py reports it.
    p = load_serialized(str(GYM / "bert_acyclic.json"))
    g = greedy(p)
    e = search(p, time_limit=20.0)
    assert e.method == "greedy+lns" and is_acyclic(p, e.choice)
    assert e.cost == pytest.approx(dag_cost(p, e.choice)) and e.cost <= g.cost + 1e-9
