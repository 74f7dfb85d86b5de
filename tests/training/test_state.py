"""TrainingState: what it accepts, and the errors that name what is missing or inconsistent."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from agnostic_rt import StateError, TrainingState
from agnostic_rt.training.state import capture_rng, restore_rng


def model_and_opt():
    m = nn.Linear(3, 3)
    return m, torch.optim.AdamW(m.parameters())


def test_a_complete_state_validates():
    m, opt = model_and_opt()
    TrainingState(model=m, optimizer=opt, scheduler=torch.optim.lr_scheduler.StepLR(opt, 1)).validate()


def test_missing_model_is_named():
    with pytest.raises(StateError, match="state has no 'model'"):
        TrainingState().validate()


def test_optimizer_over_another_models_parameters_is_named():
    m, _ = model_and_opt()
    other = torch.optim.SGD(nn.Linear(5, 2).parameters(), lr=0.1)
    with pytest.raises(StateError, match=r"optimizer 'optimizer' updates 2 parameter\(s\) .*\(2, 5\)"):
        TrainingState(model=m, optimizer=other).validate()


def test_scheduler_of_an_optimizer_not_in_the_state_is_named():
    m, opt = model_and_opt()
    stray = torch.optim.SGD(m.parameters(), lr=0.1)
    with pytest.raises(StateError, match="scheduler 'scheduler' drives an optimizer that is not in the state"):
        TrainingState(model=m, optimizer=opt, scheduler=torch.optim.lr_scheduler.StepLR(stray, 1)).validate()


def test_data_without_state_dict_points_to_stateful_dataloader():
    m, opt = model_and_opt()
    loader = torch.utils.data.DataLoader(list(range(4)))
    with pytest.raises(StateError, match="StatefulDataLoader"):
        TrainingState(model=m, optimizer=opt, data=loader).validate()


def test_negative_step_is_rejected_with_its_value():
    m, _ = model_and_opt()
    with pytest.raises(StateError, match="step must be a non-negative int, got -1"):
        TrainingState(model=m, step=-1).validate()


def test_dict_with_unknown_key_lists_valid_keys():
    m, _ = model_and_opt()
    with pytest.raises(StateError, match="unknown training-state key.*'optim'.*valid keys: model, optimizer"):
        TrainingState.coerce({"model": m, "optim": None})


def test_all_problems_are_reported_at_once():
    with pytest.raises(StateError) as info:
        TrainingState(step=-2, extra=[1]).validate()
    assert "no 'model'" in str(info.value) and "step must be" in str(info.value) and "extra must be" in str(info.value)


def test_cpu_rng_streams_are_restored_exactly():
    saved = capture_rng()
    first = (random.random(), np.random.rand(), torch.rand(3))
    restore_rng(saved)
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == again[0] and first[1] == again[1] and torch.equal(first[2], again[2])


def test_tensors_lists_grads_and_optimizer_state():
    m, opt = model_and_opt()
    m(torch.randn(2, 3)).sum().backward()
    opt.step()
    names = [n for n, _ in TrainingState(model=m, optimizer=opt).tensors()]
    assert "model.weight.grad" in names and "optimizer.state[0].exp_avg" in names
