"""The e-graph: e-nodes, union-find, hashcons, congruence closure with deferred rebuilding.

An :class:`ENode` is an operator applied to e-classes: ``(op, children, template)``. ``op`` is an
ATen ``OpOverload`` (or another pure callable such as ``operator.getitem``, or a :class:`Barrier`
for impure nodes); ``template`` is the full positional argument tuple of the op with every tensor
argument replaced by :data:`SLOT` -- the non-tensor arguments (dims, scalars, dtypes) are part of
the node's identity; ``children`` lists the e-class of each slot in template order.

Invariants (the ones egg keeps, written once, here):

* after :meth:`EGraph.rebuild`, every e-node's children are canonical, the hashcons maps every
  canonical e-node to its canonical class, and congruent e-nodes share one class;
* between rebuilds, unions are recorded in ``_pending`` and only :meth:`find` is exact;
* an e-class's analysis data (:class:`~.analysis.EData`) is computed once, when its first e-node is
  added; a union keeps the data of one side after checking that both agree on shape and dtype.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

log = logging.getLogger("agnostic_rt.egraph")


class _Slot:
    """Marks a tensor (child) position inside an e-node's argument template."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "_"

    def __reduce__(self):
        return "SLOT"


SLOT = _Slot()


@dataclass(frozen=True)
class Barrier:
    """The op of an impure e-node (random, in-place, collective, opaque).

    ``uid`` (the node's position in its source graph) makes every barrier unique, so hashconsing never
    merges two of them; patterns never name a Barrier, so no rule rewrites one; ``mutates`` marks
    nodes that write to one of their inputs (they are emitted after every pure node).
    """

    op: Any
    uid: int
    mutates: bool = False

    def __str__(self) -> str:
        return f"barrier[{self.uid}]:{self.op}"


class ENode(NamedTuple):
    op: Any
    children: tuple[int, ...]
    template: tuple

    def map_children(self, fn: Callable[[int], int]) -> ENode:
        return ENode(self.op, tuple(fn(c) for c in self.children), self.template)


def template_has_slot(value: Any) -> bool:
    if value is SLOT:
        return True
    if isinstance(value, tuple):
        return any(template_has_slot(v) for v in value)
    return False


@dataclass
class EClass:
    id: int
    nodes: list[ENode]
    data: Any
    # (e-node as inserted, class it was inserted into) for every e-node that uses this class.
    parents: list[tuple[ENode, int]] = field(default_factory=list)


