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

    compiled = (compiled_model if compiled_model is not None
                else torch.compile(compiled_base, backend="agnostic", options=options or {}))
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


@dataclass
class CurveCheck:
    """A short training run, compiled vs eager vs fp64: the loss curves and the fp64 rule over them."""

    model: str
    steps: int
    compiled: list[float]
    eager: list[float]
    ref64: list[float]
    result: RuleResult

    @property
    def passed(self) -> bool:
        return self.result.passed


def _train_curve(model: torch.nn.Module, entry: ZooModel, batches, steps: int, lr: float) -> list[float]:
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    losses = []
    for step in range(steps):
        inputs, target = batches[step % len(batches)]
        opt.zero_grad(set_to_none=True)
        loss = entry.loss(model(*inputs), target)
        loss.backward()
        opt.step()
        losses.append(loss.detach().double().item())
    return losses


def check_training_curve(entry: ZooModel, *, steps: int = 8, lr: float = 0.05,
                         options: dict | None = None, device: str = "cpu", batch: int | None = None,
                         compiled_model: torch.nn.Module | None = None,
                         tol: float | None = None) -> CurveCheck:
    """Train ``entry`` for ``steps`` SGD steps compiled, eager and in fp64 from the same weights and
    batches; the compiled loss curve must satisfy the fp64-reference rule against eager's.

    >>> check_training_curve(zoo.get("mlp"), steps=4).passed  # doctest: +SKIP
    True
    """
    eager = entry.build().to(device)
    eager.train(True)
    ref64 = copy.deepcopy(eager).double()
    compiled_base = copy.deepcopy(eager)
    compiled = (compiled_model if compiled_model is not None
                else torch.compile(compiled_base, backend="agnostic", options=options or {}))
    batches = []
    for seed in range(min(steps, 4)):
        inputs, target = entry.example(batch, seed=seed)
        batches.append((tuple(x.to(device) for x in inputs), target.to(device)))
    batches64 = [(tuple(x.double() if x.is_floating_point() else x for x in inp), tgt)
                 for inp, tgt in batches]
    curve_c = _train_curve(compiled, entry, batches, steps, lr)
    curve_e = _train_curve(eager, entry, batches, steps, lr)
    curve_r = _train_curve(ref64, entry, batches64, steps, lr)
    as_t = torch.tensor
    result = fp64_rule(as_t(curve_c, dtype=torch.float32), as_t(curve_e, dtype=torch.float32),
                       as_t(curve_r, dtype=torch.float64), tol)
    return CurveCheck(entry.name, steps, curve_c, curve_e, curve_r, result)
