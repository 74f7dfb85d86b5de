"""Scatter-adds as generated kernels: ``index_put(accumulate=True)`` (the embedding backward, and
``index_add``, which decomposes to it) and ``scatter_add`` become accumulating (atomic) stores.

Numerics run under the Triton interpreter and through g++ (the C emitter's host dialect) against
ATen: duplicated indices, odd sizes, broadcast values, negative indices, empty index tensors. The
binaries build for sm_80, sm_90, gfx90a and gfx942 without a GPU; they never ran on one here.
"""

from __future__ import annotations

import pytest
import torch
from kernel_harness import check, compile_fn
from torch.fx.experimental.proxy_tensor import make_fx

from agnostic_rt.backends.c import host as c_host
from agnostic_rt.backends.emitters import CLauncher
from agnostic_rt.backends.kernel_backend import KernelBackend
from agnostic_rt.backends.triton.registry import GPU_TARGETS, build_for
from agnostic_rt.config import Options
from agnostic_rt.decomp import decompositions_for
from agnostic_rt.passes.partitioner import KERNEL, partition
from agnostic_rt.runtime.program import build_program
from agnostic_rt.targets import get_target

aten = torch.ops.aten


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _embedding_backward(grad, ids):
    return aten.embedding_dense_backward(grad, ids, 53, -1, False)


def _embedding_args():
    ids = torch.randint(0, 53, (3, 7), generator=_gen(1))
    ids[0, :4] = 5  # duplicates inside one program's block and across blocks
    ids[2, -1] = 5
    return torch.randn(3, 7, 19, generator=_gen(2)), ids


def _index_put(dest, idx, values):
    return aten.index_put(dest, [idx], values, True)


def _scatter_group(c):
    groups = [g for g in c.kernel_groups if any("index_put" in op or "scatter_add" in op for op in g.ops)]
    assert len(groups) == 1, [g.ops for g in c.groups]
    return groups[0]


def _scatter_kernel(c):
    k = c.groups.index(_scatter_group(c))
    return c.launchers[k].kernel


# ------------------------------------------------------------------------------ numerics (interpreter)


def test_embedding_backward_adds_duplicated_ids_in_one_kernel():
    c = check(_embedding_backward, *_embedding_args())
    group = _scatter_group(c)
    assert "aten.full.default" in group.ops  # the zeros are the launcher's fill, not a kernel's
    ir = _scatter_kernel(c).ir
    assert [b.init for b in ir.outputs] == [0]
    assert [st.accumulate for st in ir.stores] == [True]
    assert "tl.atomic_add" in _scatter_kernel(c).source


def test_index_put_into_an_input_with_negative_indices_and_broadcast_values():
    dest = torch.randn(11, 5, generator=_gen(3))
    idx = torch.tensor([0, -1, 3, 3, -11, 10, 3])
    values = torch.randn(1, 5, generator=_gen(4))  # broadcast over the 7 index points
    c = check(_index_put, dest, idx, values)
    assert _scatter_kernel(c).ir.outputs[0].init == "in0"


def test_index_add_along_an_inner_dim_with_alpha():
    x, src = torch.randn(4, 9, 3, generator=_gen(5)), torch.randn(4, 6, 3, generator=_gen(6))
    idx = torch.tensor([8, 0, 8, 2, 8, 0])
    check(lambda a, i, s: torch.index_add(a, 1, i, s, alpha=2.5), x, idx, src)


def test_scatter_add_with_duplicates_and_a_smaller_index():
    x = torch.randn(5, 8, generator=_gen(7))
    idx = torch.randint(0, 8, (5, 6), generator=_gen(8))
    src = torch.randn(5, 7, generator=_gen(9))  # larger than the index: only its [:, :6] is read
    check(lambda a, i, s: torch.scatter_add(a, 1, i, s * 3), x, idx, src)


def test_an_empty_index_still_returns_the_destination():
    dest = torch.randn(6, 4, generator=_gen(10))
    c = check(lambda d, i, v: _index_put(d * 1, i, v), dest, torch.zeros(0, dtype=torch.long), torch.randn(0, 4))
    launcher = c.launchers[c.groups.index(_scatter_group(c))]
    assert launcher.xnumel == 0 and launcher._launch is None  # nothing launched, the copy still made


def test_the_values_producer_fuses_and_a_consumer_of_the_result_does_not():
    dest = torch.randn(10, 4, generator=_gen(11))
    idx = torch.tensor([1, 1, 7, 0, 7])
    c = check(lambda d, i, v: _index_put(d, i, torch.tanh(v) * 2).exp(), dest, idx, torch.randn(5, 4))
    group = _scatter_group(c)
    assert "aten.tanh.default" in group.ops and "aten.exp.default" not in group.ops
    assert len(c.kernel_groups) == 2


def test_a_scatter_into_a_value_the_kernel_computes_keeps_them_apart():
    dest = torch.randn(5, 4, generator=_gen(12))
    idx = torch.tensor([4, 0, 4, 1, 2])  # 5 x 4 points, as many as the destination has elements
    c = check(lambda d, i, v: _index_put(d * 2, i, v), dest, idx, torch.randn(5, 4))
    assert "aten.mul.Tensor" not in _scatter_group(c).ops


