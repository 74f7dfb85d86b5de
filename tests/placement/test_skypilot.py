"""SkyPilot hand-off: the task built from the policy's candidates, validated against SkyPilot's task
schema without a cloud, and written as YAML with the launch command when SkyPilot is absent."""

from __future__ import annotations

import pytest
import yaml

from agnostic_rt.placement.feeds import Offer, TableFeed
from agnostic_rt.placement.policy import JobProfile, PlacementPolicy
from agnostic_rt.placement.skypilot import (
    CHECKPOINT_MOUNT,
    RESUME_ENV,
    build_task_config,
    launch,
    plan_next_machine,
    task_yaml,
    validate_task_config,
)

H100_EAST = Offer("aws", "us-east-1", "H100", True, 3.9)
H100_GCP = Offer("gcp", "us-central1", "H100", True, 2.95)
MI300X = Offer("azure", "eastus", "MI300X", True, 2.6)
MI300X_OD = Offer("runpod", "US", "MI300X", False, 2.49)


def build(cands, **kw):
    kw = {"bucket": "s3://ckpts", "run_id": "gpt2-a", "entrypoint": "python train.py", **kw}
    return build_task_config(cands, **kw)


def test_any_of_lists_candidates_across_vendors_in_rank_order():
    cfg = build([MI300X, H100_GCP, H100_EAST], gpus_per_node=8)
    assert cfg["resources"]["any_of"] == [
        {"infra": "azure/eastus", "accelerators": "MI300X:8"},
        {"infra": "gcp/us-central1", "accelerators": "H100:8"},
        {"infra": "aws/us-east-1", "accelerators": "H100:8"},
    ]


def test_task_from_policy_quotes_is_valid_and_spans_vendors():
    ranked = PlacementPolicy().decide(TableFeed().offers(), JobProfile.from_gpu_hours(10)).ranked
    cfg = build(ranked[:6], use_spot=True)
    validate_task_config(cfg)
    assert {e["accelerators"].split(":")[0] for e in cfg["resources"]["any_of"]} >= {"H100", "MI300X"}


def test_checkpoint_bucket_is_mounted_and_the_run_resumes_from_it():
    cfg = build([H100_EAST])
    assert cfg["file_mounts"] == {CHECKPOINT_MOUNT: {"source": "s3://ckpts", "mode": "MOUNT"}}
    assert cfg["envs"][RESUME_ENV] == f"{CHECKPOINT_MOUNT}/gpt2-a"
    assert cfg["run"] == "python train.py"


def test_spot_and_recovery_strategy_are_set_for_a_managed_spot_job():
    cfg = build([H100_EAST], job_recovery="failover", preempt_exit_code=143)
    assert cfg["resources"]["use_spot"] is True
    assert cfg["resources"]["job_recovery"]["strategy"] == "FAILOVER"
    assert cfg["resources"]["job_recovery"]["recover_on_exit_codes"] == [143]


def test_candidates_not_matching_use_spot_are_left_out():
    cfg = build([MI300X_OD, MI300X, H100_EAST])  # the best is on-demand: the task is on-demand
    assert cfg["resources"]["use_spot"] is False
    assert cfg["resources"]["any_of"] == [{"infra": "runpod/US", "accelerators": "MI300X:1"}]


def test_invalid_field_error_names_the_field_and_value():
    with pytest.raises(ValueError, match=r"invalid at resources\.use_spot: 'yes' is not of type 'boolean'"):
        validate_task_config({"resources": {"use_spot": "yes"}, "run": "true"})


def test_unknown_cloud_in_infra_is_rejected():
    with pytest.raises(ValueError, match=r"resources\.any_of\.0\.infra: 'moon/base-1' does not match"):
        validate_task_config({"resources": {"any_of": [{"infra": "moon/base-1", "accelerators": "H100:1"}]},
                              "run": "true"})


def test_unknown_top_level_key_is_rejected():
    with pytest.raises(ValueError,
                       match=r"Additional properties are not allowed \('resume' was unexpected\)"):
        validate_task_config({"resources": {}, "run": "true", "resume": True})


def test_bad_recovery_strategy_names_the_valid_ones():
    with pytest.raises(ValueError,
                       match=r"job_recovery='sometimes'; expected one of: EAGER_NEXT_REGION, FAILOVER"):
        build([H100_EAST], job_recovery="sometimes")


def test_run_id_that_cannot_name_a_folder_is_rejected():
    with pytest.raises(ValueError, match=r"run_id='a/b'"):
        build([H100_EAST], run_id="a/b")


def test_yaml_round_trips_to_the_same_task():
    cfg = build([MI300X, H100_EAST])
    assert yaml.safe_load(task_yaml(cfg)) == cfg


def test_launch_without_skypilot_writes_yaml_and_prints_the_command(tmp_path, capsys):
    cfg = build([MI300X, H100_EAST])
    handoff = launch(cfg, yaml_path=tmp_path / "next.yaml", use_skypilot=False)
    assert not handoff.launched
    assert yaml.safe_load(handoff.yaml_path.read_text()) == cfg
    assert handoff.command == f"sky jobs launch -n agnostic-rt-gpt2-a {tmp_path / 'next.yaml'}"
    assert handoff.command in capsys.readouterr().out


def test_plan_next_machine_after_a_notice_leaves_the_lost_market_out():
    offers = TableFeed().offers()
    gone = Offer("azure", "eastus", "MI300X", True, 2.6, available=False)
    feed = TableFeed(rows=[o if o.key != gone.key else gone for o in offers])
    decision, cfg = plan_next_machine(feed, JobProfile.from_gpu_hours(20), current=gone, bucket="s3://ckpts",
                                      run_id="r2", entrypoint="python train.py",
                                      policy=PlacementPolicy(allow_on_demand=False))
    assert decision.action == "move"
    assert {"infra": "azure/eastus", "accelerators": "MI300X:1"} not in cfg["resources"]["any_of"]
    assert cfg["resources"]["any_of"][0]["infra"] == decision.offer.infra
    assert cfg["resources"]["use_spot"] is True
    assert len(cfg["resources"]["any_of"]) <= 4
