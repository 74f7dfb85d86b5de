"""Migration and checkpoint benchmark: appends its figures to BENCHMARKS.md under "## Migration".

    python bench/migration.py                 # 1 GiB state, async checkpoint every 10 steps
    python bench/migration.py --gib 0.25 --steps 20 --every 5 --no-append

Measures, on whatever this machine has:
1. in-process migrate of a 1 GiB training state (params, grads, AdamW moments) to the accelerator and
   back, against a raw ``tensor.to()`` copy of the same tensors (needs an accelerator; else n/a);
2. a durable save (DCP + fsync + sha256 manifest + atomic rename) and a verified load of that state,
   against ``torch.save`` + fsync of the same tensors;
3. the training stall: mean step time with no checkpoints, with async checkpoints every N steps, and
   with blocking ones, plus the time each save() call blocks the loop.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

import agnostic_rt
from agnostic_rt.apps.bench_compare import publish, script_command, utc_stamp
from agnostic_rt.training.checkpoint import wait_for_saves

ROOT = Path(__file__).resolve().parents[1]


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def build_state(gib: float, device: str = "cpu") -> agnostic_rt.TrainingState:
    """Square bias-free Linear layers sized so params + grads + AdamW moments total ``gib`` GiB."""
    width = 4096
    per_layer = width * width * 4 * 4  # fp32 param, grad, exp_avg, exp_avg_sq
    layers = max(1, round(gib * 2**30 / per_layer))
    model = nn.Sequential(*[nn.Linear(width, width, bias=False) for _ in range(layers)]).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    train_step(model, opt, device)
    return agnostic_rt.TrainingState(model=model, optimizer=opt)


def train_step(model: nn.Module, opt: torch.optim.Optimizer, device: str | torch.device) -> None:
    opt.zero_grad(set_to_none=False)
    model(torch.randn(8, 4096, device=device)).pow(2).mean().backward()
    opt.step()


def state_bytes(state) -> int:
    return sum(t.numel() * t.element_size() for _, t in state.tensors())


def timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_migrate(state) -> list[str]:
    here = [d for d in agnostic_rt.devices() if d.vendor != "cpu"]
    if not here:
        return ["| in-process migrate cpu -> accelerator | n/a: no accelerator in this process | |"]
    gpu = here[0]
    tensors = [t for _, t in state.tensors()]
    raw_to = timed(lambda: [t.to(gpu.torch_device) for t in tensors], repeat=2)
    to_gpu = timed(lambda: agnostic_rt.migrate(state, to=gpu))
    to_cpu = timed(lambda: agnostic_rt.migrate(state, to="cpu"))
    gb = state_bytes(state) / 1e9
    return [
        f"| raw copy of the state's tensors to {gpu.name} (pageable) | {raw_to:.3f} s | "
        f"{gb / raw_to:.1f} GB/s |",
        f"| migrate(state, to={gpu.vendor}:{gpu.index}) | {to_gpu:.3f} s | {gb / to_gpu:.1f} GB/s |",
        f"| migrate(state, to='cpu') | {to_cpu:.3f} s | {gb / to_cpu:.1f} GB/s |",
    ]


def bench_save(state, workdir: Path) -> list[str]:
    gb = state_bytes(state) / 1e9
    tensors = {k: t for k, t in state.tensors()}

    def raw_save():
        path = workdir / "raw.pt"
        with open(path, "wb") as f:
            torch.save(tensors, f)
            f.flush()
            os.fsync(f.fileno())

    raw = timed(raw_save)
    uri = workdir / "ckpt"
    durable = timed(lambda: agnostic_rt.save(state, uri, keep_last=1))
    load = timed(lambda: agnostic_rt.load(state, uri))
    return [
        f"| torch.save + fsync (baseline, no checksums) | {raw:.2f} s | {gb / raw:.2f} GB/s |",
        f"| agnostic_rt.save: DCP + fsync + sha256 manifest + rename | {durable:.2f} s | "
        f"{gb / durable:.2f} GB/s |",
        f"| agnostic_rt.load with checksum verification | {load:.2f} s | {gb / load:.2f} GB/s |",
    ]


def bench_stall(state, workdir: Path, steps: int, every: int) -> list[str]:
    """Rounds of ``every`` steps, cycling none/async/blocking so machine-load drift hits every mode alike;
    the stall of a mode is its median round time minus the median round time with no checkpoint."""
    model, opt = state.model, state.optimizer
    device = next(model.parameters()).device.type
    # Warm-up: the first async save allocates the reused host buffers and imports DCP; steady state follows.
    agnostic_rt.save(state, workdir / "stall-async", keep_last=1, async_save=True)
    wait_for_saves()
    modes = ("none", "async", "blocking")
    rounds: dict[str, list[float]] = {m: [] for m in modes}
    blocked: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(max(1, steps // every)):
        for mode in modes:
            sync()
            t0 = time.perf_counter()
            for _ in range(every):
                train_step(model, opt, device)
                state.step += 1
            if mode != "none":
                b0 = time.perf_counter()
                agnostic_rt.save(state, workdir / f"stall-{mode}", keep_last=1, async_save=(mode == "async"))
                blocked[mode].append(time.perf_counter() - b0)
            if mode == "async":
                # The next checkpoint would wait for this one; the interval it ran under is what counts.
                for _ in range(every):
                    train_step(model, opt, device)
                    state.step += 1
                wait_for_saves()
            sync()
            rounds[mode].append(time.perf_counter() - t0)
    med = statistics.median
    step_none = med(rounds["none"]) / every
    step_async = med(rounds["async"]) / (2 * every)
    n = len(rounds["none"])
    note = ", CPU training shares the cores with the writer" if device == "cpu" else ""
    return [
        f"| step time, no checkpoints | {step_none * 1e3:.0f} ms | median of {n} rounds of {every} steps |",
        f"| async checkpoint: save() blocks the loop | {med(blocked['async']) * 1e3:.0f} ms | host snapshot; "
        f"the {2 * every} steps after it (write in the background, then waited for): "
        f"{step_async * 1e3:.0f} ms each "
        f"({(step_async / step_none - 1) * 100:+.0f}%{note}) |",
        f"| blocking checkpoint: save() blocks the loop | {med(blocked['blocking']):.2f} s | "
        f"= {med(blocked['blocking']) / step_none:.1f} steps lost per checkpoint |",
    ]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpus = [f"{d.name} ({d.arch})" for d in agnostic_rt.devices() if d.vendor != "cpu"] or ["none"]
    return (f"{cpu}, {os.cpu_count()} cores (shared), {mem:.0f} GiB RAM; accelerators: {', '.join(gpus)}; "
            f"torch {torch.__version__}, Python {platform.python_version()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gib", type=float, default=1.0, help="state size (params+grads+AdamW moments)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--dir", default=None, help="where checkpoints go (default: a temp dir)")
    ap.add_argument("--no-append", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        workdir = Path(tmp)
        state = build_state(args.gib)
        size = state_bytes(state) / 2**30
        rows = ["| measurement | time | notes |", "|---|---|---|"]
        rows += bench_migrate(state)
        accel = [d for d in agnostic_rt.devices() if d.vendor != "cpu"]
        if accel:  # save and stall figures for a state that trains on the accelerator
            agnostic_rt.migrate(state, to=accel[0])
        rows += bench_save(state, workdir)
        rows += bench_stall(state, workdir, args.steps, args.every)
    command, when = script_command(ROOT), utc_stamp()
    text = "\n".join([
        "", "## Migration", "",
        f"{when}; state {size:.2f} GiB (fp32 params + grads + AdamW moments); checkpoints on local disk.",
        f"Machine: {machine()}", f"Command: `{command}`", "", *rows, "",
    ])
    publish(text, None if args.no_append else ROOT / "BENCHMARKS.md")


if __name__ == "__main__":
    main()
