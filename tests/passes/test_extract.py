"""Extraction: DAG cost, acyclicity, greedy against the exact ILP, on hand-made problems and on the
public TENSAT e-graphs from extraction-gym."""

from __future__ import annotations

from pathlib import Path

import pytest

from agnostic_rt.passes.extract import Problem, dag_cost, greedy, ilp, is_acyclic, load_serialized

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
