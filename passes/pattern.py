"""Patterns, e-matching and rules.

A pattern mirrors an ATen call: ``P(aten.mul.Tensor, X, Attr("c"))`` matches ``mul.Tensor(x, c)``
for any e-class ``x`` and any non-tensor ``c``; arguments left out must equal the schema default.
``Var`` binds an e-class (a repeated name must bind the same class), ``Attr`` a non-tensor argument,
``ANY`` matches without binding, and ``P(..., name="n")`` also binds the class it matched.

A :class:`Rule` is data: a name, a left pattern, a right side (a pattern, or a function of the
match for rewrites a pattern cannot say, such as merging sibling matmuls), an optional condition
over the match and the analysis, and an exactness tag.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .analysis import EData
from .egraph import SLOT, EGraph, ENode, template_has_slot
from .ops import normalize, to_template

log = logging.getLogger("agnostic_rt.pattern")

EXACTNESS = ("exact", "reassoc", "approx")


@dataclass(frozen=True)
class Var:
    name: str


@dataclass(frozen=True)
class Attr:
    name: str


class _Any:
    def __repr__(self) -> str:
        return "ANY"


ANY = _Any()


@dataclass(frozen=True)
class Fn:
    """A non-tensor argument of a right-hand side computed from the match: ``Fn(lambda m: m["a"] * m["b"])``."""

    fn: Callable[[Match], Any]


class P:
    """A pattern node: an op (or a tuple of ops with one argument layout) over argument patterns."""

    __slots__ = ("ops", "args", "name", "opvar")

    def __init__(self, op: Any, *args: Any, name: str | None = None, opvar: str | None = None, **kwargs: Any):
        self.ops = op if isinstance(op, tuple) else (op,)
        self.args = normalize(self.ops[0], args, kwargs)
        self.name = name
        # On the left, binds which of ``ops`` matched; on the right, builds that op.
        self.opvar = opvar

    def vars(self) -> set[str]:
        out: set[str] = {n for n in (self.name, self.opvar) if n}
        _collect_vars(self.args, out)
        return out

    def __repr__(self) -> str:
        return f"{self.ops[0]}({', '.join(map(repr, self.args))})"


def _collect_vars(value: Any, out: set[str]) -> None:
    if isinstance(value, (Var, Attr)):
        out.add(value.name)
    elif isinstance(value, P):
        out |= value.vars()
    elif isinstance(value, (list, tuple)):
        for v in value:
            _collect_vars(v, out)


class Match:
    """One match of a rule: the e-graph, the class it matched and the bindings."""

    __slots__ = ("eg", "root", "subst")

    def __init__(self, eg: EGraph, root: int, subst: dict[str, Any]):
        self.eg, self.root, self.subst = eg, root, subst

    def __getitem__(self, name: str) -> Any:
        return self.subst[name]

    def data(self, name: str) -> EData:
        return self.eg.data(self.subst[name])

    def shape(self, name: str) -> tuple | None:
        return self.data(name).shape

    def dtype(self, name: str):
        return self.data(name).dtype

    @property
    def root_data(self) -> EData:
        return self.eg.data(self.root)


# -- e-matching ---------------------------------------------------------------------------------------
def _align(pat: Any, tmpl: Any, children: tuple, pos: list[int], subst: dict, pairs: list) -> dict | None:
    """Walk a pattern argument against a template argument: bind attributes, collect (pattern, class)
    pairs for tensor positions. Returns the extended substitution or None on mismatch."""
    if isinstance(pat, (Var, P)):
        if tmpl is not SLOT:
            return None
        pairs.append((pat, children[pos[0]]))
        pos[0] += 1
        return subst
    if pat is ANY:
        pos[0] += _count_slots(tmpl)
        return subst
    if isinstance(pat, Attr):
        if template_has_slot(tmpl):
            # an argument holding e-classes (a shape list with symbolic sizes): bind it whole, with
            # its classes, so a right side can pass it on unchanged
            n = _count_slots(tmpl)
            tmpl = WithClasses(tmpl, tuple(children[pos[0]:pos[0] + n]))
            pos[0] += n
        bound = subst.get(pat.name, _UNBOUND)
        if bound is _UNBOUND:
            subst = dict(subst)
            subst[pat.name] = tmpl
        elif not _eq(bound, tmpl):
            return None
        return subst
    if isinstance(pat, (list, tuple)):
        if not isinstance(tmpl, tuple) or len(tmpl) != len(pat):
            return None
        for p, t in zip(pat, tmpl):
            subst = _align(p, t, children, pos, subst, pairs)
            if subst is None:
                return None
        return subst
    if template_has_slot(tmpl) or not _eq(pat, tmpl):
        return None
    return subst


_UNBOUND = object()


@dataclass(frozen=True)
class WithClasses:
    """A non-tensor argument that contains e-classes (e.g. ``[s0 * 4, 64, 64]``)."""

    template: Any
    classes: tuple[int, ...]


def _eq(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_eq(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    try:
        return bool(a == b)
    except Exception:
        return False


def _count_slots(tmpl: Any) -> int:
    if tmpl is SLOT:
        return 1
    if isinstance(tmpl, tuple):
        return sum(_count_slots(t) for t in tmpl)
    return 0


def ematch(eg: EGraph, pat: P | Var, cid: int, subst: dict | None = None) -> Iterator[dict]:
    """Every substitution under which ``pat`` matches e-class ``cid``."""
    subst = {} if subst is None else subst
    cid = eg.find(cid)
    if isinstance(pat, Var):
        bound = subst.get(pat.name)
        if bound is None:
            s = dict(subst)
            s[pat.name] = cid
            yield s
        elif eg.find(bound) == cid:
            yield subst
        return
    if pat.name is not None:
        bound = subst.get(pat.name)
        if bound is not None and eg.find(bound) != cid:
            return
        if bound is None:
            subst = dict(subst)
            subst[pat.name] = cid
    for node in list(eg.classes[cid].nodes):
        if node.op not in pat.ops:
            continue
        s = subst
        if pat.opvar is not None:
            if s.get(pat.opvar, node.op) != node.op:
                continue
            s = dict(s)
            s[pat.opvar] = node.op
        pairs: list = []
        s = _align(pat.args, node.template, node.children, [0], s, pairs)
        if s is not None:
            yield from _match_pairs(eg, pairs, 0, s)


def _match_pairs(eg: EGraph, pairs: list, i: int, subst: dict) -> Iterator[dict]:
    if i == len(pairs):
        yield subst
        return
    pat, cid = pairs[i]
    for s in ematch(eg, pat, cid, subst):
        yield from _match_pairs(eg, pairs, i + 1, s)


# -- instantiation ------------------------------------------------------------------------------------
def instantiate(eg: EGraph, pat: Any, m: Match, equal_to: int | None = None) -> int:
    """Add the right-hand side ``pat`` under the match's bindings; returns its class.

    ``equal_to``: a class the top node is about to be united with; its value metadata is taken from
    there instead of being recomputed on fake tensors (the union still checks shape and dtype, the
    emitter re-runs every node it writes, and each rule is property-tested).
    """
    if isinstance(pat, Var):
        return m.subst[pat.name]
    children: list[int] = []
    template = _build_args(eg, pat.args, m, children)
    op = m.subst[pat.opvar] if pat.opvar is not None else pat.ops[0]
    node = ENode(op, tuple(children), template)
    if equal_to is not None:
        known = getattr(eg.make_data, "__self__", None)
        if known is not None and hasattr(known, "known_vals"):
            known.known_vals[eg.canonical(node)] = eg.data(equal_to).val
    return eg.add(node)


def _build_args(eg: EGraph, value: Any, m: Match, children: list[int]) -> Any:
    if isinstance(value, (Var, P)):
        children.append(instantiate(eg, value, m))
        return SLOT
    if isinstance(value, Attr):
        bound = m.subst[value.name]
        if isinstance(bound, WithClasses):
            children.extend(bound.classes)
            return bound.template
        return bound
    if isinstance(value, Fn):
        return to_template(value.fn(m), lambda v: False, children)
    if isinstance(value, (list, tuple)):
        return tuple(_build_args(eg, v, m, children) for v in value)
    return value


# -- rules --------------------------------------------------------------------------------------------
Applier = Callable[[Match], "int | None"]


@dataclass
class Rule:
    """A rewrite ``lhs -> rhs`` valid when ``cond`` holds.

    ``exactness``: "exact" (bitwise identical results), "reassoc" (same maths, rounding may differ),
    "approx" (numerically close only; applied under numerics="fast").
    """

    name: str
    lhs: P | None  # None: a rule over the analysis alone, which overrides search()
    rhs: P | Var | Applier
    cond: Callable[[Match], bool] | None = None
    exactness: str = "exact"
    family: str = ""
    doc: str = ""
    tags: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self):
        if self.exactness not in EXACTNESS:
            raise ValueError(f"rule {self.name!r}: exactness {self.exactness!r}; expected one of {EXACTNESS}")
        if isinstance(self.rhs, (P, Var)):
            rhs_vars = self.rhs.vars() if isinstance(self.rhs, P) else {self.rhs.name}
            missing = rhs_vars - self.lhs.vars()
            if missing:  # a right side may only use what the left side bound: no new dependencies
                raise ValueError(f"rule {self.name!r}: right side uses unbound {sorted(missing)}")

    def search(self, eg: EGraph, limit: int | None = None) -> list[Match]:
        """All matches (up to ``limit``) whose condition holds."""
        out: list[Match] = []
        if self.lhs is None:
            raise NotImplementedError(f"rule {self.name!r} has no left pattern and no search()")
        for op in self.lhs.ops:
            for cid in eg.classes_with_op(op):
                for subst in ematch(eg, self.lhs, cid):
                    m = Match(eg, cid, subst)
                    try:
                        ok = self.cond is None or self.cond(m)
                    except Exception as e:  # a condition that cannot decide does not fire
                        log.debug("rule %s: condition raised %s", self.name, e)
                        ok = False
                    if ok:
                        out.append(m)
                        if limit is not None and len(out) > limit:
                            return out
        return out

    def apply(self, m: Match) -> int | None:
        """The class the right side builds for match ``m`` (None when the right side declines)."""
        if isinstance(self.rhs, (P, Var)):
            return instantiate(m.eg, self.rhs, m, equal_to=m.root)
        return self.rhs(m)
