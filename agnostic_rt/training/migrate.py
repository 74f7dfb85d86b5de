"""Migration: move a live training state to another device, in process or through a hand-off.

In process, every tensor moves in place (``param.data``, ``param.grad``, buffers, optimizer state),
so the user's model, optimizer, scheduler and compiled model keep working: Dynamo guards on the
device of each parameter, so a compiled model recompiles for the new target on its next call.

A device this process cannot reach (``to="rocm"`` on a CUDA host, ``"cuda:3"`` with two GPUs) gets a
hand-off instead: the state is saved as a committed checkpoint, ``HANDOFF.json`` is written next to
it, and the process exits with :data:`EXIT_HANDOFF` so a supervisor starts the job where that
device is; there :func:`resume` restores it.

Exit codes (sysexits-style, distinct from crashes so supervisors can tell "restart me" apart):

- ``EXIT_PREEMPTED`` = 75 (EX_TEMPFAIL): preempted; a checkpoint is committed; restart anywhere.
- ``EXIT_HANDOFF`` = 76: hand-off; a checkpoint is committed; restart on the device in HANDOFF.json.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import torch

from .checkpoint import CheckpointCorruptError, _dist, list_checkpoints, load, save, wait_for_saves
from .checkpoint_store import _Store
from .devices import Device, resolve_device, select_device
from .state import TrainingState, unwrap_model

__all__ = ["migrate", "resume", "handoff", "EXIT_PREEMPTED", "EXIT_HANDOFF", "DTYPE_POLICIES", "native_dtype"]

log = logging.getLogger("agnostic_rt.migrate")

EXIT_PREEMPTED = 75
EXIT_HANDOFF = 76
HANDOFF = "HANDOFF.json"
DTYPE_POLICIES = ("convert", "keep", "error")
DEFAULT_URI_ENV = "AGNOSTIC_RT_CHECKPOINT_URI"

# fp8 formats that differ by vendor: OCP (NVIDIA, and AMD from gfx950) vs FNUZ (MI300, gfx942).
_FP8_PAIRS = {
    torch.float8_e4m3fn: torch.float8_e4m3fnuz, torch.float8_e4m3fnuz: torch.float8_e4m3fn,
    torch.float8_e5m2: torch.float8_e5m2fnuz, torch.float8_e5m2fnuz: torch.float8_e5m2,
}
_FNUZ = {torch.float8_e4m3fnuz, torch.float8_e5m2fnuz}


def native_dtype(dtype: torch.dtype, device: Device) -> torch.dtype:
    """The dtype ``device`` computes natively in place of ``dtype`` (only fp8 formats differ).

    >>> native_dtype(torch.float8_e4m3fn, mi300x_device)
    torch.float8_e4m3fnuz
    """
    if dtype not in _FP8_PAIRS:
        return dtype
    wants_fnuz = any(name.endswith("fnuz") for name, _ in device.target.peak_flops)
    if device.vendor == "cpu":
        return dtype  # the CPU emulates every format
    return dtype if (dtype in _FNUZ) == wants_fnuz else _FP8_PAIRS[dtype]


def _convert(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """fp8 -> other fp8 through fp32, saturating to the narrower range (FNUZ has no inf, max 240 for e4m3)."""
    if dtype == t.dtype:
        return t
    info = torch.finfo(dtype)
    return t.float().clamp(info.min, info.max).to(dtype)


def _mover(device: Device, dtype_policy: str):
    dev = device.torch_device

    def move(name: str, t: torch.Tensor) -> torch.Tensor:
        want = native_dtype(t.dtype, device)
        if want != t.dtype:
            if dtype_policy == "error":
                raise TypeError(
                    f"{name} is {t.dtype}, which {device} does not compute natively (it uses {want}); "
                    "pass dtype_policy='convert' to convert or 'keep' to keep it"
                )
            if dtype_policy == "convert":
                return _convert(t.to(dev), want)
        return t.to(dev)

    return move


def migrate(
    state: TrainingState | Mapping[str, Any],
    to: str | Device | torch.device,
    *,
    dtype_policy: str = "convert",
    uri: str | os.PathLike | None = None,
) -> TrainingState | Mapping[str, Any]:
    """Move ``state`` to the device ``to``, in place; returns the same state object.

    ``to`` is "cpu", "cuda", "cuda:N" (the torch accelerator, any vendor), "nvidia", "rocm"/"amd", or a
    :class:`Device`. ``dtype_policy`` handles formats that differ by vendor (fp8 e4m3fn on NVIDIA vs
    e4m3fnuz on MI300): "convert" (saturating), "keep", or "error". When ``to`` is not reachable from
    this process, the state is checkpointed under ``uri`` (default ``$AGNOSTIC_RT_CHECKPOINT_URI`` or
    ./agnostic_rt_checkpoints) and the process exits with EXIT_HANDOFF (see :func:`handoff`).

    >>> state = agnostic_rt.migrate(state, to="cuda:1")
    """
    ts = TrainingState.coerce(state)
    ts.validate()
    if dtype_policy not in DTYPE_POLICIES:
        raise ValueError(f"unknown dtype_policy {dtype_policy!r}; expected one of: {', '.join(DTYPE_POLICIES)}")
    try:
        device = resolve_device(to)
    except LookupError as exc:
        log.warning("%s: handing off through a checkpoint", exc)
        handoff(state, to, uri=uri)
    move = _mover(device, dtype_policy)
    _check_movable(ts, move)  # raises before anything moves
    src_devices = {t.device for _, t in ts.tensors()}
    for mname, model in ts.models.items():
        for module_name, module in unwrap_model(model).named_modules():
            for pname, p in module._parameters.items():
                if p is None:
                    continue
                label = f"{mname}.{module_name}.{pname}".replace("..", ".")
                grad = p.grad
                p.data = move(label, p.data)
                if grad is not None:
                    p.grad = move(label + ".grad", grad).to(p.dtype)
            for bname, b in module._buffers.items():
                if b is not None:
                    module._buffers[bname] = move(f"{mname}.{module_name}.{bname}", b)
    for oname, opt in ts.optimizers.items():
        keep_step_on_host = {id(p) for g in opt.param_groups if not (g.get("capturable") or g.get("fused"))
                             for p in g["params"]}
        for p, s in opt.state.items():
            for k, v in list(s.items()):
                if not isinstance(v, torch.Tensor):
                    continue
                if k == "step" and id(p) in keep_step_on_host:
                    continue  # torch keeps a scalar step on the host unless capturable/fused
                s[k] = move(f"{oname}.state.{k}", v)
    if ts.scaler is not None and getattr(ts.scaler, "_scale", None) is not None:
        ts.scaler._scale = ts.scaler._scale.to(device.torch_device)
        ts.scaler._growth_tracker = ts.scaler._growth_tracker.to(device.torch_device)
        if hasattr(ts.scaler, "_device"):
            ts.scaler._device = device.torch_device.type
    for k, v in list(ts.extra.items()):
        if isinstance(v, torch.Tensor):
            ts.extra[k] = move(f"extra.{k}", v)
    _carry_accelerator_rng(src_devices, device)
    log.info("migrated state from %s to %s", sorted(map(str, src_devices)), device)
    return state


def _check_movable(ts: TrainingState, move) -> None:
    """Run the dtype policy over every tensor's dtype (not its data) so 'error' raises before any move."""
    for name, t in ts.tensors():
        move(name, torch.empty(0, dtype=t.dtype))


