"""KernelIR invariants and the index-expression helpers every emitter relies on."""

from __future__ import annotations

import itertools

import pytest

from agnostic_rt.backends.lowering.kernel_ir import (
    SCALAR_OPS,
    Const,
    IndirectIndex,
    KernelBuilder,
    Size,
    Var,
    delinearize,
    iadd,
    ifloordiv,
    imod,
    imul,
    linearize,
    render_index,
)


def _softmax_ir(rows: int, cols: int):
    b = KernelBuilder("softmax")
    x = b.input("in0", "float16")
    n = b.size("cols", cols)
    idx = iadd(imul(Var("x0"), n), Var("r0"))
    v = b.load(x, idx)
    m = b.reduce("max", v, "float32")
    e = b.unary("exp", b.binary("sub", v, m, "float32"))
    s = b.reduce("sum", e, "float32")
    b.store(b.output("out0", "float16"), idx, b.binary("truediv", e, s, "float32"))
    return b.build([b.size("rows", rows)], [n])


def test_loads_of_half_types_compute_in_fp32():
    ir = _softmax_ir(4, 100)
    assert ir.ops[0].op == "load" and ir.ops[0].dtype == "float32"
    assert ir.buffers["in0"].dtype == "float16"


def test_spaces_and_phases_follow_the_reductions():
    ir = _softmax_ir(4, 100)
    assert [op.space for op in ir.ops] == ["xr", "x", "xr", "xr", "x", "xr"]
    # exp(v - max) needs one reduction; the final division needs two.
    assert ir.phase_of() == [0, 1, 1, 1, 2, 2]


def test_sizes_are_arguments_so_the_structure_does_not_depend_on_them():
    assert _softmax_ir(4, 100).fingerprint() == _softmax_ir(64, 3000).fingerprint()
    assert [s.hint for s in _softmax_ir(4, 100).sizes] == [100, 4]


def test_sizes_of_zero_and_one_fold_to_constants():
    b = KernelBuilder("k")
    assert b.size("a", 1) == Const(1) and b.size("b", 0) == Const(0)
    assert b.size("c", 7) == Size("s0") and b.size("c", 7) == Size("s0")


def test_common_subexpressions_are_shared():
    b = KernelBuilder("k")
    x = b.input("in0", "float32")
    v1 = b.unary("exp", b.load(x, Var("x0")))
    v2 = b.unary("exp", b.load(x, Var("x0")))
    assert v1 == v2 and len(b.ops) == 2


@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4), (4, 1, 6)])
def test_delinearize_inverts_linearize(shape):
    sizes = [Const(s) for s in shape]
    for point in itertools.product(*(range(s) for s in shape)):
        lin = linearize([Const(p) for p in point], sizes)
        assert [e.value for e in delinearize(lin, sizes)] == list(point)


def test_verify_rejects_an_op_outside_the_vocabulary():
    ir = _softmax_ir(4, 100)
    ir.ops[2].op = "fancy_exp"
    with pytest.raises(ValueError, match="SCALAR_OPS"):
        ir.verify()


def test_verify_rejects_a_per_row_value_stored_at_r_indices():
    b = KernelBuilder("k")
    x = b.input("in0", "float32")
    v = b.load(x, iadd(imul(Var("x0"), b.size("n", 10)), Var("r0")))
    s = b.reduce("sum", v, "float32")
    b.store(b.output("out0", "float32"), Var("r0"), s)
    with pytest.raises(ValueError, match="per-row value"):
        b.build([b.size("m", 3)], [b.size("n", 10)])


def test_verify_rejects_an_output_without_a_store():
    b = KernelBuilder("k")
    b.input("in0", "float32")
    b.output("out0", "float32")
    with pytest.raises(ValueError, match="exactly one store"):
        b.build([b.size("m", 3)], [])


def test_every_vocabulary_entry_has_an_arity_and_a_meaning():
    assert all(isinstance(a, int) and meaning for a, meaning in SCALAR_OPS.values())


def test_render_prints_index_expressions_with_sizes_by_name():
    text = _softmax_ir(4, 100).render()
    assert "((x0 * s0) + r0)" in text and "reduce(v0)" in text
    assert render_index(iadd(Var("x0"), Const(0))) == "x0"


def test_a_zero_extent_divides_nothing():
    # Only a space of 0 elements has a 0 extent: no point is evaluated, so folding must not raise
    # (the same convention as eval_size).
    assert imod(Const(5), Const(0)) == Const(0) and ifloordiv(Const(5), Const(0)) == Const(0)
    assert delinearize(Const(7), [Const(3), Const(0)]) == [Const(0), Const(0)]


def _scatter_builder(init, dtype: str = "float32"):
    b = KernelBuilder("scatter")
    ids, vals = b.input("in0", "int64"), b.input("in1", dtype)
    pos = b.load(ids, Var("x0"))
    out = b.output("out0", dtype, init=init)
    b.store(out, imul(IndirectIndex(pos), Size("s0")), b.load(vals, Var("x0")), accumulate=True,
            mask=b.binary("ge", pos, b.const(0, "int64"), "bool"))
    return b


def test_an_accumulating_store_renders_as_an_add_into_an_initialised_output():
    b = _scatter_builder(0.0)
    b.size("s0", 7)
    text = b.build([b.size("n", 9)], []).render()
    assert "out0: float32 = 0.0 before" in text and "store out0[(v0 * s0)] += v1 where v3" in text


@pytest.mark.parametrize("init, dtype", [(None, "float32"), ("in5", "float32"), (0.0, "float16")])
def test_verify_rejects_an_accumulating_store_without_a_valid_init_or_atomic_dtype(init, dtype):
    b = _scatter_builder(init, dtype)
    b.size("s0", 7)
    with pytest.raises(ValueError, match="init|accumulat"):
        b.build([b.size("n", 9)], [])
