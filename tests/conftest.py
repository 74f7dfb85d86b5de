import functools
import os

import pytest
import torch

# Two cores here and in CI: more threads only fight each other. Under pytest-xdist (make test) the
# workers share the cores, so each takes its part.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // _workers)))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Each test compiles from scratch: no cache entries or recompile counters leak between tests."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture(scope="session")
def zoo_coverage():
    """`coverage.zoo_coverage(name)` (training graphs for the H100 target, batch 2), compiled once per
    session (per worker under xdist) and shared by the tests that read the zoo's kernels."""
    from agnostic_rt.conformance import coverage

    return functools.cache(lambda name: coverage.zoo_coverage(name, target="h100", batch=2))


@pytest.hookimpl(tryfirst=True)  # before xdist's worker reads the groups
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist's --dist loadgroup (make test), tests that share a module- or session-scoped
    fixture of ours run on one worker, so the fixture is built once rather than once per worker."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            continue
        shared = sorted(
            f"{defs[-1].baseid}::{name}"
            for name, defs in info.name2fixturedefs.items()
            if defs and defs[-1].scope in ("module", "session") and defs[-1].baseid.startswith("tests")
        )
        if shared:
            item.add_marker(pytest.mark.xdist_group(shared[0]))
