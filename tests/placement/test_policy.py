"""Placement policy: cost to finish (roofline or measured), move costs, hysteresis, and its use as
a device policy by agnostic_rt.select_device."""

from __future__ import annotations

import pytest

from agnostic_rt.placement.feeds import Offer, TableFeed
from agnostic_rt.placement.policy import DEFAULT_MFU, Hysteresis, JobProfile, MoveCosts, PlacementPolicy
from agnostic_rt.targets import KNOWN_TARGETS, host_cpu_target
from agnostic_rt.training.devices import Device, devices, select_device

H100, A100, MI300X = KNOWN_TARGETS["h100"], KNOWN_TARGETS["a100"], KNOWN_TARGETS["mi300x"]
FREE_MOVES = MoveCosts(bandwidth=1e9, provision_s=0.0, recompile_s=0.0)


def offer(acc: str, price: float, spot: bool = True, region: str = "us-east-1",
          available: bool = True) -> Offer:
    return Offer("aws" if acc != "MI300X" else "azure", region, acc, spot, price, available)


def test_compute_bound_step_time_follows_peak_flops_and_mfu():
    job = JobProfile(remaining_steps=10, flops_per_step=1e15)
    expected = ((A100.flops("bfloat16") * DEFAULT_MFU["nvidia"])
                / (H100.flops("bfloat16") * DEFAULT_MFU["nvidia"]))
    assert job.step_time(H100) / job.step_time(A100) == pytest.approx(expected)


def test_memory_bound_step_time_follows_bandwidth():
    job = JobProfile(remaining_steps=1, flops_per_step=1.0, bytes_per_step=1e12)
    assert job.step_time(H100) == pytest.approx(1e12 / H100.mem_bandwidth)


def test_measured_step_time_replaces_the_roofline():
    job = JobProfile(remaining_steps=3600, flops_per_step=1e15, measured_step_s={"mi300x": 0.5})
    assert job.step_time(MI300X) == 0.5
    assert job.hours_to_finish(MI300X) == pytest.approx(0.5)


def test_from_gpu_hours_takes_that_long_on_the_reference():
    assert JobProfile.from_gpu_hours(37.5, reference="a100").hours_to_finish(A100) == pytest.approx(37.5)


def test_move_time_counts_checkpoint_io_provisioning_recompile_and_lost_steps():
    job = JobProfile(remaining_steps=100, flops_per_step=1e15, checkpoint_bytes=4e9,
                     measured_step_s={"h100": 2.0})
    move = MoveCosts(bandwidth=1e9, provision_s=100.0, recompile_s=50.0, lost_steps=5)
    assert move.move_hours(job, H100) * 3600 == pytest.approx(2 * 4.0 + 100 + 50 + 5 * 2.0)


def test_rank_orders_by_cost_to_finish_not_by_hourly_price():
    job = JobProfile.from_gpu_hours(10)
    cheap_slow, dear_fast = offer("A100-80GB", 2.0), offer("H100", 4.0)  # A100 is ~3x slower here
    ranked = PlacementPolicy(move=FREE_MOVES, spot_hazard_per_hour=0).rank([cheap_slow, dear_fast], job)
    assert [q.offer for q in ranked] == [dear_fast, cheap_slow]
    assert ranked[0].cost_usd == pytest.approx(4.0 * 10)


def test_unavailable_offers_and_excluded_vendors_are_not_ranked():
    job = JobProfile.from_gpu_hours(1)
    offers = [offer("H100", 3.0, available=False), offer("MI300X", 2.0),
              offer("H100", 9.0, region="us-west-2")]
    ranked = PlacementPolicy(vendors=("nvidia",)).rank(offers, job)
    assert [q.offer for q in ranked] == [offers[2]]


def test_spot_quote_carries_expected_interruption_cost():
    job = JobProfile.from_gpu_hours(10, checkpoint_bytes=1e9)
    spot, on_demand = offer("H100", 3.0), offer("H100", 3.0, spot=False)
    p = PlacementPolicy(spot_hazard_per_hour=0.2)
    assert p.quote(spot, job).cost_usd > p.quote(on_demand, job).cost_usd


def test_stays_when_the_saving_is_below_the_margin():
    job = JobProfile.from_gpu_hours(10)
    here, there = offer("H100", 3.0), offer("H100", 2.85, region="us-west-2")  # 5% cheaper
    d = PlacementPolicy(move=FREE_MOVES, hysteresis=Hysteresis(margin=0.10, min_dwell_h=0)).decide(
        [here, there], job, current=here)
    assert d.action == "stay" and d.offer == here
    assert "< margin 10%" in d.reason


def test_moves_when_the_saving_beats_the_margin_after_the_dwell_time():
    job = JobProfile.from_gpu_hours(10)
    here, there = offer("H100", 3.0), offer("H100", 2.0, region="us-west-2")
    d = PlacementPolicy(move=FREE_MOVES, hysteresis=Hysteresis(0.10, min_dwell_h=1.0)).decide(
        [here, there], job, current=here, since_move_h=1.5)
    assert d.action == "move" and d.offer == there


