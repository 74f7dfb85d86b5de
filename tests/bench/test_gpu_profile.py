"""bench/gpu_profile.py runs end to end on the CPU (its device columns empty) and reports every row."""


import bench_scripts


def test_gpu_profile_cpu_rows(tmp_path, capsys):
    argv = ["--device", "cpu", "--models", "mlp", "--backends", "eager", "agnostic",
            "--steps", "3", "--prof-steps", "2"]
    _, rc, rows = bench_scripts.run_main("gpu_profile", argv, tmp_path / "profile.json")
    text = capsys.readouterr().out
    assert rc == 0, [r.get("error") for r in rows]
    combos = {(r["model"], r["mode"], r["backend"]) for r in rows}
    assert combos == {("mlp", m, b) for m in ("inference", "training") for b in ("eager", "agnostic")}
    for r in rows:
        assert r["steady_ms"] > 0 and r["host_ms"] > 0 and r["host_prof_ms"] > 0, r
        assert r["device_busy_ms"] is None and r["launches"] is None and r["verdict"] == "n/a (cpu)"
        assert r["aten_ops"] > 0 and r["top_host"], r
        assert f"| mlp | {r['mode']} | {r['backend']} |" in text
    assert "| model | mode | backend | steady ms | host ms |" in text