# ----------------------------------------------------------------------------------- left in ATen


def _fallback_ops(fn, *args) -> set[str]:
    tgt = get_target("h100").with_device("cpu")
    gm = make_fx(fn, decomposition_table=decompositions_for(tgt))(*args)
    return {op for g in partition(gm, tgt) if g.kind != KERNEL for op in g.ops}


def test_deterministic_algorithms_keep_atens_reproducible_scatter():
    args = _embedding_args()
    torch.use_deterministic_algorithms(True)
    try:
        assert "aten.index_put.default" in _fallback_ops(_embedding_backward, *args)
    finally:
        torch.use_deterministic_algorithms(False)
    assert "aten.index_put.default" not in _fallback_ops(_embedding_backward, *args)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_scatters_without_a_native_atomic_add_stay_in_aten(dtype):
    dest, values = torch.randn(11, 5, dtype=dtype), torch.randn(7, 5, dtype=dtype)
    assert "aten.index_put.default" in _fallback_ops(_index_put, dest, torch.tensor([0, 1, 3, 3, 2, 10, 3]), values)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_embedding_backward_accumulates_in_a_float32_buffer(dtype):
    # The decomposition itself adds in float32 and rounds once; ATen's CPU kernel adds in the half
    # type, so the two may differ by the last bit of a sum.
    grad, ids = _embedding_args()
    eps = torch.finfo(dtype).eps
    c = check(_embedding_backward, grad.to(dtype), ids, rtol=2 * eps, atol=2 * eps)
    assert _scatter_kernel(c).ir.outputs[0].dtype == "float32"
    want = _embedding_backward(grad.to(dtype).float(), ids).to(dtype)
    torch.testing.assert_close(c(grad.to(dtype), ids), want, rtol=0, atol=0)


# ------------------------------------------------------------------------------ builds and the C form


@pytest.mark.parametrize("arch", list(GPU_TARGETS))
def test_the_scatter_kernel_builds_for(arch):
    kernel = _scatter_kernel(compile_fn(_embedding_backward, *_embedding_args()))
    c = compile_fn(_embedding_backward, *_embedding_args())
    gk = c.launchers[c.groups.index(_scatter_group(c))].gk
    assert gk.kernel.name == kernel.name
    compiled = build_for(gk, arch)
    assert compiled.asm.get({"cuda": "cubin", "hip": "hsaco"}[GPU_TARGETS[arch][0]])


@pytest.mark.parametrize("dialect, arch", [("cuda", "sm_80"), ("cuda", "sm_90"), ("hip", "gfx90a")])
def test_the_c_form_adds_atomically_and_builds_for(dialect, arch):
    from agnostic_rt.backends.c.cstyle import CUDA, HIP, render

    ir = _scatter_kernel(compile_fn(_embedding_backward, *_embedding_args())).ir
    source = render(ir, CUDA if dialect == "cuda" else HIP).source
    assert "atomicAdd(&out0[" in source
    if dialect == "cuda":
        cuda_c = pytest.importorskip("agnostic_rt.backends.c.cuda")
        pytest.importorskip("cupy_backends.cuda.libs.nvrtc")
        assert cuda_c.build_cubin(source, arch, cache=False)[:4] == b"\x7fELF"
    else:  # hiprtc from ROCm 5.2 builds gfx90a only (gfx942 is refused, see test_hip_c.py)
        hip_c = pytest.importorskip("agnostic_rt.backends.c.hip")
        pytest.importorskip("hip")
        assert hip_c.build_code_object(source, arch, cache=False)


@pytest.mark.skipif(not c_host.available(), reason="needs g++ to run C kernels on the CPU")
@pytest.mark.parametrize("case", ["embedding", "index_put", "scatter_add"])
def test_the_c_kernel_matches_aten_on_the_host(case):
    if case == "embedding":
        fn, args = _embedding_backward, list(_embedding_args())
    elif case == "index_put":
        fn = _index_put
        args = [torch.randn(11, 5, generator=_gen(3)), torch.tensor([0, -1, 3, 3, -11, 10, 3]),
                torch.randn(7, 1, generator=_gen(4))]
    else:
        fn = lambda a, i, s: torch.scatter_add(a, 0, i, s)  # noqa: E731
        args = [torch.randn(4, 6, generator=_gen(7)), torch.randint(0, 4, (9, 6), generator=_gen(8)),
                torch.randn(9, 6, generator=_gen(9))]
    tgt = get_target("h100").with_device("cpu")
    gm = make_fx(fn, decomposition_table=decompositions_for(tgt))(*args)
    groups = partition(gm, tgt)
    backend = KernelBackend(tgt, Options.from_user({"target": "h100", "interpret": True, "emitter": "c"}))
    launchers = {k: backend.compile(g) for k, g in enumerate(groups) if g.kind == KERNEL}
    assert all(isinstance(ln, CLauncher) for ln in launchers.values())
    got = build_program(gm, groups, launchers)(*args)
    got = got[0] if isinstance(got, (tuple, list)) else got
    torch.testing.assert_close(got, fn(*args))
    assert not any(ln._failed for ln in launchers.values())
