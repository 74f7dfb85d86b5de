import dataclasses

import pytest
import torch

from agnostic_rt import KNOWN_TARGETS, current_target, get_target


def test_registry_knows_both_vendors_parts():
    assert {"h100", "h200", "a100", "mi300x", "mi250x"} <= set(KNOWN_TARGETS)
    assert get_target("mi300x").warp_size == 64 and get_target("mi300x").arch == "gfx942"
    assert get_target("h100").warp_size == 32 and get_target("h100").arch == "sm_90"


def test_targets_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_target("h100").sm_count = 1


def test_cpu_is_the_current_target_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    t = current_target()
    assert t.vendor == "cpu" and not t.generates_kernels and t.sm_count >= 1


def test_flops_fall_back_to_fp32_rate_for_unlisted_dtypes():
    h100 = get_target("h100")
    assert h100.flops(torch.bfloat16) > h100.flops(torch.float32) == h100.flops(torch.int32)


def test_unreachable_device_string_says_how_to_name_a_part():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="no such device.*h100"):
        get_target("cuda:0")
