"""The KernelIRs of the model zoo, forward and backward, for the C emitter's tests.

The project's partitioner does not form kernel groups yet, so this module groups nodes itself on top
of engineer B's public lowering (``backends.lowering.lower_group``/``is_lowerable``): walking each
aot_autograd graph in order, a lowerable node joins the current group when it reads a value of that
group and the grown group still lowers to one kernel; otherwise the group closes. That gives the
fused chains a generated target runs (softmax, layer norm, GELU + bias, their backwards) and every
single lowerable node on its own.

    for k in zoo_kernels("gpt2"):          # ZooKernel(model, graph, nodes, inputs, outputs, ir)
        render(k.ir, CUDA)
        k.reference(tensors)               # the same nodes run through ATen
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.fx as fx

from agnostic_rt.backends.lowering.kernel_ir import KernelIR
from agnostic_rt.backends.lowering.lower import Unfusable, Unsupported, is_lowerable, lower_group
from agnostic_rt.conformance.zoo import ZOO
from agnostic_rt.decomp import decompositions_for
from agnostic_rt.targets import get_target

#: The four families the issue names (the *_eager variants add hand-built attention).
FAMILIES = ("mlp", "cnn", "gpt2", "bert")


@dataclass
class ZooKernel:
    model: str
    graph: str  # "forward" / "backward" + index
    nodes: list[fx.Node]
    inputs: list[fx.Node]
    outputs: list[fx.Node]
    ir: KernelIR

    def reference(self, args: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The group's outputs computed by ATen, node by node, from input tensors ``args``."""
        env: dict[fx.Node, object] = dict(zip(self.inputs, args))

        def value(a):
            return env[a] if isinstance(a, fx.Node) else a

        for n in self.nodes:
            fargs = fx.node.map_aggregate(n.args, value)
            fkwargs = fx.node.map_aggregate(n.kwargs, value)
            env[n] = n.target(*fargs, **fkwargs)
        return [env[o] for o in self.outputs]


def _capture(model_name: str, batch: int) -> list[tuple[str, fx.GraphModule]]:
    """The forward and backward ATen graphs of one training step, decomposed as for a GPU target.

    Traced with aot_function over ``functional_call`` (parameters and buffers as explicit inputs,
    tied weights once), not through Dynamo: the same graphs aot_autograd gives the backend, in a fraction of the time.
    """
    from functorch.compile import aot_function, make_boxed_func

    entry = ZOO[model_name]
    model = entry.build()
    inputs, target = entry.example(batch=batch)
    # Buffers too: batch norm updates its running stats in place, which aot_autograd accepts only
    # on graph inputs.
    params = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    names = list(params)
    graphs: list[tuple[str, fx.GraphModule]] = []

    def record(kind):
        def compiler(gm, example_inputs):
            graphs.append((f"{kind}{len(graphs)}", gm))
            return make_boxed_func(gm.forward)
        return compiler

    def step(*args):  # the loss too: its log-softmax and NLL backward are kernels as well
        out = torch.func.functional_call(model, dict(zip(names, args[:len(names)])), args[len(names):-1])
        return entry.loss(out, args[-1])

    compiled = aot_function(step, fw_compiler=record("forward"), bw_compiler=record("backward"),
                            decompositions=decompositions_for(get_target("h100")))
    compiled(*params.values(), *inputs, target).backward()
    return graphs


def _outputs(group: list[fx.Node]) -> list[fx.Node]:
    inside = set(group)
    return [n for n in group if any(u not in inside for u in n.users)]


def _inputs(group: list[fx.Node]) -> list[fx.Node]:
    inside, seen = set(group), []
    for n in group:
        for a in n.all_input_nodes:
            if a not in inside and a not in seen:
                seen.append(a)
    return seen


def _try_lower(group: list[fx.Node], name: str) -> KernelIR | None:
    outs = _outputs(group)
    if not outs:
        return None
    try:
        return lower_group(group, _inputs(group), outs, name)
    except (Unsupported, Unfusable, NotImplementedError, KeyError, ValueError, TypeError, IndexError,
            AttributeError, StopIteration, AssertionError):
        # The lowering is young: anything it cannot handle is a group ATen would run.
        return None


def _groups(model_name: str, kind: str, gm: fx.GraphModule) -> list[ZooKernel]:
    out: list[ZooKernel] = []
    current: list[fx.Node] = []

    def close():
        if current:
            ir = _try_lower(current, f"{model_name}_{kind}_{len(out)}")
            if ir is not None:
                out.append(ZooKernel(model_name, kind, list(current), _inputs(current), _outputs(current), ir))
        current.clear()

    for node in gm.graph.nodes:
        if node.op != "call_function" or not is_lowerable(node):
            close()
            continue
        if current and any(a in current for a in node.all_input_nodes):
            if _try_lower(current + [node], "probe") is not None:
                current.append(node)
                continue
        close()
        current.append(node)
        if _try_lower(current, "probe") is None:
            current.clear()
    close()
    return out


