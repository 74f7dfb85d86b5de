"""Checkpoints: torch.distributed.checkpoint data, a checksummed manifest, an atomic commit.

Layout under a checkpoint root (a local path or any fsspec URI)::

    <root>/step-00000120/            one committed checkpoint
        __0_0.distcp, __1_0.distcp   DCP data, one file per rank (reshards on load)
        .metadata                    DCP's index of tensors and byte items
        MANIFEST.json                written last: source vendor/arch, torch version, step, world
                                     size, every file's size and sha256, and its own sha256
    <root>/HANDOFF.json              what the next machine needs after a hand-off (migrate.py)

Invariant: a ``step-N`` directory holding a ``MANIFEST.json`` is complete. Locally the data and
manifest are written into ``.tmp-step-N-<id>/``, fsynced, and the directory is renamed into place
(atomic); on object stores, where rename is a copy, the data goes straight to ``step-N/`` and the
manifest, written last as one object, is the commit marker. Anything else under the root
(``.tmp-*``, ``.trash-*``, a step directory without a manifest) is debris from a killed save and is
ignored by readers and removed by the next save.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import threading
import uuid
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.distributed as dist

from .checkpoint_store import (
    FORMAT,
    MANIFEST,
    Checkpoint,
    CheckpointCorruptError,
    CheckpointError,
    CheckpointNotFoundError,
    _commit,
    _resolve,
    _Store,
    latest_checkpoint,
    list_checkpoints,
    verify,
)
from .state import TrainingState, capture_rng, from_blob, restore_rng, to_blob, unwrap_model

__all__ = [
    "Checkpoint", "CheckpointError", "CheckpointCorruptError", "CheckpointNotFoundError",
    "save", "load", "list_checkpoints", "latest_checkpoint", "wait_for_saves", "verify", "MANIFEST",
]

log = logging.getLogger("agnostic_rt.training.checkpoint")

@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """DCP warns that it runs in a single process when torch.distributed is not initialised: intended."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _dcp() -> Any:
    """torch.distributed.checkpoint, imported on first use (it costs seconds at ``import agnostic_rt``)."""
    import torch.distributed.checkpoint as dcp
    import torch.distributed.checkpoint.state_dict  # noqa: F401  (makes dcp.state_dict an attribute)

    return dcp


# ---- distributed helpers -------------------------------------------------------------------------

_GROUP: Any = None


def _dist() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _group() -> Any:
    """A gloo group of all ranks for checkpoint traffic, so async saves never interleave with training
    collectives on the default group. Created at the first collective save/load (all ranks call it)."""
    global _GROUP
    if _dist()[1] == 1:
        return None
    if _GROUP is None:
        _GROUP = dist.new_group(backend="gloo")
    return _GROUP


def _broadcast(obj: Any) -> Any:
    if _dist()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=_group())
    return box[0]


# ---- state <-> DCP dict ----------------------------------------------------------------------------


def _source(state: TrainingState) -> dict[str, Any]:
    """The device the state's tensors are on (its vendor and arch go into the manifest)."""
    from .devices import devices

    first = next((t.device for _, t in state.tensors()), torch.device("cpu"))
    found = devices()
    here = next((d for d in found if d.torch_device.type == first.type and
                 (first.type == "cpu" or d.index == (first.index or 0))), found[-1])
    return {"vendor": here.vendor, "arch": here.arch, "name": here.name, "target": here.target.name}


def _grads(model: Any) -> dict[str, torch.Tensor]:
    return {k: p.grad for k, p in unwrap_model(model).named_parameters() if p.grad is not None}


def _components(state: TrainingState) -> dict[str, Any]:
    return {
        "grads": {n: sorted(_grads(m)) for n, m in state.models.items()},
        "models": sorted(state.models), "optimizers": sorted(state.optimizers),
        "schedulers": sorted(state.schedulers), "scaler": state.scaler is not None,
        "data": state.data is not None,
    }


