"""pytest integration: run the conformance suite as ordinary pytest tests.

    pytest --pyargs agnostic_rt.conformance                       # the quick tier, every target here
    pytest -p agnostic_rt.conformance.plugin --pyargs agnostic_rt.conformance \\
        --conformance-level full --conformance-targets cpu --conformance-report build/conf

The tests live in ``agnostic_rt.conformance.test_suite`` (one pytest test per op/dtype, model/check,
build and migration scenario; expected failures become xfail, skips stay skips). Without this
plugin they run the quick tier; the plugin adds the options above and writes the JSON and HTML
report at the end of the session. The environment variables AGNOSTIC_RT_CONFORMANCE_LEVEL,
_TARGETS, _TIERS and _REPORT do the same without the plugin. Loading this module imports nothing
heavy (no torch) until a conformance test runs.
"""

from __future__ import annotations

import os
from typing import Any

OPTIONS = {
    "level": ("--conformance-level", "quick or full (default: quick)"),
    "targets": ("--conformance-targets", "comma-separated target runs (default: every one available)"),
    "tiers": ("--conformance-tiers", "comma-separated tiers: op,model,kernel,migration"),
    "report": ("--conformance-report", "folder to write report.json and report.html into"),
}


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("agnostic-rt conformance")
    for name, (flag, help_) in OPTIONS.items():
        group.addoption(flag, dest=f"conformance_{name}", default=None, help=help_)


def setting(config: Any, name: str) -> str | None:
    """An option's value: the command-line flag (with this plugin), else AGNOSTIC_RT_CONFORMANCE_<NAME>.

    >>> setting(None, "level") in (None, "quick", "full")
    True
    """
    value = None
    if config is not None:
        value = config.getoption(f"conformance_{name}", default=None)
    return value or os.environ.get(f"AGNOSTIC_RT_CONFORMANCE_{name.upper()}")


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    write_report(session.config)


def write_report(config: Any) -> None:
    """Write the session's report if a folder was asked for and any conformance test ran."""
    suite = getattr(config, "_agnostic_conformance_suite", None)
    folder = setting(config, "report")
    if suite is None or not folder or getattr(config, "_agnostic_conformance_written", False):
        return
    import time

    from .report import write_html, write_json

    suite.report.finished = time.time()
    write_json(suite.report, os.path.join(folder, "report.json"))
    write_html(suite.report, os.path.join(folder, "report.html"))
    config._agnostic_conformance_written = True
