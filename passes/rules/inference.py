"""Inference only: a batch norm in eval mode folded into the convolution before it.

The folded weight and bias are computed in the graph from the (frozen) parameters -- a few small
pointwise ops over weights instead of a full pass over activations; where the parameters are
constants the folded ones are constants too. Training graphs never contain the eval-mode batch
norm this matches, so the rule cannot change what autograd differentiates."""

from __future__ import annotations

import operator

from agnostic_rt.passes.pattern import Attr, Match, P, Rule, Var, instantiate

from .common import aten

_BN = aten._native_batch_norm_legit_no_training.default
_CONV = P(aten.convolution.default, Var("x"), Var("w"), Var("b"), Attr("stride"), Attr("pad"), Attr("dil"),
          False, Attr("opad"), Attr("groups"), name="conv")


def _fold_ok(m: Match) -> bool:
    w, g = m.data("w"), m.data("g")
    return (w.is_tensor and w.ndim >= 3 and g.is_tensor and g.ndim == 1 and w.dtype == g.dtype
            and w.dtype.is_floating_point)


def _fold(m: Match) -> int:
    """conv(x, w * s, (b - mean) * s + beta) with s = gamma / sqrt(var + eps)."""
    nd = m.data("w").ndim
    shape = [-1] + [1] * (nd - 1)
    scale = P(aten.mul.Tensor, Var("g"), P(aten.rsqrt.default, P(aten.add.Tensor, Var("var"), m["eps"])))
    weight = P(aten.mul.Tensor, Var("w"), P(aten.view.default, scale, shape))
    bias = P(aten.add.Tensor, P(aten.mul.Tensor, P(aten.sub.Tensor, Var("b"), Var("mean")), scale), Var("beta"))
    conv = P(aten.convolution.default, Var("x"), weight, bias, Attr("stride"), Attr("pad"), Attr("dil"), False,
             Attr("opad"), Attr("groups"))
    return instantiate(m.eg, conv, m)


RULES = [
    Rule("fold-batchnorm-into-conv",
         P(operator.getitem, P(_BN, _CONV, Var("g"), Var("beta"), Var("mean"), Var("var"), Attr("momentum"),
                               Attr("eps")), 0),
         _fold, _fold_ok, "reassoc", doc="batch_norm_eval(conv(x, w, b)) -> conv(x, w', b')"),
    Rule("fold-native-batchnorm-into-conv",
         P(operator.getitem, P(aten.native_batch_norm.default, _CONV, Var("g"), Var("beta"), Var("mean"), Var("var"),
                               False, Attr("momentum"), Attr("eps")), 0),
         _fold, _fold_ok, "reassoc", doc="the same, for native_batch_norm(training=False)"),
]
