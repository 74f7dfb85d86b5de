"""Training state: everything a run needs to continue bitwise where it stopped.

A :class:`TrainingState` names the user's own objects (model, optimizer, scheduler, grad scaler,
data loader or sampler) plus step/epoch and extras; it owns nothing. ``migrate``, ``save`` and
``load`` read and write those objects in place, so the user's references stay valid.
:meth:`TrainingState.coerce` also accepts a plain dict with the same keys.

RNG: python, numpy and torch CPU are captured exactly. Accelerator generators are captured as
(seed, offset) per device: that is all CUDA and HIP Philox states hold, but the *stream* drawn from
it depends on the launch geometry (SM/CU count), so it is not bitwise portable across vendors.
"""

from __future__ import annotations

import io
import logging
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["TrainingState", "StateError", "unwrap_model", "capture_rng", "restore_rng"]

log = logging.getLogger("agnostic_rt.training.state")

FIELDS = ("model", "optimizer", "scheduler", "scaler", "step", "epoch", "data", "extra")


class StateError(ValueError):
    """A training state is missing something or is inconsistent; the message says what."""


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user's module under torch.compile's OptimizedModule and DDP wrappers (same parameters)."""
    while True:
        inner = getattr(model, "_orig_mod", None)  # torch.compile
        if isinstance(inner, nn.Module):
            model = inner
            continue
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
            continue
        return model


def _named(value: Any, default: str) -> dict[str, Any]:
    """One object or a dict of named objects -> a dict of named objects."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    return {default: value}


