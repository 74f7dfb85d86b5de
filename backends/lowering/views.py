"""View ops as index maps: a view's element at ``idx`` is its source's element at ``map(idx)``.

No view copies data inside a kernel; a reshape of a permuted tensor is a div/mod index map.
"""

from __future__ import annotations

import math

import torch
import torch.fx as fx

from .kernel_ir import Const, IndexExpr, delinearize, iadd, imul, linearize
from .lower import TensorValue, Unsupported, _ints, dtype_name, packet_of

aten = torch.ops.aten
prims = torch.ops.prims


def lower_view(low, node: fx.Node):
    """The lowered value of view node ``node`` (a TensorValue, or a tuple for split/unbind)."""
    p = packet_of(node)
    src = low._arg(node.args[0])
    if not isinstance(src, TensorValue):
        raise Unsupported(f"{node.target} of a non-tensor")
    vals = node.meta["val"]
    if p in (aten.split_with_sizes, aten.split, aten.unbind):
        return tuple(_piece(low, src, p, node, k, v) for k, v in enumerate(vals))
    out_shape = _ints(vals.shape)
    dtype = dtype_name(vals.dtype)
    nd_in = len(src.shape)

    if p in (aten.alias, prims.view_of, aten.view_as):
        return TensorValue(out_shape, dtype, src.fn)
    if p in (aten.view, aten._unsafe_view, aten.reshape):
        in_shape = src.shape
        return TensorValue(out_shape, dtype, lambda idx: src.at(reshape_index(low, idx, out_shape, in_shape)))
    if p in (aten.permute, aten.transpose, aten.t):
        if p is aten.permute:
            perm = [d % max(nd_in, 1) for d in node.args[1]]
        else:
            perm = list(range(nd_in))
            if nd_in >= 2:
                d0, d1 = (node.args[1], node.args[2]) if p is aten.transpose else (0, 1)
                d0, d1 = d0 % nd_in, d1 % nd_in
                perm[d0], perm[d1] = perm[d1], perm[d0]

        def fn(idx):
            src_idx: list[IndexExpr] = [Const(0)] * nd_in
            for i, d in enumerate(perm):
                src_idx[d] = idx[i]
            return src.at(src_idx)
        return TensorValue(out_shape, dtype, fn)
    if p is aten.expand:
        off = len(out_shape) - nd_in
        return TensorValue(out_shape, dtype, lambda idx: src.at(
            [Const(0) if src.shape[j] == 1 else idx[j + off] for j in range(nd_in)]))
    if p is aten.unsqueeze:
        d = node.args[1] % (nd_in + 1)
        return TensorValue(out_shape, dtype, lambda idx: src.at(idx[:d] + idx[d + 1:]))
    if p is aten.squeeze:
        return TensorValue(out_shape, dtype, lambda idx: src.at(_unsqueeze_index(idx, src.shape, out_shape)))
    if p is aten.slice:
        dim = (node.args[1] if len(node.args) > 1 else 0) % nd_in
        start, _, step = _slice_args(node, src.shape[dim])

        def fn(idx):
            idx = list(idx)
            idx[dim] = iadd(imul(idx[dim], Const(step)), low.sz(start) if start > 1 else Const(start))
            return src.at(idx)
        return TensorValue(out_shape, dtype, fn)
    if p is aten.select:
        dim = node.args[1] % nd_in
        index = _bound(node.args[2]) % src.shape[dim]
        return TensorValue(out_shape, dtype, lambda idx: src.at(idx[:dim] + [low_const(low, index)] + idx[dim:]))
    raise Unsupported(str(node.target))


def low_const(low, value: int) -> IndexExpr:
    """An index constant: 0 and 1 fold, others become size arguments (so they stay out of the source)."""
    return low.sz(value) if value > 1 else Const(value)


def _slice_args(node: fx.Node, size: int) -> tuple[int, int, int]:
    start = node.args[2] if len(node.args) > 2 else node.kwargs.get("start")
    end = node.args[3] if len(node.args) > 3 else node.kwargs.get("end")
    step = node.args[4] if len(node.args) > 4 else node.kwargs.get("step", 1)
    start, end, step = slice(_bound(start), _bound(end), _bound(step) or 1).indices(size)
    return start, end, step


