"""Fault injection for tests/training/test_checkpoint.py: fork a child that saves a checkpoint, SIGKILL it at a
random point of the save, then check the root as a reader would. One process (torch imported once)
drives every kill, so 60 kills take seconds. Prints a JSON summary on stdout."""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import time

import torch
from torch import nn

import agnostic_rt
from agnostic_rt.training.checkpoint import verify


def make_state():
    model = nn.Sequential(nn.Linear(128, 256), nn.Linear(256, 128))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 128)).sum().backward()
    opt.step()
    return agnostic_rt.TrainingState(model=model, optimizer=opt)


def fill(state, value: int) -> None:
    """Every tensor of the state holds ``value``, so a partial load shows as mixed values."""
    state.step = value
    with torch.no_grad():
        for _, t in state.tensors():
            t.fill_(value)


def consistent(state, value: int) -> bool:
    return all(bool((t == value).all()) for _, t in state.tensors()) and state.step == value


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--kills", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = random.Random(args.seed)
    state = make_state()
    fill(state, 1)
    agnostic_rt.save(state, args.root, keep_last=2)

    def save_in_child(step: int) -> int:
        pid = os.fork()
        if pid == 0:
            try:
                fill(state, step)
                agnostic_rt.save(state, args.root, keep_last=2)
            finally:
                os._exit(0)
        return pid

    t0 = time.perf_counter()  # how long one forked save takes, to spread the kills over it
    os.waitpid(save_in_child(2), 0)
    span = time.perf_counter() - t0
    last_committed = 2
    summary = {"kills": 0, "committed": 0, "interrupted": 0, "save_s": span, "failures": []}
    for i in range(args.kills):
        step = 3 + i
        pid = save_in_child(step)
        time.sleep(rng.uniform(0, span))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        summary["kills"] += 1
        found = agnostic_rt.list_checkpoints(args.root)
        latest = found[-1] if found else None
        if latest is not None and latest.step == step:
            summary["committed"] += 1
            last_committed = step
        else:
            summary["interrupted"] += 1
        if latest is None or latest.step != last_committed:
            summary["failures"].append(f"kill {i}: newest committed is {latest and latest.step}, "
                                       f"expected {last_committed}")
            continue
        for ckpt in found:
            try:
                verify(ckpt.uri)
            except Exception as exc:
                summary["failures"].append(f"kill {i}: {ckpt.uri} does not verify: {exc}")
        probe = make_state()
        fill(probe, 0)
        agnostic_rt.load(probe, args.root)
        if not consistent(probe, last_committed):
            summary["failures"].append(f"kill {i}: loading step {last_committed} gave a mixed state")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
