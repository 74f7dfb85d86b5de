"""Migration: in place with object identity, dtype policy, hand-off to an unreachable vendor, and
bitwise continuity through a checkpoint into a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import agnostic_rt
from agnostic_rt.targets import KNOWN_TARGETS
from agnostic_rt.training.devices import Device
from agnostic_rt.training.migrate import EXIT_HANDOFF, native_dtype

SCRIPTS = Path(__file__).parent / "scripts"
UNREACHABLE = "nvidia" if torch.version.hip else "rocm"


def small_state():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    return agnostic_rt.TrainingState(model=model, optimizer=opt, step=1)


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPTS / "train_continuity.py"), *args],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_handoff_and_resume_in_a_fresh_process_is_bitwise_continuous(tmp_path, compiled):
    flag = ["--compile"] if compiled else []
    uri = str(tmp_path / "ck")
    whole = run_script("--uri", str(tmp_path / "unused"), "--until", "20", "--out", str(tmp_path / "a.json"), *flag)
    assert whole.returncode == 0, whole.stderr[-3000:]
    first = run_script("--uri", uri, "--until", "20", "--handoff-at", "10", "--out", str(tmp_path / "b.json"), *flag)
    assert first.returncode == EXIT_HANDOFF, first.stderr[-3000:]
    second = run_script("--uri", uri, "--until", "20", "--resume", "--out", str(tmp_path / "c.json"), *flag)
    assert second.returncode == 0, second.stderr[-3000:]
    a, b, c = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "abc")
    assert c["resumed_from"] == 10
    assert b["losses"] + c["losses"] == a["losses"]
    assert c["digest"] == a["digest"]


def test_migrate_to_unreachable_vendor_commits_a_checkpoint_and_exits_with_handoff_code(tmp_path):
    state = small_state()
    with pytest.raises(SystemExit) as exit_info:
        agnostic_rt.migrate(state, to=UNREACHABLE, uri=tmp_path)
    assert exit_info.value.code == EXIT_HANDOFF
    note = json.loads((tmp_path / "HANDOFF.json").read_text())
    assert note["to"] == UNREACHABLE and note["step"] == 1 and note["exit_code"] == EXIT_HANDOFF
    assert [c.step for c in agnostic_rt.list_checkpoints(tmp_path)] == [1]


def test_migrate_keeps_parameter_optimizer_and_state_identity():
    state = small_state()
    params = list(state.model.parameters())
    opt_state = state.optimizer.state
    out = agnostic_rt.migrate(state, to="cpu")
    assert out is state
    assert all(a is b for a, b in zip(params, state.model.parameters()))
    assert state.optimizer.state is opt_state and set(opt_state) == set(params)
    state.model(torch.randn(2, 4)).sum().backward()
    state.optimizer.step()  # the user's optimizer still drives the user's parameters


def test_migrate_accepts_a_plain_dict():
    s = small_state()
    d = {"model": s.model, "optimizer": s.optimizer, "step": 1}
    assert agnostic_rt.migrate(d, to="cpu") is d


def test_migrate_rejects_an_unknown_device_naming_valid_ones():
    with pytest.raises(ValueError, match="expected one of: cpu, cuda, cuda:N, nvidia, rocm"):
        agnostic_rt.migrate(small_state(), to="tpu")


def test_migrate_validates_before_moving_anything():
    s = small_state()
    stray = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(agnostic_rt.StateError, match="belong to no model"):
        agnostic_rt.migrate({"model": s.model, "optimizer": stray}, to=UNREACHABLE)


def test_fp8_formats_follow_the_target_vendor():
    mi300 = Device("amd", 0, "MI300X", "gfx942", 0, KNOWN_TARGETS["mi300x"])
    h100 = Device("nvidia", 0, "H100", "sm_90", 0, KNOWN_TARGETS["h100"])
    assert native_dtype(torch.float8_e4m3fn, mi300) == torch.float8_e4m3fnuz
    assert native_dtype(torch.float8_e4m3fnuz, h100) == torch.float8_e4m3fn
    assert native_dtype(torch.float8_e5m2, mi300) == torch.float8_e5m2fnuz
    assert native_dtype(torch.bfloat16, mi300) == torch.bfloat16


def test_fp8_conversion_saturates_to_the_narrower_range():
    from agnostic_rt.training.migrate import _convert

    t = torch.tensor([448.0, -448.0, 1.5, 0.0]).to(torch.float8_e4m3fn)
    out = _convert(t, torch.float8_e4m3fnuz)
    assert out.dtype == torch.float8_e4m3fnuz
    assert out.float().tolist() == [240.0, -240.0, 1.5, 0.0]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA/ROCm device")
def test_compiled_model_recompiles_for_the_new_device_after_migrate():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.GELU(), nn.Linear(16, 4))
    opt = torch.optim.AdamW(model.parameters())
    compiled = torch.compile(model, backend="agnostic")
    x = torch.randn(8, 16)
    cpu_out = compiled(x)
    state = agnostic_rt.migrate(agnostic_rt.TrainingState(model=compiled, optimizer=opt), to="cuda")
    gpu_out = compiled(x.cuda())
    assert gpu_out.device.type == "cuda"
    torch.testing.assert_close(gpu_out.cpu(), cpu_out, rtol=1e-4, atol=1e-4)
    gpu_out.sum().backward()
    opt.step()
    agnostic_rt.migrate(state, to="cpu")
    assert compiled(x).device.type == "cpu"
