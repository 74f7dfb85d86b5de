"""Attention: softmax(q @ k^T * scale [+ mask]) @ v -> scaled_dot_product_attention.

One pattern serves the forms attention takes: hand-written in user models (matmul, scale, mask,
softmax, matmul), after ATen's matmul decomposition (raised back to matmul by linalg rules), with
a division instead of a scale (algebra), with the scale folded into q (matmul-scale-out) and after
core-ATen decomposition of softmax (softmax-decomposed below). k is recovered from k^T by the
permute rules (k^T = permute(k) and permute(permute(k)) = k)."""

from __future__ import annotations

import torch

from agnostic_rt.passes.analysis import same_shape
from agnostic_rt.passes.egraph import SLOT
from agnostic_rt.passes.pattern import Applier, Attr, Fn, Match, P, Rule, Var, WithClasses, instantiate

from .common import X, aten, norm_dim, number

Q, KT, V, MASK = Var("q"), Var("kt"), Var("v"), Var("mask")
_SDPA = aten.scaled_dot_product_attention.default


def _attention_ok(m: Match, masked: bool) -> bool:
    q, kt, v, scores = m.data("q"), m.data("kt"), m.data("v"), m.data("scores")
    if not all(d.is_tensor and d.dtype.is_floating_point for d in (q, kt, v)):
        return False
    if not (q.dtype == kt.dtype == v.dtype and q.ndim == kt.ndim == v.ndim and q.ndim >= 3):
        return False
    if norm_dim(m["d"], scores.ndim) != scores.ndim - 1 or m["half"]:
        return False
    # k^T is [..., E, S], v is [..., S, Ev]; batch dims equal (SDPA does not broadcast q/k/v here)
    if not (same_shape(q.shape[:-2], kt.shape[:-2]) and same_shape(q.shape[:-2], v.shape[:-2])
            and same_shape(kt.shape[-1:], v.shape[-2:-1]) and same_shape(q.shape[-1:], kt.shape[-2:-1])):
        return False
    if masked:
        mask = m.data("mask")
        if not mask.is_tensor or mask.dtype not in (torch.bool, q.dtype) or mask.ndim > scores.ndim:
            return False
        if not same_shape(m.data("masked").shape, scores.shape):  # the mask must not broadcast scores up
            return False
    return number(m["s"]) or _symbolic_scale(m)


def _symbolic_scale(m: Match) -> bool:
    """A scale known only at run time: a SymFloat, as Dynamo passes a float module attribute such as
    HF's ``self.scaling`` under dynamic=True (a 0-d tensor input, then ``.item()``)."""
    s = m["s"]
    if not (isinstance(s, WithClasses) and s.template is SLOT and len(s.classes) == 1):
        return False
    val = m.eg.data(s.classes[0]).val
    return isinstance(val, (torch.SymFloat, torch.SymInt, float, int)) and not isinstance(val, bool)


def _k(m: Match) -> list[int]:
    nd = m.data("kt").ndim
    perm = list(range(nd))
    perm[-1], perm[-2] = perm[-2], perm[-1]
    return perm


def _to_sdpa(mask) -> Applier:
    """sdpa(q, k, v, mask, scale=s); for a symbolic s, sdpa(q * s, k, v, mask, scale=1.0), since SDPA's
    ``float? scale`` takes no SymFloat (softmax(q k^T s) = softmax((q s) k^T), rounding aside)."""
    k = P(aten.permute.default, KT, Fn(_k))
    scale_arg = P(_SDPA, Q, k, V, mask, 0.0, False, scale=Attr("s"))
    scale_q = P(_SDPA, P(aten.mul.Tensor, Q, Attr("s")), k, V, mask, 0.0, False, scale=1.0)
    return lambda m: instantiate(m.eg, scale_arg if number(m["s"]) else scale_q, m, equal_to=m.root)


_SCORES = P(aten.mul.Tensor, P(aten.matmul.default, Q, KT, name="scores"), Attr("s"))


def _softmax(x):
    return P(aten._softmax.default, x, Attr("d"), Attr("half"))


_E = P(aten.exp.default, P(aten.sub.Tensor, X, P(aten.amax.default, X, Attr("d"), True)), name="e")

RULES = [
    Rule("attention-masked-to-sdpa",
         P(aten.matmul.default, _softmax(P(aten.add.Tensor, _SCORES, MASK, name="masked")), V),
         _to_sdpa(MASK), lambda m: _attention_ok(m, True), "reassoc",
         doc="softmax(q @ k^T * s + mask) @ v -> sdpa(q, k, v, mask, scale=s) (s symbolic: q * s, scale 1)"),
    Rule("attention-to-sdpa", P(aten.matmul.default, _softmax(_SCORES), V),
         _to_sdpa(None), lambda m: _attention_ok(m, False), "reassoc",
         doc="softmax(q @ k^T * s) @ v -> sdpa(q, k, v, scale=s) (s symbolic: q * s, scale 1)"),
    Rule("softmax-decomposed", P(aten.div.Tensor, _E, P(aten.sum.dim_IntList, Var("e"), Attr("d"), True)),
         P(aten._softmax.default, X, Fn(lambda m: m["d"][0]), False),
         lambda m: len(m["d"]) == 1 and m.data("x").is_tensor and m.data("x").dtype.is_floating_point,
         "reassoc", doc="exp(x - amax(x)) / sum(exp(x - amax(x))) -> softmax(x)"),
]