def _save_dict(state: TrainingState, rank: int) -> dict[str, Any]:
    """The nested dict DCP writes: tensors stay tensors (sharded ones reshard); the rest are blobs.
    RNG and data position are per rank; everything else is replicated."""
    sd: dict[str, Any] = {
        "models": {n: _dcp().state_dict.get_model_state_dict(unwrap_model(m)) for n, m in state.models.items()},
        "optimizers": {
            n: _dcp().state_dict.get_optimizer_state_dict(unwrap_model(state.owner_of(o)), o) for n, o in state.optimizers.items()
        },
        "grads": {n: _grads(m) for n, m in state.models.items()},
        "schedulers": {n: to_blob(s.state_dict()) for n, s in state.schedulers.items()},
        "progress": to_blob({"step": state.step, "epoch": state.epoch}),
        "rng": {f"rank{rank}": to_blob(capture_rng())},
        "extra": {
            "objects": to_blob({k: v for k, v in state.extra.items() if not isinstance(v, torch.Tensor)}),
            "tensors": {k: v for k, v in state.extra.items() if isinstance(v, torch.Tensor)},
        },
    }
    if state.scaler is not None:
        sd["scaler"] = to_blob(state.scaler.state_dict())
    if state.data is not None:
        sd["data"] = {f"rank{rank}": to_blob(state.data.state_dict())}
    return sd


_PINNED: dict[tuple, torch.Tensor] = {}


def _stage(tree: Any, path: tuple = ()) -> Any:
    """A host snapshot of ``tree`` for an async save: every tensor copied into a reused host buffer
    (pinned when an accelerator is present, so the device-to-host copy is a DMA)."""
    if isinstance(tree, Mapping):
        return {k: _stage(v, (*path, k)) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_stage(v, (*path, i)) for i, v in enumerate(tree)]
    if isinstance(tree, torch.Tensor) and type(tree) is torch.Tensor:
        key = (path, tuple(tree.shape), tree.dtype)
        buf = _PINNED.get(key)
        if buf is None:
            pin = torch.cuda.is_available()
            buf = _PINNED[key] = torch.empty(tree.shape, dtype=tree.dtype, device="cpu", pin_memory=pin)
        buf.copy_(tree.detach(), non_blocking=buf.is_pinned())
        return buf
    if isinstance(tree, torch.Tensor):  # DTensor and friends keep their sharding
        return tree.detach().to("cpu", copy=True)
    return tree


# ---- save ------------------------------------------------------------------------------------------

_EXECUTOR: concurrent.futures.ThreadPoolExecutor | None = None
_INFLIGHT: concurrent.futures.Future | None = None
_LOCK = threading.Lock()


def wait_for_saves() -> Checkpoint | None:
    """Block until the async save in flight (if any) is committed; re-raises its error.

    >>> agnostic_rt.training.checkpoint.wait_for_saves()
    """
    global _INFLIGHT
    with _LOCK:
        fut, _INFLIGHT = _INFLIGHT, None
    return fut.result() if fut is not None else None


def save(
    state: TrainingState | Mapping[str, Any],
    uri: str | os.PathLike,
    *,
    keep_last: int | None = None,
    async_save: bool = False,
) -> Checkpoint | concurrent.futures.Future:
    """Write a checkpoint of ``state`` under the root ``uri`` as ``step-<state.step>`` and commit it.

    Collective under torch.distributed: every rank calls it. With ``async_save=True`` the state is
    copied to a host snapshot now and written in the background (training continues); the returned
    Future gives the Checkpoint. At most one save is in flight: the next one waits for it.
    ``keep_last=N`` deletes all but the newest N committed checkpoints after the commit.

    >>> agnostic_rt.save(state, "s3://bucket/run1", keep_last=3, async_save=True)
    """
    global _EXECUTOR, _INFLIGHT
    ts = TrainingState.coerce(state)
    ts.validate()
    if keep_last is not None and (not isinstance(keep_last, int) or keep_last < 1):
        raise ValueError(f"keep_last must be a positive int or None, got {keep_last!r}")
    wait_for_saves()
    rank, world = _dist()
    store = _Store(uri)
    step = ts.step
    name = f"step-{step:08d}"
    workdir = _broadcast(store.join(f".tmp-{name}-{uuid.uuid4().hex[:8]}") if store.local else store.join(name))
    sd = _save_dict(ts, rank)
    manifest_base = {
        "format": FORMAT, "step": step, "epoch": ts.epoch, "world_size": world, "source": _source(ts),
        "torch": torch.__version__, "components": _components(ts),
        "rng_note": "python/numpy/torch-CPU RNG exact; accelerator RNG restored as seed+offset per device, "
                    "whose stream differs across vendors and SM/CU counts",
    }
    if not async_save:
        return _write_and_commit(store, sd, workdir, name, manifest_base, keep_last)
    staged = _stage(sd)
    if torch.cuda.is_available():
        torch.cuda.synchronize()  # the non_blocking copies into pinned buffers are done
    if _EXECUTOR is None:
        _EXECUTOR = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="agnostic_rt-ckpt")
    fut = _EXECUTOR.submit(_write_and_commit, store, staged, workdir, name, manifest_base, keep_last)
    with _LOCK:
        _INFLIGHT = fut
    return fut


