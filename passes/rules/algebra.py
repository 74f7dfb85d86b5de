"""Algebra: identities, scalar chains, scalars out of reductions, casts, constants as scalars."""

from __future__ import annotations

import math

import torch

from agnostic_rt.passes.egraph import EGraph
from agnostic_rt.passes.pattern import ANY, Attr, Fn, Match, P, Rule, instantiate

from .common import X, aten, floating, number, same_as_root, static

prims = torch.ops.prims


def _const_is(value):
    return lambda m: number(m["c"]) and m["c"] == value and same_as_root(m, "x")


def _scalars(m: Match) -> bool:
    return number(m["a"]) and number(m["b"]) and floating(m, "x")


# A wider dtype that holds every value of the narrower exactly, so narrow -> wide -> narrow is identity.
_EXACT_WIDENING = {
    torch.float16: (torch.float32, torch.float64), torch.bfloat16: (torch.float32, torch.float64),
    torch.float32: (torch.float64,),
}


def _round_trip(m: Match) -> bool:
    return m["wide"] in _EXACT_WIDENING.get(m.dtype("x"), ()) and m["narrow"] == m.dtype("x")


def _cast(x, dtype):
    return P(aten._to_copy.default, x, dtype=dtype)


class FoldConstants(Rule):
    """Constant folding (egg's analysis ``modify``): a scalar-sized class whose value the analysis
    computed from known constants gets a ``full`` e-node, so the ops that produced it can go."""

    _CREATORS = (aten.full.default, aten.scalar_tensor.default)

    def search(self, eg: EGraph, limit: int | None = None) -> list[Match]:
        out = []
        for cid, cls in list(eg.classes.items()):
            d = cls.data
            if (d.const is None or not number(d.const) or not d.is_tensor or not static(d.shape)
                    or d.val.numel() != 1 or any(n.op in self._CREATORS for n in cls.nodes)):
                continue
            out.append(Match(eg, cid, {}))
            if limit is not None and len(out) > limit:
                break
        return out

    def apply(self, m: Match) -> int | None:
        d = m.root_data
        return instantiate(m.eg, P(aten.full.default, list(d.shape), d.const, dtype=d.dtype,
                                   layout=torch.strided, device=d.device, pin_memory=False), m)


def _scalar_const(m: Match) -> bool:
    d = m.data("c")
    return (d.const is not None and number(d.const) and d.ndim == 0 and d.dtype == m.dtype("x")
            and floating(m, "x"))


RULES = [
    Rule("mul-by-one", P(aten.mul.Tensor, X, Attr("c")), X, _const_is(1), "exact",
         doc="x * 1 -> x"),
    Rule("div-by-one", P(aten.div.Tensor, X, Attr("c")), X, _const_is(1), "exact",
         doc="x / 1 -> x"),
    Rule("add-zero", P(aten.add.Tensor, X, Attr("c"), alpha=ANY), X, _const_is(0), "reassoc",
         doc="x + 0 -> x (reassoc: -0.0 + 0 is +0.0)"),
    Rule("sub-zero", P(aten.sub.Tensor, X, Attr("c"), alpha=ANY), X, _const_is(0), "exact",
         doc="x - 0 -> x"),
    Rule("neg-neg", P(aten.neg.default, P(aten.neg.default, X)), X, None, "exact",
         doc="-(-x) -> x"),
    Rule("mul-scalar-chain", P(aten.mul.Tensor, P(aten.mul.Tensor, X, Attr("a")), Attr("b")),
         P(aten.mul.Tensor, X, Fn(lambda m: m["a"] * m["b"])), _scalars, "reassoc",
         doc="(x * a) * b -> x * (a * b)"),
    Rule("div-scalar-as-mul", P(aten.div.Tensor, X, Attr("c")),
         P(aten.mul.Tensor, X, Fn(lambda m: 1.0 / m["c"])),
         lambda m: number(m["c"]) and m["c"] != 0 and math.isfinite(m["c"]) and floating(m, "x"), "reassoc",
         doc="x / c -> x * (1/c) (exact when c is a power of two)"),
    Rule("sum-scalar-out", P(aten.sum.dim_IntList, P(aten.mul.Tensor, X, Attr("c")), Attr("d"), Attr("k")),
         P(aten.mul.Tensor, P(aten.sum.dim_IntList, X, Attr("d"), Attr("k")), Attr("c")),
         lambda m: number(m["c"]) and floating(m, "x"), "reassoc",
         doc="sum(x * c) -> sum(x) * c"),
    Rule("mean-scalar-out", P(aten.mean.dim, P(aten.mul.Tensor, X, Attr("c")), Attr("d"), Attr("k")),
         P(aten.mul.Tensor, P(aten.mean.dim, X, Attr("d"), Attr("k")), Attr("c")),
         lambda m: number(m["c"]) and floating(m, "x"), "reassoc",
         doc="mean(x * c) -> mean(x) * c"),
    Rule("cast-to-own-dtype", P(aten._to_copy.default, X, dtype=Attr("d")), X,
         lambda m: m["d"] == m.dtype("x"), "exact", doc="x.to(x.dtype) -> x"),
    Rule("convert-to-own-dtype", P(prims.convert_element_type.default, X, Attr("d")), X,
         lambda m: m["d"] == m.dtype("x"), "exact", doc="convert_element_type(x, x.dtype) -> x"),
    Rule("cast-round-trip", _cast(_cast(X, Attr("wide")), Attr("narrow")), X, _round_trip, "exact",
         doc="x.to(wider).to(x.dtype) -> x"),
    Rule("convert-round-trip",
         P(prims.convert_element_type.default, P(prims.convert_element_type.default, X, Attr("wide")),
           Attr("narrow")), X, _round_trip, "exact", doc="same, for core-ATen casts"),
    Rule("scalar-tensor-as-scalar", P(aten.mul.Tensor, X, P(aten.full.default, ANY, ANY, dtype=ANY, layout=ANY,
                                                           device=ANY, pin_memory=ANY, name="c")),
         P(aten.mul.Tensor, X, Fn(lambda m: m.data("c").const)), _scalar_const, "reassoc",
         doc="x * full([], c) -> x * c"),
    Rule("scalar-tensor-div-as-scalar", P(aten.div.Tensor, X, P(aten.full.default, ANY, ANY, dtype=ANY, layout=ANY,
                                                               device=ANY, pin_memory=ANY, name="c")),
         P(aten.div.Tensor, X, Fn(lambda m: m.data("c").const)), _scalar_const, "reassoc",
         doc="x / full([], c) -> x / c"),
    Rule("gelu-tanh-approximation", P(aten.gelu.default, X), P(aten.gelu.default, X, approximate="tanh"),
         lambda m: floating(m, "x"), "approx",
         doc="gelu(x) -> gelu(x, approximate='tanh') (|error| < 1e-3; numerics='fast' only)"),
    FoldConstants("fold-constants", None, lambda m: None, None, "reassoc",
                  doc="scalar-sized results of pointwise ops over constants, computed at compile time"),
]
