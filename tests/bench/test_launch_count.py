"""bench/launch_count.py (kernel launches per step, agnostic vs Inductor, from the generated code) runs
end to end on mlp: both sides counted, and everything it patched put back."""

import os

import bench_scripts


def test_launch_count_mlp(tmp_path, capsys):
    import torch.utils._triton as ut
    from torch._inductor.graph import GraphLowering

    from agnostic_rt import pipeline

    env = os.environ.get("TRITON_INTERPRET")
    patched = (GraphLowering.__dict__["save_output_code"], ut.triton_hash_with_backend, pipeline.boxed)
    mod, rc, rows = bench_scripts.run_main("launch_count", ["--models", "mlp"], tmp_path / "x.json")
    text = capsys.readouterr().out
    assert rc == 0, [r.get("error") for r in rows]
    # Everything patched is restored.
    assert os.environ.get("TRITON_INTERPRET") == env
    assert (GraphLowering.__dict__["save_output_code"], ut.triton_hash_with_backend,
            pipeline.boxed) == patched

    assert [(r["model"], r["mode"]) for r in rows] == [("mlp", "inference"), ("mlp", "training")]
    inference, training = rows
    for r in rows:
        assert r["agnostic_launches"] > 0 and r["inductor_launches"] > 0, r
        assert (r["graphs"] == r["inductor_graphs"] == len(r["agnostic_per_graph"])
                == len(r["inductor_per_graph"]))
        assert r["agnostic_launches"] == sum(len(g["kernels"]) for g in r["agnostic_per_graph"])
    # Three nn.Linear: three addmm on both sides.
    assert inference["agnostic_library"] == inference["inductor_library"] == 3, inference
    assert training["graphs"] == 2  # forward and backward
    assert training["agnostic_launches"] > inference["agnostic_launches"]

    lines = text.strip().splitlines()
    assert lines[-5] == mod.HEAD
    assert lines[-1].startswith("| total |") and lines[-1].count("|") == mod.HEAD.count("|")
    cells = [c.strip() for c in lines[-1].strip("|").split("|")]
    assert int(cells[3]) == sum(r["agnostic_launches"] for r in rows)
    assert int(cells[8]) == sum(r["inductor_launches"] for r in rows)
