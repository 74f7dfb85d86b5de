"""Expected failures: one JSON file per target, each entry a case key with the reason it fails.

    conformance/data/expected_failures_cpu.json
    {"target": "cpu", "torch": "2.13.0", "entries": {"nn.functional.gelu:bfloat16:backward": "why"}}

A key is ``case:dtype:check`` (see :attr:`Result.key`). A listed case that fails is ``xfail``; one that
passes is ``xpass``, reported as unexpected so the list never goes stale. Regenerate the files with
``agnostic-rt conformance --collect-expect`` (or ``AGNOSTIC_RT_COLLECT_EXPECT=1``), as PyTorch's
``PYTORCH_COLLECT_EXPECT`` does: failing cases are added with their error as the reason (a reason
already written by hand is kept), cases that now pass are removed, cases this run did not reach stay.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from .results import Result

log = logging.getLogger("agnostic_rt.conformance")

DATA_DIR = Path(__file__).parent / "data"


def collect_requested() -> bool:
    """Whether the environment asks for the files to be regenerated (AGNOSTIC_RT_COLLECT_EXPECT=1)."""
    return os.environ.get("AGNOSTIC_RT_COLLECT_EXPECT", "").lower() in ("1", "true", "yes", "on")


class Expectations:
    """The expected failures of one target.

    >>> e = Expectations("cpu", {"add:float16:forward": "rounding"})
    >>> e.apply(Result("op", "cpu", "add", "float16", "forward", "fail")).status
    'xfail'
    """

    def __init__(self, target: str, entries: dict[str, str] | None = None, path: Path | None = None):
        self.target = target
        self.entries = dict(entries or {})
        self.path = path

    @classmethod
    def load(cls, target: str, directory: Path | str | None = None) -> Expectations:
        """The file for ``target`` in ``directory`` (default: the package's data folder); empty if absent."""
        path = Path(directory or DATA_DIR) / f"expected_failures_{target}.json"
        if not path.exists():
            return cls(target, {}, path)
        data = json.loads(path.read_text())
        if data.get("torch", "").split(".")[:2] != torch.__version__.split(".")[:2]:
            log.warning("%s was collected with torch %s; this is torch %s (xpass/fail lines may follow)",
                        path.name, data.get("torch"), torch.__version__)
        return cls(target, data.get("entries", {}), path)

    def apply(self, result: Result) -> Result:
        """Turn a fail into xfail, or a pass into xpass, for listed keys (in place; returns it)."""
        reason = self.entries.get(result.key)
        if reason is None:
            return result
        if result.status == "fail":
            result.status = "xfail"
            result.message = f"expected failure: {reason} | {result.message}"
        elif result.status == "pass":
            result.status = "xpass"
            result.message = (f"listed as an expected failure ({reason}) but passes: "
                              f"remove it from {self.path}")
        return result

    def collect(self, results: list[Result]) -> dict[str, str]:
        """The entries after this run: add new failures, drop what passes, keep what was not run."""
        entries = dict(self.entries)
        for r in results:
            if r.target != self.target:
                continue
            if r.status in ("fail", "xfail"):
                entries.setdefault(r.key, _reason(r))
            elif r.status in ("pass", "xpass"):
                entries.pop(r.key, None)
        return dict(sorted(entries.items()))

    def write(self, entries: dict[str, str], directory: Path | str | None = None) -> Path:
        path = Path(directory) / f"expected_failures_{self.target}.json" if directory else self.path
        assert path is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "target": self.target,
            "torch": torch.__version__.split("+")[0],
            "regenerate": "agnostic-rt conformance --full --collect-expect",
            "entries": entries,
        }
        path.write_text(json.dumps(doc, indent=1) + "\n")
        self.entries = entries
        return path


def _reason(r: Result) -> str:
    # The whole message on one line: a first line alone can be just "backend='agnostic' raised:".
    return " ".join((r.message or "miscompare").split())[:300]
