"""bench/host_calls.py counts each backend's host work per step exactly (cProfile call counts) on mlp."""

import bench_scripts


def test_host_calls_mlp(tmp_path, capsys):
    mod, rc, rows = bench_scripts.run_main("host_calls",
                                           ["--models", "mlp", "--modes", "training", "--steps", "2"],
                                           tmp_path / "calls.json")
    assert rc == 0 and [(r["model"], r["mode"]) for r in rows] == [("mlp", "training")]
    a, i = rows[0]["agnostic"], rows[0]["inductor"]
    # Both steps ran their programs: allocations, views and Python calls on both sides; agnostic's
    # matmuls write into planned outputs, so its program checks no library output.
    assert a["calls"] > 100 and i["calls"] > 100 and a["allocs"] > 0 and i["allocs"] > 0, rows
    assert a["reinterpret"] > 0 and i["asserts"] > 0 and a["conformed"] == 0, rows
    assert all(float(v).is_integer() for v in a.values()), a  # exact counts: the same every step
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-3] == mod.HEAD and lines[-1].startswith("| mlp | training |")
