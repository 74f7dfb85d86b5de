"""debug_dir dumps: graphs before and after each stage, rules fired, costs and generated source."""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path
from typing import Any

import torch.fx as fx

log = logging.getLogger("agnostic_rt.debug")
_counter = itertools.count()


class DebugDump:
    """Writes one folder per compiled graph under ``debug_dir`` (a no-op when it is None)."""

    def __init__(self, debug_dir: str | None, kind: str):
        self.root: Path | None = None
        if debug_dir is not None:
            self.root = Path(debug_dir) / f"graph_{next(_counter):03d}_{kind}"
            self.root.mkdir(parents=True, exist_ok=True)
            log.info("dumping %s graph to %s", kind, self.root)

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def graph(self, name: str, gm: fx.GraphModule) -> None:
        if self.root is not None:
            (self.root / f"{name}.py").write_text(gm.print_readable(print_output=False))

    def text(self, name: str, text: str) -> None:
        if self.root is not None:
            (self.root / name).write_text(text)

    def json(self, name: str, obj: Any) -> None:
        if self.root is not None:
            (self.root / name).write_text(json.dumps(obj, indent=2, default=str))