class EGraph:
    """An e-graph with an analysis.

    >>> g = EGraph(make_data=lambda g, n: None, merge_data=lambda a, b: a)
    >>> x = g.add(ENode("x", (), ()))
    >>> fx = g.add(ENode("f", (x,), (SLOT,)))
    >>> y = g.add(ENode("y", (), ()))
    >>> fy = g.add(ENode("f", (y,), (SLOT,)))
    >>> _ = g.union(x, y); g.rebuild(); g.find(fx) == g.find(fy)
    True

    ``make_data(egraph, enode)`` computes the analysis of a new class (it may raise to refuse the
    node); ``merge_data(a, b)`` combines two classes' data on union (it may raise to refuse it).
    """

    def __init__(self, make_data: Callable[[EGraph, ENode], Any], merge_data: Callable[[Any, Any], Any]):
        self._parent: list[int] = []
        self.classes: dict[int, EClass] = {}
        self.hashcons: dict[ENode, int] = {}
        self._pending: list[int] = []
        # op -> ids of classes holding an e-node with that op (possibly stale ids; find() them).
        self.by_op: dict[Any, set[int]] = {}
        self.make_data = make_data
        self.merge_data = merge_data
        self.version = 0  # bumped on every change that can create new matches
        self._node_count = 0  # e-nodes in all classes (exact after rebuild; may overcount between)

    # -- union-find -------------------------------------------------------------------------------
    def find(self, a: int) -> int:
        parent = self._parent
        root = a
        while parent[root] != root:
            root = parent[root]
        while parent[a] != root:  # path compression
            parent[a], a = root, parent[a]
        return root

    def canonical(self, node: ENode) -> ENode:
        find = self.find
        return ENode(node.op, tuple(find(c) for c in node.children), node.template)

    # -- building ---------------------------------------------------------------------------------
    def lookup(self, node: ENode) -> int | None:
        cid = self.hashcons.get(self.canonical(node))
        return None if cid is None else self.find(cid)

    def add(self, node: ENode) -> int:
        """The class of ``node``, adding it (and computing its analysis) if it is new."""
        node = self.canonical(node)
        cid = self.hashcons.get(node)
        if cid is not None:
            return self.find(cid)
        data = self.make_data(self, node)
        cid = len(self._parent)
        self._parent.append(cid)
        self.classes[cid] = EClass(cid, [node], data)
        for child in set(node.children):
            self.classes[child].parents.append((node, cid))
        self.hashcons[node] = cid
        self.by_op.setdefault(node.op, set()).add(cid)
        self.version += 1
        self._node_count += 1
        return cid

    def union(self, a: int, b: int) -> bool:
        """Merge two classes; True if they were distinct. Congruence is restored by rebuild()."""
        a, b = self.find(a), self.find(b)
        if a == b:
            return False
        ca, cb = self.classes[a], self.classes[b]
        data = self.merge_data(ca.data, cb.data)  # may raise: the caller refuses the rewrite
        if len(ca.parents) < len(cb.parents):
            a, b, ca, cb = b, a, cb, ca
        self._parent[b] = a
        ca.nodes.extend(cb.nodes)
        ca.parents.extend(cb.parents)
        ca.data = data
        for node in cb.nodes:
            self.by_op.setdefault(node.op, set()).add(a)
        del self.classes[b]
        self._pending.append(a)
        self.version += 1
        return True

    # -- congruence closure -----------------------------------------------------------------------
    def rebuild(self) -> int:
        """Restore the invariants after a batch of unions; returns the number of repairs."""
        repairs = 0
        while self._pending:
            todo = {self.find(c) for c in self._pending}
            self._pending = []
            for cid in todo:
                repairs += 1
                self._repair(cid)
        count = 0
        for cls in self.classes.values():
            seen: dict[ENode, None] = {}
            for node in cls.nodes:
                seen.setdefault(self.canonical(node), None)
            cls.nodes = list(seen)
            count += len(cls.nodes)
        self._node_count = count
        return repairs

    def _repair(self, cid: int) -> None:
        cls = self.classes.get(self.find(cid))
        if cls is None:
            return
        for node, _ in cls.parents:
            self.hashcons.pop(node, None)
        fresh: dict[ENode, int] = {}
        for node, pclass in cls.parents:
            node = self.canonical(node)
            pclass = self.find(pclass)
            other = fresh.get(node)
            if other is not None and other != pclass:
                self.union(other, pclass)  # congruent parents: same op over equal children
                pclass = self.find(pclass)
            fresh[node] = pclass
            self.hashcons[node] = pclass
        cls = self.classes[self.find(cid)]
        cls.parents = [(n, self.find(c)) for n, c in fresh.items()]

    # -- queries ----------------------------------------------------------------------------------
    def __getitem__(self, cid: int) -> EClass:
        return self.classes[self.find(cid)]

    def data(self, cid: int) -> Any:
        return self.classes[self.find(cid)].data

    def classes_with_op(self, op: Any) -> Iterator[int]:
        ids = self.by_op.get(op)
        if not ids:
            return iter(())
        canon = {self.find(c) for c in ids}
        self.by_op[op] = canon
        return iter(sorted(canon))

    @property
    def num_nodes(self) -> int:
        return self._node_count

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def nodes(self) -> Iterable[tuple[int, ENode]]:
        for cid, cls in self.classes.items():
            for node in cls.nodes:
                yield cid, node
