"""Pointwise, copy, source, gather and concatenation ops as functions of the output index."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.fx as fx

from .kernel_ir import Const, IndexExpr, IndirectIndex, compute_dtype, iadd
from .lower import (
    _BINARY,
    _COMPARE,
    _FLOAT_UNARY,
    _UNARY,
    ScatterValue,
    TensorValue,
    Unsupported,
    _ints,
    dtype_name,
    packet_of,
)
from .views import low_const

aten = torch.ops.aten
prims = torch.ops.prims


def broadcast_index(idx: Sequence[IndexExpr], out_shape, in_shape) -> list[IndexExpr]:
    """The index into a broadcast operand: right-aligned, size-1 dims read element 0."""
    off = len(out_shape) - len(in_shape)
    return [Const(0) if s == 1 else idx[j + off] for j, s in enumerate(in_shape)]


class _Ctx:
    """Helpers for one node: operands as op ids at an output index, cast to a compute dtype."""

    def __init__(self, low, node: fx.Node):
        self.low, self.b, self.node = low, low.b, node
        val = node.meta["val"]
        self.shape = _ints(val.shape)
        self.dtype = dtype_name(val.dtype)
        self.cd = compute_dtype(self.dtype)

    def operand(self, a, idx, dtype: str) -> int:
        """Operand ``a`` (a TensorValue or a Python scalar) at output index ``idx``, as ``dtype``."""
        if isinstance(a, TensorValue):
            return self.b.cast(a.at(broadcast_index(idx, self.shape, a.shape)), dtype)
        if isinstance(a, (bool, int, float)):
            return self.b.const(_scalar(a, dtype), dtype)
        raise Unsupported(f"operand {a!r}")

    def value(self, fn) -> TensorValue:
        return TensorValue(self.shape, self.dtype, fn)


def _scalar(a, dtype: str):
    if dtype == "bool":
        return bool(a)
    if dtype.startswith(("int", "uint")):
        if isinstance(a, float) and not a.is_integer():
            raise Unsupported(f"float scalar {a} in an integer op")
        return int(a)
    return float(a)


def _promoted(args) -> str:
    """Compute dtype of a comparison's operands (ATen's type promotion on the meta values)."""
    vals = [a.meta["val"] if isinstance(a, fx.Node) else a for a in args]
    vals = [v for v in vals if isinstance(v, (torch.Tensor, bool, int, float))]
    if not vals:
        return "float32"
    dt = vals[0] if len(vals) == 1 else torch.result_type(*vals[:2])
    if isinstance(dt, torch.Tensor):
        dt = dt.dtype
    elif not isinstance(dt, torch.dtype):
        dt = torch.tensor(dt).dtype
    return compute_dtype(dtype_name(dt))


def lower_op(low, node: fx.Node, out) -> TensorValue:
    p = packet_of(node)
    c = _Ctx(low, node)
    b = c.b
    args = [low._arg(a) for a in node.args]
    if p in _UNARY:
        name = _UNARY[p]
        if name == "round" and (node.kwargs.get("decimals") or (node.args[1:2] or [0])[0]):
            # round(x, decimals=k) scales by 10**k around the rounding; the IR's round has no such
            # argument, and dropping it gave wrong results (found by the conformance suite).
            raise Unsupported("round with decimals != 0")
        (x,) = args[:1]
        cd = c.cd if name in _FLOAT_UNARY or name not in ("isnan", "isinf", "logical_not") else \
            compute_dtype(x.dtype)
        if name in ("logical_not",):
            return c.value(lambda idx: b.unary("logical_not", c.operand(x, idx, "bool"), "bool"))
        if name in ("isnan", "isinf"):
            return c.value(lambda idx: b.unary(name, c.operand(x, idx, cd), "bool"))
        return c.value(lambda idx: b.unary(name, c.operand(x, idx, cd), cd))
    if p in _BINARY:
        return _binary(c, _BINARY[p], node, args)
    if p is aten.where:
        cond, x, y = args
        return c.value(lambda idx: b.where(c.operand(cond, idx, "bool"), c.operand(x, idx, c.cd),
                                           c.operand(y, idx, c.cd), c.cd))
    if p in (aten.clamp, aten.clamp_min, aten.clamp_max, aten.hardtanh):
        x = args[0]
        if p is aten.clamp:
            lo = args[1] if len(args) > 1 else node.kwargs.get("min")
            hi = args[2] if len(args) > 2 else node.kwargs.get("max")
        elif p is aten.hardtanh:
            lo = args[1] if len(args) > 1 else -1.0
            hi = args[2] if len(args) > 2 else 1.0
        else:
            lo, hi = (args[1], None) if p is aten.clamp_min else (None, args[1])

        def clamp(idx):
            v = c.operand(x, idx, c.cd)
            if lo is not None:
                v = b.binary("maximum", v, c.operand(lo, idx, c.cd), c.cd)
            if hi is not None:
                v = b.binary("minimum", v, c.operand(hi, idx, c.cd), c.cd)
            return v
        return c.value(clamp)
    if p is aten.relu:
        return c.value(lambda idx: b.binary("maximum", c.operand(args[0], idx, c.cd), b.const(_scalar(0, c.cd), c.cd),
                                            c.cd))
    if p is aten.leaky_relu:
        slope = args[1] if len(args) > 1 else 0.01

        def leaky(idx):
            v = c.operand(args[0], idx, c.cd)
            pos = b.binary("gt", v, b.const(0.0, c.cd), "bool")
            return b.where(pos, v, b.binary("mul", v, b.const(float(slope), c.cd), c.cd), c.cd)
        return c.value(leaky)
    if p is aten.gelu:
        approx = node.kwargs.get("approximate", args[1] if len(args) > 1 else "none")
        return c.value(lambda idx: _gelu(b, c.operand(args[0], idx, c.cd), c.cd, approx))
    if p is aten.silu:
        return c.value(lambda idx: _mul(b, c.operand(args[0], idx, c.cd),
                                        b.unary("sigmoid", c.operand(args[0], idx, c.cd)), c.cd))
    if p is aten.threshold_backward:
        grad, x, thr = args

        def tb(idx):
            le = b.binary("le", c.operand(x, idx, compute_dtype(x.dtype)),
                          b.const(float(thr), compute_dtype(x.dtype)), "bool")
            return b.where(le, b.const(0.0, c.cd), c.operand(grad, idx, c.cd), c.cd)
        return c.value(tb)
    if p is aten.sigmoid_backward:
        def sb(idx):
            g, y = c.operand(args[0], idx, c.cd), c.operand(args[1], idx, c.cd)
            return _mul(b, g, _mul(b, y, b.binary("sub", b.const(1.0, c.cd), y, c.cd), c.cd), c.cd)
        return c.value(sb)
    if p is aten.tanh_backward:
        def tb2(idx):
            g, y = c.operand(args[0], idx, c.cd), c.operand(args[1], idx, c.cd)
            return _mul(b, g, b.binary("sub", b.const(1.0, c.cd), _mul(b, y, y, c.cd), c.cd), c.cd)
        return c.value(tb2)
    if p is aten.gelu_backward:
        approx = node.kwargs.get("approximate", args[2] if len(args) > 2 else "none")
        if approx != "none":
            raise Unsupported("gelu_backward(approximate='tanh')")

        def gb(idx):
            g, x = c.operand(args[0], idx, c.cd), c.operand(args[1], idx, c.cd)
            k = lambda v: b.const(v, c.cd)  # noqa: E731
            cdf = _mul(b, k(0.5), b.binary("add", k(1.0), b.unary("erf", _mul(b, x, k(math.sqrt(0.5)), c.cd)),
                                           c.cd), c.cd)
            pdf = _mul(b, b.unary("exp", _mul(b, k(-0.5), _mul(b, x, x, c.cd), c.cd)),
                       k(1.0 / math.sqrt(2 * math.pi)), c.cd)
            return _mul(b, g, b.binary("add", cdf, _mul(b, x, pdf, c.cd), c.cd), c.cd)
        return c.value(gb)
    if p is aten.masked_fill:
        x, mask, value = args
        return c.value(lambda idx: b.where(c.operand(mask, idx, "bool"), c.operand(value, idx, c.cd),
                                           c.operand(x, idx, c.cd), c.cd))
    if p is aten.lerp:
        a, e, w = args

        def lerp(idx):
            va, ve, vw = (c.operand(t, idx, c.cd) for t in (a, e, w))
            return b.binary("add", va, _mul(b, vw, b.binary("sub", ve, va, c.cd), c.cd), c.cd)
        return c.value(lerp)
    if p in (aten.addcmul, aten.addcdiv):
        s, t1, t2 = args[:3]
        value = node.kwargs.get("value", args[3] if len(args) > 3 else 1)

        def addc(idx):
            v1, v2 = c.operand(t1, idx, c.cd), c.operand(t2, idx, c.cd)
            prod = b.binary("mul" if p is aten.addcmul else "truediv", v1, v2, c.cd)
            return b.binary("add", c.operand(s, idx, c.cd), _mul(b, b.const(_scalar(value, c.cd), c.cd), prod, c.cd),
                            c.cd)
        return c.value(addc)
    if p in (aten.clone, aten.lift_fresh_copy, aten.contiguous, aten._to_copy, prims.convert_element_type,
             prims.copy_strided):
        x = args[0]
        return c.value(lambda idx: _rounded(b, c.operand(x, idx, compute_dtype(x.dtype)), x.dtype, c.dtype))
    if p is aten.copy:
        src = args[1]
        if isinstance(src, TensorValue):
            return c.value(lambda idx: _rounded(b, c.operand(src, idx, compute_dtype(src.dtype)), src.dtype, c.dtype))
        return c.value(lambda idx: c.operand(src, idx, c.cd))
    if p in (aten.full, aten.scalar_tensor, aten.full_like, aten.zeros_like, aten.ones_like, aten.zeros,
             aten.ones, aten.empty, aten.empty_like):
        if p in (aten.full, aten.full_like):
            value = args[1]
        elif p is aten.scalar_tensor:
            value = args[0]
        elif p in (aten.ones, aten.ones_like):
            value = 1
        else:
            value = 0
        if not isinstance(value, (bool, int, float)):
            raise Unsupported(f"{node.target} with a non-constant fill")
        return c.value(lambda idx: b.const(_scalar(value, c.cd), c.cd))
    if p in (aten.arange, prims.iota):
        return _arange(c, node, args)
    if p is aten.cat:
        return _cat(c, node, args)
    if p is aten.constant_pad_nd:
        return _pad(c, node, args)
    if p in (aten.embedding, aten.gather, aten.index_select, aten.index):
        return _gather(c, node, p, args)
    raise Unsupported(str(node.target))


_WIDTH = {"float16": 16, "bfloat16": 16, "float32": 32, "float64": 64}


def _rounded(b, v: int, src: str, dst: str) -> int:
    """A conversion ``src`` -> ``dst`` in compute precision. Narrowing to a half type rounds there and
    back, as ATen does (a fused kernel keeps fp32 between ops, but an explicit cast is the user's)."""
    cd = compute_dtype(dst)
    if dst in ("float16", "bfloat16") and _WIDTH.get(src, 0) > 16:
        return b.cast(b.cast(v, dst), cd)
    return b.cast(v, cd)


def _mul(b, x, y, dt):
    return b.binary("mul", x, y, dt)


def _gelu(b, x, cd, approx):
    k = lambda v: b.const(v, cd)  # noqa: E731
    if approx == "tanh":
        inner = _mul(b, k(math.sqrt(2 / math.pi)),
                     b.binary("add", x, _mul(b, k(0.044715), _mul(b, x, _mul(b, x, x, cd), cd), cd), cd), cd)
        return _mul(b, _mul(b, k(0.5), x, cd), b.binary("add", k(1.0), b.unary("tanh", inner), cd), cd)
    return _mul(b, _mul(b, k(0.5), x, cd),
                b.binary("add", k(1.0), b.unary("erf", _mul(b, x, k(math.sqrt(0.5)), cd)), cd), cd)


def _binary(c: _Ctx, name: str, node: fx.Node, args) -> TensorValue:
    b = c.b
    x, y = args[0], args[1]
    alpha = node.kwargs.get("alpha", 1)
    if name in _COMPARE:
        cd = "bool" if name.startswith("logical") else _promoted(node.args[:2])
        return c.value(lambda idx: b.binary(name, c.operand(x, idx, cd), c.operand(y, idx, cd), "bool"))
    cd = c.cd
    if cd == "bool" and name in ("add", "mul", "maximum", "minimum"):
        name = {"add": "logical_or", "mul": "logical_and", "maximum": "logical_or",
                "minimum": "logical_and"}[name]
    if name == "truediv":
        mode = node.kwargs.get("rounding_mode")
        if mode == "floor":
            name = "floordiv" if not cd.startswith("float") else name
        elif mode == "trunc":
            raise Unsupported("div(rounding_mode='trunc')")

    def fn(idx):
        vx, vy = c.operand(x, idx, cd), c.operand(y, idx, cd)
        if alpha != 1:
            vy = b.binary("mul", vy, b.const(_scalar(alpha, cd), cd), cd)
        if name == "rsub":
            return b.binary("sub", vy, vx, cd)
        if name == "pow" and isinstance(y, (int, float)) and not isinstance(y, bool):
            if y == 2:
                return b.binary("mul", vx, vx, cd)
            if y == 1:
                return vx
            if y == 0.5 and cd.startswith("float"):
                return b.unary("sqrt", vx)
        r = b.binary(name, vx, vy, cd)
        if name == "truediv" and node.kwargs.get("rounding_mode") == "floor" and cd.startswith("float"):
            r = b.unary("floor", r)
        return r
    return c.value(fn)


def _arange(c: _Ctx, node: fx.Node, args) -> TensorValue:
    b = c.b
    p = packet_of(node)
    if p is prims.iota:
        start, step = node.kwargs.get("start", 0), node.kwargs.get("step", 1)
    elif len(args) == 1:
        start, step = 0, 1
    else:
        start = args[0]
        step = args[2] if len(args) > 2 else node.kwargs.get("step", 1)

    def fn(idx):
        i = b.cast(b.index(idx[0]), c.cd)
        v = b.binary("mul", i, b.const(_scalar(step, c.cd), c.cd), c.cd) if step != 1 else i
        return b.binary("add", v, b.const(_scalar(start, c.cd), c.cd), c.cd) if start != 0 else v
    return c.value(fn)


def _cat(c: _Ctx, node: fx.Node, args) -> TensorValue:
    b, low = c.b, c.low
    parts = [t for t in args[0] if isinstance(t, TensorValue) and math.prod(t.shape) > 0]
    if not parts:
        raise Unsupported("cat of nothing")
    nd = len(c.shape)
    dim = (args[1] if len(args) > 1 else node.kwargs.get("dim", 0)) % nd

    def fn(idx):
        pos = b.index(idx[dim])
        offsets, acc = [], 0
        for t in parts:
            offsets.append(acc)
            acc += t.shape[dim]
        result = None
        for k in range(len(parts) - 1, -1, -1):
            t, off = parts[k], offsets[k]
            hi = b.binary("lt", pos, b.size_value(low_const(low, off + t.shape[dim])), "bool")
            lo = b.binary("ge", pos, b.size_value(low_const(low, off)), "bool")
            inside = b.binary("logical_and", lo, hi, "bool") if k > 0 else hi
            sub = list(idx)
            sub[dim] = _minus(low, idx[dim], off)
            low.masks.append(inside)
            try:
                v = c.operand(t, sub, c.cd)
            finally:
                low.masks.pop()
            result = v if result is None else b.where(inside, v, result, c.cd)
        return result
    return c.value(fn)


def _minus(low, e: IndexExpr, off: int) -> IndexExpr:
    """``e - off`` for an index known to be >= off where it is used (masked elsewhere)."""
    if off == 0:
        return e
    from .kernel_ir import Bin
    # Index expressions have no subtraction; add the two's-complement-free form -off as a product.
    return Bin("+", e, Bin("*", low_const(low, off), Const(-1)))


def _pad(c: _Ctx, node: fx.Node, args) -> TensorValue:
    b, low = c.b, c.low
    x, pad = args[0], args[1]
    value = args[2] if len(args) > 2 else 0
    nd = len(c.shape)
    pads = [(0, 0)] * nd
    for k in range(len(pad) // 2):
        pads[nd - 1 - k] = (pad[2 * k], pad[2 * k + 1])
    if any(lo < 0 or hi < 0 for lo, hi in pads):
        raise Unsupported("negative padding")

    def fn(idx):
        conds, sub = [], list(idx)
        for d, (lo, _) in enumerate(pads):
            if pads[d] == (0, 0):
                continue
            pos = b.index(idx[d])
            conds.append(b.binary("ge", pos, b.size_value(low_const(low, lo)), "bool"))
            conds.append(b.binary("lt", pos, b.size_value(low_const(low, lo + x.shape[d])), "bool"))
            sub[d] = _minus(low, idx[d], lo)
        if not conds:
            return c.operand(x, idx, c.cd)
        inside = conds[0]
        for m in conds[1:]:
            inside = b.binary("logical_and", inside, m, "bool")
        low.masks.append(inside)
        try:
            v = c.operand(x, sub, c.cd)
        finally:
            low.masks.pop()
        return b.where(inside, v, b.const(_scalar(value, c.cd), c.cd), c.cd)
    return c.value(fn)


def _gather(c: _Ctx, node: fx.Node, p, args) -> TensorValue:
    b = c.b

    def as_index(v: int, size: int, wrap: bool) -> IndexExpr:
        v = b.cast(v, "int64")
        if wrap:  # aten.index accepts negative indices
            neg = b.binary("lt", v, b.const(0, "int64"), "bool")
            v = b.where(neg, b.binary("add", v, b.const(size, "int64"), "int64"), v, "int64")
        return IndirectIndex(v)

    if p is aten.embedding:
        weight, ids = args[0], args[1]
        if len(weight.shape) != 2:
            raise Unsupported("embedding of a non-2D weight")

        def emb(idx):
            i = as_index(ids.at(idx[:-1]), weight.shape[0], False)
            return b.cast(weight.at([i, idx[-1]]), c.cd)
        return c.value(emb)
    if not args[0].shape and p in (aten.gather, aten.index_select):
        # A 0-d source reads as one element along ``dim`` 0 (or -1), and the only valid index is 0
        # (ATen checks it): every output element is that element. ``dim % 0`` would divide by zero.
        src = args[0]
        return c.value(lambda idx: b.cast(src.at([]), c.cd))
    if p is aten.gather:
        src, dim, index = args[0], args[1], args[2]
        dim %= len(src.shape)

        def gat(idx):
            sub = list(idx)
            sub[dim] = as_index(index.at(idx), src.shape[dim], False)
            return b.cast(src.at(sub), c.cd)
        return c.value(gat)
    if p is aten.index_select:
        src, dim, index = args[0], args[1] % len(args[0].shape), args[2]

        def isel(idx):
            sub = list(idx)
            sub[dim] = as_index(index.at([idx[dim]]), src.shape[dim], True)
            return b.cast(src.at(sub), c.cd)
        return c.value(isel)
    src, indices = args[0], args[1]
    k = next(i for i, t in enumerate(indices) if t is not None)
    ix = indices[k]
    if not isinstance(ix, TensorValue) or ix.dtype == "bool":
        raise Unsupported("index with a boolean mask")
    n = len(ix.shape)

    def index_fn(idx):
        i = as_index(ix.at(idx[k:k + n]), src.shape[k], True)
        return b.cast(src.at(idx[:k] + [i] + idx[k + n:]), c.cd)
    return c.value(index_fn)


def lower_scatter(low, node: fx.Node) -> ScatterValue:
    """``index_put(dest, indices, values, accumulate=True)`` (one index tensor, at dim ``k``) or
    ``scatter_add(dest, dim, index, src)`` as accumulating stores over the points of the source.

    An index outside ``[0, size)`` (after wrapping negative ones, which index_put accepts) adds
    nothing: ATen raises there, and a generated kernel must never write outside its output.
    """
    b, p = low.b, packet_of(node)
    out = node.meta["val"]
    dshape, cd = _ints(out.shape), compute_dtype(dtype_name(out.dtype))

    def position(v: int, size: int, wrap: bool) -> tuple[IndexExpr, int]:
        v = b.cast(v, "int64")
        n = b.size_value(low_const(low, size))
        if wrap:
            neg = b.binary("lt", v, b.const(0, "int64"), "bool")
            v = b.where(neg, b.binary("add", v, n, "int64"), v, "int64")
        inside = b.binary("logical_and", b.binary("ge", v, b.const(0, "int64"), "bool"),
                          b.binary("lt", v, n, "bool"), "bool")
        return IndirectIndex(v), inside

    if p is aten.scatter_add:
        dim, index, src = node.args[1] % max(len(dshape), 1), low._arg(node.args[2]), low._arg(node.args[3])
        if not isinstance(index, TensorValue) or not isinstance(src, TensorValue) or not dshape:
            raise Unsupported("scatter_add of a 0-d tensor or a non-tensor")

        def scat(idx):
            pos, inside = position(index.at(idx), dshape[dim], False)
            return idx[:dim] + [pos] + idx[dim + 1:], b.cast(src.at(idx), cd), inside
        return ScatterValue(dshape, dtype_name(out.dtype), tuple(index.shape), node.args[0], scat)
    indices, values = low._arg(node.args[1]), low._arg(node.args[2])
    k = next(i for i, t in enumerate(indices) if t is not None)
    ix = indices[k]
    if not isinstance(ix, TensorValue) or not isinstance(values, TensorValue) or ix.dtype == "bool":
        raise Unsupported("index_put with a boolean mask or non-tensor values")
    n = len(ix.shape)
    points = dshape[:k] + tuple(ix.shape) + dshape[k + 1:]

    def put(idx):
        pos, inside = position(ix.at(idx[k:k + n]), dshape[k], True)
        v = b.cast(values.at(broadcast_index(idx, points, values.shape)), cd)
        return idx[:k] + [pos] + idx[k + n:], v, inside
    return ScatterValue(dshape, dtype_name(out.dtype), points, node.args[0], put)


__all__ = ["lower_op", "lower_scatter", "broadcast_index", "iadd"]