def test_stays_within_the_dwell_time_even_for_a_large_saving():
    job = JobProfile.from_gpu_hours(10)
    here, there = offer("H100", 3.0), offer("H100", 1.0, region="us-west-2")
    d = PlacementPolicy(hysteresis=Hysteresis(0.10, min_dwell_h=2.0)).decide(
        [here, there], job, current=here, since_move_h=0.5)
    assert d.action == "stay"
    assert "since the last move" in d.reason


def test_notice_on_the_current_market_moves_regardless_of_hysteresis():
    job = JobProfile.from_gpu_hours(10)
    here = offer("H100", 1.0)
    gone, elsewhere = offer("H100", 1.0, available=False), offer("MI300X", 5.0)
    d = PlacementPolicy(hysteresis=Hysteresis(0.5, min_dwell_h=100)).decide(
        [gone, elsewhere], job, current=here, since_move_h=0.0)
    assert d.action == "move" and d.offer == elsewhere


def test_move_cost_keeps_a_long_checkpoint_transfer_from_paying_off():
    job = JobProfile.from_gpu_hours(1, checkpoint_bytes=2e12)  # 2 TB through a 1 GB/s bucket: > 1 h
    here, there = offer("H100", 3.0), offer("H100", 2.5, region="us-west-2")
    d = PlacementPolicy(hysteresis=Hysteresis(0.0, 0.0)).decide([here, there], job, current=here)
    assert d.action == "stay"


@pytest.mark.parametrize("margin, expect_moves", [(0.10, False), (0.0, True)])
def test_flickering_prices_do_not_thrash_with_hysteresis(margin, expect_moves):
    job = JobProfile.from_gpu_hours(100)
    policy = PlacementPolicy(move=FREE_MOVES, spot_hazard_per_hour=0, hysteresis=Hysteresis(margin, 0.0))
    current, moves = None, 0
    for tick in range(20):  # two markets trade places by +-3% every tick
        a, b = (3.0, 3.2) if tick % 2 else (3.2, 3.0)
        offers = [offer("H100", a), offer("H100", b, region="us-west-2")]
        d = policy.decide(offers, job, current=current)
        moves += d.action == "move"
        current = d.offer
    assert (moves > 5) == expect_moves


def test_no_eligible_offer_error_says_why():
    with pytest.raises(LookupError, match=r"no eligible offer among 1 .*available=0"):
        PlacementPolicy().decide([offer("H100", 1.0, available=False)], JobProfile.from_gpu_hours(1))


def test_select_device_takes_the_policy_and_prices_the_finish():
    h100 = Device("nvidia", 0, "H100", "sm_90", 80 << 30, H100)
    mi300x = Device("amd", 1, "MI300X", "gfx942", 192 << 30, MI300X)
    job = JobProfile.from_gpu_hours(10)
    cheap_amd = PlacementPolicy(job=job, local_prices={"h100": 4.0, "mi300x": 2.0})
    cheap_nvidia = PlacementPolicy(job=job, local_prices={"h100": 2.0, "mi300x": 4.0})
    assert select_device(cheap_amd, candidates=[h100, mi300x]) is mi300x
    assert select_device(cheap_nvidia, candidates=[h100, mi300x]) is h100


def test_unpriced_devices_are_chosen_by_time_to_finish():
    cpu = Device("cpu", 0, "cpu", "x86_64", 1 << 30, host_cpu_target())
    h100 = Device("nvidia", 0, "H100", "sm_90", 80 << 30, H100)
    assert PlacementPolicy()([cpu, h100]) is h100


def test_select_device_with_the_policy_works_on_this_machine():
    assert select_device(PlacementPolicy()) in devices()


def test_shipped_table_start_is_the_cheapest_finish_across_vendors():
    offers = TableFeed().offers()
    d = PlacementPolicy().decide(offers, JobProfile.from_gpu_hours(10))
    assert d.action == "start"
    assert d.quote.cost_usd == min(q.cost_usd for q in d.ranked)
    assert {q.offer.target.vendor for q in d.ranked} == {"nvidia", "amd"}


def test_resume_takes_the_policy_to_place_the_restored_state(tmp_path):
    import torch

    import agnostic_rt

    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    agnostic_rt.save(agnostic_rt.TrainingState(model=model, optimizer=opt, step=7), tmp_path)
    fresh = torch.nn.Linear(4, 2)
    state = agnostic_rt.TrainingState(model=fresh, optimizer=torch.optim.SGD(fresh.parameters(), lr=0.1))
    ckpt = agnostic_rt.resume(state, tmp_path, device=PlacementPolicy(job=JobProfile.from_gpu_hours(1)))
    assert ckpt.step == state.step == 7
    assert torch.equal(fresh.weight, model.weight)
    assert fresh.weight.device == select_device(PlacementPolicy()).torch_device
