"""HIP C: every zoo kernel and every hand-built kernel builds for gfx90a through hiprtc, with no GPU.

Loading and launching on an AMD GPU (backends/hip_c.HipKernel) is untested: no AMD GPU exists here.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess

import pytest
import torch
from zoo_kernels import FAMILIES, handmade, op_irs, unique_irs, zoo_kernels

from agnostic_rt.backends.c.build import launch_args
from agnostic_rt.backends.c.cstyle import HIP, render, render_module

hip_c = pytest.importorskip("agnostic_rt.backends.c.hip")
try:
    hip_c.rocm_version()
    pytest.importorskip("hip")
except hip_c.BuildError as e:  # pragma: no cover - no ROCm libraries on this machine
    pytest.skip(str(e), allow_module_level=True)

EM_AMDGPU = 224  # ELF e_machine of AMDGPU code objects


def _is_amdgpu_elf(code: bytes) -> bool:
    return code[:4] == b"\x7fELF" and int.from_bytes(code[18:20], "little") == EM_AMDGPU


@pytest.mark.parametrize("arch", hip_c.ARCHS)
def test_every_zoo_kernel_builds_to_a_code_object(arch):
    kernels = []
    for family in FAMILIES:
        kernels += unique_irs(zoo_kernels(family))
    sources = [render(k.ir, HIP) for k in unique_irs(kernels)]
    code = hip_c.build_code_object(render_module(sources, HIP), arch, cache=False)
    missing = [k.name for k in sources if k.name.encode() not in code]
    assert _is_amdgpu_elf(code) and not missing, f"kernels missing from the {arch} code object: {missing[:5]}"
    assert len(sources) > 100


def test_hand_built_and_every_scalar_op_build_in_both_modes():
    kernels = []
    for ir in (*handmade().values(), *op_irs().values()):
        modes = ("warp", "block") if ir.is_reduction else ("pointwise",)
        kernels += [render(ir, HIP, mode=m) for m in modes]
    code = hip_c.build_code_object(render_module(kernels, HIP), "gfx90a", cache=False)
    assert _is_amdgpu_elf(code) and all(k.name.encode() in code for k in kernels)


def test_mi300_is_refused_with_the_rocm_version_instead_of_crashing():
    # ROCm 5.2's comgr aborts the process on gfx942; the builder must say so before calling it.
    if "gfx942" in hip_c.supported_archs():
        pytest.skip("this ROCm builds gfx942")
    with pytest.raises(hip_c.BuildError, match=r"gfx942.*ROCm >= 5\.7"):
        hip_c.build_code_object(render(handmade()["cat"], HIP).source, "gfx942")


def test_a_compile_error_carries_hiprtcs_log():
    with pytest.raises(hip_c.BuildError, match="not_a_function"):
        hip_c.build_code_object('extern "C" __global__ void k() { not_a_function(); }', "gfx90a", cache=False)


def test_compile_c_needs_an_amd_target():
    from agnostic_rt.targets import get_target

    with pytest.raises(ValueError, match="AMD"):
        hip_c.compile_c(handmade()["cat"], get_target("h100"))


def test_compile_c_builds_for_an_mi250x_without_a_gpu():
    from agnostic_rt.targets import get_target

    kernel = hip_c.compile_c(handmade()["layer_norm"], get_target("mi250x"))
    assert kernel.arch == "gfx90a" and _is_amdgpu_elf(kernel.code)


def _instructions(code: bytes, tmp_path) -> int:
    """Static AMDGCN instruction count of a code object (llvm-objdump's disassembly)."""
    path = tmp_path / "k.hsaco"
    path.write_bytes(code)
    out = subprocess.run(["llvm-objdump", "-d", "--mcpu=gfx90a", str(path)], capture_output=True, text=True,
                         check=True).stdout
    return sum(1 for line in out.splitlines() if re.match(r"\s+[a-z_][a-z0-9_]*(\s|$)", line))


def test_both_index_widths_build_and_32_bits_is_shorter(tmp_path):
    """AMD GPUs have no integer divide at all; a 64-bit one expands to a long inline sequence."""
    built = {}
    for bits in (32, 64):
        kernels = []
        for ir in handmade().values():
            modes = ("warp", "block") if ir.is_reduction else ("pointwise",)
            kernels += [render(ir, HIP, mode=m, bits=bits) for m in modes]
        code = hip_c.build_code_object(render_module(kernels, HIP), "gfx90a", cache=False)
        assert _is_amdgpu_elf(code) and all(k.name.encode() in code for k in kernels)
        built[bits] = code
    if shutil.which("llvm-objdump") is None:
        pytest.skip("no llvm-objdump to count the instructions")
    assert _instructions(built[32], tmp_path) < _instructions(built[64], tmp_path)


@pytest.mark.parametrize("bits", [32, 64])
def test_hip_gets_the_sizes_in_the_kernels_width(bits):
    kernel = render(handmade()["cat"], HIP, bits=bits)
    p, q, out = torch.randn(4), torch.randn(13), torch.empty(17)
    a = launch_args(kernel, [p, q], [out], {"s0": 4, "s1": 13, "s2": 17})
    params = hip_c.kernel_params(a)
    size = ctypes.c_int32 if bits == 32 else ctypes.c_int64
    assert [type(v) for v in params] == [ctypes.c_void_p] * 3 + [size] * 3
    assert [v.value for v in params[3:]] == [4, 13, 17]
