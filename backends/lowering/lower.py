"""Lowering: a fused group of ATen FX nodes -> one :class:`KernelIR`.

Each value is lowered *functionally*: a :class:`TensorValue` knows its shape and dtype and can
produce the op-DAG node for its element at any multi-index (a list of index expressions). Pointwise
ops compose their inputs' functions, views compose index maps, so views and broadcasts cost no
memory traffic; only the group's inputs are loaded and only its outputs are stored.

The kernel's iteration space comes from the group's first reduction: its input's non-reduced dims
are ``x``, its reduced dims ``r``. A reduction value can be read only at the row being computed;
anything else (a transposed read of a row result) raises :class:`Unfusable` and the partitioner
keeps those nodes apart. What the table below does not know raises :class:`Unsupported`.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.fx as fx

from .kernel_ir import (
    Const,
    IndexExpr,
    IndirectIndex,
    KernelBuilder,
    KernelIR,
    Var,
    compute_dtype,
    delinearize,
    iadd,
    imul,
    linearize,
)

aten = torch.ops.aten
prims = torch.ops.prims


class Unsupported(Exception):
    """The lowering has no rule for this node (it runs through ATen instead)."""


class Unfusable(Exception):
    """The nodes are each lowerable but not together in one kernel (iteration spaces disagree)."""


def dtype_name(dtype: torch.dtype) -> str:
    name = str(dtype).replace("torch.", "")
    if name not in ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8",
                    "bool"):
        raise Unsupported(f"dtype {name}")
    return name


def _meta(node) -> torch.Tensor:
    val = node.meta.get("val") if isinstance(node, fx.Node) else None
    if not isinstance(val, torch.Tensor):
        raise Unsupported(f"{node} has no tensor metadata")
    return val


def _ints(seq) -> tuple[int, ...]:
    """Concrete sizes; a symbolic size (SymInt) reads as its example value (its hint).

    A group with symbolic sizes is lowered for the hints only to decide fusion; at run time the
    backend re-lowers it for each concrete shape it meets (see DynamicLauncher), and since sizes
    are kernel arguments the source, and so the binary, is shared between shapes.
    """
    out = []
    for s in seq:
        if isinstance(s, torch.SymInt):
            hint = getattr(s.node, "hint", None)
            if hint is None:
                raise Unsupported(f"size {s} has no example value")
            s = hint
        out.append(int(s))
    return tuple(out)


def is_symbolic(node: fx.Node) -> bool:
    """Whether ``node``'s value has a symbolic size or stride (a Dynamo dynamic-shape graph)."""
    vals = node.meta.get("val")
    vals = vals if isinstance(vals, (tuple, list)) else [vals]
    for v in vals:
        if isinstance(v, torch.SymInt):
            return True
        if isinstance(v, torch.Tensor) and any(isinstance(d, torch.SymInt) for d in (*v.shape, *v.stride())):
            return True
    return False


@dataclass
class TensorValue:
    """A lazily indexed tensor: ``fn(idx)`` emits the op for the element at multi-index ``idx``."""

    shape: tuple[int, ...]
    dtype: str  # the dtype ATen would hold it in
    fn: Callable[[list[IndexExpr]], int]

    def at(self, idx: Sequence[IndexExpr]) -> int:
        return self.fn(list(idx))


@dataclass
class ScatterValue:
    """A scatter-add's result: ``dest`` plus, at every point ``p`` of ``points``, a value added at a
    position that depends on the data. ``fn(p)`` -> (destination index, value op, mask op or None).
    Not readable inside its kernel (every point must have added first)."""

    shape: tuple[int, ...]
    dtype: str
    points: tuple[int, ...]
    dest: fx.Node
    fn: Callable[[list[IndexExpr]], tuple[list[IndexExpr], int, int | None]]

    def at(self, idx: Sequence[IndexExpr]) -> tuple[list[IndexExpr], int, int | None]:
        return self.fn(list(idx))


# ------------------------------------------------------------------------------------- op tables

