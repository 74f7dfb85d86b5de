"""options.emitter: which code a fused group becomes (Triton, C, or the faster of both on a GPU).

Without a GPU: the option validates; emitter="c" in interpret mode runs the C kernels on CPU tensors
through g++ (backends/c/host.py) and matches eager on the MLP; for a GPU target the C binary is built
(NVRTC for sm_90, hiprtc for gfx90a) and a part the C toolchain refuses (gfx942) gets Triton.
The launch on a real GPU is the ``gpu``-marked test at the end.
"""

from __future__ import annotations

import logging
import os

import pytest
import torch
import torch.nn.functional as F
from torch.fx.experimental.proxy_tensor import make_fx

from agnostic_rt.backends.c import host as c_host
from agnostic_rt.backends.emitters import CLauncher, EmitterAutotuner
from agnostic_rt.backends.kernel_backend import KernelBackend
from agnostic_rt.backends.triton.launch import KernelLauncher
from agnostic_rt.config import EMITTERS, Options
from agnostic_rt.decomp import decompositions_for
from agnostic_rt.passes.partitioner import KERNEL, partition
from agnostic_rt.runtime.program import build_program
from agnostic_rt.targets import get_target


def _gelu_layer_norm(x, b, w, beta):
    return F.layer_norm(F.gelu(x + b), (x.shape[-1],), w, beta).relu()


def _args():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(6, 40, generator=g), torch.randn(40, generator=g), torch.randn(40, generator=g),
            torch.randn(40, generator=g)]


def _launchers(fn, args, target, **options):
    """``fn``'s graph for ``target``, partitioned; (program, the launcher of every kernel group)."""
    interpret = options.get("interpret", False)
    tgt = get_target(target).with_device("cpu") if interpret else get_target(target)
    gm = make_fx(fn, decomposition_table=decompositions_for(tgt))(*args)
    groups = partition(gm, tgt)
    backend = KernelBackend(tgt, Options.from_user({"target": target, **options}))
    launchers = {k: backend.compile(g) for k, g in enumerate(groups) if g.kind == KERNEL}
    assert launchers and all(ln is not None for ln in launchers.values())
    return build_program(gm, groups, launchers), list(launchers.values())


# ------------------------------------------------------------------------------------------ the option


def test_emitter_defaults_to_triton():
    assert Options().emitter == "triton" and Options.from_user({}).emitter == "triton"


@pytest.mark.parametrize("value", EMITTERS)
def test_every_listed_emitter_is_accepted(value):
    assert Options.from_user({"emitter": value}).emitter == value


def test_an_unknown_emitter_is_rejected_with_the_valid_values():
    with pytest.raises(ValueError, match="unknown emitter 'cuda'; expected one of: triton, c, autotune"):
        Options.from_user({"emitter": "cuda"})


def test_the_emitter_can_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("AGNOSTIC_RT_EMITTER", "c")
    assert Options.from_user({}).emitter == "c"
    assert Options.from_user({"emitter": "triton"}).emitter == "triton"  # options win over the environment


# ----------------------------------------------------------------------------- interpret mode, no GPU


@pytest.mark.skipif(not c_host.available(), reason="needs g++ to run C kernels on the CPU")
def test_c_emitter_in_interpret_mode_runs_c_kernels_that_match_eager():
    args = _args()
    program, launchers = _launchers(_gelu_layer_norm, args, "h100", interpret=True, emitter="c")
    assert all(isinstance(ln, CLauncher) for ln in launchers)
    got = program(*args)
    torch.testing.assert_close(got[0] if isinstance(got, (tuple, list)) else got, _gelu_layer_norm(*args),
                               rtol=1e-5, atol=1e-5)
    assert not any(ln._failed for ln in launchers)


@pytest.mark.skipif(not c_host.available(), reason="needs g++ to run C kernels on the CPU")
def test_mlp_training_step_with_c_kernels_passes_the_fp64_rule(tmp_path):
    from agnostic_rt.conformance.models import check_model
    from agnostic_rt.conformance.zoo import ZOO

    options = {"target": "h100", "interpret": True, "emitter": "c", "debug_dir": str(tmp_path)}
    check = check_model(ZOO["mlp"], training=True, options=options, batch=2)
    assert check.passed, check.worst()
    dumped = [f.suffix for f in tmp_path.rglob("kernels/*")]
    assert ".cu" in dumped and ".py" not in dumped  # every group ran as C, none as Triton


