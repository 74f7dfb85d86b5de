"""Trains until told to stop, under agnostic_rt.spot_guard; used by tests/training/test_preempt.py (SIGTERM)."""

from __future__ import annotations

import sys

import torch
from torch import nn

import agnostic_rt


def main() -> None:
    uri = sys.argv[1]
    torch.manual_seed(0)
    model = nn.Linear(8, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    state = agnostic_rt.TrainingState(model=model, optimizer=opt)
    with agnostic_rt.spot_guard(state, uri, every=None, clouds=[]) as guard:
        for _ in range(100000):
            opt.zero_grad()
            model(torch.randn(4, 8)).pow(2).mean().backward()
            opt.step()
            guard.step()
            print(f"step {state.step}", flush=True)


if __name__ == "__main__":
    main()
