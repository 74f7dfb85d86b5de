"""The optimiser end to end: per-target extraction, robustness, and attention -> SDPA on the zoo's
hand-written-attention models through torch.compile(backend="agnostic")."""

from __future__ import annotations

from pathlib import Path

import bench_scripts
import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

from agnostic_rt import passes
from agnostic_rt.conformance.models import check_model
from agnostic_rt.conformance.zoo import ZOO
from agnostic_rt.passes.cost import CostModel
from agnostic_rt.passes.optimizer import Limits, optimize_graph
from agnostic_rt.targets import get_target


def _projections(x, w1, w2, w3, b1, b2, b3):
    return tuple(torch.relu(torch.addmm(b, x, w)) for w, b in ((w1, b1), (w2, b2), (w3, b3)))


def _qkv_graph(m=4096, k=512, n=64):
    args = [torch.randn(m, k)] + [torch.randn(k, n) for _ in range(3)] + [torch.randn(n) for _ in range(3)]
    gm = make_fx(_projections, tracing_mode="fake")(*args)
    params = {p.target for p in gm.graph.nodes if p.op == "placeholder"} - {"x_1"}
    return gm, params, args


def test_qkv_merge_is_extracted_for_mi300x_and_not_for_h100():
    gm, params, args = _qkv_graph()
    h100, mi300x = get_target("h100"), get_target("mi300x")
    out_h, rep_h = optimize_graph(gm, h100, params=params)
    out_m, rep_m = optimize_graph(gm, mi300x, params=params)
    assert "cat" not in out_h.code and "cat" in out_m.code
    assert rep_m.cost_after < rep_m.cost_before and not rep_h.changed
    # The reason, in the cost figures: one projection is compute-bound on the H100 (merging saves no
    # time, and the weight concatenation costs) but memory-bound on the MI300X (merging reads x once).
    x, w = args[0], args[1]
    flops, nbytes = 2 * 4096 * 512 * 64, (x.numel() + w.numel() + 4096 * 64) * 4
    assert flops / h100.flops(torch.float32) > nbytes / h100.mem_bandwidth
    assert flops / mi300x.flops(torch.float32) < nbytes / mi300x.mem_bandwidth
    for want, got in zip(gm(*args), out_m(*args)):
        torch.testing.assert_close(got, want)


def test_only_the_exact_extractor_sees_the_merge():
    gm, params, _ = _qkv_graph()
    mi300x = get_target("mi300x")
    _, greedy_rep = optimize_graph(gm, mi300x, params=params, limits=Limits(exact="never"))
    _, ilp_rep = optimize_graph(gm, mi300x, params=params, limits=Limits(exact="always"))
    assert not greedy_rep.changed and ilp_rep.changed and ilp_rep.extraction == "ilp"


def test_cost_model_prices_a_matmul_by_its_roofline():
    h100 = get_target("h100")
    model = CostModel(h100)
    t = model.roofline(flops=2 * 4096**3, nbytes=3 * 4096**2 * 2, dtype=torch.float16)
    assert t == pytest.approx(2 * 4096**3 / h100.flops(torch.float16) + h100.launch_overhead_s)


def test_optimize_leaves_a_graph_it_cannot_handle_unchanged():
    gm = torch.fx.symbolic_trace(lambda x: x * 1)  # no fake values in meta: not an ATen graph
    assert passes.optimize(gm, get_target("cpu")) is gm


def _bench_egraph():
    return bench_scripts.load("egraph")


def test_an_output_whose_top_node_reads_its_own_class_is_still_extracted():
    def kv_cache(x):  # HF's empty KV cache: cat([empty(0), k]) is k, and the cat is an output
        k = x.transpose(0, 1)
        return torch.cat([torch.empty(0), k], -2), torch.relu(k)

    x = torch.randn(3, 5)
    gm = make_fx(kv_cache, tracing_mode="fake")(x)
    out, report = optimize_graph(gm, get_target("cpu"), limits=Limits(exact="never"))
    assert report.run.fired["cat-legacy-empty-left"] == 1
    cat, relu = out(x)
    assert cat.data_ptr() != relu.data_ptr() and cat.data_ptr() != x.data_ptr()  # the output stays fresh
    for want, got in zip(kv_cache(x), (cat, relu)):
        torch.testing.assert_close(got, want)


