"""CUDA C: every zoo kernel and every hand-built kernel builds to a cubin through NVRTC, with no GPU.

On a machine with an NVIDIA GPU (marker ``gpu``) the launch path runs and is compared with ATen.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from zoo_kernels import FAMILIES, handmade, op_irs, unique_irs, zoo_kernels

from agnostic_rt.backends.c.build import launch_args
from agnostic_rt.backends.c.cstyle import CUDA, render, render_module

cuda_c = pytest.importorskip("agnostic_rt.backends.c.cuda")
try:
    cuda_c.nvrtc_version()
except Exception as e:  # pragma: no cover - the cuda extra is not installed
    pytest.skip(f"NVRTC unavailable: {e}", allow_module_level=True)


def _zoo_sources() -> list:
    """The unique kernels of all four families, rendered once (repeated layers share a source)."""
    kernels = []
    for family in FAMILIES:
        kernels += unique_irs(zoo_kernels(family))
    return [render(k.ir, CUDA) for k in unique_irs(kernels)]


@pytest.fixture(scope="module")
def zoo_sources():
    return _zoo_sources()


@pytest.mark.parametrize("arch", cuda_c.ARCHS)
def test_every_zoo_kernel_builds_to_a_cubin(zoo_sources, arch):
    # One NVRTC run for all of them: a failure's log names the kernel's line.
    cubin = cuda_c.build_cubin(render_module(zoo_sources, CUDA), arch, cache=False)
    missing = [k.name for k in zoo_sources if k.name.encode() not in cubin]
    assert cubin[:4] == b"\x7fELF" and not missing, f"kernels missing from the {arch} cubin: {missing[:5]}"
    assert len(zoo_sources) > 100  # the four families give ~200 distinct kernels; fewer means a capture broke


def test_hand_built_and_every_scalar_op_build_in_both_modes_and_numerics():
    kernels = []
    for ir in (*handmade().values(), *op_irs().values()):
        modes = ("warp", "block") if ir.is_reduction else ("pointwise",)
        kernels += [render(ir, CUDA, mode=m) for m in modes]
    fast = [render(ir, CUDA, numerics="fast") for ir in handmade().values()]
    cubin = cuda_c.build_cubin(render_module(kernels, CUDA), "sm_90", cache=False)
    assert all(k.name.encode() in cubin for k in kernels)
    assert cuda_c.build_cubin(render_module(fast, CUDA), "sm_80", numerics="fast", cache=False)[:4] == b"\x7fELF"


def test_a_second_build_comes_from_the_disk_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AGNOSTIC_RT_CACHE_DIR", str(tmp_path))
    source = render(handmade()["softmax"], CUDA).source
    first = cuda_c.build_cubin(source, "sm_90")
    cached = list((tmp_path / "kernels" / "cuda").glob("*.sm_90.cubin"))
    assert len(cached) == 1 and cached[0].read_bytes() == first
    cached[0].write_bytes(b"marker")  # proves the next call reads the file instead of compiling
    assert cuda_c.build_cubin(source, "sm_90") == b"marker"
    assert cuda_c.build_cubin(source, "sm_80") != b"marker"  # another arch is another key


def test_a_compile_error_carries_nvrtcs_log():
    with pytest.raises(cuda_c.BuildError, match="undefined"):
        cuda_c.build_cubin('extern "C" __global__ void k() { not_a_function(); }', "sm_90", cache=False)


def test_compile_c_refuses_an_amd_target():
    from agnostic_rt.targets import get_target

    with pytest.raises(ValueError, match="NVIDIA"):
        cuda_c.compile_c(handmade()["cat"], get_target("mi300x"))


def test_compile_c_builds_for_the_targets_arch_without_a_gpu():
    from agnostic_rt.targets import get_target

    kernel = cuda_c.compile_c(handmade()["softmax"], get_target("h100"))
    assert kernel.arch == "sm_90" and kernel.cubin[:4] == b"\x7fELF"


def _divides_in_64_bits(ptx: str) -> int:
    return len(re.findall(r"\b(div|rem)\.[su]64\b", ptx))


def _hand_kernels(bits: int) -> list:
    out = []
    for ir in handmade().values():
        out += [render(ir, CUDA, mode=m, bits=bits) for m in (("warp", "block") if ir.is_reduction else ("pointwise",))]
    return out


def test_32_bit_kernels_have_no_64_bit_divides_in_their_ptx():
    """The point of 32-bit indexing, in NVRTC's PTX for sm_90: a GPU has no 64-bit integer divide
    (each div/rem.s64 is a ~70-instruction call), and the index split of a transpose + broadcast, a
    column reduction or a row argmax costs 32-bit arithmetic only. Forcing 64 bits brings them back."""
    narrow, wide = _hand_kernels(32), _hand_kernels(64)
    assert all(render(k.ir, CUDA, mode=k.mode).index_bits == 32 for k in narrow)  # the emitter's own choice
    ptx32 = cuda_c.build_ptx(render_module(narrow, CUDA), "sm_90")
    ptx64 = cuda_c.build_ptx(render_module(wide, CUDA), "sm_90")
    assert _divides_in_64_bits(ptx32) == 0
    assert _divides_in_64_bits(ptx64) > 0  # the check can tell the two apart
    for bits, kernels in ((32, narrow), (64, wide)):
        cubin = cuda_c.build_cubin(render_module(kernels, CUDA), "sm_80", cache=False)
        assert all(k.name.encode() in cubin for k in kernels), bits


@pytest.mark.parametrize("bits", [32, 64])
def test_cupy_gets_the_sizes_in_the_kernels_width(bits):
    kernel = render(handmade()["softmax"], CUDA, bits=bits)
    x, out, am = torch.randn(3, 5).half(), torch.empty(3, 5).half(), torch.empty(3, dtype=torch.long)
    a = launch_args(kernel, [x], [out, am], {"s0": 3, "s1": 5})
    params = cuda_c.kernel_params(a)
    assert [type(p) for p in params] == [np.uint64] * 3 + [np.int32 if bits == 32 else np.int64] * 2
    assert [int(p) for p in params[3:]] == [3, 5]
    assert f"const {'int' if bits == 32 else 'long long'} s0" in kernel.body


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or torch.version.cuda is None, reason="needs an NVIDIA GPU")
@pytest.mark.parametrize("name", ["softmax", "layer_norm", "embedding", "long_row_sum"])
def test_c_kernel_matches_aten_on_an_nvidia_gpu(name):
    ir = handmade()[name]
    kernel = cuda_c.compile_c(ir)  # the current device's arch
    cases = {
        "softmax": lambda: ([torch.randn(37, 1000, device="cuda").half()],
                            [torch.empty(37, 1000, device="cuda").half(), torch.empty(37, dtype=torch.long, device="cuda")],
                            {"s0": 37, "s1": 1000}),
        "layer_norm": lambda: ([torch.randn(5, 77, device="cuda").bfloat16(), torch.randn(77, device="cuda"),
                                torch.randn(77, device="cuda")],
                               [torch.empty(5, 77, device="cuda"), torch.empty(5, device="cuda"),
                                torch.empty(5, device="cuda")], {"s0": 5, "s1": 77}),
        "embedding": lambda: ([torch.randint(0, 50, (23,), device="cuda"), torch.randn(50, 17, device="cuda")],
                              [torch.empty(23, 17, device="cuda")], {"s0": 23, "s1": 17}),
        "long_row_sum": lambda: ([torch.randn(3, 100003, dtype=torch.float64, device="cuda")],
                                 [torch.empty(3, dtype=torch.float64, device="cuda")], {"s0": 3, "s1": 100003}),
    }
    inputs, outputs, sizes = cases[name]()
    kernel(inputs, outputs, sizes)
    torch.cuda.synchronize()
    x = inputs[0]
    if name == "softmax":
        torch.testing.assert_close(outputs[0], torch.softmax(x.float(), -1).half())
        assert torch.equal(outputs[1], x.float().argmax(-1))
    elif name == "layer_norm":
        ref = torch.ops.aten.native_layer_norm(x.float(), [77], inputs[1], inputs[2], 1e-5)
        torch.testing.assert_close(outputs[0], ref[0])
        torch.testing.assert_close(outputs[1], ref[1].flatten())
        torch.testing.assert_close(outputs[2], ref[2].flatten())
    elif name == "embedding":
        torch.testing.assert_close(outputs[0], torch.nn.functional.embedding(x, inputs[1]))
    else:
        torch.testing.assert_close(outputs[0], x.sum(1))
