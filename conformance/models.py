"""Model-tier check: a zoo model compiled with backend="agnostic" against eager and an fp64 reference,
outputs and (for training) every parameter gradient, under the fp64-reference rule."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from .accuracy import RuleResult, fp64_rule
from .zoo import ZooModel


@dataclass
class ModelCheck:
    model: str
    mode: str  # "inference" | "training"
    results: dict[str, RuleResult] = field(default_factory=dict)  # "output", "grad:<param>", "loss"

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results.values())

    def worst(self) -> tuple[str, RuleResult]:
        return max(self.results.items(), key=lambda kv: kv[1].compiled_error / max(kv[1].bound, 1e-30))


def _run(model, inputs, target, entry: ZooModel, training: bool):
    if not training:
        with torch.no_grad():
            return model(*inputs), {}, None
    out = model(*inputs)
    loss = entry.loss(out, target)
    loss.backward()
    grads = {n.removeprefix("_orig_mod."): p.grad.detach().clone()
             for n, p in model.named_parameters() if p.grad is not None}
    return out.detach(), grads, loss.detach()


def check_model(entry: ZooModel, *, training: bool, options: dict | None = None, device: str = "cpu",
                batch: int | None = None, compiled_model: torch.nn.Module | None = None) -> ModelCheck:
    """Compile ``entry`` and compare with eager and fp64. ``compiled_model`` overrides the compile step
    (for instance a model compiled with another backend, or a planted miscompile)."""
    eager = entry.build().to(device)
    eager.train(training)
    ref64 = copy.deepcopy(eager).double()
    compiled_base = copy.deepcopy(eager)
    inputs, target = entry.example(batch)
    inputs = tuple(x.to(device) for x in inputs)
    target = target.to(device)
    inputs64 = tuple(x.double() if x.is_floating_point() else x for x in inputs)

    compiled = compiled_model or torch.compile(compiled_base, backend="agnostic", options=options or {})
    if compiled_model is not None:
        compiled_base = compiled_model
    out_c, grads_c, loss_c = _run(compiled, inputs, target, entry, training)
    out_e, grads_e, loss_e = _run(eager, inputs, target, entry, training)
    out_r, grads_r, loss_r = _run(ref64, inputs64, target, entry, training)

    check = ModelCheck(entry.name, "training" if training else "inference")
    check.results["output"] = fp64_rule(out_c, out_e, out_r)
    if training:
        check.results["loss"] = fp64_rule(loss_c, loss_e, loss_r)
        for name, g_e in grads_e.items():
            g_c = grads_c.get(name)
            if g_c is None:
                check.results[f"grad:{name}"] = RuleResult(False, float("inf"), 0.0, 0.0)
            else:
                check.results[f"grad:{name}"] = fp64_rule(g_c, g_e, grads_r[name])
    return check