@pytest.mark.skipif(not c_host.available(), reason="needs g++ to run C kernels on the CPU")
def test_c_launcher_runs_an_input_no_longer_broadcast_through_aten(caplog):
    # The kernel reads input 0 as broadcast along dim 1 (stride 0); a call whose values vary there
    # cannot be restrided into that layout (copy_ raised) and runs that call in ATen.
    caplog.set_level(logging.DEBUG, logger="agnostic_rt.emitters")
    fn = lambda a, b: torch.exp(a) * b  # noqa: E731
    program, launchers = _launchers(fn, [torch.randn(6, 1).expand(6, 9), torch.randn(6, 9)], "h100",
                                    interpret=True, emitter="c")
    assert all(isinstance(ln, CLauncher) for ln in launchers)
    for a in (torch.randn(6, 9), torch.randn(1, 1).expand(6, 9)):  # ATen, then the C kernel
        b = torch.randn(6, 9)
        got = program(a, b)
        torch.testing.assert_close(got[0] if isinstance(got, (tuple, list)) else got, fn(a, b))
    assert len([r for r in caplog.records if "runs through ATen" in r.getMessage()]) == 1
    assert all(ln._launched and not ln._failed for ln in launchers)


def test_c_emitter_without_a_c_compiler_falls_back_to_triton(monkeypatch, caplog):
    monkeypatch.setenv("PATH", os.devnull)  # no g++ on the PATH
    caplog.set_level(logging.DEBUG, logger="agnostic_rt.triton")
    args = _args()
    program, launchers = _launchers(_gelu_layer_norm, args, "h100", interpret=True, emitter="c")
    assert all(isinstance(ln, KernelLauncher) for ln in launchers)
    assert any("emitted as Triton" in r.getMessage() for r in caplog.records)
    got = program(*args)
    torch.testing.assert_close(got[0] if isinstance(got, (tuple, list)) else got, _gelu_layer_norm(*args),
                               rtol=1e-5, atol=1e-5)


def test_autotune_without_a_gpu_runs_triton():
    _, launchers = _launchers(_gelu_layer_norm, _args(), "h100", interpret=True, emitter="autotune")
    assert all(isinstance(ln, KernelLauncher) for ln in launchers)


# ------------------------------------------------------------------ GPU targets: built here, run there


def test_c_emitter_for_an_h100_builds_a_cubin_without_a_gpu():
    pytest.importorskip("cupy_backends.cuda.libs.nvrtc")
    _, launchers = _launchers(_gelu_layer_norm, _args(), "h100", emitter="c")
    assert all(isinstance(ln, CLauncher) for ln in launchers)
    assert all(ln.kernel.arch == "sm_90" and ln.kernel.cubin[:4] == b"\x7fELF" for ln in launchers)


def test_c_emitter_for_an_mi250x_builds_a_gfx90a_code_object_without_a_gpu():
    pytest.importorskip("hip")
    from agnostic_rt.backends.c import hip as hip_c

    try:
        hip_c.ensure_hiprtc()
    except hip_c.BuildError as e:
        pytest.skip(str(e))
    _, launchers = _launchers(_gelu_layer_norm, _args(), "mi250x", emitter="c")
    assert all(isinstance(ln, CLauncher) and ln.kernel.arch == "gfx90a" for ln in launchers)


def test_c_emitter_for_a_part_the_c_toolchain_refuses_falls_back_to_triton(caplog):
    # ROCm 5.2's hiprtc cannot build gfx942 (MI300X): the builder refuses it and the group is emitted
    # as Triton instead (with hiprtc >= 5.7 it would be C).
    hip_c = pytest.importorskip("agnostic_rt.backends.c.hip")
    try:
        if "gfx942" in hip_c.supported_archs():
            pytest.skip("this hiprtc builds gfx942")
    except Exception:
        pass  # no hiprtc at all: a refusal too
    caplog.set_level(logging.DEBUG, logger="agnostic_rt.triton")
    _, launchers = _launchers(_gelu_layer_norm, _args(), "mi300x", emitter="c")
    assert all(isinstance(ln, KernelLauncher) for ln in launchers)
    assert any("emitted as Triton" in r.getMessage() for r in caplog.records)


def test_autotune_for_a_gpu_target_offers_both_candidates():
    pytest.importorskip("cupy_backends.cuda.libs.nvrtc")
    _, launchers = _launchers(_gelu_layer_norm, _args(), "h100", emitter="autotune")
    assert all(isinstance(ln, EmitterAutotuner) and list(ln.candidates) == ["triton", "c"] for ln in launchers)


# --------------------------------------------------------------------------------------- on a GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA or ROCm GPU")
@pytest.mark.parametrize("emitter", ["c", "autotune"])
def test_mlp_training_step_on_a_gpu_passes_the_fp64_rule(emitter, tmp_path, monkeypatch):
    from agnostic_rt.conformance.models import check_model
    from agnostic_rt.conformance.zoo import ZOO

    monkeypatch.setenv("AGNOSTIC_RT_CACHE_DIR", str(tmp_path))  # a cold emitter-choice cache
    check = check_model(ZOO["mlp"], training=True, options={"target": "cuda", "emitter": emitter},
                        batch=64, device="cuda")
    assert check.passed, check.worst()
    if emitter == "autotune":
        assert list((tmp_path / "autotune").glob("emitter-*.json")), "no emitter choice was timed"
