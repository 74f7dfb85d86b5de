"""The torch.compile entry: registration, options, training, inference, graph breaks, recompiles."""

import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn as nn

from agnostic_rt.conformance.models import check_model
from agnostic_rt.conformance.zoo import ZOO


def test_backend_name_works_without_importing_agnostic_rt():
    code = textwrap.dedent("""
        import torch
        m = torch.nn.Linear(4, 3)
        x = torch.randn(2, 4)
        out = torch.compile(m, backend="agnostic")(x)
        assert "agnostic_rt" in __import__("sys").modules  # loaded through the entry point
        torch.testing.assert_close(out, m(x))
        print("ok")
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith("ok")


def test_unknown_option_names_the_valid_ones():
    m = torch.compile(nn.Linear(4, 4), backend="agnostic", options={"tagret": "cpu"})
    with pytest.raises(Exception, match=r"unknown option 'tagret'.*valid options: target, numerics"):
        m(torch.randn(2, 4))


def test_unknown_target_names_the_valid_ones():
    m = torch.compile(nn.Linear(4, 4), backend="agnostic", options={"target": "rocm7"})
    with pytest.raises(Exception, match=r"unknown target 'rocm7'; expected one of: auto, cpu, cuda, rocm"):
        m(torch.randn(2, 4))


def test_unknown_numerics_is_rejected():
    m = torch.compile(nn.Linear(4, 4), backend="agnostic", options={"numerics": "loose"})
    with pytest.raises(Exception, match=r"unknown numerics 'loose'; expected one of: strict, fast"):
        m(torch.randn(2, 4))


@pytest.mark.parametrize("name", list(ZOO))
@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("fallback", [True, False], ids=["default", "aot-program"])
def test_zoo_model_passes_fp64_reference_rule(name, training, fallback):
    check = check_model(ZOO[name], training=training, batch=2, options={"eager_fallback": fallback})
    worst_name, worst = check.worst()
    assert check.passed, f"{name} {check.mode}: {worst_name}: {worst}"


FALLBACK_LOG = "running the Dynamo graph under eager autograd"


@pytest.mark.parametrize("fallback", [True, False])
def test_cpu_graph_left_unchanged_runs_as_dynamo_captured_it(caplog, fallback):
    entry = ZOO["mlp"]
    model = entry.build()
    (x,), target = entry.example(batch=4)
    compiled = torch.compile(model, backend="agnostic", options={"eager_fallback": fallback})
    with caplog.at_level("INFO", logger="agnostic_rt.backend"):
        entry.loss(compiled(x), target).backward()
    # The whole step (forward and backward) was compiled before the choice was made.
    assert (FALLBACK_LOG in caplog.text) == fallback
    if fallback:
        assert "backward/forward program(s) gain backward 0.0 us, forward 0.0 us" in caplog.text


def test_generated_kernels_always_keep_the_aot_program(caplog):
    m = nn.Sequential(nn.Linear(8, 8), nn.GELU())
    x = torch.randn(3, 8)
    compiled = torch.compile(m, backend="agnostic", options={"target": "h100", "interpret": True})
    with caplog.at_level("INFO", logger="agnostic_rt.backend"), torch.no_grad():
        torch.testing.assert_close(compiled(x), m(x))
    assert FALLBACK_LOG not in caplog.text


def test_fallback_weighs_the_estimated_gain_against_per_call_overhead():
    from agnostic_rt.backend import _pays
    from agnostic_rt.targets import host_cpu_target

    cpu = host_cpu_target()
    per_call = cpu.launch_overhead_s
    assert not _pays({"inference": (0.0, 10)}, cpu)
    assert not _pays({"inference": (5 * per_call, 10)}, cpu)  # saves less than the wrappers cost
    assert _pays({"inference": (50 * per_call, 10)}, cpu)
    assert _pays({"forward": (0.0, 10), "backward": (float("inf"), 10)}, cpu)  # a generated kernel
    assert _pays({"forward": (0.0, 10)}, cpu)  # backward still to come: keep the aot program


def test_eval_mode_without_no_grad_matches_eager():
    entry = ZOO["cnn"]
    model = entry.build().eval()
    (x,), _ = entry.example(batch=2)
    compiled = torch.compile(model, backend="agnostic")
    torch.testing.assert_close(compiled(x), model(x))


def test_batchnorm_running_stats_update_like_eager():
    entry = ZOO["cnn"]
    eager, mine = entry.build(), entry.build()
    (x,), _ = entry.example(batch=4)
    eager(x)
    torch.compile(mine, backend="agnostic")(x)
    for (name, a), (_, b) in zip(eager.named_buffers(), mine.named_buffers()):
        torch.testing.assert_close(b, a, msg=name)


class _Breaks(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x):
        h = torch.relu(self.a(x))
        print("graph break here", end="")  # Dynamo splits the graph at a print
        return self.b(h).sum(dim=-1)


def test_graph_breaks_give_several_graphs_and_correct_grads(tmp_path, capsys):
    eager = _Breaks()
    mine = _Breaks()
    mine.load_state_dict(eager.state_dict())
    x = torch.randn(3, 8)
    torch.compile(mine, backend="agnostic", options={"debug_dir": str(tmp_path)})(x).sum().backward()
    eager(x).sum().backward()
    assert len(list(tmp_path.glob("graph_*_forward"))) >= 2
    assert len(list(tmp_path.glob("graph_*_backward"))) >= 2
    for (n, p), q in zip(eager.named_parameters(), mine.parameters()):
        torch.testing.assert_close(q.grad, p.grad, msg=n)


def test_new_batch_size_recompiles_and_stays_correct():
    model = ZOO["mlp"].build()
    compiled = torch.compile(model, backend="agnostic")
    for batch in (4, 7, 13):
        x = torch.randn(batch, 64)
        torch.testing.assert_close(compiled(x), model(x))


def test_cpu_target_keeps_aten_composites(tmp_path):
    entry = ZOO["mlp"]
    model = entry.build()
    (x,), _ = entry.example(batch=2)
    torch.compile(model, backend="agnostic", options={"debug_dir": str(tmp_path), "passes": False})(x)
    forward = next(tmp_path.glob("graph_*_forward/0_aten.py")).read_text()
    assert "native_layer_norm" in forward and "gelu" in forward  # not decomposed into pieces


def test_debug_dir_holds_graphs_before_and_after():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        torch.compile(nn.Linear(4, 4), backend="agnostic", options={"debug_dir": d})(torch.randn(2, 4))
        names = {p.name for p in Path(d).glob("graph_*/*")}
    assert {"0_aten.py", "2_program.py"} <= names


def test_eval_batchnorm_compiles_for_a_generated_target():
    # Eval-mode batch norm once reached aot_autograd as the in-place _native_batch_norm_legit and
    # crashed the compile on every GPU target.
    entry = ZOO["cnn"]
    model = entry.build().eval()
    (x,), _ = entry.example(batch=2)
    compiled = torch.compile(model, backend="agnostic", options={"target": "h100", "interpret": True})
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))


@pytest.mark.parametrize("decimals", [3, -3])
def test_round_with_decimals_matches_eager_on_a_generated_target(decimals):
    # Lowering once dropped `decimals` and rounded to integers (found by the conformance suite).
    x = torch.randn(37) * 1000
    fn = torch.compile(lambda t: torch.round(t * 1.0, decimals=decimals) + 1.0, backend="agnostic",
                       options={"target": "h100", "interpret": True})
    torch.testing.assert_close(fn(x), torch.round(x, decimals=decimals) + 1.0)