def _write_and_commit(
    store: _Store, sd: dict, workdir: str, name: str, manifest: dict, keep_last: int | None
) -> Checkpoint:
    rank, world = _dist()
    final = store.join(name)
    if not store.local and rank == 0 and store.fs.exists(final):
        store.remove(final)  # re-saving a step on an object store: uncommit the old one first
    if world > 1:
        dist.barrier(group=_group())
    if store.local:
        writer = _dcp().FileSystemWriter(workdir, sync_files=True, single_file_per_rank=True, thread_count=1)
    else:
        from torch.distributed.checkpoint._fsspec_filesystem import FsspecWriter

        writer = FsspecWriter(store.url(workdir), sync_files=True, single_file_per_rank=True, thread_count=1)
    error = None
    try:
        with _quiet():
            _dcp().save(sd, storage_writer=writer, process_group=_group())
        if rank == 0:
            _commit(store, workdir, final, manifest, keep_last)
    except BaseException as exc:  # DCP's CheckpointException is a BaseException; every rank must learn of it
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        error = f"{type(exc).__name__}: {exc}"
        log.exception("checkpoint %s failed", final)
    if world > 1:
        errors: list[Any] = [None] * world
        dist.all_gather_object(errors, error, group=_group())
        error = next((e for e in errors if e), None)
    if error:
        raise CheckpointError(f"saving checkpoint {store.url(final)} failed: {error}")
    log.info("committed checkpoint %s", store.url(final))
    return Checkpoint(store.url(final), manifest["step"], manifest)


# ---- load ------------------------------------------------------------------------------------------


def load(state: TrainingState | Mapping[str, Any], uri: str | os.PathLike) -> Checkpoint:
    """Restore ``state`` in place from ``uri``: a checkpoint root (its newest) or one ``step-N`` directory.

    Checksums, components and tensor shapes are all checked before anything in ``state`` changes;
    tensors load onto whatever device the state's tensors are on now. Collective under torch.distributed.

    >>> ckpt = agnostic_rt.load(state, "ckpts/"); state.step
    200
    """
    ts = TrainingState.coerce(state)
    ts.validate()
    rank, world = _dist()
    result = None
    if rank == 0:
        try:
            result = verify(_resolve(uri))
        except CheckpointError as exc:
            result = exc
    result = _broadcast(result)
    if isinstance(result, Exception):
        raise result
    ckpt: Checkpoint = result
    reader = _reader(ckpt.uri)
    saved = reader.read_metadata().state_dict_metadata
    _check_components(ts, ckpt, saved)

    sd: dict[str, Any] = {"models": {n: _dcp().state_dict.get_model_state_dict(unwrap_model(m)) for n, m in ts.models.items()}}
    _check_shapes(sd, saved, ckpt)
    sd["optimizers"] = {
        n: _dcp().state_dict.get_optimizer_state_dict(unwrap_model(ts.owner_of(o)), o) for n, o in ts.optimizers.items()
    }
    saved_grads = ckpt.manifest.get("components", {}).get("grads", {})
    sd["grads"] = {}
    for n, m in ts.models.items():
        params = dict(unwrap_model(m).named_parameters())
        sd["grads"][n] = {k: params[k].grad if params[k].grad is not None else torch.empty_like(params[k])
                          for k in saved_grads.get(n, []) if k in params}
    sd["schedulers"] = dict.fromkeys(ts.schedulers, b"")
    sd["progress"] = b""
    sd["extra"] = {"objects": b"", "tensors": _extra_tensors(ts, saved)}
    rng_key = _rank_key(saved, "rng", rank)
    sd["rng"] = {rng_key: b""}
    if ts.scaler is not None:
        sd["scaler"] = b""
    if ts.data is not None:
        sd["data"] = {_rank_key(saved, "data", rank): b""}
    with _quiet():
        _dcp().load(sd, storage_reader=reader, process_group=_group())

    for n, m in ts.models.items():
        _dcp().state_dict.set_model_state_dict(unwrap_model(m), sd["models"][n])
    for n, m in ts.models.items():
        for k, p in unwrap_model(m).named_parameters():
            p.grad = sd["grads"][n].get(k)  # the checkpoint is the truth: no saved grad means None
    for n, o in ts.optimizers.items():
        _dcp().state_dict.set_optimizer_state_dict(unwrap_model(ts.owner_of(o)), o, sd["optimizers"][n])
    for n, s in ts.schedulers.items():
        s.load_state_dict(from_blob(sd["schedulers"][n]))
    if ts.scaler is not None:
        ts.scaler.load_state_dict(from_blob(sd["scaler"]))
    if ts.data is not None:
        ts.data.load_state_dict(from_blob(next(iter(sd["data"].values()))))
        # A DataLoader draws a base seed from torch's global RNG whenever it makes an iterator. Asking
        # for its state makes StatefulDataLoader build the resumed iterator now, before the RNG is
        # restored below, and hand that same iterator to the user's next iter(): no extra draw.
        ts.data.state_dict()
    progress = from_blob(sd["progress"])
    ts.step, ts.epoch = int(progress["step"]), int(progress["epoch"])
    ts.extra.update(from_blob(sd["extra"]["objects"]))
    ts.extra.update(sd["extra"]["tensors"])
    restore_rng(from_blob(sd["rng"][rng_key]))
    ts.write_back(state)
    log.info("loaded %s (step %d, saved on %s at world size %s)", ckpt.uri, ckpt.step,
             ckpt.manifest.get("source", {}).get("name"), ckpt.manifest.get("world_size"))
    return ckpt