_UNARY = {
    aten.neg: "neg", aten.abs: "abs", aten.exp: "exp", aten.exp2: "exp2", aten.expm1: "expm1",
    aten.log: "log", aten.log2: "log2", aten.log1p: "log1p", aten.sqrt: "sqrt", aten.rsqrt: "rsqrt",
    aten.tanh: "tanh", aten.erf: "erf", aten.sigmoid: "sigmoid", aten.sin: "sin", aten.cos: "cos",
    aten.floor: "floor", aten.ceil: "ceil", aten.trunc: "trunc", aten.round: "round", aten.sign: "sign",
    aten.reciprocal: "reciprocal", aten.logical_not: "logical_not", aten.bitwise_not: "bitwise_not",
    aten.isnan: "isnan", aten.isinf: "isinf",
}
_FLOAT_UNARY = {"exp", "exp2", "expm1", "log", "log2", "log1p", "sqrt", "rsqrt", "tanh", "erf", "sigmoid",
                "sin", "cos", "reciprocal"}
_BINARY = {
    aten.add: "add", aten.sub: "sub", aten.rsub: "rsub", aten.mul: "mul", aten.div: "truediv",
    aten.pow: "pow", aten.maximum: "maximum", aten.minimum: "minimum", aten.remainder: "remainder",
    aten.fmod: "fmod", aten.floor_divide: "floordiv",
    aten.eq: "eq", aten.ne: "ne", aten.lt: "lt", aten.le: "le", aten.gt: "gt", aten.ge: "ge",
    aten.bitwise_and: "bitwise_and", aten.bitwise_or: "bitwise_or", aten.bitwise_xor: "bitwise_xor",
    aten.logical_and: "logical_and", aten.logical_or: "logical_or", aten.logical_xor: "ne",
}
_COMPARE = {"eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or"}
_REDUCE = {aten.sum: "sum", aten.amax: "max", aten.amin: "min", aten.prod: "prod", aten.mean: "mean",
           aten.argmax: "argmax", aten.argmin: "argmin", aten.var: "var", aten.var_mean: "var_mean",
           aten.any: "any", aten.all: "all", aten._softmax: "softmax", aten._log_softmax: "log_softmax"}
_VIEWS = {aten.view, aten._unsafe_view, aten.reshape, aten.permute, aten.transpose, aten.t, aten.expand,
          aten.unsqueeze, aten.squeeze, aten.slice, aten.select, aten.alias, aten.split_with_sizes,
          aten.split, aten.unbind, prims.view_of, aten.view_as}
_COPIES = {aten.clone, aten.lift_fresh_copy, aten._to_copy, aten.copy, prims.convert_element_type,
           aten.contiguous, prims.copy_strided}
_SOURCES = {aten.full, aten.scalar_tensor, aten.arange, prims.iota, aten.full_like, aten.zeros_like,
            aten.ones_like, aten.zeros, aten.ones, aten.empty, aten.empty_like}
_MISC = {aten.where, aten.clamp, aten.clamp_min, aten.clamp_max, aten.relu, aten.gelu, aten.silu, aten.cat,
         aten.embedding, aten.gather, aten.index_select, aten.index, aten.constant_pad_nd,
         aten.threshold_backward, aten.hardtanh, aten.leaky_relu, aten.masked_fill, aten.lerp, aten.addcmul,
         aten.addcdiv, aten.sigmoid_backward, aten.tanh_backward, aten.gelu_backward, operator.getitem}

#: Scatter-adds: accumulating (atomic) stores over the points of their source (see lower_ops).
_SCATTER = {aten.index_put, aten.scatter_add}
_FILLS = {aten.full: 1, aten.full_like: 1, aten.zeros: None, aten.zeros_like: None, aten.new_zeros: None}

#: Every op packet the lowering knows (the partitioner groups only these).
LOWERABLE = frozenset(set(_UNARY) | set(_BINARY) | set(_REDUCE) | _VIEWS | _COPIES | _SOURCES | _MISC | _SCATTER)
REDUCTION_OPS = frozenset(_REDUCE)
SCATTER_OPS = frozenset(_SCATTER)
VIEW_OPS = frozenset(_VIEWS | {operator.getitem})


def packet_of(node: fx.Node):
    return getattr(node.target, "overloadpacket", node.target)


