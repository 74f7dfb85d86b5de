"""Attention -> SDPA before autograd under torch.compile(dynamic=True): symbolic sizes, and a scale
Dynamo passes as a SymFloat (a float module attribute becomes a 0-d tensor input, then ``.item()``).
Training through SDPA under dynamic shapes: test_optimize.py's eager-attention training test, dynamic."""

from __future__ import annotations

import pytest
import torch

from agnostic_rt import passes
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

