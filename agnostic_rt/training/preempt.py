"""Preemption: notice it early, checkpoint at the next step boundary, exit for the supervisor.

Sources of a notice, each only sets a flag (signal handlers and watcher threads do nothing else):

- signals: SIGTERM (what Kubernetes, Slurm, torchrun and most spot agents send), SIGUSR1;
- AWS: IMDSv2 ``/latest/meta-data/spot/instance-action`` (200 with {"action", "time"} = notice, 404 = none;
  ~2 min warning), with a session token from ``PUT /latest/api/token``;
- GCP: ``/computeMetadata/v1/instance/preempted`` ("TRUE" = notice; ~30 s), header Metadata-Flavor: Google;
- Azure: Scheduled Events ``/metadata/scheduledevents`` with an event of EventType "Preempt" (~30 s).

Clouds are polled every ``interval`` seconds (5 by default). Endpoint bases are configurable
(``urls={"aws": "http://127.0.0.1:8080"}`` or ``AGNOSTIC_RT_{AWS,GCP,AZURE}_METADATA_URL``); nothing
is polled unless asked for (``clouds=[...]``, or ``AGNOSTIC_RT_PREEMPT_CLOUDS=aws,gcp`` / ``auto``,
where auto reads the DMI vendor string, not the network).

:func:`spot_guard` turns the flag into a committed checkpoint: at the next step boundary all ranks
agree (an all-reduce MAX of the flag), save, and exit with ``EXIT_PREEMPTED`` (75).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from .checkpoint import _dist, save, wait_for_saves
from .migrate import EXIT_PREEMPTED
from .state import TrainingState

__all__ = [
    "PreemptionNotice", "preempted", "notice", "clear_notice", "watch", "Watch", "spot_guard", "SpotGuard",
    "CloudWatcher", "AWSWatcher", "GCPWatcher", "AzureWatcher", "WATCHERS", "detect_cloud",
]

log = logging.getLogger("agnostic_rt.training.preempt")

DEFAULT_INTERVAL_S = 5.0


@dataclass(frozen=True)
class PreemptionNotice:
    source: str  # "signal", "aws", "gcp", "azure"
    detail: str  # signal name or the endpoint's answer
    received: float  # time.time()


_FLAG = threading.Event()
_NOTICE: PreemptionNotice | None = None


def _raise_flag(source: str, detail: str) -> None:
    global _NOTICE
    if not _FLAG.is_set():
        _NOTICE = PreemptionNotice(source, detail, time.time())
        _FLAG.set()


def preempted() -> bool:
    """Whether a preemption notice has arrived in this process."""
    return _FLAG.is_set()


def notice() -> PreemptionNotice | None:
    """The first notice received, if any."""
    return _NOTICE


def clear_notice() -> None:
    """Forget a notice (e.g. after an Azure event was cancelled)."""
    global _NOTICE
    _NOTICE = None
    _FLAG.clear()


# ---- cloud metadata watchers ---------------------------------------------------------------------


class CloudWatcher(threading.Thread):
    """Polls one cloud's metadata endpoint every ``interval`` seconds; on a notice raises the flag."""

    cloud = ""
    default_url = ""

    def __init__(self, url: str | None = None, interval: float = DEFAULT_INTERVAL_S, timeout: float = 2.0):
        super().__init__(name=f"agnostic_rt-{self.cloud}-watcher", daemon=True)
        env = os.environ.get(f"AGNOSTIC_RT_{self.cloud.upper()}_METADATA_URL")
        self.url = (url or env or self.default_url).rstrip("/")
        self.interval = interval
        self.timeout = min(timeout, max(interval, 0.1))
        self._stop_event = threading.Event()

    def check(self) -> str | None:
        """One poll: the notice's description, or None."""
        raise NotImplementedError

    def _request(self, path: str, headers: Mapping[str, str], method: str = "GET") -> tuple[int, str]:
        req = urllib.request.Request(self.url + path, headers=dict(headers), method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.status, resp.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, ""

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                detail = self.check()
            except (OSError, ValueError) as exc:  # endpoint down or garbled: keep polling
                log.debug("%s metadata poll failed: %s", self.cloud, exc)
                detail = None
            if detail is not None:
                log.warning("preemption notice from %s: %s", self.cloud, detail)
                _raise_flag(self.cloud, detail)
                return
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()


class AWSWatcher(CloudWatcher):
    """EC2 spot interruption through IMDSv2 (token, then spot/instance-action)."""

    cloud = "aws"
    default_url = "http://169.254.169.254"
    _token: str | None = None

    def check(self) -> str | None:
        if self._token is None:
            status, body = self._request("/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "21600"}, "PUT")
            if status != 200:
                raise OSError(f"IMDSv2 token request returned HTTP {status}")
            self._token = body.strip()
        status, body = self._request("/latest/meta-data/spot/instance-action",
                                     {"X-aws-ec2-metadata-token": self._token})
        if status == 401:  # token expired
            self._token = None
            return None
        if status == 200 and body.strip():
            action = json.loads(body)
            return f"spot {action.get('action', '?')} at {action.get('time', '?')}"
        return None


class GCPWatcher(CloudWatcher):
    """GCE spot/preemptible VMs: instance/preempted turns TRUE."""

    cloud = "gcp"
    default_url = "http://metadata.google.internal"

    def check(self) -> str | None:
        status, body = self._request("/computeMetadata/v1/instance/preempted", {"Metadata-Flavor": "Google"})
        return "instance/preempted is TRUE" if status == 200 and body.strip().upper() == "TRUE" else None


class AzureWatcher(CloudWatcher):
    """Azure Spot VMs: a Scheduled Event with EventType Preempt."""

    cloud = "azure"
    default_url = "http://169.254.169.254"

    def check(self) -> str | None:
        status, body = self._request("/metadata/scheduledevents?api-version=2020-07-01", {"Metadata": "true"})
        if status != 200:
            return None
        for event in json.loads(body).get("Events", []):
            if event.get("EventType") == "Preempt":
                return f"Preempt event {event.get('EventId', '?')} not before {event.get('NotBefore', '?')}"
        return None


WATCHERS: dict[str, type[CloudWatcher]] = {"aws": AWSWatcher, "gcp": GCPWatcher, "azure": AzureWatcher}


def detect_cloud() -> str | None:
    """The cloud this VM runs on, from its DMI strings (no network), or None."""
    hints = {"amazon": "aws", "google": "gcp", "microsoft": "azure"}
    for f in ("sys_vendor", "bios_vendor", "product_name"):
        try:
            with open(f"/sys/class/dmi/id/{f}") as fh:
                text = fh.read().lower()
        except OSError:
            continue
        for hint, cloud in hints.items():
            if hint in text:
                return cloud
    return None


def _clouds(clouds: Iterable[str] | str | None) -> list[str]:
    if clouds is None:
        clouds = os.environ.get("AGNOSTIC_RT_PREEMPT_CLOUDS", "")
    if isinstance(clouds, str):
        clouds = [c.strip() for c in clouds.split(",") if c.strip()]
    out = []
    for c in clouds:
        c = c.lower()
        if c == "auto":
            found = detect_cloud()
            out += [found] if found else []
        elif c in WATCHERS:
            out.append(c)
        else:
            raise ValueError(f"unknown cloud {c!r}; expected one of: {', '.join(WATCHERS)}, auto")
    return out


class Watch:
    """Signal handlers plus cloud watcher threads; ``stop()`` restores the previous handlers."""

    def __init__(self, clouds: Iterable[str] | str | None = None, *, urls: Mapping[str, str] | None = None,
                 interval: float = DEFAULT_INTERVAL_S, signals: Sequence[int] = (signal.SIGTERM, signal.SIGUSR1)):
        self.watchers = [WATCHERS[c]((urls or {}).get(c), interval) for c in _clouds(clouds)]
        self._previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in signals:
                self._previous[sig] = signal.signal(sig, self._on_signal)
        elif signals:
            log.warning("not in the main thread: signal handlers not installed, cloud watchers only")
        for w in self.watchers:
            w.start()

    @staticmethod
    def _on_signal(signum: int, frame: Any) -> None:
        _raise_flag("signal", signal.Signals(signum).name)

    def stop(self) -> None:
        for w in self.watchers:
            w.stop()
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def watch(clouds: Iterable[str] | str | None = None, **kw: Any) -> Watch:
    """Start watching for preemption (signals always; clouds as asked). Returns a Watch to stop.

    >>> w = agnostic_rt.training.preempt.watch(["aws"], interval=5); ...; w.stop()
    """
    return Watch(clouds, **kw)


# ---- the training-loop helper -----------------------------------------------------------------------


class SpotGuard:
    """Context manager around a training loop; call :meth:`step` once per optimizer step, after it.

    ``step()`` advances ``state.step``; every ``every`` steps it starts an async checkpoint; when a
    notice has arrived on any rank it checkpoints (blocking), and exits with EXIT_PREEMPTED.
    """

    def __init__(self, state: TrainingState | Mapping[str, Any], uri: str | os.PathLike, *, every: int | None = None,
                 keep_last: int | None = 3, clouds: Iterable[str] | str | None = None,
                 urls: Mapping[str, str] | None = None, interval: float = DEFAULT_INTERVAL_S,
                 signals: Sequence[int] = (signal.SIGTERM, signal.SIGUSR1),
                 on_exit: Callable[[int], None] | None = None):
        if every is not None and (not isinstance(every, int) or every < 1):
            raise ValueError(f"every must be a positive int or None, got {every!r}")
        self.state, self.ts = state, TrainingState.coerce(state)
        self.uri, self.every, self.keep_last = uri, every, keep_last
        self._watch_args = dict(clouds=clouds, urls=urls, interval=interval, signals=signals)
        self._watch: Watch | None = None
        self._group: Any = None
        self._on_exit = on_exit

    def __enter__(self) -> SpotGuard:
        self.ts.validate()
        if _dist()[1] > 1:
            self._group = dist.new_group(backend="gloo")  # flag agreement never queues behind NCCL work
        self._watch = watch(**self._watch_args)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._watch is not None:
            self._watch.stop()
        try:
            wait_for_saves()
        except Exception:
            if exc_type is None:
                raise
            log.exception("a background checkpoint failed while the loop was already failing")

    def _agreed(self) -> bool:
        flag = preempted()
        if self._group is None:
            return flag
        t = torch.tensor([int(flag)], dtype=torch.int32)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self._group)
        return bool(t.item())

    def step(self) -> None:
        """Mark a step boundary: advance ``state.step``, then checkpoint and exit, or checkpoint periodically."""
        self.ts.step += 1
        self.ts.write_back(self.state)
        if self._agreed():
            note = notice()
            log.warning("preempted (%s): checkpointing step %d", note.detail if note else "another rank",
                        self.ts.step)
            wait_for_saves()
            ckpt = save(self.ts, self.uri, keep_last=self.keep_last)
            log.warning("checkpoint %s committed; exiting with %d", ckpt.uri, EXIT_PREEMPTED)
            if self._on_exit is not None:
                self._on_exit(EXIT_PREEMPTED)
            raise SystemExit(EXIT_PREEMPTED)
        if self.every and self.ts.step % self.every == 0:
            save(self.ts, self.uri, keep_last=self.keep_last, async_save=True)


def spot_guard(state: TrainingState | Mapping[str, Any], uri: str | os.PathLike, every: int | None = None,
               **kw: Any) -> SpotGuard:
    """Guard a training loop against preemption, with periodic async checkpoints every ``every`` steps.

    >>> with agnostic_rt.spot_guard(state, "s3://bucket/run1", every=500, clouds="auto") as guard:
    ...     for batch in loader:
    ...         train_step(batch)
    ...         guard.step()          # may save and exit with agnostic_rt.EXIT_PREEMPTED (75)
    """
    return SpotGuard(state, uri, every=every, **kw)