def is_lowerable(node: fx.Node) -> bool:
    """Whether ``node`` could run in a generated kernel (dtype and shape checks included)."""
    if node.op != "call_function" or packet_of(node) not in LOWERABLE:
        return False
    vals = node.meta.get("val")
    vals = vals if isinstance(vals, (tuple, list)) else [vals]
    for v in vals:
        if not isinstance(v, torch.Tensor):
            return False
        try:
            dtype_name(v.dtype)
            _ints(v.shape)
        except Unsupported:
            return False
    if packet_of(node) is aten.index and len([i for i in node.args[1] if i is not None]) != 1:
        return False
    if packet_of(node) in _SCATTER:
        return _scatter_lowerable(node)
    return True


def _scatter_lowerable(node: fx.Node) -> bool:
    """index_put(accumulate=True) with one index tensor, and scatter_add, into ATOMIC_DTYPES.

    Under ``torch.use_deterministic_algorithms(True)`` they stay in ATen: atomic float additions
    land in a different order on every run, and ATen's kernels (sorting on CUDA) are reproducible.
    Dynamo guards on that flag, so a compiled graph never outlives the setting it was made under.
    """
    from .kernel_ir import ATOMIC_DTYPES

    if torch.are_deterministic_algorithms_enabled():
        return False
    if dtype_name(_meta(node).dtype) not in ATOMIC_DTYPES:
        return False
    if packet_of(node) is aten.index_put:
        accumulate = node.args[3] if len(node.args) > 3 else node.kwargs.get("accumulate", False)
        indices = [i for i in node.args[1] if i is not None]
        return bool(accumulate) and len(indices) == 1 and _meta(indices[0]).dtype in (torch.int64, torch.int32)
    return True


def scatter_space(node: fx.Node) -> int | None:
    """How many points a scatter-add iterates over (its source's), or None for any other node."""
    p = packet_of(node)
    if p is aten.scatter_add:
        return math.prod(_ints(_meta(node.args[2]).shape))
    if p is aten.index_put:
        k = next(i for i, t in enumerate(node.args[1]) if t is not None)
        shape = _ints(_meta(node).shape)
        return math.prod(shape[:k] + _ints(_meta(node.args[1][k]).shape) + shape[k + 1:])
    return None


def fill_value(node) -> bool | int | float | None:
    """The constant a fill node (``full``, ``zeros``, ...) writes everywhere; None for anything else."""
    if not isinstance(node, fx.Node) or node.op != "call_function" or packet_of(node) not in _FILLS:
        return None
    pos = _FILLS[packet_of(node)]
    value = 0 if pos is None else (node.args[pos] if len(node.args) > pos else node.kwargs.get("fill_value"))
    return value if isinstance(value, (bool, int, float)) else None


def reduction_space(node: fx.Node) -> tuple[int, int] | None:
    """``(xnumel, rnumel)`` of a reduction node (None for anything else)."""
    if packet_of(node) not in REDUCTION_OPS:
        return None
    shape, dims = _reduce_dims(node)
    rnumel = math.prod(shape[d] for d in dims)
    return math.prod(shape) // max(rnumel, 1) if rnumel else 0, rnumel


def _reduce_dims(node: fx.Node) -> tuple[tuple[int, ...], list[int]]:
    src = _ints(_meta(node.args[0]).shape)
    p = packet_of(node)
    if p in (aten.argmax, aten.argmin):
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        dims = [dim] if dim is not None else list(range(len(src)))
    elif p in (aten.var, aten.var_mean):
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    else:
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
        dims = list(range(len(src)))
    if isinstance(dims, int):
        dims = [dims]
    if not src:
        # ATen reads a 0-d tensor as one element along an implicit dim (``dim=0``/``-1`` are valid):
        # reduce over that dim of extent 1. With no reduced dims the kernel would hold a reduce op
        # and no r loop, which KernelIR.verify rejects (the partitioner then left the node in ATen).
        return (1,), [0]
    return src, sorted({d % len(src) for d in dims})


def numel_of(node: fx.Node) -> int:
    val = node.meta.get("val")
    if isinstance(val, (tuple, list)):
        val = val[0]
    return math.prod(_ints(val.shape))


# ------------------------------------------------------------------------------------------ lowering