@dataclass
class TrainingState:
    """The objects a training run is made of, by reference.

    >>> state = agnostic_rt.TrainingState(model=model, optimizer=opt, scheduler=sched, step=0,
    ...                                   data=loader, extra={"best_loss": 1e9})

    ``model``, ``optimizer`` and ``scheduler`` may each be one object or a dict of named ones.
    ``data`` is anything with ``state_dict()``/``load_state_dict()``: a torchdata
    ``StatefulDataLoader`` or a stateful sampler (``StatefulDistributedSampler``).
    """

    model: nn.Module | dict[str, nn.Module] | None = None
    optimizer: torch.optim.Optimizer | dict[str, torch.optim.Optimizer] | None = None
    scheduler: Any = None
    scaler: Any = None
    step: int = 0
    epoch: int = 0
    data: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def coerce(cls, state: TrainingState | Mapping[str, Any]) -> TrainingState:
        """A TrainingState from itself or from a plain dict with the same keys.

        >>> TrainingState.coerce({"model": model, "optimizer": opt, "step": 3}).step
        3
        """
        if isinstance(state, TrainingState):
            return state
        if isinstance(state, Mapping):
            unknown = sorted(set(state) - set(FIELDS))
            if unknown:
                raise StateError(f"unknown training-state key(s) {unknown}; valid keys: {', '.join(FIELDS)}")
            kw = dict(state)
            if kw.get("extra") is None:
                kw.pop("extra", None)
            return cls(**kw)
        raise StateError(
            f"a training state must be a TrainingState or a dict with keys {', '.join(FIELDS)}; "
            f"got {type(state).__name__}"
        )

    def write_back(self, original: Any) -> None:
        """Copy step/epoch/extra back into the dict a caller passed (ints are not shared by reference)."""
        if isinstance(original, dict) and original is not self:
            original["step"] = self.step
            original["epoch"] = self.epoch
            if "extra" in original and original["extra"] is not self.extra:
                original["extra"] = self.extra

    # ---- views --------------------------------------------------------------------------------

    @property
    def models(self) -> dict[str, nn.Module]:
        return _named(self.model, "model")

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return _named(self.optimizer, "optimizer")

    @property
    def schedulers(self) -> dict[str, Any]:
        return _named(self.scheduler, "scheduler")

    def owner_of(self, optimizer: torch.optim.Optimizer) -> nn.Module:
        """The model whose parameters ``optimizer`` updates (validated to be exactly one)."""
        ids = {id(p) for g in optimizer.param_groups for p in g["params"]}
        for model in self.models.values():
            if ids <= {id(p) for p in model.parameters()}:
                return model
        raise StateError("optimizer updates parameters that belong to no single model in the state")

    def tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Every parameter, grad, buffer and optimizer-state tensor, with a readable name."""
        for mname, model in self.models.items():
            for pname, p in unwrap_model(model).named_parameters():
                yield f"{mname}.{pname}", p
                if p.grad is not None:
                    yield f"{mname}.{pname}.grad", p.grad
            for bname, b in unwrap_model(model).named_buffers():
                yield f"{mname}.{bname}", b
        for oname, opt in self.optimizers.items():
            for i, s in enumerate(opt.state.values()):
                for k, v in s.items():
                    if isinstance(v, torch.Tensor):
                        yield f"{oname}.state[{i}].{k}", v

    # ---- validation ---------------------------------------------------------------------------

    def validate(self) -> None:
        """Raise StateError naming everything missing or inconsistent; never changes the state.

        >>> TrainingState(model=model, optimizer=other_models_optimizer).validate()
        Traceback (most recent call last):
        StateError: optimizer 'optimizer' updates 2 parameter(s) that belong to no model in the state ...
        """
        problems: list[str] = []
        models = self.models
        if not models:
            problems.append("state has no 'model' (an nn.Module or a dict of them)")
        for name, m in models.items():
            if not isinstance(m, nn.Module):
                problems.append(f"model {name!r} is a {type(m).__name__}, expected a torch.nn.Module")
        param_ids = {id(p) for m in models.values() if isinstance(m, nn.Module) for p in m.parameters()}
        for name, opt in self.optimizers.items():
            if not isinstance(opt, torch.optim.Optimizer):
                problems.append(f"optimizer {name!r} is a {type(opt).__name__}, expected a torch.optim.Optimizer")
                continue
            stray = [p for g in opt.param_groups for p in g["params"] if id(p) not in param_ids]
            if stray:
                shapes = ", ".join(str(tuple(p.shape)) for p in stray[:3])
                problems.append(
                    f"optimizer {name!r} updates {len(stray)} parameter(s) that belong to no model in the "
                    f"state (shapes {shapes}); pass the model those parameters belong to"
                )
        opts = [o for o in self.optimizers.values() if isinstance(o, torch.optim.Optimizer)]
        for name, sched in self.schedulers.items():
            if not hasattr(sched, "state_dict") or not hasattr(sched, "load_state_dict"):
                problems.append(f"scheduler {name!r} ({type(sched).__name__}) has no state_dict/load_state_dict")
                continue
            target = getattr(sched, "optimizer", None)
            if target is not None and not any(target is o for o in opts):
                problems.append(
                    f"scheduler {name!r} drives an optimizer that is not in the state; "
                    f"add it as optimizer= (state has {len(opts)} optimizer(s))"
                )
        if self.scaler is not None and not (
            hasattr(self.scaler, "state_dict") and hasattr(self.scaler, "load_state_dict")
        ):
            problems.append(f"scaler is a {type(self.scaler).__name__}, expected a torch.amp.GradScaler")
        if self.data is not None and not (
            hasattr(self.data, "state_dict") and hasattr(self.data, "load_state_dict")
        ):
            problems.append(
                f"data is a {type(self.data).__name__} with no state_dict()/load_state_dict(), so its "
                "position cannot be saved; use torchdata.stateful_dataloader.StatefulDataLoader or a "
                "stateful sampler (StatefulDistributedSampler)"
            )
        for key in ("step", "epoch"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                problems.append(f"{key} must be a non-negative int, got {value!r}")
        if not isinstance(self.extra, dict) or not all(isinstance(k, str) for k in self.extra):
            problems.append(f"extra must be a dict with str keys, got {self.extra!r:.80}")
        if problems:
            raise StateError("invalid training state:\n  - " + "\n  - ".join(problems))


# ---- RNG ----------------------------------------------------------------------------------------


def capture_rng() -> dict[str, Any]:
    """Python, numpy and torch CPU generator states exactly; accelerator generators as seed+offset."""
    rng: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch_cpu": torch.get_rng_state().numpy().tobytes(),
        "accelerator": [],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i in range(torch.cuda.device_count()):
            raw = bytes(torch.cuda.get_rng_state(i).tolist())
            # CUDA and HIP Philox generators both serialise as seed (u64) then offset (u64).
            rng["accelerator"].append({
                "seed": int.from_bytes(raw[:8], "little"),
                "offset": int.from_bytes(raw[8:16], "little"),
            })
    return rng


def restore_rng(rng: Mapping[str, Any]) -> None:
    """Put back what :func:`capture_rng` took; accelerator seed+offset go to devices by index."""
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(torch.frombuffer(bytearray(rng["torch_cpu"]), dtype=torch.uint8))
    accel = rng.get("accelerator") or []
    if accel and torch.cuda.is_available():
        for i in range(min(len(accel), torch.cuda.device_count())):
            raw = accel[i]["seed"].to_bytes(8, "little") + accel[i]["offset"].to_bytes(8, "little")
            torch.cuda.set_rng_state(torch.frombuffer(bytearray(raw), dtype=torch.uint8), i)
        log.info("accelerator RNG restored as seed+offset; streams match only on the same device kind")


def to_blob(obj: Any) -> bytes:
    """Serialise a non-tensor component (tensors inside it go to the CPU) into one opaque value."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def from_blob(blob: bytes) -> Any:
    return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=False)
