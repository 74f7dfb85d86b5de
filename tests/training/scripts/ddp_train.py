"""DDP on gloo for tests/training/test_ddp.py. `save`: train a few steps at this world size and checkpoint.
`resume`: load (at this world size, DDP or not) and write the loaded tensors' digest per rank."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys

import torch
import torch.distributed as dist
from torch import nn

import agnostic_rt


def main() -> None:
    mode, uri, out = sys.argv[1:4]
    distributed = "RANK" in os.environ
    if distributed:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if distributed else 0
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    run = nn.parallel.DistributedDataParallel(model) if distributed else model
    opt = torch.optim.AdamW(run.parameters(), lr=1e-2)
    state = agnostic_rt.TrainingState(model=run, optimizer=opt)
    if mode == "spot":
        # Only rank 0 gets the notice (SIGUSR1 at step 3); spot_guard must make every rank stop there.
        torch.manual_seed(rank + 1)
        try:
            with agnostic_rt.spot_guard(state, uri, clouds=[]) as guard:
                for _ in range(50):
                    opt.zero_grad()
                    run(torch.randn(4, 8)).pow(2).mean().backward()
                    opt.step()
                    if rank == 0 and state.step == 2:
                        os.kill(os.getpid(), signal.SIGUSR1)
                    guard.step()
        except SystemExit as exc:
            with open(f"{out}.rank{rank}.exit.json", "w") as f:
                json.dump({"code": exc.code, "step": state.step}, f)
            raise
        raise SystemExit("spot_guard let the loop finish: the notice was lost")
    if mode == "save":
        torch.manual_seed(rank + 1)  # each rank its own data
        for _ in range(3):
            opt.zero_grad()
            run(torch.randn(4, 8)).pow(2).mean().backward()
            opt.step()
            state.step += 1
        agnostic_rt.save(state, uri)
    else:
        agnostic_rt.load(state, uri)
    h = hashlib.sha256()
    for name, t in state.tensors():
        if not name.endswith(".grad"):  # DDP grads are all-reduced: equal on every rank anyway
            h.update(t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    with open(f"{out}.rank{rank}.json", "w") as f:
        json.dump({"digest": h.hexdigest(), "step": state.step}, f)
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
