"""A small real training run (dropout, AdamW, cosine LR, shuffling StatefulDataLoader) used by
tests/training/test_migrate.py: run N steps, optionally hand off to an unreachable vendor after K steps, or
resume from a checkpoint root first. Writes losses (float.hex) and a digest of the final state."""

from __future__ import annotations

import argparse
import hashlib
import json
import warnings

import torch
from torch import nn
from torchdata.stateful_dataloader import StatefulDataLoader

import agnostic_rt

warnings.filterwarnings("ignore", message=".*set_vital.*")


def build(compile_model: bool):
    torch.manual_seed(1234)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 1))
    data = torch.utils.data.TensorDataset(torch.randn(80, 16), torch.randn(80, 1))
    loader = StatefulDataLoader(data, batch_size=8, shuffle=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=20)
    run = torch.compile(model, backend="agnostic") if compile_model else model
    state = agnostic_rt.TrainingState(model=run, optimizer=opt, scheduler=sched, data=loader)
    return state, run, opt, sched, loader


def digest(state) -> str:
    h = hashlib.sha256()
    for _, t in state.tensors():
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--uri", required=True)
    ap.add_argument("--until", type=int, required=True, help="train until state.step reaches this")
    ap.add_argument("--handoff-at", type=int, default=None)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    state, run, opt, sched, loader = build(args.compile)
    record = {"losses": [], "resumed_from": None}
    if args.resume:
        ckpt = agnostic_rt.resume(state, args.uri)
        record["resumed_from"] = ckpt.step
    unreachable = "nvidia" if torch.version.hip else "rocm"
    batches = iter(loader)
    try:
        while state.step < args.until:
            try:
                x, y = next(batches)
            except StopIteration:
                state.epoch += 1
                batches = iter(loader)
                x, y = next(batches)
            loss = nn.functional.mse_loss(run(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            state.step += 1
            record["losses"].append(loss.item().hex())
            if state.step == args.handoff_at:
                agnostic_rt.migrate(state, to=unreachable, uri=args.uri)
        record["digest"] = digest(state)
    finally:
        record["step"], record["epoch"] = state.step, state.epoch
        with open(args.out, "w") as f:
            json.dump(record, f)


if __name__ == "__main__":
    main()