class GroupLowering:
    """Lower ``nodes`` (in graph order) with ``inputs`` read from memory and ``outputs`` written."""

    def __init__(self, nodes: Sequence[fx.Node], inputs: Sequence[fx.Node], outputs: Sequence[fx.Node],
                 name: str = "kernel"):
        self.nodes = list(nodes)
        self.inside = set(self.nodes)
        self.b = KernelBuilder(name)
        self.values: dict[fx.Node, object] = {}
        self.masks: list[int] = []  # active load masks (cat / pad branches)
        self.reductions: dict[fx.Node, object] = {}
        self.input_nodes = list(inputs)
        self.output_nodes = list(outputs)
        self.input_strides: list[tuple[int, ...]] = []
        self.input_names: dict[fx.Node, str] = {}
        self.space: tuple | None = None  # (full input shape, reduced dims) of the first reduction

    # -- sizes
    def sz(self, value: int) -> IndexExpr:
        # Keyed by value: equal extents share one argument, so the source does not depend on which
        # tensor an extent came from, only on the pattern of equalities.
        return self.b.size(int(value), int(value))

    # -- the kernel
    def lower(self) -> KernelIR:
        for i, node in enumerate(self.input_nodes):
            if not isinstance(node.meta.get("val"), torch.Tensor):
                continue  # a size (SymInt) argument of a view: the lowering reads sizes from metadata
            val = _meta(node)
            dt = dtype_name(val.dtype)
            name = self.input_names[node] = self.b.input(f"in{i}", dt)
            strides = _ints(val.stride())
            self.input_strides.append(strides)
            self.values[node] = self._buffer_value(name, _ints(val.shape), strides, dt)
        for node in self.nodes:
            self.values[node] = self._lower_node(node)
        first_red = next((n for n in self.nodes if packet_of(n) in REDUCTION_OPS), None)
        first_scatter = next((n for n in self.nodes if packet_of(n) in SCATTER_OPS), None)
        if first_red is not None and first_scatter is not None:
            raise Unfusable("a scatter-add and a reduction in one kernel")
        if first_scatter is not None:  # a scatter-add runs over the points of its source
            xshape, rshape = list(self.values[first_scatter].points), []
        elif first_red is not None:
            shape, dims = _reduce_dims(first_red)
            self.space = (shape, dims)
            xshape = [s for d, s in enumerate(shape) if d not in dims]
            rshape = [shape[d] for d in dims]
        else:
            xshape, rshape = list(_ints(_meta_any(self.output_nodes[0]).shape)), []
        self.xshape, self.rshape = tuple(xshape), tuple(rshape)
        self.xvars = [Var(f"x{i}") for i in range(len(xshape))]
        self.rvars = [Var(f"r{i}") for i in range(len(rshape))]
        for k, node in enumerate(self.output_nodes):
            val = _meta(node)
            shape, strides = _ints(val.shape), _ints(val.stride())
            value = self.values[node]
            if isinstance(value, ScatterValue):
                self._store_scatter(f"out{k}", value, dtype_name(val.dtype), shape, strides)
                continue
            buf = self.b.output(f"out{k}", dtype_name(val.dtype))
            if not isinstance(value, TensorValue):
                raise Unsupported(f"output {node} is not a tensor value")
            idx = self._output_index(shape)
            v = value.at(idx)
            addr: IndexExpr = Const(0)
            for i, st, s in zip(idx, strides, shape):
                if s != 1:
                    addr = iadd(addr, imul(i, self.sz(st)))
            self.b.store(buf, addr, v)
        return self.b.build([self.sz(s) for s in xshape], [self.sz(s) for s in rshape])

    def _store_scatter(self, name: str, value: ScatterValue, dtype: str, shape, strides) -> None:
        """The accumulating store of a scatter-add; its destination becomes the output's ``init``."""
        if tuple(value.points) != self.xshape:
            raise Unfusable(f"a scatter over {value.points} in a kernel over {self.xshape}")
        if value.dest in self.input_names:
            init = self.input_names[value.dest]
        elif value.dest in self.inside and fill_value(value.dest) is not None:
            init = fill_value(value.dest)  # the launcher fills the output; no kernel writes the zeros
        else:  # all of it would have to be written before any point adds: a grid-wide barrier
            raise Unfusable("a scatter-add into a value computed in the same kernel")
        buf = self.b.output(name, dtype, init=init)
        dest_idx, v, mask = value.at(list(self.xvars))
        addr: IndexExpr = Const(0)
        for i, st, s in zip(dest_idx, strides, shape):
            if s != 1:
                addr = iadd(addr, imul(i, self.sz(st)))
        self.b.store(buf, addr, v, accumulate=True, mask=mask)

    def _output_index(self, shape: tuple[int, ...]) -> list[IndexExpr]:
        n = math.prod(shape)
        xn, rn = math.prod(self.xshape), math.prod(self.rshape)
        if not self.rshape:
            if shape == self.xshape:
                return list(self.xvars)
            if n != xn:
                raise Unfusable(f"output of {n} elements in a pointwise kernel over {xn}")
            return delinearize(linearize(self.xvars, [self.sz(s) for s in self.xshape]),
                               [self.sz(s) for s in shape])
        full_shape, dims = self.space
        if shape == tuple(full_shape):
            return self._full_index()
        if shape == self.xshape:
            return list(self.xvars)
        keep = tuple(1 if d in dims else s for d, s in enumerate(full_shape))
        if shape == keep:
            it = iter(self.xvars)
            return [Const(0) if d in dims else next(it) for d in range(len(full_shape))]
        if n == xn * rn and rn > 1:
            lin = linearize(self._full_index(), [self.sz(s) for s in full_shape])
            return delinearize(lin, [self.sz(s) for s in shape])
        if n == xn:
            lin = linearize(self.xvars, [self.sz(s) for s in self.xshape])
            return delinearize(lin, [self.sz(s) for s in shape])
        raise Unfusable(f"output shape {shape} fits neither the rows {self.xshape} nor {tuple(full_shape)}")

    def _full_index(self) -> list[IndexExpr]:
        full_shape, dims = self.space
        xs, rs = iter(self.xvars), iter(self.rvars)
        return [next(rs) if d in dims else next(xs) for d in range(len(full_shape))]

    def _buffer_value(self, name: str, shape, strides, dtype: str) -> TensorValue:
        def fn(idx):
            addr: IndexExpr = Const(0)
            for i, st, s in zip(idx, strides, shape):
                if s != 1 and st != 0:
                    addr = iadd(addr, imul(i, self.sz(st)))
            mask = self._mask()
            return self.b.load(name, addr, mask=mask)
        return TensorValue(tuple(shape), dtype, fn)

    def _mask(self) -> int | None:
        if not self.masks:
            return None
        m = self.masks[0]
        for other in self.masks[1:]:
            m = self.b.binary("logical_and", m, other, "bool")
        return m

    # -- nodes
    def _arg(self, a) -> object:
        if isinstance(a, (list, tuple)):
            return type(a)(self._arg(x) for x in a)
        if isinstance(a, fx.Node):
            if a not in self.values:
                raise Unsupported(f"{a} is neither an input nor in the group")
            if isinstance(self.values[a], ScatterValue):
                raise Unfusable(f"{a} (a scatter-add) is complete only when its kernel is")
            return self.values[a]
        return a

    def _lower_node(self, node: fx.Node):
        p = packet_of(node)
        if p not in LOWERABLE:
            raise Unsupported(str(node.target))
        if p is operator.getitem:
            seq = self._arg(node.args[0])
            if not isinstance(seq, (list, tuple)):
                raise Unsupported("getitem of a non-tuple")
            return seq[node.args[1]]
        out = node.meta.get("val")
        if p in _SCATTER:
            from .ops import lower_scatter
            return lower_scatter(self, node)
        if p in _REDUCE:
            return self._reduction(node, _REDUCE[p])
        if p in _VIEWS:
            from .views import lower_view
            return lower_view(self, node)
        from .ops import lower_op
        return lower_op(self, node, out)

    # -- reductions
    def _reduction(self, node: fx.Node, kind: str):
        src = self._arg(node.args[0])
        if not isinstance(src, TensorValue):
            raise Unsupported("reduction of a non-tensor")
        shape, dims = _reduce_dims(node)
        if self.space is None:
            self.space = (shape, dims)
            self._space_x = tuple(s for d, s in enumerate(shape) if d not in dims)
            self._space_r = tuple(shape[d] for d in dims)
        xshape = tuple(s for d, s in enumerate(shape) if d not in dims)
        rshape = tuple(shape[d] for d in dims)
        if math.prod(xshape) != math.prod(self._space_x) or math.prod(rshape) != math.prod(self._space_r):
            raise Unfusable(f"reduction over {rshape} per {xshape} in a kernel over {self._space_r} per "
                            f"{self._space_x}")
        xv = [Var(f"x{i}") for i in range(len(self._space_x))]
        rv = [Var(f"r{i}") for i in range(len(self._space_r))]
        # This reduction's row index and reduced index, in terms of the kernel's loop variables.
        xi = xv if xshape == self._space_x else delinearize(
            linearize(xv, [self.sz(s) for s in self._space_x]), [self.sz(s) for s in xshape])
        ri = rv if rshape == self._space_r else delinearize(
            linearize(rv, [self.sz(s) for s in self._space_r]), [self.sz(s) for s in rshape])
        xit, rit = iter(xi), iter(ri)
        full = [next(rit) if d in dims else next(xit) for d in range(len(shape))]
        if not src.shape:
            full = []  # a 0-d source: its one element, read at every r (of extent 1)
        saved, self.masks = self.masks, []
        try:
            if kind in ("softmax", "log_softmax"):
                return self._softmax(node, kind, src, full, dims, xi)
            results = self._reduce_values(node, kind, src, full, shape, dims)
        finally:
            self.masks = saved
        out_vals = node.meta["val"]
        outs = out_vals if isinstance(out_vals, (tuple, list)) else [out_vals]
        keepdim = any(len(_ints(o.shape)) == len(shape) for o in outs) and len(shape) > 0 and \
            len(_ints(outs[0].shape)) == len(shape)
        values = []
        for res, o in zip(results, outs):
            oshape = _ints(o.shape)
            values.append(TensorValue(oshape, dtype_name(o.dtype),
                                      self._row_reader(res, xi, dims, keepdim, len(shape))))
        return tuple(values) if isinstance(out_vals, (tuple, list)) else values[0]

    def _softmax(self, node: fx.Node, kind: str, src: TensorValue, full, dims, row) -> TensorValue:
        """``_softmax``/``_log_softmax`` kept whole (e.g. by the optimiser): max and sum reductions over
        the row, then a full-size value that reads both at its own row."""
        b = self.b
        out = node.meta["val"]
        acc = compute_dtype(dtype_name(out.dtype))
        v = b.cast(src.at(full), acc)
        m = b.reduce("max", v, acc)
        # A row of -inf: subtract 0 instead of -inf so the result is nan-free like ATen's.
        m = b.where(b.unary("isinf", m, "bool"), b.const(0.0, acc), m, acc)
        total = b.reduce("sum", b.unary("exp", b.binary("sub", v, m, acc)), acc)

        def fn(idx):
            got = [i for d, i in enumerate(idx) if d not in dims]
            if got != list(row) and not self._same_on_space(got, list(row)):
                raise Unfusable("a softmax read at another row")
            shifted = b.binary("sub", b.cast(src.at(idx), acc), m, acc)
            if kind == "softmax":
                return b.binary("truediv", b.unary("exp", shifted), total, acc)
            return b.binary("sub", shifted, b.unary("log", total), acc)
        return TensorValue(_ints(out.shape), dtype_name(out.dtype), fn)

    def _row_reader(self, op: int, row: list[IndexExpr], dims, keepdim: bool, ndim: int):
        def fn(idx):
            got = [i for d, i in enumerate(idx) if d not in dims] if keepdim else list(idx)
            if got != list(row) and not self._same_on_space(got, list(row)):
                raise Unfusable(f"a row result read at another row ({len(got)}-d index)")
            return op
        return fn

    def _same_on_space(self, a: list[IndexExpr], b: list[IndexExpr]) -> bool:
        """Whether two index tuples agree at every point of the kernel's (x, r) space.

        Decided by evaluating both on every point with this graph's sizes (shapes are static per
        compile, so this is exact for the sizes the kernel is built for); spaces over 2**20 points
        and data-dependent indices are refused rather than sampled.
        """
        if len(a) != len(b):
            return False
        extents = list(self._space_x) + list(self._space_r)
        names = [f"x{i}" for i in range(len(self._space_x))] + [f"r{i}" for i in range(len(self._space_r))]
        hints = {s.name: s.hint for s in self.b.sizes}
        bounds = dict(zip(names, extents))
        if [_simplify(x, bounds, hints) for x in a] == [_simplify(y, bounds, hints) for y in b]:
            return True
        total = math.prod(extents)
        if total > 2**20:
            return False
        # NumPy, not torch: this runs inside aot_autograd's fake-tensor mode.
        grids = np.meshgrid(*[np.arange(e, dtype=np.int64) for e in extents], indexing="ij") if extents else []
        env = {n: g.reshape(-1) for n, g in zip(names, grids)}
        try:
            return all(bool(np.array_equal(np.broadcast_to(_eval_index(x, env, hints), (max(total, 1),)),
                                           np.broadcast_to(_eval_index(y, env, hints), (max(total, 1),))))
                       for x, y in zip(a, b))
        except _NotEvaluable:
            return False

    def _reduce_values(self, node, kind, src: TensorValue, full, shape, dims) -> list[int]:
        b = self.b
        out_dtype = dtype_name(node.meta["val"][0].dtype if isinstance(node.meta["val"], (tuple, list))
                               else node.meta["val"].dtype)
        v = src.at(full)
        n_r = math.prod(shape[d] for d in dims)
        count = self._count(dims, shape)
        if kind in ("sum", "prod", "max", "min"):
            acc = compute_dtype(out_dtype)
            if acc == "bool":
                acc = "int32"
            if out_dtype.startswith("int") and kind in ("sum", "prod"):
                acc = "int64"
            r = b.reduce(kind, b.cast(v, acc), acc)
            return [r]
        if kind in ("any", "all"):
            r = b.reduce("max" if kind == "any" else "min", b.cast(b.cast(v, "bool"), "int32"), "int32")
            return [b.cast(r, "bool")]
        if kind in ("argmax", "argmin"):
            return [b.reduce(kind, v, "int64")]
        if kind == "mean":
            acc = compute_dtype(out_dtype)
            s = b.reduce("sum", b.cast(v, acc), acc)
            return [b.binary("truediv", s, b.cast(count, acc), acc)]
        if kind in ("var", "var_mean"):
            correction = node.kwargs.get("correction")
            if correction is None:
                unbiased = node.args[2] if len(node.args) > 2 and isinstance(node.args[2], bool) else True
                correction = 1 if unbiased else 0
            acc = compute_dtype(out_dtype)
            vf = b.cast(v, acc)
            mean = b.binary("truediv", b.reduce("sum", vf, acc), b.cast(count, acc), acc)
            d = b.binary("sub", vf, mean, acc)
            ss = b.reduce("sum", b.binary("mul", d, d, acc), acc)
            denom = b.binary("sub", b.cast(count, acc), b.const(float(correction), acc), acc)
            denom = b.binary("maximum", denom, b.const(0.0, acc), acc)
            var = b.binary("truediv", ss, denom, acc)
            del n_r
            return [var, mean] if kind == "var_mean" else [var]
        raise Unsupported(f"reduction {kind}")

    def _count(self, dims, shape) -> int:
        expr: IndexExpr = Const(1)
        for d in dims:
            expr = imul(expr, self.sz(shape[d]))
        return self.b.size_value(expr, "int64")