def _extra_tensors(ts: TrainingState, saved: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Targets for saved extra tensors: the state's own tensor (loaded in place) or a new CPU one."""
    out = {}
    for fqn, meta in saved.items():
        if fqn.startswith("extra.tensors.") and hasattr(meta, "size"):
            key = fqn[len("extra.tensors."):]
            mine = ts.extra.get(key)
            fits = isinstance(mine, torch.Tensor) and tuple(mine.shape) == tuple(meta.size)
            out[key] = mine if fits else torch.empty(tuple(meta.size), dtype=meta.properties.dtype)
    return out


def _reader(uri: str) -> Any:
    store = _Store(uri)
    if store.local:
        return _dcp().FileSystemReader(store.root)
    from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader

    return FsspecReader(uri)


def _rank_key(saved: Mapping[str, Any], prefix: str, rank: int) -> str:
    """This rank's per-rank item, or rank 0's when the checkpoint was saved at a smaller world size."""
    if f"{prefix}.rank{rank}" in saved:
        return f"rank{rank}"
    log.warning("%s: checkpoint has no entry for rank %d (saved at another world size); using rank 0's",
                prefix, rank)
    return "rank0"


def _check_components(ts: TrainingState, ckpt: Checkpoint, saved: Mapping[str, Any]) -> None:
    have = ckpt.manifest.get("components", {})
    missing = []
    for kind in ("models", "optimizers", "schedulers"):
        for n in getattr(ts, kind):
            if n not in have.get(kind, []):
                missing.append(f"{kind[:-1]} {n!r} (checkpoint has {kind}: {have.get(kind, [])})")
    for kind in ("scaler", "data"):
        if getattr(ts, kind) is not None and not have.get(kind):
            missing.append(f"{kind} (the checkpoint was saved without one)")
    if missing:
        raise CheckpointError(f"checkpoint {ckpt.uri} lacks what the state needs: " + "; ".join(missing))


def _check_shapes(sd: Mapping[str, Any], saved: Mapping[str, Any], ckpt: Checkpoint) -> None:
    problems = []
    for mname, msd in sd["models"].items():
        for key, t in msd.items():
            fqn = f"models.{mname}.{key}"
            meta = saved.get(fqn)
            if meta is None:
                problems.append(f"{fqn} is not in the checkpoint")
            elif hasattr(meta, "size") and tuple(meta.size) != tuple(t.shape):
                problems.append(f"{fqn} has shape {tuple(meta.size)} in the checkpoint, {tuple(t.shape)} in the model")
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise CheckpointError(f"checkpoint {ckpt.uri} does not fit the model: " + "; ".join(problems[:5]) + more)
