"""Triton emitter: KernelIR -> the source of one ``@triton.jit`` kernel (NVIDIA and AMD alike).

Pointwise kernels tile ``x`` with masks. Reduction kernels tile ``[XBLOCK, RBLOCK]``: *persistent*
(one tile holds a whole row, chosen when the row is small) or *looped* (one r loop per reduction
phase; values a later phase needs are recomputed from memory rather than kept in registers).

Numerics: ``strict`` routes transcendental functions through libdevice (``__nv_*`` on NVIDIA, OCML
on AMD, both within ~1-2 ulp) and uses correctly rounded division and square root; ``fast`` lets
Triton pick its approximate instructions. The source never depends on the vendor: the Triton
compiler picks libdevice's implementation for the target.

Only Triton builtins and ``libdevice`` are called from the kernel (no ``tl.sum``/``tl.max``, which
are themselves jit functions): reductions go through ``tl.reduce`` with combine functions emitted
into the same module, so the module can be loaded both compiled and under the interpreter.
"""

from __future__ import annotations

from dataclasses import dataclass

from agnostic_rt.backends.lowering.kernel_ir import (
    FLOAT_DTYPES,
    REDUCTION_IDENTITY,
    Bin,
    Const,
    IndexExpr,
    IndirectIndex,
    KernelIR,
    Size,
    Var,
    index_fits_int32,
    index_ops,
    index_vars,
    render_index,
)

TL_DTYPE = {
    "float32": "tl.float32", "float16": "tl.float16", "bfloat16": "tl.bfloat16", "float64": "tl.float64",
    "int64": "tl.int64", "int32": "tl.int32", "int16": "tl.int16", "int8": "tl.int8", "uint8": "tl.uint8",
    "bool": "tl.int1",
}
#: Signature type strings for triton.compile(ASTSource(...)).
SIG_DTYPE = {
    "float32": "*fp32", "float16": "*fp16", "bfloat16": "*bf16", "float64": "*fp64", "int64": "*i64",
    "int32": "*i32", "int16": "*i16", "int8": "*i8", "uint8": "*u8", "bool": "*i1",
}
#: Rows up to this many elements are reduced by one persistent tile.
PERSISTENT_MAX_R = 4096
#: Index width for every kernel, or None to choose per kernel (:func:`index_fits_int32`). Tests set
#: 64 to run the wide path at sizes a test can afford.
FORCE_INDEX_BITS: int | None = None

_COMBINE = {
    "sum": "@triton.jit\ndef _combine_sum(a, b):\n    return a + b\n",
    "prod": "@triton.jit\ndef _combine_prod(a, b):\n    return a * b\n",
    # NaN wins (ATen's max/min propagate it); a != a is the NaN test that also compiles for ints.
    "max": "@triton.jit\ndef _combine_max(a, b):\n    return tl.where((a > b) | (a != a), a, b)\n",
    "min": "@triton.jit\ndef _combine_min(a, b):\n    return tl.where((a < b) | (a != a), a, b)\n",
    # (value, index) pairs: the extreme value, ties to the lower index, NaN as the extreme.
    "argmax": ("@triton.jit\ndef _combine_argmax(a, ai, b, bi):\n"
               "    take_a = (a > b) | ((a == b) & (ai < bi)) | ((a != a) & ((b == b) | (ai < bi)))\n"
               "    return tl.where(take_a, a, b), tl.where(take_a, ai, bi)\n"),
    "argmin": ("@triton.jit\ndef _combine_argmin(a, ai, b, bi):\n"
               "    take_a = (a < b) | ((a == b) & (ai < bi)) | ((a != a) & ((b == b) | (ai < bi)))\n"
               "    return tl.where(take_a, a, b), tl.where(take_a, ai, bi)\n"),
}


