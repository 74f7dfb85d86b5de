"""Devices: what this process reaches, and the selection policies."""

from __future__ import annotations

import pytest
import torch

import agnostic_rt
from agnostic_rt.targets import KNOWN_TARGETS, host_cpu_target
from agnostic_rt.training.devices import Device, resolve_device


def fake_fleet() -> list[Device]:
    """Devices as another machine would list them (Device is plain data: no driver involved)."""
    return [
        Device("nvidia", 0, "NVIDIA H100", "sm_90", 80 << 30, KNOWN_TARGETS["h100"]),
        Device("amd", 1, "AMD Instinct MI300X", "gfx942", 192 << 30, KNOWN_TARGETS["mi300x"]),
        Device("cpu", 0, "x86_64", "x86_64", 64 << 30, host_cpu_target()),
    ]


def test_devices_always_lists_the_cpu_last():
    found = agnostic_rt.devices()
    assert found[-1].vendor == "cpu" and found[-1].target.vendor == "cpu"
    assert found[-1].memory > 0


def test_accelerators_match_what_torch_reaches():
    accel = [d for d in agnostic_rt.devices() if d.vendor != "cpu"]
    assert len(accel) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    vendor = "amd" if torch.version.hip else "nvidia"
    assert all(d.vendor == vendor and d.target.vendor == vendor for d in accel)


def test_missing_vendor_libraries_mean_not_present():
    from agnostic_rt.training.devices import _cupy_props, _hip_props

    # Here CuPy has no driver and hip-python no libamdhip64: both answer "nothing", never raise.
    if not torch.cuda.is_available():
        assert _cupy_props(0) == {} and _hip_props(0) == {}


def test_fastest_prefers_the_highest_bf16_peak():
    assert agnostic_rt.select_device("fastest", candidates=fake_fleet()).target.name == "mi300x"


def test_cheapest_is_price_per_unit_of_work():
    prices = {"h100": 2.0, "mi300x": 3.0, "cpu": 0.05}
    # h100: 2.0 / 989 TF beats mi300x: 3.0 / 1307 TF and the CPU's tiny rate.
    assert agnostic_rt.select_device("cheapest", prices=prices, candidates=fake_fleet()).vendor == "nvidia"


def test_cheapest_without_prices_says_what_to_pass():
    with pytest.raises(ValueError, match="needs prices="):
        agnostic_rt.select_device("cheapest", candidates=fake_fleet())


def test_a_callable_policy_picks_from_the_candidates():
    chosen = agnostic_rt.select_device(lambda ds: min(ds, key=lambda d: d.memory), candidates=fake_fleet())
    assert chosen.vendor == "cpu"


def test_explicit_vendor_and_index():
    fleet = fake_fleet()
    assert agnostic_rt.select_device("rocm", candidates=fleet).arch == "gfx942"
    assert agnostic_rt.select_device("cuda:1", candidates=fleet).vendor == "amd"


def test_unreachable_device_is_a_lookup_error_listing_what_is_here():
    with pytest.raises(LookupError, match="here: cpu:0"):
        resolve_device("cuda:7", [fake_fleet()[-1]])


def test_unknown_device_string_lists_valid_ones():
    with pytest.raises(ValueError, match="expected one of: cpu, cuda, cuda:N"):
        resolve_device("tpu")
