"""Multi-process: DDP on gloo under torchrun saves at world size 2 and resumes at 1 and at 2."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import agnostic_rt
from agnostic_rt.training.migrate import EXIT_PREEMPTED

pytestmark = pytest.mark.slow  # three torchrun launches: ~2 min on 2 shared cores

SCRIPT = Path(__file__).parent / "scripts" / "ddp_train.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(world: int, *args: str, expect: int = 0) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={world}", "--nnodes=1",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", str(SCRIPT), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert (out.returncode == 0) == (expect == 0), out.stderr[-4000:]
    return out


@pytest.fixture(scope="module")
def saved_at_world_2(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    torchrun(2, "save", str(root / "ck"), str(root / "saved"))
    return root


def digests(prefix: Path, world: int) -> list[dict]:
    return [json.loads(Path(f"{prefix}.rank{r}.json").read_text()) for r in range(world)]


def test_ddp_ranks_agree_on_the_saved_state(saved_at_world_2):
    a, b = digests(saved_at_world_2 / "saved", 2)
    assert a == b and a["step"] == 3


def test_world_2_checkpoint_resumes_in_a_single_process(saved_at_world_2):
    root = saved_at_world_2
    out = subprocess.run([sys.executable, str(SCRIPT), "resume", str(root / "ck"), str(root / "one")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    assert digests(root / "one", 1)[0] == digests(root / "saved", 2)[0]


def test_world_2_checkpoint_resumes_at_world_2(saved_at_world_2):
    root = saved_at_world_2
    torchrun(2, "resume", str(root / "ck"), str(root / "two"))
    assert digests(root / "two", 2) == digests(root / "saved", 2)


def test_a_notice_on_one_rank_stops_every_rank_at_the_same_step_with_a_checkpoint(tmp_path):
    torchrun(2, "spot", str(tmp_path / "ck"), str(tmp_path / "spot"), expect=EXIT_PREEMPTED)
    exits = [json.loads((tmp_path / f"spot.rank{r}.exit.json").read_text()) for r in range(2)]
    assert exits == [{"code": EXIT_PREEMPTED, "step": 3}] * 2
    latest = agnostic_rt.latest_checkpoint(tmp_path / "ck")
    assert latest is not None and latest.step == 3 and latest.manifest["world_size"] == 2