# ``_reduce_<kind>(v)``: reduce a [XBLOCK, RBLOCK] tile over r to [XBLOCK, 1]. A helper per kind so
# that the interpreter can swap in a NumPy reduction (it would otherwise call the combine function
# once per element); argmax/argmin take the lane's r index alongside the value.
_REDUCE_HELPER = {
    kind: f"@triton.jit\ndef _reduce_{kind}(v):\n    return tl.reduce(v, 1, _combine_{kind})[:, None]\n"
    for kind in ("sum", "prod", "max", "min")
}
_REDUCE_HELPER.update({
    kind: f"@triton.jit\ndef _reduce_{kind}(v, i):\n    return tl.reduce((v, i), 1, _combine_{kind})[1][:, None]\n"
    for kind in ("argmax", "argmin")
})


class EmitError(Exception):
    """The IR uses something this emitter cannot express."""


@dataclass(frozen=True)
class TritonKernelSource:
    """A generated kernel: its module source and what a launcher and ``triton.compile`` need."""

    name: str
    source: str
    ir: KernelIR
    persistent: bool  # reduction kernels: one tile per row (RBLOCK >= rnumel) or an r loop
    arg_names: tuple[str, ...]
    signature: dict[str, str]  # for ASTSource, without the constexprs
    constexprs: tuple[str, ...]  # "XBLOCK" and, for reductions, "RBLOCK"


def _identity(kind: str, dtype: str) -> str:
    ident = REDUCTION_IDENTITY[kind]
    if dtype in FLOAT_DTYPES:
        return {float("inf"): 'float("inf")', float("-inf"): 'float("-inf")'}.get(ident, repr(float(ident)))
    if dtype == "bool":
        return "0"
    bits = {"int64": 63, "int32": 31, "int16": 15, "int8": 7, "uint8": 8}[dtype]
    if ident == float("inf"):
        return str(2**bits - 1)
    if ident == float("-inf"):
        return str(-(2**bits)) if dtype != "uint8" else "0"
    return str(int(ident))


