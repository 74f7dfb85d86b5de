"""Load a script of bench/ as a module (they are run as files, not installed), for the tests that
drive their ``main()`` or helpers."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType


def load(name: str) -> ModuleType:
    """bench/<name>.py as module ``bench_<name>``."""
    path = Path(__file__).parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_main(name: str, argv: list[str], json_path: Path) -> tuple[ModuleType, int, list[dict]]:
    """bench/<name>.py's ``main(argv + ["--json", json_path])``, then Dynamo reset and torch's thread
    count put back (bench_compare._Case sets it); returns the module, its exit code and its JSON rows."""
    import json

    import torch

    threads = torch.get_num_threads()
    module = load(name)
    try:
        rc = module.main([*argv, "--json", str(json_path)])
    finally:
        torch._dynamo.reset()
        torch.set_num_threads(threads)
    return module, rc, json.loads(json_path.read_text())["rows"]
