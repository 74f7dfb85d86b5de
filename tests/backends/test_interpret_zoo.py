"""Every zoo model, forward and backward, compiled for a GPU part and run on the CPU: generated Triton
kernels through the Triton interpreter, library calls through ATen. The fp64-reference rule holds on
the outputs, the loss and every parameter gradient, and no kernel fell back at launch."""

from __future__ import annotations

import logging

import pytest

from agnostic_rt.conformance.models import check_model
from agnostic_rt.conformance.zoo import ZOO

CASES = [(name, "h100") for name in ZOO] + [("mlp", "mi300x"), ("bert", "mi300x")]


@pytest.mark.parametrize("name,target", CASES, ids=[f"{n}-{t}" for n, t in CASES])
def test_zoo_training_step_passes_the_fp64_rule_in_interpret_mode(name, target, caplog):
    caplog.set_level(logging.WARNING, logger="agnostic_rt")
    check = check_model(ZOO[name], training=True, options={"target": target, "interpret": True}, batch=2)
    assert check.passed, check.worst()
    fell_back = [r.getMessage() for r in caplog.records if "failed at its first launch" in r.getMessage()
                 or "generation failed" in r.getMessage()]
    assert not fell_back, fell_back