@functools.cache
def zoo_kernels(model_name: str, batch: int = 2) -> tuple[ZooKernel, ...]:
    """Every kernel group of one training step of zoo model ``model_name`` (cached per process)."""
    kernels: list[ZooKernel] = []
    for kind, gm in _capture(model_name, batch):
        kernels += _groups(model_name, kind, gm)
    return tuple(kernels)


def unique_irs(kernels: Sequence[ZooKernel]) -> list[ZooKernel]:
    """One kernel per structure (repeated layers give the same source)."""
    seen, out = set(), []
    for k in kernels:
        key = (k.ir.fingerprint(), tuple(b.dtype for b in (*k.ir.inputs, *k.ir.outputs)))
        if key not in seen:
            seen.add(key)
            out.append(k)
    return out


# ------------------------------------------------------------------------------- hand-built kernels
# Representative KernelIRs built directly with KernelBuilder, each with the ATen computation it must
# match: the shapes the zoo does not stress (strided reads, odd sizes, NaN ties, huge rows, masks).

def _elementwise(name: str, op: str, in_dtypes: Sequence[str], out_dtype: str, n: int = 5) -> KernelIR:
    """``out[x0] = op(in0[x0], ...)`` over a 1-D size argument."""
    from agnostic_rt.backends.lowering.kernel_ir import KernelBuilder, Var

    b = KernelBuilder(name)
    vals = [b.load(b.input(f"in{i}", dt), Var("x0")) for i, dt in enumerate(in_dtypes)]
    out = b.output("out0", out_dtype)
    from agnostic_rt.backends.lowering.kernel_ir import compute_dtype
    if op == "cast":
        v = b.cast(vals[0], out_dtype)
    elif op == "where":
        v = b.where(vals[0], vals[1], vals[2], compute_dtype(out_dtype))
    elif len(vals) == 1:
        v = b.unary(op, vals[0], compute_dtype(out_dtype))
    else:
        v = b.binary(op, vals[0], vals[1], compute_dtype(out_dtype))
    b.store(out, Var("x0"), v)
    return b.build([b.size("n", n)], [])


def strided_read(rows: int, row_stride: int) -> KernelIR:
    """``out[x0] = in[x0 * stride]``: few points, possibly far apart (an index-width probe)."""
    from agnostic_rt.backends.lowering.kernel_ir import KernelBuilder, Var, imul

    b = KernelBuilder("strided")
    src, out = b.input("in0", "float32"), b.output("out0", "float32")
    n, stride = b.size("n", rows), b.size("stride", row_stride)
    b.store(out, Var("x0"), b.load(src, imul(Var("x0"), stride)))
    return b.build([n], [])


