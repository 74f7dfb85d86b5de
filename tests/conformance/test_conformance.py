"""The conformance suite must be able to fail: planted wrong rewrites are reported, expected-failure
files turn failures into xfail and stale entries into xpass, and the report says what it found."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torch.fx as fx

import agnostic_rt.passes
from agnostic_rt.backends.c import cuda as cuda_c
from agnostic_rt.conformance import cli
from agnostic_rt.conformance.expect import Expectations
from agnostic_rt.conformance.kernels import kernel_check
from agnostic_rt.conformance.report import render_html, write_json
from agnostic_rt.conformance.results import REPORT_KEYS, RESULT_KEYS, Result
from agnostic_rt.conformance.runs import BUILD_TARGETS
from agnostic_rt.conformance.suite import SuiteConfig, run_suite

aten = torch.ops.aten
SCHEMA_DOC = Path(__file__).resolve().parents[2] / "conformance" / "SCHEMA.md"


def _swap(old, new, scale: float | None = None):
    """A wrong rewrite: every ``old`` node becomes ``new`` (times ``scale`` when given)."""

    def optimize(gm: fx.GraphModule, target, numerics="strict", dump=None):
        for node in list(gm.graph.nodes):
            if node.op == "call_function" and node.target == old:
                node.target = new
                if scale is not None:
                    with gm.graph.inserting_after(node):
                        scaled = gm.graph.call_function(aten.mul.Tensor, (node, scale))
                    node.replace_all_uses_with(scaled, delete_user_cb=lambda u, s=scaled: u is not s)
        gm.graph.lint()
        gm.recompile()
        return gm

    return optimize


def _ops(ops: list[str], expect_dir: Path, **kw) -> SuiteConfig:
    return SuiteConfig(level="quick", tiers=["op"], targets=["cpu"], ops=ops, dtypes=["float32"],
                       max_samples=2,
                       expect_dir=expect_dir, progress=False, **kw)


def _by_key(report) -> dict[str, Result]:
    return {r.key: r for r in report.results}


def test_op_tier_passes_the_real_backend(tmp_path):
    report = run_suite(_ops(["sigmoid", "add"], tmp_path))
    assert {r.status for r in report.results} == {"pass"}
    assert report.exit_code() == 0


def test_op_tier_reports_a_planted_wrong_rewrite(tmp_path, monkeypatch):
    monkeypatch.setattr(agnostic_rt.passes, "optimize", _swap(aten.sigmoid.default, aten.tanh.default))
    report = run_suite(_ops(["sigmoid", "add"], tmp_path))
    results = _by_key(report)
    assert results["sigmoid:float32:forward"].status == "fail"
    assert results["sigmoid:float32:backward"].status == "fail"
    assert results["add:float32:forward"].status == "pass"
    assert report.exit_code() == 1


def test_op_tier_catches_a_1e4_relative_error_in_float32(tmp_path, monkeypatch):
    monkeypatch.setattr(agnostic_rt.passes, "optimize", _swap(aten.exp.default, aten.exp.default, scale=1 + 1e-4))
    report = run_suite(_ops(["exp"], tmp_path))
    fwd = _by_key(report)["exp:float32:forward"]
    assert fwd.status == "fail"
    assert fwd.error_ratio > 1 and "sample" in fwd.sample


def test_listed_failure_is_xfail_and_does_not_fail_the_run(tmp_path, monkeypatch):
    monkeypatch.setattr(agnostic_rt.passes, "optimize", _swap(aten.sigmoid.default, aten.tanh.default))
    Expectations("cpu", path=tmp_path / "expected_failures_cpu.json").write(
        {"sigmoid:float32:forward": "planted", "sigmoid:float32:backward": "planted"})
    report = run_suite(_ops(["sigmoid"], tmp_path))
    assert {r.status for r in report.results} == {"xfail"}
    assert "planted" in report.results[0].message
    assert report.exit_code() == 0


def test_listed_case_that_passes_is_an_unexpected_xpass(tmp_path):
    Expectations("cpu", path=tmp_path / "expected_failures_cpu.json").write({"add:float32:forward": "stale"})
    report = run_suite(_ops(["add"], tmp_path))
    assert _by_key(report)["add:float32:forward"].status == "xpass"
    assert report.exit_code() == 1


def test_collect_expect_lists_failures_keeps_hand_written_reasons_and_unrun_cases(tmp_path, monkeypatch):
    monkeypatch.setattr(agnostic_rt.passes, "optimize", _swap(aten.sigmoid.default, aten.tanh.default))
    Expectations("cpu", path=tmp_path / "expected_failures_cpu.json").write(
        {"sigmoid:float32:backward": "hand-written reason", "cumsum:int64:forward": "not run here",
         "add:float32:forward": "fixed since"})
    report = run_suite(_ops(["sigmoid", "add"], tmp_path, collect_expect=True))
    entries = json.loads((tmp_path / "expected_failures_cpu.json").read_text())["entries"]
    assert entries["sigmoid:float32:backward"] == "hand-written reason"
    assert "not close" in entries["sigmoid:float32:forward"]
    assert "cumsum:int64:forward" in entries
    assert "add:float32:forward" not in entries
    assert report.exit_code() == 0  # the regenerating run is judged by the new list


def test_samples_whose_two_eager_runs_differ_are_skipped_not_failed():
    from torch.testing._internal.common_dtype import floating_types
    from torch.testing._internal.opinfo.core import OpInfo, SampleInput

    from agnostic_rt.conformance.ops import OpCase, check_op
    from agnostic_rt.conformance.runs import available_runs

    def samples(op, device, dtype, requires_grad, **kw):
        yield SampleInput(torch.randn(4, 4, device=device, dtype=dtype, requires_grad=requires_grad))

    # op_db seeds its random ops (wrapper_set_seed); an unseeded one is what users' code looks like.
    noisy = OpInfo("noisy_add", op=lambda x: x + torch.rand_like(x), dtypes=floating_types(),
                   sample_inputs_func=samples, supports_autograd=False)
    results = check_op(noisy, OpCase("noisy_add", "float32"), available_runs(["cpu"])[0], max_samples=2)
    assert [r.status for r in results] == ["skip"]
    assert "nondeterministic" in results[0].message


def test_model_tier_reports_a_planted_wrong_rewrite_in_forward_backward_and_loss_curve(tmp_path, monkeypatch):
    monkeypatch.setattr(agnostic_rt.passes, "optimize", _swap(aten.relu.default, aten.gelu.default))
    report = run_suite(SuiteConfig(level="quick", tiers=["model"], targets=["cpu"], models=["mlp"],
                                   expect_dir=tmp_path, progress=False))
    results = _by_key(report)
    assert results["mlp:float32:training"].status == "fail"
    assert results["mlp:float32:inference"].status == "fail"
    curve = results["mlp:float32:train-curve"]
    assert curve.status == "fail" and len(curve.extra["compiled"]) == len(curve.extra["eager"])


def test_kernel_tier_builds_every_generated_kernel_for_every_claimed_target(tmp_path):
    report = run_suite(SuiteConfig(tiers=["op", "kernel"], targets=["h100-interp"], ops=["softmax"],
                                   dtypes=["float32"], max_samples=1, expect_dir=tmp_path, progress=False))
    built = [r for r in report.results if r.tier == "kernel" and r.check == "build" and r.extra.get("generated")]
    assert built, "the interpreted op run generated no kernels"
    targets = {r.target for r in built}
    assert targets == {"triton-sm_80", "triton-sm_90", "triton-gfx90a", "triton-gfx942", "nvrtc-sm_80", "nvrtc-sm_90",
                       "hiprtc-gfx90a"}
    assert {r.status for r in built if r.target.startswith("triton-")} == {"pass"}


def test_kernel_tier_builds_cuda_c_for_every_arch_the_cuda_c_backend_is_tested_for():
    nvrtc = {arch: name for name, family, arch in BUILD_TARGETS if family == "nvrtc"}
    assert set(nvrtc) == set(cuda_c.ARCHS)
    for arch, name in nvrtc.items():  # each arch is its own target, with its own result
        r = kernel_check(name)
        assert (r.target, r.check) == (f"nvrtc-{arch}", "build")
        assert r.status in ("pass", "skip"), r.message  # skip: NVRTC is not installed here


def test_json_report_has_the_documented_schema(tmp_path):
    report = run_suite(_ops(["add"], tmp_path))
    data = json.loads(write_json(report, tmp_path / "r.json").read_text())
    assert set(data) == set(REPORT_KEYS)
    assert set(data["results"][0]) == set(RESULT_KEYS)
    assert data["counts"]["op"]["cpu"]["pass"] == len(report.results)
    documented = set(re.findall(r"`(\w+)`", SCHEMA_DOC.read_text()))
    assert set(REPORT_KEYS) | set(RESULT_KEYS) <= documented


def test_html_report_is_self_contained_with_plots(tmp_path, monkeypatch):
    monkeypatch.setattr(agnostic_rt.passes, "optimize", _swap(aten.sigmoid.default, aten.tanh.default))
    page = render_html(run_suite(_ops(["sigmoid", "add"], tmp_path)))
    assert "<svg" in page and "sigmoid" in page and "FAIL" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)


def test_cli_exit_code_is_nonzero_on_an_unexpected_result(tmp_path, monkeypatch):
    args = ["--tiers", "op", "--targets", "cpu", "--ops", "sigmoid", "--max-samples", "2", "--dtypes", "float32", "--no-progress",
            "--out", str(tmp_path), "--expect-dir", str(tmp_path)]
    assert cli.main(args) == 0
    monkeypatch.setattr(agnostic_rt.passes, "optimize", _swap(aten.sigmoid.default, aten.tanh.default))
    assert cli.main(args) == 1
    assert (tmp_path / "report.html").exists() and (tmp_path / "report.json").exists()


@pytest.mark.parametrize("level", ["quick", "full"])
def test_plan_covers_float_int_and_bool_dtypes(level):
    from agnostic_rt.conformance import ops
    from agnostic_rt.conformance.runs import available_runs

    cases = ops.plan(level, available_runs(["cpu"])[0], ops.load_op_db())
    assert {"float32", "float16", "bfloat16", "int64", "bool"} <= {c.dtype for c in cases}


def _plant_add_as_sub(monkeypatch):
    """The Triton emitter writes every floating-point ``add`` as a subtraction, for this test only."""
    from agnostic_rt.backends.triton import registry
    from agnostic_rt.backends.triton.emit import FLOAT_DTYPES, TritonEmitter

    right = TritonEmitter.op_expr

    def wrong(self, i: int) -> str:
        op = self.ir.ops[i]
        if op.op == "add" and op.dtype in FLOAT_DTYPES:
            return f"(v{op.args[0]} - v{op.args[1]})"
        return right(self, i)

    monkeypatch.setattr(TritonEmitter, "op_expr", wrong)
    # Wrong kernels have their own names (a hash of the source); keep them out of later tests' registry.
    monkeypatch.setattr(registry, "_KERNELS", dict(registry._KERNELS))


def _kernels(expect_dir: Path) -> SuiteConfig:
    return SuiteConfig(level="quick", tiers=["kernel"], targets=["h100-interp"], models=["mlp"],
                       expect_dir=expect_dir, progress=False)


def test_kernel_tier_checks_each_generated_kernel_alone_against_aten(tmp_path):
    report = run_suite(_kernels(tmp_path))
    alone = [r for r in report.results if r.extra.get("alone")]
    assert len(alone) >= 5, [r.key for r in alone]  # mlp's step: 2 forward kernels, 4 backward
    assert {r.target for r in alone} == {"h100-interp"}
    assert {r.case.split(".")[1] for r in alone} >= {"forward0", "backward0"}
    assert all(r.status == "pass" and r.extra["kernel"] in r.message for r in alone), \
        [(r.key, r.message) for r in alone if r.status != "pass"]
    assert report.exit_code() == 0


def test_kernel_tier_reports_a_planted_wrong_kernel_by_name(tmp_path, monkeypatch):
    _plant_add_as_sub(monkeypatch)
    report = run_suite(_kernels(tmp_path))
    failed = [r for r in report.results if r.tier == "kernel" and r.status == "fail"]
    assert failed and all(r.extra.get("alone") for r in failed)
    # The layer norm (var + eps) and GELU backward (1 + erf) kernels add; ReLU's does not.
    wrong = {r.case for r in failed}
    assert "mlp.forward0.k0" in wrong and "mlp.forward0.k1" not in wrong
    layer_norm = _by_key(report)["mlp.forward0.k0:float32:interpret"]
    assert layer_norm.extra["kernel"] in layer_norm.message and "aten.add.Tensor" in layer_norm.extra["ops"]
    assert layer_norm.error_ratio > 1 and layer_norm.sample.startswith("f32[3, 256]")
    assert report.exit_code() == 1


def test_kernel_inputs_are_recorded_with_their_layout_so_broadcast_buffers_stay_broadcast():
    from agnostic_rt.conformance.kernel_groups import _snapshot

    # BERT's token_type_ids: a [1, 64] buffer expanded over the batch, read by the embedding kernel.
    ids = torch.arange(64).expand(3, 64)
    kept = _snapshot(ids)
    assert kept.stride() == (0, 1) and torch.equal(kept, ids)
    assert kept.untyped_storage().data_ptr() != ids.untyped_storage().data_ptr()


def test_a_kernel_that_fails_at_launch_is_named_in_the_report(monkeypatch):
    from agnostic_rt.backends.triton import launch as triton_launch

    def broken(self, ins, outs, dev):
        raise RuntimeError("planted launch failure")

    monkeypatch.setattr(triton_launch.KernelLauncher, "_prepare", broken)
    report = run_suite(SuiteConfig(tiers=["op"], targets=["h100-interp"], ops=["sigmoid"], dtypes=["float32"],
                                   max_samples=1, progress=False))
    # ATen ran the group, so the numerics hold; the report still says the kernel never ran.
    assert report.exit_code() == 0
    fallen = [r for r in report.results if r.extra.get("kernel_fallbacks")]
    assert fallen and "planted launch failure" in fallen[0].extra["kernel_fallbacks"][0]
    notes = [n for n in report.notes if n.status == "kernel fallbacks"]
    assert notes and notes[0].target == "h100-interp" and "sigmoid:float32" in notes[0].message