@pytest.mark.slow
def test_gpt2_training_graphs_are_optimised_without_failure():
    cpu = get_target("cpu")
    graphs, _ = _bench_egraph().capture(ZOO["gpt2"], True, cpu)
    reports = {kind: optimize_graph(gm, cpu)[1] for kind, gm in graphs}  # raises where passes.optimize gives up
    assert set(reports) == {"forward", "backward"}
    assert reports["forward"].run.fired["cat-legacy-empty-left"] > 0 and reports["forward"].changed


def test_rewrite_before_autograd_finds_attention_in_gpt2_eager():
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(passes.rewrite_before_autograd(gm, example_inputs, get_target("cpu")))
        return gm.forward

    entry = ZOO["gpt2_eager"]
    torch._dynamo.reset()
    torch.compile(entry.build(), backend=backend)(*entry.example(batch=1)[0])
    stops = [g._agnostic_report.run.stop_reason for g in graphs if hasattr(g, "_agnostic_report")]
    assert stops and set(stops) == {"saturated"}  # bounded by the rules, not by the machine's clock
    sdpa = [n for g in graphs for n in g.graph.nodes if n.target == torch.ops.aten.scaled_dot_product_attention.default]
    assert len(sdpa) == 4  # one per layer
    assert not any(n.target == torch.ops.aten._softmax.default for g in graphs for n in g.graph.nodes)


def _ops_in(debug_dir: Path, kind: str) -> str:
    return "".join(p.read_text() for p in debug_dir.glob(f"graph_*_{kind}/0_aten.py"))


@pytest.mark.slow
@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
@pytest.mark.parametrize("name", ["gpt2_eager", "bert_eager"])
def test_eager_attention_trains_through_sdpa_and_passes_the_fp64_rule(name, dynamic, tmp_path):
    # dynamic: what dynamic=True sets; the attention scale then arrives as a SymFloat.
    torch._dynamo.reset()
    with torch._dynamo.config.patch(assume_static_by_default=not dynamic):
        check = check_model(ZOO[name], training=True, options={"debug_dir": str(tmp_path)}, batch=2)
    assert check.passed, check.worst()
    assert "scaled_dot_product" in _ops_in(tmp_path, "forward")
    assert "_scaled_dot_product_flash_attention_for_cpu_backward" in _ops_in(tmp_path, "backward")


@pytest.mark.slow
def test_eager_attention_inference_uses_sdpa_and_passes_the_fp64_rule(tmp_path):
    torch._dynamo.reset()
    check = check_model(ZOO["bert_eager"], training=False, options={"debug_dir": str(tmp_path)}, batch=2)
    assert check.passed, check.worst()
    assert "scaled_dot_product" in _ops_in(tmp_path, "inference")


def test_core_aten_decomposed_attention_becomes_sdpa_for_a_gpu_target():
    import torch.nn.functional as F

    from agnostic_rt.decomp import decompositions_for

    h100 = get_target("h100")

    def attention(q, k, v, mask):
        scores = torch.matmul(q, k.transpose(-1, -2)) * 0.125 + mask
        return torch.matmul(F.softmax(scores, dim=-1), v).transpose(1, 2).reshape(2, 64, 256)

    args = [torch.randn(2, 4, 64, 64) for _ in range(3)] + [torch.zeros(2, 1, 64, 64)]
    gm = make_fx(attention, tracing_mode="fake", decomposition_table=decompositions_for(h100))(*args)
    assert not any("softmax" in str(n.target) for n in gm.graph.nodes)  # amax, sub, exp, sum, div
    out, report = optimize_graph(gm, h100)
    ops = {n.target for n in out.graph.nodes if n.op == "call_function"}
    assert torch.ops.aten.scaled_dot_product_attention.default in ops and torch.ops.aten.bmm.default not in ops
    assert report.cost_after < report.cost_before
    torch.testing.assert_close(out(*args), gm(*args))