class _NotEvaluable(Exception):
    pass


def _bound(e: IndexExpr, bounds: dict, hints: dict) -> int | None:
    """An exclusive upper bound of non-negative ``e`` with this compile's sizes (None: unknown)."""
    from .kernel_ir import Bin, Size

    if isinstance(e, Var):
        return bounds.get(e.name)
    if isinstance(e, Const):
        return e.value + 1 if e.value >= 0 else None
    if isinstance(e, Size):
        return hints[e.name] + 1
    if isinstance(e, Bin):
        x, y = _bound(e.a, bounds, hints), _bound(e.b, bounds, hints)
        if x is None or y is None:
            return None
        if e.kind == "+":
            return x + y - 1
        if e.kind == "*":
            return (x - 1) * (y - 1) + 1
        if e.kind == "//":
            return x
        if e.kind == "%":
            return min(x, y)
    return None


def _simplify(e: IndexExpr, bounds: dict, hints: dict) -> IndexExpr:
    """Undo linearize/delinearize pairs: ``(a*S + b) // S -> a`` and ``(a*S + b) % S -> b`` when
    ``0 <= b < S`` (bounds from the loop extents and this compile's sizes), ``x // S -> 0`` and
    ``x % S -> x`` when ``x < S``. Exact for the sizes the kernel is built for."""
    from .kernel_ir import Bin, Size, ifloordiv, imod

    if not isinstance(e, Bin):
        return e
    a, b = _simplify(e.a, bounds, hints), _simplify(e.b, bounds, hints)
    if e.kind in ("//", "%") and isinstance(b, (Size, Const)):
        div = hints[b.name] if isinstance(b, Size) else b.value
        ub = _bound(a, bounds, hints)
        if div > 0 and ub is not None and ub <= div:
            return Const(0) if e.kind == "//" else a
        if isinstance(a, Bin) and a.kind == "+":
            for mul, rest in ((a.a, a.b), (a.b, a.a)):
                if isinstance(mul, Bin) and mul.kind == "*" and b in (mul.a, mul.b):
                    other = mul.b if mul.a == b else mul.a
                    rb = _bound(rest, bounds, hints)
                    if rb is not None and rb <= div:
                        return other if e.kind == "//" else rest
        return ifloordiv(a, b) if e.kind == "//" else imod(a, b)
    if e.kind == "+":
        # (x // S) * S + x % S -> x
        for p, q in ((a, b), (b, a)):
            if isinstance(q, Bin) and q.kind == "%" and isinstance(p, Bin) and p.kind == "*":
                for d, m in ((p.a, p.b), (p.b, p.a)):
                    if m == q.b and isinstance(d, Bin) and d.kind == "//" and d.a == q.a and d.b == q.b:
                        return q.a
        return iadd(a, b)
    if e.kind == "*":
        return imul(a, b)
    return Bin(e.kind, a, b)


