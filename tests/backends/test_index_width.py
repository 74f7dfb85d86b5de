"""32-bit indexing: chosen exactly when every index a kernel computes fits, and what it buys on a GPU.

A GPU has no 64-bit integer divide; a kernel that splits its linear index (transposes, broadcasts,
column reductions) spent most of its instructions there. The PTX checks build for sm_90 (no GPU
needed); the numerics run both widths under the interpreter.
"""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from kernel_harness import check, compile_fn
from zoo_kernels import strided_read

from agnostic_rt.backends.lowering.kernel_ir import (
    INT32_MAX,
    Const,
    IndirectIndex,
    KernelBuilder,
    Var,
    iadd,
    ifloordiv,
    imul,
    index_fits_int32,
)
from agnostic_rt.backends.triton import emit as triton_emit
from agnostic_rt.backends.triton.registry import build_for


def test_small_kernels_index_in_32_bits():
    assert index_fits_int32(strided_read(1000, 4096))


def test_a_far_offset_needs_64_bits_even_when_the_kernel_has_few_points():
    assert not index_fits_int32(strided_read(9, 2**28))  # 8 * 2**28 > 2**31 - 1
    assert index_fits_int32(strided_read(7, 2**28))


def test_more_points_than_int32_needs_64_bits():
    b = KernelBuilder("k")
    src, out = b.input("in0", "float32"), b.output("out0", "float32")
    n = b.size("n", INT32_MAX)
    b.store(out, Var("x0"), b.load(src, Var("x0")))
    assert not index_fits_int32(b.build([n], []))


def test_a_quotient_is_bounded_by_its_divisor():
    """``(x0 // 4096) * 2**18`` over 2**24 points reaches 2**30: 32 bits, although ``x0 * 2**18`` would not fit."""
    b = KernelBuilder("k")
    src, out = b.input("in0", "float32"), b.output("out0", "float32")
    n = b.size("n", 2**24)
    b.store(out, Var("x0"), b.load(src, imul(ifloordiv(Var("x0"), Const(4096)), Const(2**18))))
    assert index_fits_int32(b.build([n], []))


def test_a_gathered_index_is_64_bit_and_not_bounded():
    """Gathers cast their index to int64, so ``row * width`` is computed wide whatever its value;
    the other terms are still bounded."""
    b = KernelBuilder("k")
    w, ids, out = b.input("in0", "float32"), b.input("in1", "int64"), b.output("out0", "float32")
    n, width = b.size("n", 64), b.size("w", 768)
    row = b.cast(b.load(ids, Var("x0")), "int64")
    b.store(out, iadd(imul(Var("x0"), width), Var("x1")),
            b.load(w, iadd(imul(IndirectIndex(row), width), Var("x1"))))
    ir = b.build([n, width], [])
    assert index_fits_int32(ir)
    src = triton_emit.emit_triton(ir).source
    assert ".to(tl.int64)" not in src.split("xmask")[0]  # the tile index is 32-bit


def _transpose_broadcast():
    return compile_fn(lambda a, b: a.t() * b, torch.randn(70, 33), torch.randn(33, 1))


def _divides_in_64_bits(ptx: str) -> int:
    return len(re.findall(r"\b(div|rem)\.[su]64\b", ptx))


def test_32_bit_kernels_have_no_64_bit_divides_on_sm90(monkeypatch):
    """The point of the change, in the built PTX: the index split costs 32-bit arithmetic only."""
    (narrow,) = [ln.gk for ln in _transpose_broadcast().launchers.values()]
    assert "tl.int64" not in narrow.source.split("xmask")[0]
    ptx32 = build_for(narrow, "sm_90").asm["ptx"]
    monkeypatch.setattr(triton_emit, "FORCE_INDEX_BITS", 64)
    (wide,) = [ln.gk for ln in _transpose_broadcast().launchers.values()]
    ptx64 = build_for(wide, "sm_90").asm["ptx"]
    assert _divides_in_64_bits(ptx32) == 0
    assert _divides_in_64_bits(ptx64) > 0  # the check can tell the two apart


WIDE_CASES = {
    "transpose_broadcast": (lambda a, b: a.t() * b, (70, 33), (33, 1)),
    "persistent_softmax": (lambda a: torch.softmax(a.t(), -1), (40, 30)),
    "looped_sum": (lambda a: (a * a).sum(-1), (3, triton_emit.PERSISTENT_MAX_R + 7)),
    "looped_argmax": (lambda a: torch.argmax(a + 1, 1), (2, triton_emit.PERSISTENT_MAX_R + 5)),
    "column_sum": (lambda a: a.sum(0), (37, 50)),
}


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("case", sorted(WIDE_CASES))
def test_both_widths_match_aten(case, bits, monkeypatch):
    monkeypatch.setattr(triton_emit, "FORCE_INDEX_BITS", bits)
    fn, *shapes = WIDE_CASES[case]
    g = torch.Generator().manual_seed(0)
    c = check(fn, *(torch.randn(s, generator=g) for s in shapes))
    for ln in c.launchers.values():
        assert ("tl.program_id(0).to(tl.int64)" in ln.gk.source) == (bits == 64)


@pytest.mark.parametrize("bits", [32, 64])
def test_both_widths_gather_rows(bits, monkeypatch):
    monkeypatch.setattr(triton_emit, "FORCE_INDEX_BITS", bits)
    g = torch.Generator().manual_seed(0)
    check(lambda w, i: F.embedding(i, w) * 2, torch.randn(50, 24, generator=g), torch.randint(0, 50, (3, 7)))

