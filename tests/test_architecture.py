"""The architecture contract: pyproject's import-linter contracts hold, and agnostic_rt's modules
import each other without cycles. Each check is also shown to fail on a planted violation."""

from __future__ import annotations

import copy

import networkx as nx
import pytest
from import_graph import PACKAGE, installed_tree, lint_imports, materialise, module_graph

# Import cycles present in the tree, each the set of modules of one strongly connected component.
# Issue 17 (item 4, the lowering table and the Launcher type) removes them; when one goes, its xfail
# below turns into a failure (strict): delete the entry.
KNOWN_CYCLES: dict[str, frozenset[str]] = {
    "lowering": frozenset({
        "agnostic_rt.backends.lowering.lower",
        "agnostic_rt.backends.lowering.ops",
        "agnostic_rt.backends.lowering.views",
    }),
    "triton-launch": frozenset({
        "agnostic_rt.backends.triton.launch",
        "agnostic_rt.backends.triton.registry",
    }),
}


@pytest.fixture(scope="module")
def graph():
    return module_graph()


def cycles(graph) -> list[frozenset[str]]:
    """The module sets that import each other in a cycle (strongly connected components > 1)."""
    g = nx.DiGraph()
    for module in graph.modules:
        g.add_node(module)
        g.add_edges_from((module, imported) for imported in graph.find_modules_directly_imported_by(module))
    return [frozenset(c) for c in nx.strongly_connected_components(g) if len(c) > 1]


def describe(graph, component: frozenset[str]) -> str:
    """One cycle through `component`, one import per line with where it is written."""
    sub = nx.DiGraph()
    for module in component:
        imported = graph.find_modules_directly_imported_by(module) & component
        sub.add_edges_from((module, m) for m in imported)
    lines = []
    for importer, imported in nx.find_cycle(sub, source=min(component)):
        where = graph.get_import_details(importer=importer, imported=imported)[0]
        lines.append(f"  {importer} -> {imported} (l.{where['line_number']}: {where['line_contents']})")
    return "\n".join(lines)


def unexpected_cycles(graph) -> list[str]:
    known = KNOWN_CYCLES.values()
    return [describe(graph, c) for c in cycles(graph) if not any(c <= k for k in known)]


def test_contracts_kept(tmp_path):
    result = lint_imports(installed_tree(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_planted_back_import_breaks_contract(tmp_path):
    """training/ importing a backend fails the contract, naming the contract and the import."""
    tree = installed_tree(tmp_path)
    (materialise(tree, f"{PACKAGE}.training") / "planted.py").write_text(
        "from agnostic_rt.backends import for_target\n"
    )
    result = lint_imports(tree)
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert "Training state (agnostic_rt.training) is independent of the compiler BROKEN" in out
    assert "agnostic_rt.training is not allowed to import agnostic_rt.backends" in out
    assert "agnostic_rt.training.planted -> agnostic_rt.backends (l.1)" in out


def test_graph_sees_mapped_subpackages(graph):
    """The graph is the installed package: folders mapped by package-dir are in it."""
    for sub in ("backends", "passes", "conformance", "runtime", "training"):
        assert f"{PACKAGE}.{sub}" in graph.modules
    assert f"{PACKAGE}.backends.triton.launch" in graph.modules


def test_no_new_import_cycles(graph):
    found = unexpected_cycles(graph)
    assert not found, "modules import each other in a cycle:\n" + "\n\n".join(found)


def test_planted_cycle_is_found(graph):
    checkpoint, migrate = "agnostic_rt.training.checkpoint", "agnostic_rt.training.migrate"
    assert graph.direct_import_exists(importer=migrate, imported=checkpoint)
    planted = copy.deepcopy(graph)
    planted.add_import(
        importer=checkpoint, imported=migrate, line_number=7, line_contents="from . import migrate"
    )
    found = unexpected_cycles(planted)
    assert len(found) == 1, found
    assert f"{checkpoint} -> {migrate} (l.7: from . import migrate)" in found[0]
    assert f"{migrate} -> {checkpoint} (l." in found[0]


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=f"known import cycle '{name}' (issue 17)"))
    for name in KNOWN_CYCLES
])
def test_known_cycle_gone(graph, name):
    remaining = [c for c in cycles(graph) if c & KNOWN_CYCLES[name]]
    assert not remaining, "still cyclic:\n" + "\n\n".join(describe(graph, c) for c in remaining)
