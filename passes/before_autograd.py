"""Rewrites before aot_autograd: the Dynamo graph, traced to ATen, through the e-graph.

Attention -> SDPA and the QKV merge change what autograd differentiates, so they must run before
aot_autograd derives the backward. The Dynamo graph is traced to ATen with make_fx under Dynamo's
own FakeTensorMode (so symbolic sizes stay symbolic), optimised, and the ATen graph is handed to
aot_autograd in its place -- only when a rule changed something the cost model wants. Graphs this
cannot trace faithfully (grad-mode switches, autocast, higher-order ops, modules) are left alone.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.fx as fx

from agnostic_rt.targets import Target

from .analysis import fake_mode_of
from .optimizer import optimize_graph

log = logging.getLogger("agnostic_rt.before_autograd")

# Rules worth a trace: without a softmax or a shared-input linear there is nothing to do here that
# the post-autograd pass cannot do.
_TRIGGERS = ("softmax", "linear", "matmul", "addmm", "bmm")
_STATEFUL = ("set_grad_enabled", "autocast", "_enter_", "_exit_", "higher_order", "wrap_with",
             "checkpoint", "set_autocast", "torch.autograd")


def _describe(target: Any) -> str:
    return getattr(target, "__name__", None) or str(target)


def worth_tracing(gm: fx.GraphModule) -> tuple[bool, str]:
    """Whether the Dynamo graph may hold what only this pass can rewrite: a softmax (attention) or
    two linear layers reading one input (a QKV merge). Tracing costs seconds; skip it otherwise."""
    softmax, shared = False, {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            return False, f"call_module {node.target}"
        if node.op not in ("call_function", "call_method"):
            continue
        name = _describe(node.target) if node.op == "call_function" else str(node.target)
        full = f"{getattr(node.target, '__module__', '')}.{name}"
        if any(s in full for s in _STATEFUL):
            return False, f"stateful node {full}"
        softmax = softmax or "softmax" in name
        if name in ("linear", "addmm", "matmul") and node.args:
            key = node.args[1] if name == "addmm" and len(node.args) > 1 else node.args[0]
            shared[key] = shared.get(key, 0) + 1
    if softmax or any(n >= 2 for n in shared.values()):
        return True, ""
    return False, "no attention pattern and no linears sharing an input"


def trace_to_aten(gm: fx.GraphModule) -> fx.GraphModule:
    """The Dynamo graph as an ATen graph (no decompositions beyond ATen's own composites)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    fakes = [n.meta.get("example_value", n.meta.get("val")) for n in gm.graph.nodes if n.op == "placeholder"]
    if any(f is None for f in fakes):
        raise RuntimeError("placeholders without example values")
    fake_mode = fake_mode_of(fakes)
    if fake_mode is None:
        raise RuntimeError("no fake mode on the Dynamo graph")
    with fake_mode:
        # functionalised (in-place random ops such as dropout's bernoulli_ become functional ones)
        traced = make_fx(torch.func.functionalize(gm, remove="mutations"), tracing_mode="real",
                         pre_dispatch=False)(*fakes)
    # Constants created inside the model were traced as fake tensors: put the real ones back.
    for name, value in list(traced.named_buffers()) + [(n, getattr(traced, n)) for n in dir(traced)
                                                        if n.startswith("_tensor_constant")]:
        if isinstance(value, torch._subclasses.FakeTensor):
            real = getattr(value, "constant", None)
            if real is None:
                raise RuntimeError(f"constant {name} has no real value")
            setattr(traced, name, real)
    return traced


_AUTOGRAD_OPS = (torch.ops.aten.scaled_dot_product_attention.default, torch.ops.aten.cat.default)


def _changes_autograd(before: fx.GraphModule, after: fx.GraphModule) -> bool:
    """Did an attention or merge rewrite (a new SDPA, a new concatenation) reach the extracted graph?"""
    def count(gm, op):
        return sum(1 for n in gm.graph.nodes if n.target == op)
    return any(count(after, op) > count(before, op) for op in _AUTOGRAD_OPS)


def rewrite(gm: fx.GraphModule, example_inputs, target: Target, numerics: str = "strict") -> fx.GraphModule:
    ok, why = worth_tracing(gm)
    if not ok:
        log.debug("before autograd: graph left as is (%s)", why)
        return gm
    aten_gm = trace_to_aten(gm)
    placeholders = [n for n in aten_gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(example_inputs):
        raise RuntimeError(f"traced graph has {len(placeholders)} inputs for {len(example_inputs)} examples")
    params = {ph.target for ph, x in zip(placeholders, example_inputs) if isinstance(x, torch.nn.Parameter)}
    out, report = optimize_graph(aten_gm, target, numerics, params=params)
    if not report.changed or not _changes_autograd(aten_gm, out):
        # nothing here needed to run before autograd: the post-autograd pass does the rest
        return gm
    out.meta = dict(getattr(gm, "meta", {}))
    log.info("before autograd: %s", dict(report.run.fired))
    out._agnostic_report = report
    return out