def _bound(a):
    """A slice bound as an int: a SymInt (or the node computing one, under dynamic shapes) reads as
    its value in this compile, as sizes do (the dynamic launcher re-lowers per concrete shape)."""
    if isinstance(a, fx.Node):
        a = a.meta.get("val")
    if isinstance(a, torch.SymInt):
        return _ints([a])[0]
    if a is None or isinstance(a, int):
        return a
    raise Unsupported(f"slice bound {a!r}")


def _piece(low, src: TensorValue, p, node: fx.Node, k: int, val) -> TensorValue:
    shape = _ints(val.shape)
    dtype = dtype_name(val.dtype)
    nd = len(src.shape)
    if p is aten.unbind:
        dim = (node.args[1] if len(node.args) > 1 else 0) % nd
        return TensorValue(shape, dtype, lambda idx: src.at(idx[:dim] + [low_const(low, k)] + idx[dim:]))
    dim = (node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)) % nd
    if p is aten.split:
        size = node.args[1]
        start = k * size
    else:
        start = sum(node.args[1][:k])

    def fn(idx):
        idx = list(idx)
        idx[dim] = iadd(idx[dim], low_const(low, start))
        return src.at(idx)
    return TensorValue(shape, dtype, fn)


def _unsqueeze_index(idx, in_shape, out_shape) -> list[IndexExpr]:
    """Source index of a squeeze: re-insert 0 for the size-1 dims that were dropped."""
    out: list[IndexExpr] = []
    j = 0
    for k, s in enumerate(in_shape):
        if s == 1 and len(in_shape) - k > len(out_shape) - j:
            out.append(Const(0))
        elif j < len(out_shape) and out_shape[j] == s:
            out.append(idx[j])
            j += 1
        else:
            raise Unsupported(f"squeeze {in_shape} -> {out_shape}")
    return out


def reshape_index(low, idx, out_shape, in_shape) -> list[IndexExpr]:
    """Source index of a reshape: dims are matched in groups of equal product; within a group the
    output multi-index is linearized and re-split over the input's extents."""
    if tuple(out_shape) == tuple(in_shape):
        return list(idx)
    result: list[IndexExpr] = []
    i = j = 0
    no, ni = len(out_shape), len(in_shape)
    while i < no or j < ni:
        gi, gj = [i], [j]
        po = out_shape[i] if i < no else 1
        pi = in_shape[j] if j < ni else 1
        i += 1
        j += 1
        while po != pi:
            if po < pi:
                if i >= no:
                    raise Unsupported(f"reshape {in_shape} -> {out_shape}")
                po *= out_shape[i]
                gi.append(i)
                i += 1
            else:
                if j >= ni:
                    raise Unsupported(f"reshape {in_shape} -> {out_shape}")
                pi *= in_shape[j]
                gj.append(j)
                j += 1
        gi = [g for g in gi if g < no]
        gj = [g for g in gj if g < ni]
        osz = [out_shape[g] for g in gi]
        isz = [in_shape[g] for g in gj]
        oidx = [idx[g] for g in gi]
        if len(gi) == 1 and len(gj) == 1:
            result.extend(oidx)
            continue
        # Drop size-1 dims on both sides before mixing: they carry no index.
        oidx2 = [e for e, s in zip(oidx, osz) if s != 1]
        osz2 = [s for s in osz if s != 1]
        isz2 = [s for s in isz if s != 1]
        if osz2 == isz2:
            it = iter(oidx2)
            result.extend(next(it) if s != 1 else Const(0) for s in isz)
            continue
        lin = linearize(oidx2, [low.sz(s) for s in osz2])
        parts = iter(delinearize(lin, [low.sz(s) for s in isz2]) if isz2 else [])
        result.extend(next(parts) if s != 1 else Const(0) for s in isz)
    if len(result) != ni or math.prod(out_shape) != math.prod(in_shape):
        raise Unsupported(f"reshape {in_shape} -> {out_shape}")
    return result
