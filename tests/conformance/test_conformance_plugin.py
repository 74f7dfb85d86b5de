"""The suite runs inside pytest: ``pytest --pyargs agnostic_rt.conformance`` with the ``-p`` plugin's
options."""

from __future__ import annotations

import json
import subprocess
import sys


def test_pytest_plugin_runs_the_kernel_tier_and_writes_the_report(tmp_path):
    report = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "agnostic_rt.conformance.plugin", "--pyargs",
         "agnostic_rt.conformance", "--conformance-tiers", "kernel", "--conformance-report", str(report)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "passed" in proc.stdout
    data = json.loads((report / "report.json").read_text())
    assert data["counts"]["kernel"]["triton-sm_90"]["pass"] >= 1
    assert (report / "report.html").read_text().startswith("<!doctype html>")
