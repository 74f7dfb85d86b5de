"""The end-to-end demo: its loopback metadata server speaks IMDSv2 to the real AWS watcher, and the
whole run (notice, checkpoint, fresh process, resume) lands on the uninterrupted loss curve."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
import yaml

from agnostic_rt.apps.demo import MetadataServer, main
from agnostic_rt.placement.skypilot import validate_task_config
from agnostic_rt.training.preempt import AWSWatcher


def test_loopback_metadata_server_gives_the_aws_watcher_a_spot_notice_once_armed():
    with MetadataServer() as imds:
        watcher = AWSWatcher(url=imds.url, interval=0.1)
        assert watcher.check() is None
        imds.arm()
        assert watcher.check().startswith("spot terminate at ")


def test_loopback_metadata_server_refuses_requests_without_the_imdsv2_token():
    with MetadataServer() as imds:
        imds.arm()
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(imds.url + "/latest/meta-data/spot/instance-action", timeout=5)
        assert err.value.code == 401


@pytest.mark.parametrize("argv, message", [
    (["--steps", "4", "--notice-at", "4"], "--notice-at=4 must be in [1, 3]"),
    (["--steps", "1"], "--steps=1 must be >= 2"),
])
def test_demo_rejects_a_notice_outside_the_run(argv, message, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_demo_resumes_in_a_fresh_process_on_the_uninterrupted_curve(tmp_path):
    out = tmp_path / "demo"
    assert main(["--steps", "5", "--notice-at", "2", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    phases = summary["phases"]
    assert summary["exit_code"] == 75  # EXIT_PREEMPTED: the notice, not the end of the run, stopped it
    assert 2 <= summary["checkpoint_step"] < 5
    assert phases["resume"]["resumed_from"] == summary["checkpoint_step"]
    ref = {int(k): v for k, v in phases["reference"]["losses"].items()}
    resumed = {int(k): v for k, v in phases["resume"]["losses"].items()}
    assert sorted(resumed) == list(range(summary["checkpoint_step"] + 1, 6))
    # Same device: the resumed run repeats the uninterrupted one; across devices, to rounding.
    tol = 1e-5 if summary["first_device"] == summary["next_device"] else 1e-2
    for step, loss in resumed.items():
        assert loss == pytest.approx(ref[step], abs=tol), f"step {step}"
    assert (out / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    validate_task_config(yaml.safe_load((out / "next-task.yaml").read_text()))