def handmade() -> dict[str, KernelIR]:
    """name -> IR; the references live in the tests (tests/backends/test_cstyle.py)."""
    from agnostic_rt.backends.lowering.kernel_ir import (
        Bin,
        Const,
        IndirectIndex,
        KernelBuilder,
        Var,
        iadd,
        imul,
    )

    irs: dict[str, KernelIR] = {}
    x0, x1, r0 = Var("x0"), Var("x1"), Var("r0")

    # Pointwise over [M, N]: in0 read transposed from an [N, M] buffer, in1 a broadcast row (half),
    # out in bfloat16: tanh(a) * b + sigmoid(a).
    b = KernelBuilder("pointwise_strided")
    m, n = b.size("m", 7), b.size("n", 13)
    a = b.load(b.input("in0", "float32"), iadd(imul(x1, m), x0))
    w = b.load(b.input("in1", "float16"), x1)
    v = b.binary("add", b.binary("mul", b.unary("tanh", a), w, "float32"), b.unary("sigmoid", a), "float32")
    b.store(b.output("out0", "bfloat16"), iadd(imul(x0, n), x1), v)
    irs["pointwise_strided"] = b.build([m, n], [])

    # Softmax over rows (half in and out) plus the row's argmax: max, then sum of exp(x - max).
    b = KernelBuilder("softmax")
    rows, cols = b.size("rows", 37), b.size("cols", 1000)
    idx = iadd(imul(x0, cols), r0)
    v = b.load(b.input("in0", "float16"), idx)
    mx = b.reduce("max", v, "float32")
    e = b.unary("exp", b.binary("sub", v, mx, "float32"))
    s = b.reduce("sum", e, "float32")
    b.store(b.output("out0", "float16"), idx, b.binary("truediv", e, s, "float32"))
    b.store(b.output("out1", "int64"), x0, b.reduce("argmax", v, "int64"))
    irs["softmax"] = b.build([rows], [cols])

    # Layer norm, two passes (mean, then variance of x - mean), bf16 in, affine, f32 out + stats.
    b = KernelBuilder("layer_norm")
    rows, cols = b.size("rows", 9), b.size("cols", 300)
    idx = iadd(imul(x0, cols), r0)
    v = b.load(b.input("in0", "bfloat16"), idx)
    gamma = b.load(b.input("in1", "float32"), r0)
    beta = b.load(b.input("in2", "float32"), r0)
    count = b._add("size", (), "float32", name=cols.name)  # the "size" leaf: no builder method emits it
    mean = b.binary("truediv", b.reduce("sum", v, "float32"), count, "float32")
    d = b.binary("sub", v, mean, "float32")
    var = b.binary("truediv", b.reduce("sum", b.binary("mul", d, d, "float32"), "float32"), count, "float32")
    rstd = b.unary("rsqrt", b.binary("add", var, b.const(1e-5, "float32"), "float32"))
    y = b.binary("add", b.binary("mul", b.binary("mul", d, rstd, "float32"), gamma, "float32"), beta, "float32")
    b.store(b.output("out0", "float32"), idx, y)
    b.store(b.output("out1", "float32"), x0, mean)
    b.store(b.output("out2", "float32"), x0, rstd)
    irs["layer_norm"] = b.build([rows], [cols])

    # Row extremes: argmin/argmax (NaN and ties), amax/amin, and int32 max/min/sum/prod per row.
    b = KernelBuilder("row_extremes")
    rows, cols = b.size("rows", 6), b.size("cols", 11)
    idx = iadd(imul(x0, cols), r0)
    f = b.load(b.input("in0", "float32"), idx)
    i = b.load(b.input("in1", "int32"), idx)
    for k, (kind, src, dt) in enumerate([("argmin", f, "int64"), ("argmax", f, "int64"), ("max", f, "float32"),
                                         ("min", f, "float32"), ("argmax", i, "int64"), ("max", i, "int32"),
                                         ("min", i, "int32"), ("sum", b.cast(i, "int64"), "int64"),
                                         ("prod", b.cast(i, "int64"), "int64")]):
        b.store(b.output(f"out{k}", dt), x0, b.reduce(kind, src, dt))
    irs["row_extremes"] = b.build([rows], [cols])

    # A long row in float64: every thread loops many times before the tree.
    b = KernelBuilder("long_row_sum")
    rows, cols = b.size("rows", 3), b.size("cols", 100003)
    v = b.load(b.input("in0", "float64"), iadd(imul(x0, cols), r0))
    b.store(b.output("out0", "float64"), x0, b.reduce("sum", v, "float64"))
    irs["long_row_sum"] = b.build([rows], [cols])

    # A 3-D reduction space: sum over dims (0, 2) of [A, B, C] per b (x0 = b; r0, r1 = a, c).
    b = KernelBuilder("sum_outer_inner")
    da, db, dc = b.size("a", 5), b.size("b", 3), b.size("c", 7)
    v = b.load(b.input("in0", "float32"), iadd(imul(iadd(imul(r0, db), x0), dc), Var("r1")))
    b.store(b.output("out0", "float32"), x0, b.reduce("sum", v, "float32"))
    irs["sum_outer_inner"] = b.build([db], [da, dc])

    # Embedding gather: out[t, d] = weight[ids[t], d], ids int64.
    b = KernelBuilder("embedding")
    ntok, dim = b.size("tokens", 10), b.size("dim", 17)
    ids = b.load(b.input("in0", "int64"), x0)
    wv = b.load(b.input("in1", "float32"), iadd(imul(IndirectIndex(ids), dim), x1))
    b.store(b.output("out0", "float32"), iadd(imul(x0, dim), x1), wv)
    irs["embedding"] = b.build([ntok, dim], [])

    # cat([p, q]) along the only dim with masked loads: q read at x0 - len(p) only where x0 >= len(p).
    b = KernelBuilder("cat")
    # nq (the second source's length) is an argument the kernel never reads: the caller passes it anyway.
    n_p, _n_q, n_out = b.size("np", 6), b.size("nq", 9), b.size("nout", 15)
    pos = b.index(x0)
    in_p = b.binary("lt", pos, b.size_value(n_p), "bool")
    in_q = b.unary("logical_not", in_p, "bool")
    vp = b.load(b.input("in0", "float32"), x0, mask=in_p)
    vq = b.load(b.input("in1", "float32"), Bin("+", x0, Bin("*", n_p, Const(-1))), mask=in_q, other=0.0)
    b.store(b.output("out0", "float32"), x0, b.where(in_p, vp, vq, "float32"))
    irs["cat"] = b.build([n_out], [])

    # Reductions of values constant over the row (a literal, a per-row load) and a per-element store
    # that needs no reduction, in a reduction kernel.
    b = KernelBuilder("row_constants")
    rows, cols = b.size("rows", 5), b.size("cols", 9)
    per_row = b.load(b.input("in0", "float32"), x0)
    count = b.reduce("sum", b.const(1.0, "float32"), "float32")
    total = b.reduce("sum", per_row, "float32")
    idx = iadd(imul(x0, cols), r0)
    b.store(b.output("out0", "float32"), idx, b.binary("mul", b.load(b.input("in1", "float32"), idx), per_row,
                                                       "float32"))
    b.store(b.output("out1", "float32"), x0, b.binary("add", count, total, "float32"))
    irs["row_constants"] = b.build([rows], [cols])
    return irs


