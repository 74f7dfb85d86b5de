"""bench/gpu_profile.py runs end to end on the CPU (its device columns empty) and reports every row."""

import importlib.util
import json
from pathlib import Path

import torch


def _gpu_profile():
    path = Path(__file__).parents[1] / "bench" / "gpu_profile.py"
    spec = importlib.util.spec_from_file_location("bench_gpu_profile", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_profile_cpu_rows(tmp_path, capsys):
    out = tmp_path / "profile.json"
    threads = torch.get_num_threads()  # bench_compare._Case sets it to every core
    try:
        rc = _gpu_profile().main(["--device", "cpu", "--models", "mlp", "--backends", "eager", "agnostic",
                                  "--steps", "3", "--prof-steps", "2", "--json", str(out)])
    finally:
        torch._dynamo.reset()
        torch.set_num_threads(threads)
    text = capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    assert rc == 0, [r.get("error") for r in rows]
    combos = {(r["model"], r["mode"], r["backend"]) for r in rows}
    assert combos == {("mlp", m, b) for m in ("inference", "training") for b in ("eager", "agnostic")}
    for r in rows:
        assert r["steady_ms"] > 0 and r["host_ms"] > 0 and r["host_prof_ms"] > 0, r
        assert r["device_busy_ms"] is None and r["launches"] is None and r["verdict"] == "n/a (cpu)"
        assert r["aten_ops"] > 0 and r["top_host"], r
        assert f"| mlp | {r['mode']} | {r['backend']} |" in text
    assert "| model | mode | backend | steady ms | host ms |" in text
