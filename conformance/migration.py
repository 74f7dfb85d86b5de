"""Migration tier: train -> migrate -> train, against the same run uninterrupted.

Two scenarios, both on the zoo MLP compiled through backend="agnostic" with SGD + momentum and a
batch drawn from the global torch RNG at every step (so RNG state is part of what must survive):

- ``in-process``: after K steps ``agnostic_rt.migrate(state, to=<target>)``, then K more steps;
- ``checkpoint``: after K steps ``agnostic_rt.save(state, dir)``; a fresh Python process builds the
  same model and optimizer, ``agnostic_rt.load``s the checkpoint and trains K more steps.

On the CPU (to and from the CPU) the final parameters and every loss must be bitwise equal to the
uninterrupted run's; across devices (CPU -> GPU) they must be within the fp64-reference rule.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .results import Result, TierNote

STEPS = 4  # steps before and after the migration


def _setup(options: dict | None, device: str = "cpu"):
    from .zoo import get

    entry = get("mlp")
    model = entry.build().to(device)
    compiled = torch.compile(model, backend="agnostic", options=options or {"target": "cpu"})
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return entry, model, compiled, opt


def _train(entry, compiled, opt, steps: int, device: str) -> list[float]:
    losses = []
    for _ in range(steps):
        x = torch.randn(32, 64).to(device)  # the global RNG: restored by the checkpoint
        y = torch.randint(0, 10, (32,)).to(device)
        opt.zero_grad(set_to_none=True)
        loss = entry.loss(compiled(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def uninterrupted(options: dict | None = None) -> tuple[list[float], dict[str, torch.Tensor]]:
    torch.manual_seed(1234)
    entry, model, compiled, opt = _setup(options)
    losses = _train(entry, compiled, opt, 2 * STEPS, "cpu")
    return losses, _params(model)


def in_process(to: str = "cpu", options: dict | None = None) -> tuple[list[float], dict[str, torch.Tensor]]:
    """K steps on the CPU, migrate(state, to=to), K more steps there."""
    import agnostic_rt

    torch.manual_seed(1234)
    entry, model, compiled, opt = _setup(options)
    losses = _train(entry, compiled, opt, STEPS, "cpu")
    state = agnostic_rt.TrainingState(model=model, optimizer=opt, step=STEPS)
    agnostic_rt.migrate(state, to=to)
    device = str(next(model.parameters()).device)
    losses += _train(entry, compiled, opt, STEPS, device)
    return losses, _params(model)


def through_checkpoint(workdir: Path,
                       options: dict | None = None) -> tuple[list[float], dict[str, torch.Tensor]]:
    """K steps, save, then a fresh process loads and trains K more steps."""
    import agnostic_rt

    torch.manual_seed(1234)
    entry, model, compiled, opt = _setup(options)
    losses = _train(entry, compiled, opt, STEPS, "cpu")
    ckpt = workdir / "ckpt"
    agnostic_rt.save(agnostic_rt.TrainingState(model=model, optimizer=opt, step=STEPS), str(ckpt))
    out = workdir / "resumed.pt"
    cmd = [sys.executable, "-m", "agnostic_rt.conformance.migration", "--resume", str(ckpt),
           "--out", str(out), "--options", json.dumps(options or {"target": "cpu"})]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"the fresh process failed (exit {proc.returncode}): {proc.stderr[-800:]}")
    resumed = torch.load(out)
    return losses + resumed["losses"], resumed["params"]


def _resume_main(argv: list[str]) -> int:
    """Entry of the fresh process: load the checkpoint, train K steps, write losses and parameters."""
    import agnostic_rt

    p = argparse.ArgumentParser()
    p.add_argument("--resume", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--options", default="{}")
    args = p.parse_args(argv)
    torch.manual_seed(999)  # deliberately wrong: the checkpoint's RNG state must replace it
    entry, model, compiled, opt = _setup(json.loads(args.options))
    state = agnostic_rt.TrainingState(model=model, optimizer=opt)
    agnostic_rt.load(state, args.resume)
    losses = _train(entry, compiled, opt, STEPS, "cpu")
    torch.save({"losses": losses, "params": _params(model)}, args.out)
    return 0


def compare_runs(got: tuple[list[float], dict], want: tuple[list[float], dict],
                 bitwise: bool) -> tuple[bool, float, str]:
    """(passed, worst error ratio, message) comparing losses and final parameters."""
    from .accuracy import fp64_rule

    losses_g, params_g = got
    losses_w, params_w = want
    if len(losses_g) != len(losses_w):
        return False, float("inf"), f"{len(losses_g)} losses, expected {len(losses_w)}"
    if bitwise:
        bad = [k for k in params_w if not torch.equal(params_g[k], params_w[k])]
        loss_bad = [i for i, (a, b) in enumerate(zip(losses_g, losses_w)) if a != b]
        worst = max((float((params_g[k].double() - params_w[k].double()).abs().max()) for k in params_w),
                    default=0.0)
        if bad or loss_bad:
            return False, float("inf"), (f"not bitwise equal: parameters {bad[:4]}, "
                                         f"losses at steps {loss_bad[:4]}; max |diff| {worst:.3g}")
        return True, 0.0, "bitwise equal (losses and parameters)"
    ratios = []
    for k in params_w:
        w = params_w[k]
        if not w.is_floating_point():
            continue
        r = fp64_rule(params_g[k], w, w.double())
        ratios.append(r.compiled_error / max(r.bound, 1e-30))
    worst = max(ratios, default=0.0)
    return worst <= 1.0, worst, f"worst parameter error ratio {worst:.3g}"


def run_migration_tier(report_add: Callable[[Result], Any], notes: list[TierNote],
                       targets: list[str]) -> None:
    """Run both scenarios for the CPU, and CPU -> GPU when one is here."""
    try:
        import agnostic_rt

        agnostic_rt.migrate, agnostic_rt.save, agnostic_rt.load  # noqa: B018 - the API this tier needs
    except (ImportError, AttributeError) as exc:
        notes.append(TierNote("migration", "*", "not available",
                              f"agnostic_rt has no migrate/save/load ({exc})"))
        return
    want = uninterrupted()
    scenarios: list[tuple[str, str, Callable[[], tuple], bool]] = [
        ("cpu", "in-process", lambda: in_process("cpu"), True),
    ]
    with tempfile.TemporaryDirectory(prefix="agnostic-conformance-") as tmp:
        scenarios.append(("cpu", "checkpoint", lambda: through_checkpoint(Path(tmp)), True))
        if torch.cuda.is_available():
            gpu = "rocm" if torch.version.hip else "cuda"
            scenarios.append((gpu, "in-process", lambda: in_process("cuda"), False))
        else:
            notes.append(TierNote("migration", "cuda/rocm", "skipped", "no GPU in this process: cross-device "
                                  "migration not measured"))
        for target, case, fn, bitwise in scenarios:
            t0 = time.perf_counter()
            base = dict(tier="migration", target=target, case=f"mlp.{case}", dtype="float32",
                        check="bitwise" if bitwise else "tolerance")
            try:
                got = fn()
                ok, ratio, msg = compare_runs(got, want, bitwise)
                extra = {"losses": got[0], "reference_losses": want[0]}
                report_add(Result(**base, status="pass" if ok else "fail", error_ratio=ratio, message=msg,
                                  seconds=time.perf_counter() - t0, extra=extra))
            except Exception as exc:  # noqa: BLE001 - a crash in migration is this tier's failure
                report_add(Result(**base, status="fail", error_ratio=float("inf"),
                                  message=f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:600],
                                  seconds=time.perf_counter() - t0))


if __name__ == "__main__":
    sys.exit(_resume_main(sys.argv[1:]))
