"""bench/host_overhead.py (the CPU proxy for a GPU program's host cost) runs end to end on mlp: the stub
reaches the launchers, which take their GPU path (later launches through the kept binary's runner),
and the breakdown is filled in; Inductor's compile gets the same stub (its launcher's runner), one call
per launch in its code, and with ``--library stub`` its library calls compute nothing either."""

import os

import bench_scripts


def test_host_overhead_mlp(tmp_path, capsys):
    from agnostic_rt.backends.triton.launch import KernelLauncher
    from agnostic_rt.backends.triton.registry import GeneratedKernel
    from agnostic_rt.runtime.view_fold import ViewOf

    patched = (GeneratedKernel.function, KernelLauncher.__init__, KernelLauncher.__call__, ViewOf.__call__)
    mod, rc, rows = bench_scripts.run_main("host_overhead", ["--models", "mlp", "--steps", "3"],
                                           tmp_path / "host.json")
    text = capsys.readouterr().out
    assert rc == 0, [r.get("error") for r in rows]
    assert [(r["model"], r["mode"]) for r in rows] == [("mlp", "inference"), ("mlp", "training")]
    # Everything patched is restored.
    assert (GeneratedKernel.function, KernelLauncher.__init__, KernelLauncher.__call__,
            ViewOf.__call__) == patched

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
        # Inductor: every launch of its code reached the stub runner, through the cached launcher, and
        # no kernel ran in Triton's interpreter; its library calls computed (--library run).
        assert not r.get("inductor_error") and r["inductor_ms"] > 0, r
        assert r["inductor_launches"] == r["inductor_code_launches"] > 0, r
        assert float(cells["Inductor launches/step"]) == r["inductor_launches"], cells
        assert r["inductor_cached_launchers"] == r["inductor_kernels"] > 0, r
        assert r["interpreted_launches"] == 0 and r["inductor_library_stubbed"] == 0, r
    assert rows[1]["launches"] > rows[0]["launches"]  # training adds the backward's kernels
    assert rows[1]["inductor_launches"] > rows[0]["inductor_launches"]
    assert rows[1]["inductor_graphs"] == 2 and rows[0]["inductor_graphs"] == 1
    assert rows[0]["loss_ms"] is None and rows[1]["loss_ms"] > 0


def test_host_overhead_inductor_stub(tmp_path):
    """mlp inference with --library stub (and --no-baselines): Inductor's stubbed launches per step
    are bench/launch_count.py's count of Inductor's code, its three addmm are stubbed (none computes
    in the timed steps), and everything patched is put back (Inductor's kernel module cache
    included: the first test loaded the same kernels; here they load again, under the stub)."""
    import torch
    import torch.utils._triton as ut
    from torch._inductor.codecache import PyCodeCache
    from torch._inductor.graph import GraphLowering
    from torch._inductor.runtime import triton_heuristics as th
    from triton.runtime.interpreter import InterpretedFunction

    from agnostic_rt.apps.bench_compare import _Case

    auto = th.CachingAutotuner
    patched = (auto.__init__, auto._precompile_config, auto.benchmark_all_configs, th.get_constexprs,
               GraphLowering.__dict__["_compile_to_module_lines"], GraphLowering.__dict__["save_output_code"],
               InterpretedFunction.run, ut.triton_hash_with_backend)
    env, kernel_cache = os.environ.get("TRITON_INTERPRET"), PyCodeCache.modules_no_attr
    mod, rc, rows = bench_scripts.run_main(
        "host_overhead", ["--models", "mlp", "--modes", "inference", "--steps", "2", "--library", "stub",
                          "--no-baselines"], tmp_path / "host.json")
    assert rc == 0, rows
    (r,) = rows
    # --no-baselines: eager, dynamo and aot_eager left out of the rounds, agnostic and Inductor timed.
    assert r["eager_ms"] is None and r["dynamo_ms"] is None and r["aot_eager_ms"] is None, r
    assert r["agnostic_ms"] > 0 and r["inductor_ms"] > 0, r
    assert r["interpreted_launches"] == 0, r
    assert r["inductor_launches"] == r["inductor_code_launches"] > 0, r
    assert (r["inductor_library"] == r["inductor_library_stubbed"] == 3
            and r["inductor_library_computed"] == 0), r
    assert (auto.__init__, auto._precompile_config, auto.benchmark_all_configs, th.get_constexprs,
            GraphLowering.__dict__["_compile_to_module_lines"], GraphLowering.__dict__["save_output_code"],
            InterpretedFunction.run, ut.triton_hash_with_backend) == patched
    assert os.environ.get("TRITON_INTERPRET") == env and PyCodeCache.modules_no_attr is kernel_cache

    # bench/launch_count.py's own count of Inductor's code for the same model and mode.
    lc = bench_scripts.load("launch_count")
    threads = torch.get_num_threads()
    try:
        graphs = lc.inductor_counts(_Case("mlp", "cpu", 2, dict(lc.OPTIONS)), "inference")
    finally:
        torch._dynamo.reset()
        torch.set_num_threads(threads)
    assert r["inductor_launches"] == sum(g["launches"] for g in graphs), (r, graphs)