#: Scalar-op coverage: (op, input dtypes, output dtype) -> one elementwise kernel each.
FLOAT_UNARY = ("neg", "abs", "reciprocal", "exp", "exp2", "expm1", "log", "log2", "log1p", "sqrt", "rsqrt",
               "tanh", "erf", "sigmoid", "sin", "cos", "floor", "ceil", "trunc", "round", "sign")
FLOAT_BINARY = ("add", "sub", "mul", "truediv", "floordiv", "remainder", "fmod", "pow", "maximum", "minimum")
COMPARE = ("eq", "ne", "lt", "le", "gt", "ge")
INT_BINARY = ("add", "sub", "mul", "floordiv", "remainder", "fmod", "pow", "maximum", "minimum",
              "bitwise_and", "bitwise_or", "bitwise_xor")
INT_UNARY = ("neg", "abs", "sign", "bitwise_not")


def op_cases() -> list[tuple[str, str, tuple[str, ...], str]]:
    """``(case name, op, input dtypes, output dtype)`` covering every name in SCALAR_OPS but the leaves."""
    cases = [(f"{op}_f32", op, ("float32",), "float32") for op in FLOAT_UNARY]
    cases += [(f"{op}_f64", op, ("float64",), "float64") for op in ("exp", "log1p", "erf", "round", "tanh")]
    cases += [(f"{op}_f32", op, ("float32", "float32"), "float32") for op in FLOAT_BINARY]
    cases += [(f"{op}_f32", op, ("float32", "float32"), "bool") for op in COMPARE]
    cases += [(f"{op}_i64", op, ("int64", "int64"), "int64") for op in INT_BINARY]
    cases += [(f"{op}_i32", op, ("int32", "int32"), "int32") for op in ("floordiv", "remainder", "mul")]
    cases += [(f"{op}_i64", op, ("int64",), "int64") for op in INT_UNARY]
    cases += [("add_i8", "add", ("int8", "int8"), "int8"), ("mul_u8", "mul", ("uint8", "uint8"), "uint8"),
              ("maximum_i16", "maximum", ("int16", "int16"), "int16"), ("abs_i8", "abs", ("int8",), "int8")]
    cases += [(f"{op}_i64", op, ("int64", "int64"), "bool") for op in COMPARE]
    cases += [("isnan_f32", "isnan", ("float32",), "bool"), ("isinf_f32", "isinf", ("float32",), "bool"),
              ("logical_not_b", "logical_not", ("bool",), "bool"), ("bitwise_not_b", "bitwise_not", ("bool",), "bool"),
              ("logical_and_b", "logical_and", ("bool", "bool"), "bool"),
              ("logical_or_b", "logical_or", ("bool", "bool"), "bool"),
              ("where_f32", "where", ("bool", "float32", "float32"), "float32"),
              ("cast_f32_i32", "cast", ("float32",), "int32"), ("cast_f32_f16", "cast", ("float32",), "float16"),
              ("cast_f32_bf16", "cast", ("float32",), "bfloat16"), ("cast_i64_f32", "cast", ("int64",), "float32"),
              ("cast_f32_b", "cast", ("float32",), "bool"), ("cast_f64_f32", "cast", ("float64",), "float32")]
    return cases


def op_irs() -> dict[str, KernelIR]:
    return {name: _elementwise(name, op, ins, out) for name, op, ins, out in op_cases()}
