"""KernelIR: one fused group as a vendor-neutral loop nest, the single input of every emitter.

A kernel is a 2-level iteration space and a scalar op DAG evaluated at each point of it::

    for x in range(xnumel):            # x: output rows; one GPU program instance covers a tile of x
        for r in range(rnumel):        # r: the reduced dimensions (absent in a pointwise kernel)
            ...ops in space "xr"...    # loads / pointwise ops that depend on r, feeding reductions
        ...ops in space "x"...         # reduction results and what depends on them per row
        ...stores...

``xdims`` and ``rdims`` split ``x`` and ``r`` into named loop variables, row-major (last fastest):
``x0 .. x{k-1}`` and ``r0 .. r{m-1}``. Emitters compute them from the linear ``xindex``/``rindex``::

    x{k-1} = xindex % xdims[k-1];  x{k-2} = (xindex // xdims[k-1]) % xdims[k-2];  ...

Sizes are *kernel arguments*, never baked into the source: ``xdims``/``rdims`` and every stride and
extent in an index expression are :class:`Size` leaves naming a :class:`SizeArg`. The same source (and
binary) therefore serves every batch size; only ``SizeArg`` values change at launch. The constants
0 and 1 are folded (they decide broadcasting, which changes the code anyway).

Contract for emitters (Triton today, the C family next):

* ``inputs``/``outputs`` are pointer arguments, in that order, then ``sizes`` (int64 scalars), in
  order. An input's pointer already includes its storage offset.
* ``ops`` is topologically ordered; an op's ``args`` are indices into ``ops``. Every op name is in
  :data:`SCALAR_OPS`, with the arity given there. ``dtype`` is the op's *compute* dtype: loads of
  float16/bfloat16 are upcast to float32 by the load itself (``Op.dtype`` is float32, the buffer's
  dtype says what is in memory); stores cast to the output buffer's dtype.
* A ``load``/``store`` address is ``base + index`` in elements, ``index`` an :data:`IndexExpr` over
  loop variables, size arguments and (for gathers) integer op values (:class:`IndirectIndex`).
* A ``load`` may carry a ``mask`` (an op index, bool): where it is false the load must not touch
  memory and yields ``other`` (``cat``/``pad`` read each source only inside its own range).
* ``reduce`` ops (``attrs["kind"]`` in :data:`REDUCTIONS`) reduce their single argument, which lives
  in space "xr", over all of ``r``; the result lives in space "x". ``argmax``/``argmin`` return the
  linear ``rindex`` (int64) of the first extreme element; NaN counts as the extreme, as in ATen.
  Emitters must mask out-of-range lanes with the reduction's identity (:data:`REDUCTION_IDENTITY`).
* ``Op.space`` is "x" when the op depends only on ``x`` variables, "xr" when it also depends on ``r``.
  In a pointwise kernel (no ``rdims``) every op is in space "x".
* Stores of space "xr" values write inside the r loop, after every reduction they depend on is
  complete (a looped emitter runs one r loop per reduction *phase*, see :meth:`KernelIR.phase_of`).
* A store with ``accumulate`` adds its value atomically (``buffer[index] += value``; several points
  may hit one element: a scatter-add such as the embedding backward's ``index_put(accumulate=True)``)
  and writes only where its ``mask`` op (bool) is true. Such stores occur in pointwise kernels only,
  in :data:`ATOMIC_DTYPES`, and their output's :attr:`BufferArg.init` says what the launcher puts in
  the buffer before the launch (a constant, or a copy of an input): the kernel itself never writes
  the elements no point hits. The order of the additions is unspecified (not bitwise reproducible).

Build one with :class:`KernelBuilder`; :meth:`KernelIR.verify` checks the invariants above and
:meth:`KernelIR.render` prints a readable listing (the debug dump shows it next to the source).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DTYPES", "FLOAT_DTYPES", "SCALAR_OPS", "REDUCTIONS", "REDUCTION_IDENTITY", "Var", "Const", "Size",
    "Bin", "IndirectIndex", "IndexExpr", "index_fits_int32", "BufferArg", "SizeArg", "Op", "Store", "KernelIR", "KernelBuilder",
    "ATOMIC_DTYPES", "compute_dtype", "eval_size", "index_vars", "render_index", "iadd", "imul", "ifloordiv", "imod", "linearize",
    "delinearize",
]

# --------------------------------------------------------------------------------------------- dtypes

#: Element types a buffer may hold (torch names without the "torch." prefix).
DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")
FLOAT_DTYPES = frozenset({"float32", "float16", "bfloat16", "float64"})
INT_DTYPES = frozenset({"int64", "int32", "int16", "int8", "uint8"})
#: Buffer dtypes an accumulating (atomic) store may target: every emitter has a native atomic add for
#: them (Triton's tl.atomic_add, CUDA's and HIP's atomicAdd). Half types would need an fp32 buffer.
ATOMIC_DTYPES = frozenset({"float32"})


def compute_dtype(dtype: str) -> str:
    """The dtype arithmetic runs in: half types are upcast to float32 (and rounded once, at the store)."""
    return "float32" if dtype in ("float16", "bfloat16") else dtype


# ---------------------------------------------------------------------------------- scalar op vocabulary

#: Every scalar op name an emitter must implement: name -> (arity, meaning). ``None`` arity: leaves.
#: Comparison and logical ops produce bool; ``cast`` converts to ``Op.dtype``.
SCALAR_OPS: dict[str, tuple[int, str]] = {
    # leaves
    "load": (0, "read attrs['buffer'] at attrs['index'] (masked by args[0] when attrs['masked'])"),
    "const": (0, "the scalar attrs['value'] (Python int/float/bool; float('inf') and nan allowed)"),
    "size": (0, "the value of size argument attrs['name'], as Op.dtype"),
    "index": (0, "the integer value of the index expression attrs['index'] (iota, arange, masks)"),
    # unary
    "neg": (1, "-a"), "abs": (1, "|a|"), "reciprocal": (1, "1 / a"),
    "exp": (1, "e**a"), "exp2": (1, "2**a"), "expm1": (1, "e**a - 1"),
    "log": (1, "ln a"), "log2": (1, "log2 a"), "log1p": (1, "ln(1 + a)"),
    "sqrt": (1, "sqrt a (correctly rounded)"), "rsqrt": (1, "1 / sqrt a"),
    "tanh": (1, "tanh a"), "erf": (1, "erf a"), "sigmoid": (1, "1 / (1 + e**-a)"),
    "sin": (1, "sin a"), "cos": (1, "cos a"),
    "floor": (1, "floor a"), "ceil": (1, "ceil a"), "trunc": (1, "trunc a"),
    "round": (1, "round half to even"), "sign": (1, "-1, 0 or 1 (0 for nan... as torch.sign)"),
    "isnan": (1, "a != a"), "isinf": (1, "|a| == inf"),
    "logical_not": (1, "!a (bool)"), "bitwise_not": (1, "~a (integers and bool)"),
    "cast": (1, "convert a to Op.dtype (float->int truncates toward zero)"),
    # binary
    "add": (2, "a + b"), "sub": (2, "a - b"), "mul": (2, "a * b"),
    "truediv": (2, "a / b (correctly rounded for floats)"),
    "floordiv": (2, "floor(a / b) (Python semantics for ints)"),
    "remainder": (2, "a - floor(a / b) * b (sign of b, as torch.remainder)"),
    "fmod": (2, "C fmod (sign of a)"),
    "pow": (2, "a ** b"),
    "maximum": (2, "max(a, b), nan-propagating"), "minimum": (2, "min(a, b), nan-propagating"),
    "eq": (2, "a == b"), "ne": (2, "a != b"), "lt": (2, "a < b"), "le": (2, "a <= b"),
    "gt": (2, "a > b"), "ge": (2, "a >= b"),
    "logical_and": (2, "a && b"), "logical_or": (2, "a || b"),
    "bitwise_and": (2, "a & b"), "bitwise_or": (2, "a | b"), "bitwise_xor": (2, "a ^ b"),
    # ternary
    "where": (3, "a ? b : c"),
    # reduction over r (see module docstring)
    "reduce": (1, "reduce a over r with attrs['kind']"),
}

#: Reduction kinds. ``mean``/``var`` are lowered to two ``sum`` passes (the second over
#: ``(a - mean)**2``), which is as accurate as Welford and needs no special combine op.
REDUCTIONS = ("sum", "prod", "max", "min", "argmax", "argmin")
REDUCTION_IDENTITY: dict[str, float] = {
    "sum": 0.0, "prod": 1.0, "max": float("-inf"), "min": float("inf"),
    "argmax": float("-inf"), "argmin": float("inf"),
}

# ------------------------------------------------------------------------------------ index expressions


@dataclass(frozen=True)
class Var:
    """A loop variable: ``x0 .. x{k-1}`` (one per x dim) or ``r0 .. r{m-1}`` (one per r dim)."""

    name: str


@dataclass(frozen=True)
class Const:
    value: int


@dataclass(frozen=True)
class Size:
    """The value of a size argument (see :class:`SizeArg`), e.g. an extent or a stride."""

    name: str


@dataclass(frozen=True)
class IndirectIndex:
    """The integer value of op ``op`` (a gather: ``embedding``, ``gather``, ``index``)."""

    op: int


@dataclass(frozen=True)
class Bin:
    """``a <kind> b`` with kind in ``+ * // %`` (non-negative operands: // and % are C's too)."""

    kind: str
    a: IndexExpr
    b: IndexExpr