class TritonEmitter:
    """Render one KernelIR. ``numerics`` is "strict" or "fast"; indices are 32-bit where every index
    of the kernel fits (as Inductor does), else 64-bit."""

    def __init__(self, ir: KernelIR, numerics: str = "strict"):
        self.ir = ir
        self.strict = numerics == "strict"
        bits = FORCE_INDEX_BITS or (32 if index_fits_int32(ir) else 64)
        self.wide = ".to(tl.int64)" if bits == 64 else ""
        self.red = ir.is_reduction
        self.persistent = self.red and ir.rnumel_hint <= PERSISTENT_MAX_R
        self.lines: list[str] = []
        self.combines: set[str] = set()
        self.helpers: set[str] = set()

    # -- expressions
    def idx(self, e: IndexExpr) -> str:
        def leaf(x):
            if isinstance(x, IndirectIndex):
                return f"v{x.op}"
            return None
        return render_index(e, leaf)

    def shape_of(self, space: str) -> str:
        if not self.red:
            return "[XBLOCK]"
        return "[XBLOCK, RBLOCK]" if space == "xr" else "[XBLOCK, 1]"

    def mask_of(self, space: str) -> str:
        return "xmask & rmask" if space == "xr" else "xmask"

    def op_expr(self, i: int) -> str:
        op = self.ir.ops[i]
        a = [f"v{j}" for j in op.args]
        dt = op.dtype
        tl_dt = TL_DTYPE[dt]
        fl = dt in FLOAT_DTYPES
        name = op.op
        if name == "const":
            v = op.attrs["value"]
            if isinstance(v, float):
                text = 'float("nan")' if v != v else ('float("inf")' if v == float("inf") else (
                    'float("-inf")' if v == float("-inf") else repr(v)))
            else:
                text = repr(int(v)) if not isinstance(v, bool) else ("1" if v else "0")
            return f"tl.full([1], {text}, {tl_dt})"
        if name == "index":
            return f"(tl.full([1], 0, tl.int64) + {self.idx(op.attrs['index'])}).to({tl_dt})"
        if name == "load":
            return self.load_expr(i)
        if name == "cast":
            src = self.ir.ops[op.args[0]].dtype
            if dt == "bool":
                return f"({a[0]} != 0)"
            if src == "bool":
                return f"{a[0]}.to(tl.int8).to({tl_dt})"
            if dt == "bfloat16" and src in FLOAT_DTYPES:
                return self.to_bf16(a[0], src)
            return f"{a[0]}.to({tl_dt})"
        lib = "libdevice" if self.strict else "tl"
        unary = {
            "neg": f"-{a[0]}" if a else "", "abs": f"tl.abs({a[0]})" if a else "",
            "isnan": f"({a[0]} != {a[0]})" if a else "",
            "logical_not": f"({a[0]} == 0)" if a else "", "bitwise_not": f"(~{a[0]})" if a else "",
        }
        if name in unary:
            return unary[name]
        if name in ("exp", "log", "sin", "cos", "exp2", "log2") and fl:
            return f"{lib}.{name}({a[0]})"
        if name in ("tanh", "expm1", "log1p", "trunc") and fl:
            return f"libdevice.{name}({a[0]})"
        if name == "round" and fl:
            return f"libdevice.nearbyint({a[0]})"
        if name in ("floor", "ceil") and fl:
            return f"tl.{name}({a[0]})"
        if name == "erf" and fl:
            return f"tl.erf({a[0]})"
        if name == "sqrt" and fl:
            return f"tl.sqrt_rn({a[0]})" if self.strict and dt == "float32" else f"tl.sqrt({a[0]})"
        if name == "rsqrt" and fl:
            return f"tl.div_rn(1.0, tl.sqrt_rn({a[0]}))" if self.strict and dt == "float32" else f"tl.rsqrt({a[0]})"
        if name == "reciprocal" and fl:
            return self.div("1.0", a[0], dt)
        if name == "sigmoid" and fl:
            return self.div("1.0", f"(1.0 + {lib}.exp(-{a[0]}))", dt)
        if name == "isinf":  # a bool result: what matters is the argument's type
            if self.ir.ops[op.args[0]].dtype in FLOAT_DTYPES:
                return f"(tl.abs({a[0]}) == float(\"inf\"))"
            return f"({a[0]} != {a[0]})"  # integers are never infinite
        if name == "sign":
            return f"(({a[0]} > 0).to({tl_dt}) - ({a[0]} < 0).to({tl_dt}))"
        infix = {"add": "+", "sub": "-", "mul": "*", "eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">",
                 "ge": ">=", "bitwise_and": "&", "bitwise_or": "|", "bitwise_xor": "^", "logical_and": "&",
                 "logical_or": "|"}
        if name in infix:
            return f"({a[0]} {infix[name]} {a[1]})"
        if name == "truediv":
            if not fl:
                raise EmitError("integer truediv")
            return self.div(a[0], a[1], dt)
        if name in ("maximum", "minimum"):
            cmp = ">" if name == "maximum" else "<"
            nan = f" | ({a[0]} != {a[0]})" if fl else ""
            return f"tl.where(({a[0]} {cmp} {a[1]}){nan}, {a[0]}, {a[1]})"
        if name == "where":
            return f"tl.where({a[0]}, {a[1]}, {a[2]})"
        if name == "pow" and fl:
            return f"libdevice.pow({a[0]}, {a[1]})"
        if name == "floordiv":
            if fl:
                return f"tl.floor({self.div(a[0], a[1], dt)})"
            q, r = f"({a[0]} // {a[1]})", f"({a[0]} % {a[1]})"
            return f"tl.where(({r} != 0) & (({a[0]} < 0) != ({a[1]} < 0)), {q} - 1, {q})"
        if name == "remainder":
            if fl:
                return f"({a[0]} - tl.floor({self.div(a[0], a[1], dt)}) * {a[1]})"
            r = f"({a[0]} % {a[1]})"
            return f"tl.where(({r} != 0) & (({r} < 0) != ({a[1]} < 0)), {r} + {a[1]}, {r})"
        if name == "fmod":
            return f"libdevice.fmod({a[0]}, {a[1]})" if fl else f"({a[0]} % {a[1]})"
        raise EmitError(f"op {name} on {dt}")

    def to_bf16(self, value: str, src: str) -> str:
        """Round to bfloat16 (nearest even) through a helper the interpreter can replace: its own
        fp32 -> bf16 conversion truncates, unlike every GPU."""
        self.helpers.add("to_bf16")
        return f"_to_bf16({value if src == 'float32' else value + '.to(tl.float32)'})"

    def div(self, a: str, b: str, dt: str) -> str:
        return f"tl.div_rn({a}, {b})" if self.strict and dt == "float32" else f"({a} / {b})"

    def load_expr(self, i: int) -> str:
        op = self.ir.ops[i]
        idx = op.attrs["index"]
        ptr = f"{op.attrs['buffer']} + {self.pad(idx, op.space)}"
        mask = self.mask_of(op.space)
        if op.attrs.get("masked"):
            mask = f"{mask} & v{op.args[0]}"
        buf_dt = self.ir.buffers[op.attrs["buffer"]].dtype
        other = op.attrs.get("other", 0.0)
        other_text = "0" if buf_dt in ("bool",) or not buf_dt.startswith("float") else repr(float(other))
        text = f"tl.load({ptr}, {mask}, other={other_text})"
        if buf_dt != op.dtype:
            text += f".to({TL_DTYPE[op.dtype]})"
        return text

    def pad(self, idx: IndexExpr, space: str) -> str:
        """The index, broadcast to the op's tile shape when it lacks a loop variable of that shape."""
        names = index_vars(idx)
        ops = index_ops(idx)
        has_x = any(n.startswith("x") for n in names) or ops
        has_r = any(n.startswith("r") for n in names) or any(self.ir.ops[j].space == "xr" for j in ops)
        text = f"({self.idx(idx)})"
        if not has_x:
            text += " + xzero"
        if space == "xr" and not has_r:
            text += " + rzero"
        return text

    # -- statements
    def emit(self) -> TritonKernelSource:
        ir = self.ir
        name = ir.name
        args = [b.name for b in ir.inputs] + [b.name for b in ir.outputs] + [s.name for s in ir.sizes]
        consts = ("XBLOCK", "RBLOCK") if self.red else ("XBLOCK",)
        body: list[str] = []
        w = body.append
        xn = " * ".join(self.idx(d) for d in ir.xdims) or "1"
        w(f"xnumel = {xn}")
        if self.red:
            rn = " * ".join(self.idx(d) for d in ir.rdims) or "1"
            w(f"rnumel = {rn}")
            w(f"xindex = tl.program_id(0){self.wide} * XBLOCK + tl.arange(0, XBLOCK){self.wide}[:, None]")
        else:
            w(f"xindex = tl.program_id(0){self.wide} * XBLOCK + tl.arange(0, XBLOCK){self.wide}")
        w("xmask = xindex < xnumel")
        w("xzero = xindex * 0")
        used = set()
        for op in ir.ops:
            if op.op in ("load", "index"):
                used |= index_vars(op.attrs["index"])
        for st in ir.stores:
            used |= index_vars(st.index)
        body += self.split_vars("x", "xindex", ir.xdims, used)
        if not self.red:
            for i in range(len(ir.ops)):
                w(f"v{i} = {self.op_expr(i)}")
            for st in ir.stores:
                w(self.store_stmt(st))
        elif self.persistent:
            w(f"rindex = tl.arange(0, RBLOCK){self.wide}[None, :]")
            w("rmask = rindex < rnumel")
            w("rzero = rindex * 0")
            body += self.split_vars("r", "rindex", ir.rdims, used)
            for i, op in enumerate(ir.ops):
                w(f"v{i} = {self.reduce_persistent(i) if op.op == 'reduce' else self.op_expr(i)}")
            for st in ir.stores:
                w(self.store_stmt(st))
        else:
            body += self.looped(used)
        src = ["import triton", "import triton.language as tl", "from triton.language.extra import libdevice",
               "", ""]
        for kind in sorted(self.combines):
            src += [_COMBINE[kind], "", _REDUCE_HELPER[kind], ""]
        if "to_bf16" in self.helpers:
            src += ["@triton.jit\ndef _to_bf16(v):\n    return v.to(tl.bfloat16)\n", ""]
        src.append("@triton.jit")
        params = ", ".join(args + [f"{c}: tl.constexpr" for c in consts])
        src.append(f"def {name}({params}):")
        src += ["    " + line for line in body]
        sig = {b.name: SIG_DTYPE[b.dtype] for b in (*ir.inputs, *ir.outputs)}
        for s in ir.sizes:
            sig[s.name] = "i64" if abs(s.hint) >= 2**31 else "i32"
        return TritonKernelSource(name, "\n".join(src) + "\n", ir, self.persistent, tuple(args), sig, consts)

    def split_vars(self, prefix: str, lin: str, dims, used: set[str]) -> list[str]:
        out = []
        n = len(dims)
        for k in range(n):
            var = f"{prefix}{k}"
            if var not in used:
                continue
            inner = " * ".join(self.idx(d) for d in dims[k + 1:])
            q = f"({lin} // ({inner}))" if inner else lin
            out.append(f"{var} = {q} % ({self.idx(dims[k])})" if k > 0 else f"{var} = {q}")
        return out

    def store_stmt(self, st) -> str:
        val = self.ir.ops[st.value]
        space = "xr" if (val.space == "xr" or any(v.startswith("r") for v in index_vars(st.index))) else "x"
        buf_dt = self.ir.buffers[st.buffer].dtype
        value = f"v{st.value}"
        if buf_dt != val.dtype:
            if buf_dt == "bool":
                value = f"({value} != 0)"
            elif buf_dt == "bfloat16" and val.dtype in FLOAT_DTYPES:
                value = self.to_bf16(value, val.dtype)
            else:
                value = f"{value}.to({TL_DTYPE[buf_dt]})"
        if self.red and space == "xr" and val.space == "x":
            value = f"({value} + tl.full([XBLOCK, RBLOCK], 0, {TL_DTYPE[buf_dt]}))"
        if st.accumulate:  # lanes may hit one element: relaxed atomics (only the sum's order varies)
            mask = self.mask_of(space) + ("" if st.mask is None else f" & v{st.mask}")
            return f"tl.atomic_add({st.buffer} + {self.pad(st.index, space)}, {value}, {mask}, sem=\"relaxed\")"
        return f"tl.store({st.buffer} + {self.pad(st.index, space)}, {value}, {self.mask_of(space)})"

    def reduce_persistent(self, i: int) -> str:
        op = self.ir.ops[i]
        kind = op.attrs["kind"]
        self.combines.add(kind)
        arg = self.ir.ops[op.args[0]]
        v = f"tl.where(xmask & rmask, v{op.args[0]}, {_identity(kind, arg.dtype)})"
        if kind in ("argmax", "argmin"):
            return f"_reduce_{kind}({v}, rindex + tl.full([XBLOCK, RBLOCK], 0, tl.int64))"
        return f"_reduce_{kind}({v})"

    def looped(self, used: set[str]) -> list[str]:
        """One r loop per reduction phase; x-space ops between loops, as soon as they can run."""
        ir = self.ir
        phase = ir.phase_of()
        out: list[str] = []
        emitted: set[int] = set()
        reds = [i for i, op in enumerate(ir.ops) if op.op == "reduce"]
        loop_of_red = {i: phase[ir.ops[i].args[0]] for i in reds}
        xr_stores = [st for st in ir.stores if ir.ops[st.value].space == "xr"
                     or any(v.startswith("r") for v in index_vars(st.index))]
        x_stores = [st for st in ir.stores if st not in xr_stores]
        last = max([*loop_of_red.values(), *(phase[st.value] for st in xr_stores)], default=0)

        def emit_x(upto_phase: int):
            for i, op in enumerate(ir.ops):
                if i not in emitted and op.space == "x" and op.op != "reduce" and phase[i] <= upto_phase:
                    out.append(f"v{i} = {self.op_expr(i)}")
                    emitted.add(i)

        for p in range(last + 1):
            emit_x(p)
            mine = [i for i in reds if loop_of_red[i] == p]
            stores = [st for st in xr_stores if phase[st.value] == p]
            if not mine and not stores:
                continue
            for i in mine:
                kind = ir.ops[i].attrs["kind"]
                self.combines.add(kind)
                adt = ir.ops[ir.ops[i].args[0]].dtype
                out.append(f"acc{i} = tl.full([XBLOCK, RBLOCK], {_identity(kind, adt)}, {TL_DTYPE[adt]})")
                if kind in ("argmax", "argmin"):
                    out.append(f"acc{i}_i = tl.full([XBLOCK, RBLOCK], 0, tl.int64)")
            out.append("for roffset in range(0, rnumel, RBLOCK):")
            loop = [f"rindex = roffset + tl.arange(0, RBLOCK){self.wide}[None, :]", "rmask = rindex < rnumel",
                    "rzero = rindex * 0"]
            loop += self.split_vars("r", "rindex", ir.rdims, used)
            needed = self._closure([ir.ops[i].args[0] for i in mine] + [st.value for st in stores]
                                   + [j for st in stores for j in index_ops(st.index)])
            for j in sorted(needed):
                if ir.ops[j].space == "xr":
                    loop.append(f"v{j} = {self.op_expr(j)}")
            for i in mine:
                kind = ir.ops[i].attrs["kind"]
                a = ir.ops[i].args[0]
                adt = ir.ops[a].dtype
                v = f"tl.where(xmask & rmask, v{a}, {_identity(kind, adt)})"
                if ir.ops[a].space == "x":
                    v = f"tl.where(xmask & rmask, v{a} + tl.full([XBLOCK, RBLOCK], 0, {TL_DTYPE[adt]}), " \
                        f"{_identity(kind, adt)})"
                if kind in ("argmax", "argmin"):
                    loop.append(f"acc{i}, acc{i}_i = _combine_{kind}(acc{i}, acc{i}_i, {v}, "
                                f"rindex + tl.full([XBLOCK, RBLOCK], 0, tl.int64))")
                else:
                    loop.append(f"acc{i} = _combine_{kind}(acc{i}, {v})")
            for st in stores:
                loop.append(self.store_stmt(st))
            out += ["    " + line for line in loop]
            for i in mine:
                kind = ir.ops[i].attrs["kind"]
                if kind in ("argmax", "argmin"):
                    out.append(f"v{i} = _reduce_{kind}(acc{i}, acc{i}_i)")
                else:
                    out.append(f"v{i} = _reduce_{kind}(acc{i})")
                emitted.add(i)
        emit_x(10**9)
        for st in x_stores:
            out.append(self.store_stmt(st))
        return out

    def _closure(self, roots) -> set[int]:
        seen: set[int] = set()
        stack = list(roots)
        while stack:
            j = stack.pop()
            if j in seen:
                continue
            seen.add(j)
            op = self.ir.ops[j]
            if op.op == "reduce":
                continue  # computed by an earlier loop
            stack += list(op.args)
            if op.op in ("load", "index"):
                stack += list(index_ops(op.attrs["index"]))
        return seen


def emit_triton(ir: KernelIR, numerics: str = "strict") -> TritonKernelSource:
    """The Triton source for ``ir``.

    >>> emit_triton(ir).source.splitlines()[-1]   # doctest: +SKIP
    """
    return TritonEmitter(ir, numerics).emit()


__all__ = ["emit_triton", "TritonKernelSource", "EmitError", "SIG_DTYPE", "TL_DTYPE", "PERSISTENT_MAX_R",
           "Bin", "Const", "Size", "Var"]
