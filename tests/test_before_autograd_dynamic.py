"""Attention -> SDPA before autograd under torch.compile(dynamic=True): symbolic sizes, and a scale
Dynamo passes as a SymFloat (a float module attribute becomes a 0-d tensor input, then ``.item()``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from agnostic_rt import passes
from agnostic_rt.conformance.models import check_model
from agnostic_rt.conformance.zoo import ZOO
from agnostic_rt.targets import get_target

SDPA = torch.ops.aten.scaled_dot_product_attention.default


def _rewritten_graphs(name: str) -> list[torch.fx.GraphModule]:
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(passes.rewrite_before_autograd(gm, example_inputs, get_target("cpu")))
        return gm.forward

    entry = ZOO[name]
    torch.compile(entry.build(), backend=backend, dynamic=True)(*entry.example(batch=2)[0])
    return graphs


@pytest.mark.parametrize("name, layers", [("gpt2_eager", 4), ("bert_eager", 2)])
def test_dynamic_compile_rewrites_eager_attention_to_sdpa(name, layers):
    graphs = _rewritten_graphs(name)
    sdpa = [n for g in graphs for n in g.graph.nodes if n.target == SDPA]
    assert len(sdpa) == layers  # one per layer
    assert not any(n.target == torch.ops.aten._softmax.default for g in graphs for n in g.graph.nodes)


def _ops_in(debug_dir: Path, kind: str) -> str:
    return "".join(p.read_text() for p in debug_dir.glob(f"graph_*_{kind}/0_aten.py"))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gpt2_eager", "bert_eager"])
def test_dynamic_eager_attention_trains_through_sdpa_and_passes_the_fp64_rule(name, tmp_path):
    with torch._dynamo.config.patch(assume_static_by_default=False):  # what dynamic=True sets
        check = check_model(ZOO[name], training=True, options={"debug_dir": str(tmp_path)}, batch=2)
    assert check.passed, check.worst()
    assert "scaled_dot_product" in _ops_in(tmp_path, "forward")
    assert "_scaled_dot_product_flash_attention_for_cpu_backward" in _ops_in(tmp_path, "backward")