IndexExpr = Var | Const | Size | IndirectIndex | Bin


def iadd(a: IndexExpr, b: IndexExpr) -> IndexExpr:
    if isinstance(a, Const) and a.value == 0:
        return b
    if isinstance(b, Const) and b.value == 0:
        return a
    if isinstance(a, Const) and isinstance(b, Const):
        return Const(a.value + b.value)
    return Bin("+", a, b)


def imul(a: IndexExpr, b: IndexExpr) -> IndexExpr:
    for p, q in ((a, b), (b, a)):
        if isinstance(p, Const):
            if p.value == 0:
                return Const(0)
            if p.value == 1:
                return q
    if isinstance(a, Const) and isinstance(b, Const):
        return Const(a.value * b.value)
    return Bin("*", a, b)


def ifloordiv(a: IndexExpr, b: IndexExpr) -> IndexExpr:
    if isinstance(b, Const) and b.value == 0:
        return Const(0)  # only in a space of 0 elements: no point evaluates it (as eval_size)
    if isinstance(b, Const) and b.value == 1:
        return a
    if isinstance(a, Const) and a.value == 0:
        return a
    if isinstance(a, Const) and isinstance(b, Const):
        return Const(a.value // b.value)
    if a == b:
        return Const(1)
    return Bin("//", a, b)


def imod(a: IndexExpr, b: IndexExpr) -> IndexExpr:
    if isinstance(b, Const) and b.value == 0:
        return Const(0)  # only in a space of 0 elements: no point evaluates it (as eval_size)
    if isinstance(b, Const) and b.value == 1:
        return Const(0)
    if isinstance(a, Const) and a.value == 0:
        return a
    if isinstance(a, Const) and isinstance(b, Const):
        return Const(a.value % b.value)
    return Bin("%", a, b)


def linearize(idx: Sequence[IndexExpr], sizes: Sequence[IndexExpr]) -> IndexExpr:
    """Row-major linear position of the multi-index ``idx`` in a tensor of extent ``sizes``."""
    out: IndexExpr = Const(0)
    for i, s in zip(idx, sizes):
        out = iadd(imul(out, s), i)
    return out


def delinearize(lin: IndexExpr, sizes: Sequence[IndexExpr]) -> list[IndexExpr]:
    """Inverse of :func:`linearize`: the multi-index (row-major) of linear position ``lin``."""
    out: list[IndexExpr] = []
    rest = lin
    for k in range(len(sizes) - 1, -1, -1):
        out.append(rest if k == 0 else imod(rest, sizes[k]))
        rest = ifloordiv(rest, sizes[k])
    return out[::-1]


def eval_size(expr: IndexExpr, sizes: dict[str, int]) -> int:
    """The value of a size expression (no loop variables) given each size argument's value."""
    if isinstance(expr, Const):
        return expr.value
    if isinstance(expr, Size):
        return sizes[expr.name]
    if isinstance(expr, Bin):
        a, b = eval_size(expr.a, sizes), eval_size(expr.b, sizes)
        return {"+": a + b, "*": a * b, "//": a // b if b else 0, "%": a % b if b else 0}[expr.kind]
    raise ValueError(f"size expression {render_index(expr)} depends on a loop variable or a value")


#: Largest value a 32-bit index may take.
INT32_MAX = 2**31 - 1
#: How far past the last point a tile's lanes may reach: more than any XBLOCK/RBLOCK a launcher
#: picks (a persistent RBLOCK is at most twice the row).
TILE_OVERSHOOT = 1 << 16


def index_fits_int32(ir: KernelIR) -> bool:
    """Whether every index the kernel computes fits in 32 bits at its size hints.

    GPUs have no 64-bit integer divide: ``//`` and ``%`` on int64 become ~70-instruction calls, which
    make a kernel that splits its linear index (a transpose, a broadcast) compute-bound. The bound is
    taken over every load, store and index-op expression, with loop variables at their largest over
    the kernel's points; a tile's lanes past the end only need their linear index to fit (their
    masks come from it; their addresses may wrap, unread). A subexpression holding a gathered index
    is 64-bit anyway (gathers cast their indices to int64, and Triton promotes) and is not bounded.
    Sizes are the hints the kernel is generated for: launchers are made per shape, so the hints are
    the call's sizes.
    """
    sizes = {s.name: s.hint for s in ir.sizes}
    xnumel, rnumel = ir.xnumel_hint, ir.rnumel_hint
    if max(xnumel, rnumel) + 2 * TILE_OVERSHOOT > INT32_MAX:
        return False
    var_max = {f"{prefix}{k}": max(abs(eval_size(d, sizes)) - 1, 0)
               for prefix, dims in (("x", ir.xdims), ("r", ir.rdims)) for k, d in enumerate(dims)}
    ok = True

    def bound(e: IndexExpr) -> int | None:
        """An upper bound of ``|e|``, or None where ``e`` is 64-bit (holds a gathered index)."""
        nonlocal ok
        if isinstance(e, Var):
            return var_max.get(e.name, 0)
        if isinstance(e, Const):
            v = abs(e.value)
        elif isinstance(e, Size):
            v = abs(sizes[e.name])
        elif isinstance(e, IndirectIndex):
            return None
        else:
            a, b = bound(e.a), bound(e.b)
            if a is None or b is None:
                return None
            v = {"+": a + b, "*": a * b, "//": a // _divisor(e.b, sizes) + 1, "%": min(a, b)}[e.kind]
        ok = ok and v <= INT32_MAX
        return v

    exprs = [op.attrs["index"] for op in ir.ops if op.op in ("load", "index")] + [st.index for st in ir.stores]
    exprs += list(ir.xdims) + list(ir.rdims)
    for e in exprs:
        bound(e)
    return ok


def _divisor(e: IndexExpr, sizes: dict[str, int]) -> int:
    """The least ``|e|`` can be as a divisor: its value when it holds no loop variable, else 1."""
    if index_vars(e) or index_ops(e):
        return 1
    return max(abs(eval_size(e, sizes)), 1)


def index_vars(expr: IndexExpr) -> set[str]:
    """Loop variables ``expr`` depends on (indirect indices count through their op's space elsewhere)."""
    if isinstance(expr, Var):
        return {expr.name}
    if isinstance(expr, Bin):
        return index_vars(expr.a) | index_vars(expr.b)
    return set()


def index_sizes(expr: IndexExpr) -> set[str]:
    if isinstance(expr, Size):
        return {expr.name}
    if isinstance(expr, Bin):
        return index_sizes(expr.a) | index_sizes(expr.b)
    return set()


def index_ops(expr: IndexExpr) -> set[int]:
    if isinstance(expr, IndirectIndex):
        return {expr.op}
    if isinstance(expr, Bin):
        return index_ops(expr.a) | index_ops(expr.b)
    return set()


def render_index(expr: IndexExpr, leaf=None) -> str:
    """C/Python-style text of ``expr``; ``leaf(e)`` may override how leaves print (``None``: default)."""
    if leaf is not None:
        text = leaf(expr)
        if text is not None:
            return text
    if isinstance(expr, Var):
        return expr.name
    if isinstance(expr, Const):
        return str(expr.value)
    if isinstance(expr, Size):
        return expr.name
    if isinstance(expr, IndirectIndex):
        return f"v{expr.op}"
    return f"({render_index(expr.a, leaf)} {expr.kind} {render_index(expr.b, leaf)})"


# ----------------------------------------------------------------------------------------- the kernel


@dataclass(frozen=True)
class BufferArg:
    """A pointer argument: ``name`` in the kernel signature, element ``dtype`` in memory.

    ``init`` (outputs written by accumulating stores only): what the launcher fills the buffer with
    before the launch: a Python number, or the name of an input copied in (same shape and dtype).
    """

    name: str
    dtype: str
    init: Any = None


@dataclass(frozen=True)
class SizeArg:
    """An integer scalar argument. ``hint`` is its value when the kernel was generated (for autotuning
    and tests); at launch the runtime passes the actual value."""

    name: str
    hint: int


@dataclass
class Op:
    """One node of the scalar op DAG. ``args`` index earlier ops; ``attrs`` per op (see SCALAR_OPS)."""

    op: str
    args: tuple[int, ...]
    dtype: str
    attrs: dict[str, Any] = field(default_factory=dict)
    space: str = "x"  # "x" or "xr"


@dataclass(frozen=True)
class Store:
    """``buffer[index] = cast(ops[value], buffer.dtype)``, for every point of the value's space;
    with ``accumulate``, ``buffer[index] += ...`` atomically, where op ``mask`` (if any) is true."""

    buffer: str
    index: IndexExpr
    value: int
    accumulate: bool = False
    mask: int | None = None


@dataclass
class KernelIR:
    """A fused kernel. See the module docstring for the contract emitters rely on."""

    name: str
    inputs: list[BufferArg]
    outputs: list[BufferArg]
    sizes: list[SizeArg]
    xdims: tuple[IndexExpr, ...]
    rdims: tuple[IndexExpr, ...]
    ops: list[Op]
    stores: list[Store]

    @property
    def is_reduction(self) -> bool:
        return bool(self.rdims)

    @functools.cached_property
    def has_init(self) -> bool:
        """Whether an output must be filled before the launch (an accumulating store's)."""
        return any(b.init is not None for b in self.outputs)

    @property
    def buffers(self) -> dict[str, BufferArg]:
        return {b.name: b for b in (*self.inputs, *self.outputs)}

    def size_hint(self, expr: IndexExpr) -> int:
        """Evaluate ``expr`` (no loop variables) with the size hints."""
        return eval_size(expr, {s.name: s.hint for s in self.sizes})

    @property
    def xnumel_hint(self) -> int:
        n = 1
        for d in self.xdims:
            n *= self.size_hint(d)
        return n

    @property
    def rnumel_hint(self) -> int:
        n = 1
        for d in self.rdims:
            n *= self.size_hint(d)
        return n

    def phase_of(self) -> list[int]:
        """Per op, how many reductions lie on its longest dependency path (0: needs no reduction).

        A looped emitter runs r loop ``p`` for the reductions of phase ``p`` (their argument's phase)
        and emits space-"xr" stores of phase ``p`` in the last loop that can hold them.
        """
        phase: list[int] = []
        for op in self.ops:
            deps = list(op.args)
            if op.op == "load":
                deps += sorted(index_ops(op.attrs["index"]))
            p = max((phase[a] for a in deps), default=0)
            phase.append(p + 1 if op.op == "reduce" else p)
        return phase

    def verify(self) -> None:
        """Raise ValueError naming the first broken invariant (see the module docstring)."""
        names = [b.name for b in (*self.inputs, *self.outputs)] + [s.name for s in self.sizes]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: argument names repeat: {names}")
        sizes = {s.name for s in self.sizes}
        xvars = {f"x{i}" for i in range(len(self.xdims))}
        rvars = {f"r{i}" for i in range(len(self.rdims))}
        bufs = self.buffers
        outs = {b.name for b in self.outputs}
        for d in (*self.xdims, *self.rdims):
            if index_vars(d) or not index_sizes(d) <= sizes:
                raise ValueError(f"{self.name}: bad loop extent {render_index(d)}")
        for i, op in enumerate(self.ops):
            if op.op not in SCALAR_OPS:
                raise ValueError(f"{self.name}: op {i} {op.op!r} is not in SCALAR_OPS")
            arity = SCALAR_OPS[op.op][0]
            nargs = len(op.args) - (1 if op.op == "load" and op.attrs.get("masked") else 0)
            if nargs != arity:
                raise ValueError(f"{self.name}: op {i} {op.op} takes {arity} args, got {op.args}")
            if any(a >= i for a in op.args):
                raise ValueError(f"{self.name}: op {i} reads a later op: {op.args}")
            if op.dtype not in DTYPES:
                raise ValueError(f"{self.name}: op {i} has dtype {op.dtype!r}; expected one of {DTYPES}")
            if op.op in ("load", "index"):
                idx = op.attrs["index"]
                if not index_vars(idx) <= xvars | rvars or not index_sizes(idx) <= sizes:
                    raise ValueError(f"{self.name}: op {i} index {render_index(idx)} uses unknown names")
                if any(j >= i for j in index_ops(idx)):
                    raise ValueError(f"{self.name}: op {i} index reads a later op")
            if op.op == "load" and (op.attrs["buffer"] not in bufs or op.attrs["buffer"] in outs):
                raise ValueError(f"{self.name}: op {i} loads from {op.attrs['buffer']!r}, not an input")
            if op.op == "reduce":
                if op.attrs["kind"] not in REDUCTIONS:
                    raise ValueError(f"{self.name}: op {i} reduction {op.attrs['kind']!r} not in {REDUCTIONS}")
                if not self.rdims or op.space != "x":
                    raise ValueError(f"{self.name}: op {i} reduces in a kernel without r dims or space xr")
            expected = _space_of(self.ops, i)
            if op.space != expected:
                raise ValueError(f"{self.name}: op {i} space is {op.space!r}, its inputs make it {expected!r}")
        for st in self.stores:
            if st.buffer not in outs:
                raise ValueError(f"{self.name}: store to {st.buffer!r}, not an output")
            buf = bufs[st.buffer]
            if st.accumulate != (buf.init is not None):
                raise ValueError(f"{self.name}: output {st.buffer!r} needs an init exactly when its store accumulates")
            if st.accumulate and (self.rdims or buf.dtype not in ATOMIC_DTYPES):
                raise ValueError(f"{self.name}: accumulating store to {buf.dtype} {st.buffer!r}; only pointwise "
                                 f"kernels accumulate, into {sorted(ATOMIC_DTYPES)}")
            if isinstance(buf.init, str) and buf.init not in {b.name for b in self.inputs}:
                raise ValueError(f"{self.name}: output {st.buffer!r} is initialised from {buf.init!r}, not an input")
            if st.mask is not None and (not st.accumulate or self.ops[st.mask].dtype != "bool"):
                raise ValueError(f"{self.name}: store mask v{st.mask} must be a bool on an accumulating store")
            if not index_vars(st.index) <= xvars | rvars:
                raise ValueError(f"{self.name}: store index {render_index(st.index)} uses unknown names")
            if self.ops[st.value].space == "x" and index_vars(st.index) & rvars:
                raise ValueError(f"{self.name}: store of a per-row value indexed by r")
        if {st.buffer for st in self.stores} != outs:
            raise ValueError(f"{self.name}: every output needs exactly one store")

    def render(self) -> str:
        """A readable listing, one line per op and store."""
        lines = [
            f"kernel {self.name}",
            "  inputs:  " + ", ".join(f"{b.name}: {b.dtype}" for b in self.inputs),
            "  outputs: " + ", ".join(f"{b.name}: {b.dtype}" + ("" if b.init is None else f" = {b.init!r} before")
                                      for b in self.outputs),
            "  sizes:   " + ", ".join(f"{s.name}={s.hint}" for s in self.sizes),
            "  x dims:  " + ", ".join(render_index(d) for d in self.xdims),
            "  r dims:  " + (", ".join(render_index(d) for d in self.rdims) or "-"),
        ]
        for i, op in enumerate(self.ops):
            attrs = {k: (render_index(v) if k == "index" else v) for k, v in op.attrs.items()}
            args = ", ".join(f"v{a}" for a in op.args)
            lines.append(f"  v{i}: {op.dtype} [{op.space}] = {op.op}({args}) {attrs if attrs else ''}".rstrip())
        for st in self.stores:
            where = "" if st.mask is None else f" where v{st.mask}"
            lines.append(f"  store {st.buffer}[{render_index(st.index)}] {'+=' if st.accumulate else '='} "
                         f"v{st.value}{where}")
        return "\n".join(lines)

    def fingerprint(self) -> str:
        """A stable hash of the kernel's structure (not its name, not its size hints)."""
        body = self.render().split("\n", 1)[1]
        for s in self.sizes:
            body = body.replace(f"{s.name}={s.hint}", s.name)
        return hashlib.sha256(body.encode()).hexdigest()[:16]


def _space_of(ops: Sequence[Op], i: int) -> str:
    op = ops[i]
    if op.op == "reduce":
        return "x"
    deps: set[str] = set()
    if op.op in ("load", "index"):
        idx = op.attrs["index"]
        deps |= {v[0] for v in index_vars(idx)}
        deps |= {"r" if ops[j].space == "xr" else "x" for j in index_ops(idx)}
    deps |= {"r" if ops[a].space == "xr" else "x" for a in op.args}
    return "xr" if "r" in deps else "x"


class KernelBuilder:
    """Appends ops with common-subexpression elimination and computes each op's space.

    >>> b = KernelBuilder("k")
    >>> x = b.input("in0", "float32")
    >>> v = b.load(x, Var("x0"))
    >>> b.store(b.output("out0", "float32"), Var("x0"), b.unary("exp", v))
    """

    def __init__(self, name: str):
        self.name = name
        self.inputs: list[BufferArg] = []
        self.outputs: list[BufferArg] = []
        self.sizes: list[SizeArg] = []
        self.ops: list[Op] = []
        self.stores: list[Store] = []
        self._cse: dict[Any, int] = {}
        self._size_names: dict[Any, str] = {}

    # -- arguments
    def input(self, name: str, dtype: str) -> str:
        self.inputs.append(BufferArg(name, dtype))
        return name

    def output(self, name: str, dtype: str, init: Any = None) -> str:
        self.outputs.append(BufferArg(name, dtype, init))
        return name

    def size(self, key: Any, hint: int, prefix: str = "s") -> IndexExpr:
        """A size argument for ``key`` (any hashable naming where the value comes from); 0 and 1 fold."""
        if hint in (0, 1):
            return Const(hint)
        name = self._size_names.get(key)
        if name is None:
            name = f"{prefix}{len(self.sizes)}"
            self._size_names[key] = name
            self.sizes.append(SizeArg(name, int(hint)))
        return Size(name)

    # -- ops
    def _add(self, op: str, args: Iterable[int], dtype: str, **attrs: Any) -> int:
        args = tuple(args)
        key = (op, args, dtype, tuple(sorted((k, _hashable(v)) for k, v in attrs.items())))
        if op != "reduce" and key in self._cse:
            return self._cse[key]
        self.ops.append(Op(op, args, dtype, dict(attrs)))
        i = len(self.ops) - 1
        self.ops[i].space = _space_of(self.ops, i)
        self._cse[key] = i
        return i

    def load(self, buffer: str, index: IndexExpr, mask: int | None = None, other: float = 0.0) -> int:
        dtype = next(b.dtype for b in self.inputs if b.name == buffer)
        if mask is None:
            return self._add("load", (), compute_dtype(dtype), buffer=buffer, index=index)
        return self._add("load", (mask,), compute_dtype(dtype), buffer=buffer, index=index, masked=True,
                         other=other)

    def const(self, value: Any, dtype: str) -> int:
        return self._add("const", (), dtype, value=value)

    def size_value(self, expr: IndexExpr, dtype: str = "int64") -> int:
        if isinstance(expr, Const):
            return self.const(expr.value, dtype)
        return self._add("index", (), dtype, index=expr)

    def index(self, expr: IndexExpr, dtype: str = "int64") -> int:
        return self._add("index", (), dtype, index=expr)

    def unary(self, op: str, a: int, dtype: str | None = None) -> int:
        return self._add(op, (a,), dtype or self.ops[a].dtype)

    def binary(self, op: str, a: int, b: int, dtype: str) -> int:
        return self._add(op, (a, b), dtype)

    def where(self, c: int, a: int, b: int, dtype: str) -> int:
        return self._add("where", (c, a, b), dtype)

    def cast(self, a: int, dtype: str) -> int:
        if self.ops[a].dtype == dtype:
            return a
        return self._add("cast", (a,), dtype)

    def reduce(self, kind: str, a: int, dtype: str) -> int:
        return self._add("reduce", (a,), dtype, kind=kind)

    def store(self, buffer: str, index: IndexExpr, value: int, accumulate: bool = False,
              mask: int | None = None) -> None:
        self.stores.append(Store(buffer, index, value, accumulate, mask))

    def build(self, xdims: Sequence[IndexExpr], rdims: Sequence[IndexExpr]) -> KernelIR:
        """The kernel, without ops no store depends on (the lowering may create a few)."""
        ops, stores = _dead_ops_removed(self.ops, self.stores)
        ir = KernelIR(self.name, self.inputs, self.outputs, self.sizes, tuple(xdims), tuple(rdims), ops, stores)
        ir.verify()
        return ir


def _dead_ops_removed(ops: list[Op], stores: list[Store]) -> tuple[list[Op], list[Store]]:
    live: set[int] = set()
    stack = [st.value for st in stores] + [j for st in stores for j in index_ops(st.index)]
    stack += [st.mask for st in stores if st.mask is not None]
    while stack:
        j = stack.pop()
        if j in live:
            continue
        live.add(j)
        stack += list(ops[j].args)
        if "index" in ops[j].attrs:
            stack += list(index_ops(ops[j].attrs["index"]))
    remap = {old: new for new, old in enumerate(sorted(live))}

    def re(e: IndexExpr) -> IndexExpr:
        if isinstance(e, IndirectIndex):
            return IndirectIndex(remap[e.op])
        if isinstance(e, Bin):
            return Bin(e.kind, re(e.a), re(e.b))
        return e

    new_ops = []
    for old in sorted(live):
        op = ops[old]
        attrs = dict(op.attrs)
        if "index" in attrs:
            attrs["index"] = re(attrs["index"])
        new_ops.append(Op(op.op, tuple(remap[a] for a in op.args), op.dtype, attrs, op.space))
    return new_ops, [Store(st.buffer, re(st.index), remap[st.value], st.accumulate,
                           None if st.mask is None else remap[st.mask]) for st in stores]


def _hashable(v: Any) -> Any:
    if isinstance(v, float) and v != v:
        return "nan"
    return v
