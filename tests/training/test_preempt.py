"""Preemption: each cloud's notice, played by a loopback metadata server, and SIGTERM lead to a
committed checkpoint and EXIT_PREEMPTED; periodic async checkpoints run meanwhile."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from torch import nn

import agnostic_rt
from agnostic_rt.training.migrate import EXIT_PREEMPTED
from agnostic_rt.training.preempt import AWSWatcher, clear_notice, notice

SCRIPTS = Path(__file__).parent / "scripts"
TOKEN = "test-token"


class MetadataServer(ThreadingHTTPServer):
    """Plays AWS IMDSv2, GCP metadata and Azure Scheduled Events on 127.0.0.1; ``notice`` flips them."""

    notice = False


class Handler(BaseHTTPRequestHandler):
    server: MetadataServer

    def log_message(self, *args):  # keep pytest output clean
        pass

    def reply(self, code: int, body: str = "") -> None:
        self.send_response(code)
        self.end_headers()
        self.wfile.write(body.encode())

    def do_PUT(self):
        if self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            return self.reply(200, TOKEN)
        self.reply(400)

    def do_GET(self):
        live = self.server.notice
        if self.path == "/latest/meta-data/spot/instance-action":
            if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
                return self.reply(401)
            return self.reply(200, json.dumps({"action": "terminate", "time": "2026-11-28T00:02:00Z"})) \
                if live else self.reply(404)
        if self.path == "/computeMetadata/v1/instance/preempted":
            if self.headers.get("Metadata-Flavor") != "Google":
                return self.reply(403)
            return self.reply(200, "TRUE" if live else "FALSE")
        if self.path.startswith("/metadata/scheduledevents"):
            if self.headers.get("Metadata") != "true":
                return self.reply(400)
            events = [{"EventId": "E1", "EventType": "Preempt", "ResourceType": "VirtualMachine",
                       "Resources": ["vm0"], "EventStatus": "Scheduled", "NotBefore": "soon"}] if live else []
            return self.reply(200, json.dumps({"DocumentIncarnation": 1, "Events": events}))
        self.reply(404)


@pytest.fixture
def metadata():
    server = MetadataServer(("127.0.0.1", 0), Handler)  # loopback only
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    clear_notice()
    yield server
    server.shutdown()
    server.server_close()
    clear_notice()


def train_state():
    torch.manual_seed(0)
    model = nn.Linear(8, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    return agnostic_rt.TrainingState(model=model, optimizer=opt)


def train_step(state):
    state.optimizer.zero_grad()
    state.model(torch.randn(4, 8)).pow(2).mean().backward()
    state.optimizer.step()


@pytest.mark.parametrize("cloud", ["aws", "gcp", "azure"])
def test_cloud_notice_commits_a_checkpoint_and_exits_preempted(metadata, tmp_path, cloud):
    state = train_state()
    url = f"http://127.0.0.1:{metadata.server_address[1]}"
    with pytest.raises(SystemExit) as exit_info:
        with agnostic_rt.spot_guard(state, tmp_path, clouds=[cloud], urls={cloud: url}, interval=0.02) as guard:
            for i in range(2000):
                train_step(state)
                if i == 3:
                    metadata.notice = True
                guard.step()
                threading.Event().wait(0.005)
    assert exit_info.value.code == EXIT_PREEMPTED
    assert notice().source == cloud
    latest = agnostic_rt.latest_checkpoint(tmp_path)
    assert latest is not None and latest.step == state.step and state.step >= 4
    restored = train_state()
    agnostic_rt.load(restored, tmp_path)
    assert torch.equal(restored.model.weight, state.model.weight)


def test_no_notice_means_training_runs_on(metadata, tmp_path):
    state = train_state()
    url = f"http://127.0.0.1:{metadata.server_address[1]}"
    with agnostic_rt.spot_guard(state, tmp_path, clouds=["aws", "gcp", "azure"],
                                urls={"aws": url, "gcp": url, "azure": url}, interval=0.01) as guard:
        for _ in range(20):
            train_step(state)
            guard.step()
            threading.Event().wait(0.002)
    assert state.step == 20 and agnostic_rt.latest_checkpoint(tmp_path) is None


def test_aws_watcher_uses_an_imdsv2_token(metadata):
    watcher = AWSWatcher(f"http://127.0.0.1:{metadata.server_address[1]}", interval=0.01)
    metadata.notice = True
    assert watcher.check() == "spot terminate at 2026-11-28T00:02:00Z" and watcher._token == TOKEN


def test_periodic_async_checkpoints_every_n_steps(tmp_path):
    state = train_state()
    with agnostic_rt.spot_guard(state, tmp_path, every=3, keep_last=None, clouds=[]) as guard:
        for _ in range(10):
            train_step(state)
            guard.step()
    assert [c.step for c in agnostic_rt.list_checkpoints(tmp_path)] == [3, 6, 9]


def test_sigterm_commits_a_checkpoint_and_the_process_exits_preempted(tmp_path):
    proc = subprocess.Popen([sys.executable, str(SCRIPTS / "spot_train.py"), str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not (line := proc.stdout.readline()).startswith("step 5") and line:
        pass
    proc.send_signal(signal.SIGTERM)
    rest, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_PREEMPTED, err[-3000:]
    latest = agnostic_rt.latest_checkpoint(tmp_path)
    # The step in flight when SIGTERM came is finished and checkpointed at its boundary.
    assert latest is not None and latest.step >= 6
    restored = train_state()
    agnostic_rt.load(restored, tmp_path)
    assert restored.step == latest.step