def _carry_accelerator_rng(src_devices: set[torch.device], device: Device) -> None:
    """cuda:i -> cuda:j keeps the dropout stream going: the target generator takes the source's seed+offset."""
    src = [d for d in src_devices if d.type == "cuda"]
    if device.vendor == "cpu" or len(src) != 1 or src[0].index == device.index:
        return
    torch.cuda.set_rng_state(torch.cuda.get_rng_state(src[0].index), device.index)


def handoff(state: TrainingState | Mapping[str, Any], to: Any, *, uri: str | os.PathLike | None = None) -> None:
    """Checkpoint ``state``, write HANDOFF.json (what the next machine needs) and exit with EXIT_HANDOFF.

    Collective under torch.distributed. Never returns: raises SystemExit(EXIT_HANDOFF) after the commit.

    >>> agnostic_rt.migrate(state, to="rocm", uri="s3://bucket/run1")   # on an NVIDIA host: exits 76
    """
    uri = os.fspath(uri or os.environ.get(DEFAULT_URI_ENV) or "agnostic_rt_checkpoints")
    wait_for_saves()
    ckpt = save(state, uri)
    if _dist()[0] == 0:
        store = _Store(uri)
        note = {
            "reason": "handoff", "to": str(to), "checkpoint": ckpt.uri, "step": ckpt.step,
            "source": ckpt.manifest.get("source"), "world_size": ckpt.manifest.get("world_size"),
            "exit_code": EXIT_HANDOFF,
            "resume": f"agnostic_rt.resume(state, {uri!r}) on a machine where {to!s} is reachable",
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        store.fs.pipe_file(store.join(HANDOFF), json.dumps(note, indent=1).encode())
    log.warning("handed off to %s: checkpoint %s committed; exiting with %d", to, ckpt.uri, EXIT_HANDOFF)
    raise SystemExit(EXIT_HANDOFF)


def resume(
    state: TrainingState | Mapping[str, Any],
    uri: str | os.PathLike,
    *,
    device: Any = None,
    fallback: bool = True,
):
    """Move ``state`` to a device here and load the newest committed checkpoint under ``uri``.

    ``device`` is a select_device policy; None keeps a state already on an accelerator where it is, and
    otherwise takes torch's current accelerator (``cuda:LOCAL_RANK`` once a torchrun worker has set it),
    or the CPU. With ``fallback``, a corrupt newest checkpoint is skipped (with a
    warning naming the bad file) for the next older one. Returns the Checkpoint, or None when there is
    none yet (start fresh).

    >>> if agnostic_rt.resume(state, "s3://bucket/run1") is None: print("fresh start")
    """
    if device is None:
        on_accel = any(t.device.type != "cpu" for _, t in TrainingState.coerce(state).tensors())
        if not on_accel:
            migrate(state, to=f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu")
    else:
        migrate(state, to=select_device(device))
    found = list_checkpoints(uri)
    if not found:
        log.info("no checkpoint under %s: starting fresh", os.fspath(uri))
        return None
    for ckpt in reversed(found):
        try:
            return load(state, ckpt.uri)
        except CheckpointCorruptError as exc:
            if not fallback:
                raise
            log.warning("skipping corrupt checkpoint: %s", exc)
    raise CheckpointCorruptError(f"every checkpoint under {os.fspath(uri)!r} is corrupt; see the warnings above")
