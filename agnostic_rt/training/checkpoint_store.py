"""The storage side of checkpoints: where they live, how a commit is made atomic, how one is verified.

See agnostic_rt/training/checkpoint.py for the layout; this module knows files, not training state.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

__all__ = [
    "Checkpoint", "CheckpointError", "CheckpointCorruptError", "CheckpointNotFoundError", "MANIFEST",
    "list_checkpoints", "latest_checkpoint", "verify",
]

log = logging.getLogger("agnostic_rt.training.checkpoint")

MANIFEST = "MANIFEST.json"
FORMAT = "agnostic-rt-checkpoint/1"
_STEP_DIR = re.compile(r"^step-(\d{8,})$")


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message names the path."""


class CheckpointCorruptError(CheckpointError):
    """A file of a committed checkpoint does not match its manifest checksum (or is missing)."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No committed checkpoint where one was asked for."""


@dataclass(frozen=True)
class Checkpoint:
    """One committed checkpoint: where it is, its step, and its manifest."""

    uri: str
    step: int
    manifest: dict[str, Any]


# ---- filesystem --------------------------------------------------------------------------------


class _Store:
    """A checkpoint root on some filesystem: local (rename commits) or an fsspec store (manifest commits)."""

    def __init__(self, uri: str | os.PathLike):
        self.fs, path = fsspec.core.url_to_fs(os.fspath(uri))
        self.local = isinstance(self.fs, LocalFileSystem)
        self.root = os.path.abspath(path) if self.local else path.rstrip("/")

    def join(self, *parts: str) -> str:
        return "/".join([self.root, *parts]) if not self.local else os.path.join(self.root, *parts)

    def url(self, path: str) -> str:
        return path if self.local else self.fs.unstrip_protocol(path)

    def names(self) -> list[str]:
        try:
            entries = self.fs.ls(self.root, detail=False)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries)

    def checkpoints(self) -> list[tuple[int, str]]:
        """(step, path) of committed checkpoints, oldest first."""
        found = []
        for name in self.names():
            m = _STEP_DIR.match(name)
            if m and self.fs.exists(self.join(name, MANIFEST)):
                found.append((int(m.group(1)), self.join(name)))
        return sorted(found)

    def files(self, directory: str) -> list[str]:
        """Relative paths of every file under ``directory`` except the manifest."""
        out = []
        for path in self.fs.find(directory):
            rel = os.path.relpath(path, directory) if self.local else path[len(directory.rstrip("/")) + 1:]
            if rel != MANIFEST:
                out.append(rel)
        return sorted(out)

    def sha256(self, path: str) -> tuple[str, int]:
        h, size = hashlib.sha256(), 0
        with self.fs.open(path, "rb") as f:
            while chunk := f.read(8 << 20):
                h.update(chunk)
                size += len(chunk)
        return h.hexdigest(), size

    def remove(self, path: str) -> None:
        """Remove a checkpoint directory so that a kill part-way never leaves a committed-looking one."""
        if self.local:
            trash = self.join(f".trash-{os.path.basename(path)}-{uuid.uuid4().hex[:8]}")
            os.rename(path, trash)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            if self.fs.exists(f"{path}/{MANIFEST}"):
                self.fs.rm(f"{path}/{MANIFEST}")  # uncommit first
            self.fs.rm(path, recursive=True)

    def sweep_debris(self) -> None:
        for name in self.names():
            path = self.join(name)
            stale = name.startswith((".tmp-", ".trash-")) or (
                _STEP_DIR.match(name) and not self.fs.exists(self.join(name, MANIFEST))
            )
            if stale:
                log.debug("removing debris of an interrupted save: %s", path)
                if self.local:
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    self.fs.rm(path, recursive=True)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _commit(store: _Store, workdir: str, final: str, manifest: dict, keep_last: int | None) -> None:
    files = {}
    for rel in store.files(workdir):
        digest, size = store.sha256(f"{workdir}/{rel}" if not store.local else os.path.join(workdir, rel))
        files[rel] = {"size": size, "sha256": digest}
    body = dict(manifest, files=files,
                created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    body["manifest_sha256"] = _manifest_digest(body)
    text = json.dumps(body, indent=1, sort_keys=True)
    if store.local:
        path = os.path.join(workdir, MANIFEST)
        with open(path, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(workdir)
        if os.path.exists(final):
            store.remove(final)
        os.rename(workdir, final)  # the commit
        _fsync_dir(store.root)
    else:
        store.fs.pipe_file(f"{final}/{MANIFEST}", text.encode())  # the commit: one object, written last
    if keep_last is not None:
        for _, old in store.checkpoints()[:-keep_last]:
            log.debug("keep_last=%d: removing %s", keep_last, old)
            store.remove(old)
    store.sweep_debris()


def _manifest_digest(body: Mapping[str, Any]) -> str:
    rest = {k: v for k, v in body.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()


# ---- listing and verification ------------------------------------------------------------------------


def list_checkpoints(uri: str | os.PathLike) -> list[Checkpoint]:
    """Committed checkpoints under the root ``uri``, oldest first (manifests read, data not verified).

    >>> [c.step for c in agnostic_rt.list_checkpoints("ckpts/")]
    [100, 200]
    """
    store = _Store(uri)
    out = []
    for step, path in store.checkpoints():
        try:
            manifest = json.loads(store.fs.cat_file(f"{path}/{MANIFEST}" if not store.local else
                                                    os.path.join(path, MANIFEST)))
        except (ValueError, OSError) as exc:
            log.warning("unreadable manifest in %s: %s", path, exc)
            manifest = {}
        out.append(Checkpoint(store.url(path), step, manifest))
    return out


def latest_checkpoint(uri: str | os.PathLike) -> Checkpoint | None:
    """The newest committed checkpoint under ``uri``, or None."""
    found = list_checkpoints(uri)
    return found[-1] if found else None


def verify(uri: str | os.PathLike) -> Checkpoint:
    """Check one checkpoint directory against its manifest; raises CheckpointCorruptError naming the file.

    >>> agnostic_rt.training.checkpoint.verify("ckpts/step-00000200")
    """
    store = _Store(uri)
    path = store.root
    mpath = f"{path}/{MANIFEST}" if not store.local else os.path.join(path, MANIFEST)
    if not store.fs.exists(mpath):
        raise CheckpointNotFoundError(f"{store.url(path)} is not a committed checkpoint (no {MANIFEST})")
    try:
        manifest = json.loads(store.fs.cat_file(mpath))
        ok = manifest.get("manifest_sha256") == _manifest_digest(manifest)
    except ValueError as exc:
        raise CheckpointCorruptError(f"{store.url(mpath)} is not valid JSON: {exc}") from None
    if not ok or manifest.get("format") != FORMAT:
        raise CheckpointCorruptError(f"{store.url(mpath)} fails its own checksum (or format is not {FORMAT})")
    for rel, want in manifest["files"].items():
        fpath = f"{path}/{rel}" if not store.local else os.path.join(path, rel)
        if not store.fs.exists(fpath):
            raise CheckpointCorruptError(f"checkpoint file {store.url(fpath)} is missing")
        digest, size = store.sha256(fpath)
        if digest != want["sha256"] or size != want["size"]:
            raise CheckpointCorruptError(
                f"checkpoint file {store.url(fpath)} is corrupt: sha256 {digest[:16]}… size {size}, "
                f"manifest says sha256 {want['sha256'][:16]}… size {want['size']}"
            )
    return Checkpoint(store.url(path), int(manifest["step"]), manifest)


# ---- resolving a uri ---


def _resolve(uri: str | os.PathLike) -> str:
    """A checkpoint directory from a root (its newest) or from the directory itself."""
    store = _Store(uri)
    if store.fs.exists(f"{store.root}/{MANIFEST}" if not store.local else os.path.join(store.root, MANIFEST)):
        return store.url(store.root)
    latest = latest_checkpoint(uri)
    if latest is None:
        raise CheckpointNotFoundError(f"no committed checkpoint under {os.fspath(uri)!r}")
    return latest.uri
