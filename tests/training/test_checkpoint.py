"""Checkpoints: DCP data + checksummed manifest + atomic commit, keep-last-N, async, fsspec."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import agnostic_rt
from agnostic_rt.training.checkpoint import (
    MANIFEST,
    CheckpointCorruptError,
    CheckpointError,
    verify,
    wait_for_saves,
)

SCRIPTS = Path(__file__).parent / "scripts"


def make_state(seed: int = 0, steps: int = 2) -> agnostic_rt.TrainingState:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Linear(16, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    state = agnostic_rt.TrainingState(model=model, optimizer=opt, scheduler=sched, scaler=scaler,
                                      extra={"best": 0.5, "ema": torch.zeros(3)})
    for _ in range(steps):
        opt.zero_grad()
        scaler.scale(model(torch.randn(4, 8)).pow(2).mean()).backward()
        scaler.step(opt)
        scaler.update()
        sched.step()
        state.step += 1
    return state


def tensors(state) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in state.tensors()}


def test_load_restores_params_grads_buffers_optimizer_scheduler_scaler_step_and_extras(tmp_path):
    src = make_state(0, steps=3)
    src.epoch = 2
    src.extra["ema"] += 7
    src.scaler.update(new_scale=64.0)
    agnostic_rt.save(src, tmp_path)
    dst = make_state(1, steps=0)
    agnostic_rt.load(dst, tmp_path)
    want, got = tensors(src), tensors(dst)
    assert want.keys() == got.keys()
    for k in want:
        assert torch.equal(want[k], got[k]), k
    assert dst.scheduler.state_dict() == src.scheduler.state_dict()
    assert dst.optimizer.param_groups[0]["lr"] == src.optimizer.param_groups[0]["lr"]
    assert dst.scaler.get_scale() == 64.0
    assert (dst.step, dst.epoch) == (3, 2)
    assert dst.extra["best"] == 0.5 and torch.equal(dst.extra["ema"], src.extra["ema"])


def test_load_keeps_parameter_identity(tmp_path):
    agnostic_rt.save(make_state(0), tmp_path)
    dst = make_state(1, steps=0)
    params = list(dst.model.parameters())
    agnostic_rt.load(dst, tmp_path)
    assert all(a is b for a, b in zip(params, dst.model.parameters()))


def test_load_accepts_a_plain_dict_and_writes_step_back(tmp_path):
    agnostic_rt.save(make_state(0, steps=4), tmp_path)
    dst = make_state(1, steps=0)
    d = {"model": dst.model, "optimizer": dst.optimizer, "scheduler": dst.scheduler, "scaler": dst.scaler}
    agnostic_rt.load(d, tmp_path)
    assert d["step"] == 4


def test_manifest_records_source_torch_version_step_and_checksums(tmp_path):
    ckpt = agnostic_rt.save(make_state(0, steps=5), tmp_path)
    manifest = json.loads((Path(ckpt.uri) / MANIFEST).read_text())
    assert manifest["step"] == 5 and manifest["torch"] == torch.__version__
    assert manifest["source"]["vendor"] == agnostic_rt.devices()[0].vendor
    files = sorted(p.name for p in Path(ckpt.uri).iterdir() if p.name != MANIFEST)
    assert sorted(manifest["files"]) == files and ".metadata" in files
    assert all(len(f["sha256"]) == 64 for f in manifest["files"].values())


def test_commit_leaves_only_the_step_directory(tmp_path):
    agnostic_rt.save(make_state(0, steps=7), tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["step-00000007"]


def test_flipped_byte_is_detected_and_names_the_file(tmp_path):
    ckpt = agnostic_rt.save(make_state(0), tmp_path)
    data = next(p for p in Path(ckpt.uri).iterdir() if p.suffix == ".distcp")
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    data.write_bytes(bytes(raw))
    dst = make_state(1, steps=0)
    before = tensors(dst)
    with pytest.raises(CheckpointCorruptError, match=data.name):
        agnostic_rt.load(dst, tmp_path)
    assert all(torch.equal(before[k], v) for k, v in tensors(dst).items())


def test_edited_manifest_is_detected(tmp_path):
    ckpt = agnostic_rt.save(make_state(0), tmp_path)
    path = Path(ckpt.uri) / MANIFEST
    path.write_text(path.read_text().replace('"step": 2', '"step": 3'))
    with pytest.raises(CheckpointCorruptError, match=MANIFEST):
        verify(ckpt.uri)


def test_resume_falls_back_past_a_corrupt_newest_checkpoint(tmp_path):
    state = make_state(0, steps=1)
    agnostic_rt.save(state, tmp_path)
    state.step = 2
    newest = agnostic_rt.save(state, tmp_path)
    (Path(newest.uri) / ".metadata").write_bytes(b"garbage")
    dst = make_state(1, steps=0)
    ckpt = agnostic_rt.resume(dst, tmp_path)
    assert ckpt.step == 1 and dst.step == 1


def test_resume_with_no_checkpoint_returns_none(tmp_path):
    assert agnostic_rt.resume(make_state(0), tmp_path / "empty") is None


def test_keep_last_keeps_the_newest_n(tmp_path):
    state = make_state(0, steps=0)
    for step in range(1, 6):
        state.step = step
        agnostic_rt.save(state, tmp_path, keep_last=2)
    assert [c.step for c in agnostic_rt.list_checkpoints(tmp_path)] == [4, 5]


def test_async_save_writes_the_state_as_it_was_at_the_call(tmp_path):
    state = make_state(0)
    snapshot = tensors(state)
    fut = agnostic_rt.save(state, tmp_path, async_save=True)
    with torch.no_grad():
        for p in state.model.parameters():
            p.add_(1.0)  # training goes on while the save runs
    assert fut.result().step == 2
    dst = make_state(1, steps=0)
    agnostic_rt.load(dst, tmp_path)
    assert all(torch.equal(snapshot[k], v) for k, v in tensors(dst).items())


def test_wait_for_saves_reraises_a_failed_async_save(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    agnostic_rt.save(make_state(0), blocker / "ckpts", async_save=True)
    with pytest.raises(CheckpointError, match="ckpts"):
        wait_for_saves()


def test_fsspec_uri_commits_by_manifest(tmp_path):
    uri = f"memory://agnostic-rt-test-{os.getpid()}/run"
    agnostic_rt.save(make_state(0, steps=3), uri)
    assert [c.step for c in agnostic_rt.list_checkpoints(uri)] == [3]
    dst = make_state(1, steps=0)
    agnostic_rt.load(dst, uri)
    assert dst.step == 3


def test_load_into_a_different_model_names_the_key_and_leaves_state_untouched(tmp_path):
    agnostic_rt.save(make_state(0), tmp_path)
    other = nn.Sequential(nn.Linear(8, 32), nn.BatchNorm1d(32), nn.Linear(32, 2))
    dst = agnostic_rt.TrainingState(model=other, optimizer=torch.optim.AdamW(other.parameters()))
    before = tensors(dst)
    with pytest.raises(CheckpointError, match=r"models\.model\.0\.weight has shape \(16, 8\)"):
        agnostic_rt.load(dst, tmp_path)
    assert tensors(dst).keys() == before.keys()
    assert all(torch.equal(before[k], v) for k, v in tensors(dst).items())
    assert not dst.optimizer.state


def test_load_names_a_component_the_checkpoint_lacks(tmp_path):
    src = make_state(0)
    agnostic_rt.save(agnostic_rt.TrainingState(model=src.model), tmp_path)
    with pytest.raises(CheckpointError, match="optimizer 'optimizer'"):
        agnostic_rt.load(make_state(1, steps=0), tmp_path)


def test_kill_9_during_save_never_leaves_a_partially_loadable_checkpoint(tmp_path):
    out = subprocess.run(
        [sys.executable, str(SCRIPTS / "kill_during_save.py"), "--root", str(tmp_path / "ck"), "--kills", "60"],
        capture_output=True, text=True, timeout=240,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["failures"] == []
    assert summary["kills"] == 60
    assert summary["interrupted"] >= 10, summary  # most kills must land inside a save