def _eval_index(e: IndexExpr, env: dict, hints: dict) -> np.ndarray:
    from .kernel_ir import Bin, Size

    if isinstance(e, Var):
        return env[e.name]
    if isinstance(e, Const):
        return np.array([e.value], dtype=np.int64)
    if isinstance(e, Size):
        return np.array([hints[e.name]], dtype=np.int64)
    if isinstance(e, Bin):
        x, y = _eval_index(e.a, env, hints), _eval_index(e.b, env, hints)
        return {"+": np.add, "*": np.multiply, "//": np.floor_divide, "%": np.remainder}[e.kind](x, y)
    raise _NotEvaluable(str(e))


def _meta_any(node: fx.Node) -> torch.Tensor:
    val = node.meta.get("val")
    if isinstance(val, (tuple, list)):
        val = val[0]
    if not isinstance(val, torch.Tensor):
        raise Unsupported(f"{node} has no tensor metadata")
    return val


def lower_group(nodes: Sequence[fx.Node], inputs: Sequence[fx.Node], outputs: Sequence[fx.Node],
                name: str = "kernel") -> KernelIR:
    """Lower a group; raises :class:`Unsupported` or :class:`Unfusable` when it cannot be one kernel.

    >>> ir = lower_group(group.nodes, group.inputs, group.outputs)   # doctest: +SKIP
    """
    return GroupLowering(nodes, inputs, outputs, name).lower()


__all__ = ["GroupLowering", "TensorValue", "ScatterValue", "SCATTER_OPS", "scatter_space", "fill_value", "Unsupported", "Unfusable", "lower_group", "LOWERABLE",
           "REDUCTION_OPS", "VIEW_OPS", "is_lowerable", "reduction_space", "numel_of", "packet_of",
           "dtype_name", "IndirectIndex", "is_symbolic"]
