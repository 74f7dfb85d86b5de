"""Linear algebra: bias adds into addmm, decomposed matmuls raised back to matmul, matmul chains
reassociated (the cost model picks the order by shape-aware flops), and matmuls that share an input
merged over concatenated weights (QKV) -- only over parameters, and only where the cost model says
the one larger matmul beats the separate ones."""

from __future__ import annotations

import math

from agnostic_rt.passes.analysis import same_shape, same_size
from agnostic_rt.passes.pattern import ANY, Attr, Fn, Match, P, Rule, instantiate

from .common import A, B, C, X, Y, aten, static

_RESHAPES = (aten.reshape.default,)


def _bias_ok(m: Match) -> bool:
    mm, bias = m.data("mm"), m.data("y")
    if not (mm.is_tensor and bias.is_tensor and mm.dtype == bias.dtype and mm.ndim == 2):
        return False
    return bias.ndim in (1, 2) and same_shape(bias.shape[-1:], mm.shape[-1:]) and (
        bias.ndim == 1 or same_shape(bias.shape, mm.shape) or bias.shape[0] == 1)


def _raise_ok(m: Match) -> bool:
    """reshape(bmm(reshape(a, [n, M, K]), reshape(b, [n, K, N])), batch + [M, N]) is a's matmul b
    (sizes compared through the ShapeEnv, so symbolic batch and sequence sizes qualify too)."""
    a, b, out = m.data("a").shape, m.data("b").shape, m.root_data.shape
    if a is None or b is None or out is None or len(a) < 3 or len(a) != len(b):
        return False
    batch = tuple(a[:-2])
    if not same_shape(tuple(b[:-2]), batch) or not same_size(a[-1], b[-2]):
        return False
    n = math.prod(batch)
    return (same_shape(m.data("ra").shape, (n, a[-2], a[-1])) and same_shape(m.data("rb").shape, (n, b[-2], b[-1]))
            and same_shape(out, batch + (a[-2], b[-1])))


def _two_d(*names):
    return lambda m: all(m.data(n).ndim == 2 and static(m.data(n).shape) for n in names)


def _is_weight(eg, cid) -> bool:
    """A parameter (or a view of one): merging those costs a concatenation of weights only."""
    from agnostic_rt.passes.fx_bridge import Leaf

    seen, stack = set(), [cid]
    while stack:
        c = eg.find(stack.pop())
        if c in seen:
            continue
        seen.add(c)
        d = eg.data(c)
        if d.leaf in ("param", "constant"):
            return True
        for node in eg[c].nodes:
            if isinstance(node.op, Leaf):
                continue
            if node.op in (aten.t.default, aten.permute.default) and len(node.children) == 1:
                stack.append(node.children[0])
    return False


def _merge_siblings(m: Match) -> int | None:
    """addmm(b_i, x, w_i) for every i sharing x -> slices of addmm(cat(b), x, cat(w, 1))."""
    eg, x = m.eg, eg_find(m, "x")
    siblings = []
    for node in _addmm_users(m.eg, x):
        bias, mat1, w = node.children
        if eg.find(mat1) != x or not (_is_weight(eg, w) and _is_weight(eg, bias)):
            continue
        wd, bd = eg.data(w), eg.data(bias)
        if wd.ndim != 2 or bd.ndim != 1 or not static(wd.shape) or wd.dtype != m.dtype("x"):
            continue
        siblings.append((eg.find(eg.lookup(node)), eg.find(bias), eg.find(w), wd.shape[1]))
    siblings = sorted(set(siblings))
    if len(siblings) < 2 or eg.find(m.root) not in [s[0] for s in siblings]:
        return None
    sub = {"x": x}
    for i, (_, bias, w, _) in enumerate(siblings):
        sub[f"b{i}"], sub[f"w{i}"] = bias, w
    from agnostic_rt.passes.pattern import Var

    merged = P(aten.addmm.default, P(aten.cat.default, [Var(f"b{i}") for i in range(len(siblings))], 0),
               Var("x"), P(aten.cat.default, [Var(f"w{i}") for i in range(len(siblings))], 1))
    mm = Match(eg, m.root, sub)
    merged_cid = instantiate(eg, merged, mm)
    start, result = 0, None
    for cid, _, _, n in siblings:
        sl = instantiate(eg, P(aten.slice.Tensor, Var("m"), 1, start, start + n), Match(eg, cid, {"m": merged_cid}))
        if cid == eg.find(m.root):
            result = sl
        else:
            eg.union(cid, sl)
        start += n
    return result


def eg_find(m: Match, name: str) -> int:
    return m.eg.find(m[name])


def _addmm_users(eg, x):
    for node, _ in list(eg[x].parents):
        if node.op == aten.addmm.default:
            yield eg.canonical(node)


RULES = [
    Rule("mm-plus-bias-to-addmm", P(aten.add.Tensor, P(aten.mm.default, A, B, name="mm"), Y),
         P(aten.addmm.default, Y, A, B), _bias_ok, "reassoc", doc="mm(a, b) + bias -> addmm(bias, a, b)"),
    Rule("bias-plus-mm-to-addmm", P(aten.add.Tensor, Y, P(aten.mm.default, A, B, name="mm")),
         P(aten.addmm.default, Y, A, B), _bias_ok, "reassoc", doc="bias + mm(a, b) -> addmm(bias, a, b)"),
    Rule("bmm-as-matmul",
         P(_RESHAPES, P(aten.bmm.default, P(_RESHAPES, A, ANY, name="ra"), P(_RESHAPES, B, ANY, name="rb")), ANY),
         P(aten.matmul.default, A, B), _raise_ok, "exact",
         doc="the batched matmul decomposition (expand, reshape, bmm, reshape) raised back to matmul"),
    Rule("matmul-scale-out", P(aten.matmul.default, P(aten.mul.Tensor, A, Attr("c")), B),
         P(aten.mul.Tensor, P(aten.matmul.default, A, B), Attr("c")),
         lambda m: isinstance(m["c"], (int, float)) and not isinstance(m["c"], bool), "reassoc",
         doc="(a * c) @ b -> (a @ b) * c"),
    Rule("mm-reassoc-right", P(aten.mm.default, P(aten.mm.default, A, B), C),
         P(aten.mm.default, A, P(aten.mm.default, B, C)), _two_d("a", "b", "c"), "reassoc",
         doc="(a @ b) @ c -> a @ (b @ c)"),
    Rule("mm-reassoc-left", P(aten.mm.default, A, P(aten.mm.default, B, C)),
         P(aten.mm.default, P(aten.mm.default, A, B), C), _two_d("a", "b", "c"), "reassoc",
         doc="a @ (b @ c) -> (a @ b) @ c"),
    Rule("merge-shared-input-addmm", P(aten.addmm.default, Y, X, B), _merge_siblings,
         lambda m: _is_weight(m.eg, m["b"]) and _is_weight(m.eg, m["y"]), "reassoc",
         doc="addmm(b_i, x, w_i) sharing x -> slices of one addmm over concatenated weights (QKV)"),
]
_ = Fn  # re-exported for rule authors
