"""bench/host_overhead.py (the CPU proxy for a GPU program's host cost) runs end to end on mlp: the stub
reaches the launchers, which take their GPU path (later launches through the kept binary's runner),
and the breakdown is filled in."""


import bench_scripts


def test_host_overhead_mlp(tmp_path, capsys):
    from agnostic_rt.backends.registry import GeneratedKernel
    from agnostic_rt.backends.triton_launch import KernelLauncher
    from agnostic_rt.view_fold import ViewOf

    patched = (GeneratedKernel.function, KernelLauncher.__init__, KernelLauncher.__call__, ViewOf.__call__)
    mod, rc, rows = bench_scripts.run_main("host_overhead", ["--models", "mlp", "--steps", "3"], tmp_path / "host.json")
    text = capsys.readouterr().out
    assert rc == 0, [r.get("error") for r in rows]
    assert [(r["model"], r["mode"]) for r in rows] == [("mlp", "inference"), ("mlp", "training")]
    # Everything patched is restored.
    assert (GeneratedKernel.function, KernelLauncher.__init__, KernelLauncher.__call__, ViewOf.__call__) == patched

    lines = text.strip().splitlines()
    head = lines[-4]
    assert head == mod.HEAD
    assert set(lines[-3]) == {"|", "-"} and lines[-3].count("|") == head.count("|")
    names = [c.strip() for c in head.strip("|").split("|")]
    for r, line in zip(rows, lines[-2:]):
        cells = dict(zip(names, (c.strip() for c in line.strip("|").split("|"))))
        assert len(cells) == len(names) == head.count("|") - 1
        assert (cells["model"], cells["mode"]) == ("mlp", r["mode"])
        # The stub reached the launchers: they ran every step, after the first through the direct runner.
        assert r["launches"] > 0 and float(cells["launches/step"]) == r["launches"], r
        # stage_call is 0 where the launcher has a steady-state path that bypasses it.
        assert float(cells["launcher µs/launch"]) > float(cells["of which stage µs"]) >= 0, cells
        assert r["direct_launches"] >= r["launches"] * 3 and r["jit_launches"] == 0, r
        assert r["views"] > 0 and r["aten_calls"] > 0 and r["program_calls"] > 0, r
        for k in ("eager_ms", "dynamo_ms", "aot_eager_ms", "agnostic_ms", "launch_ms", "us_per_launch"):
            assert r[k] > 0, (k, r)
        assert r["launch_ms"] + r["view_ms"] + r["aten_ms"] < r["metered_ms"], r
    assert rows[1]["launches"] > rows[0]["launches"]  # training adds the backward's kernels
    assert rows[0]["loss_ms"] is None and rows[1]["loss_ms"] > 0
