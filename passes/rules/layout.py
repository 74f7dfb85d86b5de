"""Layout: permute/transpose composition and cancellation, view/reshape/expand chains, transposes
through pointwise ops, and mm(t(b), t(a)) <-> t(mm(a, b)).

Transposes are given a permute form (transpose-as-permute, t-as-permute), so one composition rule
cancels any chain of them."""

from __future__ import annotations

from agnostic_rt.passes.analysis import same_shape
from agnostic_rt.passes.pattern import ANY, Attr, Fn, Match, P, Rule, Var

from .common import A, B, X, aten, norm_dim, number, static

E = Var("e")

_VIEWS = (aten.view.default, aten._unsafe_view.default)
_T = [1, 0]
# Unary pointwise ops a permute commutes with (elementwise, so layout does not matter).
_UNARY = (aten.relu.default, aten.neg.default, aten.exp.default, aten.tanh.default,
          aten.sigmoid.default, aten.silu.default)


def _perm_of_transpose(m: Match) -> list[int]:
    nd = m.data("x").ndim
    a, b = norm_dim(m["a"], nd), norm_dim(m["b"], nd)
    perm = list(range(nd))
    perm[a], perm[b] = perm[b], perm[a]
    return perm


def _compose(m: Match) -> list[int]:
    p, q = m["p"], m["q"]
    return [p[i] for i in q]


def _is_identity(perm) -> bool:
    return list(perm) == list(range(len(perm)))


def _shape_unchanged(m: Match) -> bool:
    return same_shape(m.root_data.shape, m.data("x").shape) and m.root_data.dtype == m.dtype("x")


def _legacy_empty(m: Match) -> bool:
    # cat skips 1-D empty tensors (legacy behaviour); HF's empty KV caches rely on it
    e = m.data("e")
    return e.is_tensor and e.ndim == 1 and static(e.shape) and e.shape[0] == 0 and m.dtype("x") == m.root_data.dtype


RULES = [
    Rule("transpose-as-permute", P(aten.transpose.int, X, Attr("a"), Attr("b")),
         P(aten.permute.default, X, Fn(_perm_of_transpose)), lambda m: m.data("x").ndim >= 2, "exact",
         doc="transpose(x, a, b) -> permute(x, swap(a, b))"),
    Rule("t-as-permute", P(aten.t.default, X), P(aten.permute.default, X, _T),
         lambda m: m.data("x").ndim == 2, "exact", doc="t(x) -> permute(x, [1, 0])"),
    Rule("permute-permute", P(aten.permute.default, P(aten.permute.default, X, Attr("p")), Attr("q")),
         P(aten.permute.default, X, Fn(_compose)), lambda m: not _is_identity(_compose(m)), "exact",
         doc="permute(permute(x, p), q) -> permute(x, p o q)"),
    Rule("permute-cancel", P(aten.permute.default, P(aten.permute.default, X, Attr("p")), Attr("q")), X,
         lambda m: _is_identity(_compose(m)), "exact", doc="permute(permute(x, p), inverse p) -> x"),
    Rule("permute-identity", P(aten.permute.default, X, Attr("p")), X, lambda m: _is_identity(m["p"]), "exact",
         doc="permute(x, identity) -> x"),
    Rule("view-chain", P(_VIEWS, P(_VIEWS, X, ANY), Attr("s")), P(aten.view.default, X, Attr("s")),
         None, "exact", doc="view(view(x, s1), s2) -> view(x, s2)"),
    Rule("reshape-chain", P(aten.reshape.default, P((aten.reshape.default,) + _VIEWS, X, ANY), Attr("s")),
         P(aten.reshape.default, X, Attr("s")), None, "exact",
         doc="reshape(reshape(x, s1), s2) -> reshape(x, s2)"),
    Rule("view-as-reshape", P(_VIEWS, X, Attr("s")), P(aten.reshape.default, X, Attr("s")), None, "exact",
         doc="view(x, s) -> reshape(x, s): one form for the matmul patterns below"),
    Rule("copy-then-view-as-reshape",
         P(aten._unsafe_view.default, P(aten.clone.default, X, memory_format=ANY), Attr("s")),
         P(aten.reshape.default, X, Attr("s")), None, "exact",
         doc="_unsafe_view(clone(x), s) -> reshape(x, s): how matmul decomposes a reshape"),
    Rule("view-noop", P(_VIEWS + (aten.reshape.default,), X, ANY), X, _shape_unchanged, "exact",
         doc="view(x, x.shape) -> x"),
    Rule("expand-noop", P(aten.expand.default, X, ANY), X, _shape_unchanged, "exact",
         doc="expand(x, x.shape) -> x"),
    Rule("squeeze-unsqueeze", P(aten.squeeze.dim, P(aten.unsqueeze.default, X, Attr("d")), Attr("e")), X,
         lambda m: norm_dim(m["d"], m.data("x").ndim + 1) == norm_dim(m["e"], m.data("x").ndim + 1), "exact",
         doc="squeeze(unsqueeze(x, d), d) -> x"),
    Rule("cat-legacy-empty-left", P(aten.cat.default, [E, X], ANY), X, _legacy_empty, "exact",
         doc="cat([empty(0), x], d) -> x (an empty KV cache)"),
    Rule("cat-legacy-empty-right", P(aten.cat.default, [X, E], ANY), X, _legacy_empty, "exact",
         doc="cat([x, empty(0)], d) -> x"),
    Rule("permute-into-unary", P(aten.permute.default, P(_UNARY, X, opvar="f"), Attr("p")),
         P(_UNARY, P(aten.permute.default, X, Attr("p")), opvar="f"), None, "exact",
         doc="permute(f(x)) -> f(permute(x)) for elementwise f"),
    Rule("permute-out-of-unary", P(_UNARY, P(aten.permute.default, X, Attr("p")), opvar="f"),
         P(aten.permute.default, P(_UNARY, X, opvar="f"), Attr("p")), None, "exact",
         doc="f(permute(x)) -> permute(f(x)) for elementwise f"),
    Rule("permute-into-scale", P(aten.permute.default, P(aten.mul.Tensor, X, Attr("c")), Attr("p")),
         P(aten.mul.Tensor, P(aten.permute.default, X, Attr("p")), Attr("c")), lambda m: number(m["c"]), "exact",
         doc="permute(x * c) -> permute(x) * c"),
    Rule("mm-of-transposes", P(aten.mm.default, P(aten.permute.default, B, _T), P(aten.permute.default, A, _T)),
         P(aten.permute.default, P(aten.mm.default, A, B), _T), None, "reassoc",
         doc="mm(t(b), t(a)) -> t(mm(a, b))"),
    Rule("transpose-of-mm", P(aten.permute.default, P(aten.mm.default, A, B), _T),
         P(aten.mm.default, P(aten.permute.default, B, _T), P(aten.permute.default, A, _T)), None, "reassoc",
         doc="t(mm(a, b)) -> mm(t(b), t(a))"),
]
