"""Op tier: torch's OpInfo database (op_db) compiled through backend="agnostic", against eager.

For each OpInfo, each dtype and each target run, the op's sample inputs (eager-runnable ones) are
run eagerly twice (a sample whose two eager runs differ is nondeterministic and dropped) and then
through ONE compiled function that calls the op on every sample, so Dynamo compiles once per
(op, dtype, target) rather than once per sample. Where the op is differentiable for the dtype, the
samples require grad and the backward (torch.autograd.grad with fixed random cotangents) is
compared too. Verdicts are torch.testing.assert_close's with its per-dtype tolerances.

op_db's contents move with torch: the quick subset below names ops that exist in torch 2.11-2.13
(names missing from the installed torch are reported as skipped, not silently dropped).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._pytree import tree_flatten, tree_map

from .compare import compare
from .results import Result
from .runs import TargetRun

log = logging.getLogger("agnostic_rt.conformance")

F32, F16, BF16, I64, I32, B = "float32", "float16", "bfloat16", "int64", "int32", "bool"
DTYPES = {F32: torch.float32, F16: torch.float16, BF16: torch.bfloat16, I64: torch.int64, I32: torch.int32,
          B: torch.bool}
FULL_DTYPES = (F32, F16, BF16, I64, B)

# The quick tier: a fixed, representative subset — pointwise unary/binary, activations, norms,
# reductions, scans, matmuls, convolution, attention, indexing, views and casts — each with the
# dtypes worth checking for it. Chosen to cover what the partitioner fuses and what it sends to the
# vendor library, and to keep the quick run within minutes on two cores.
QUICK_OPS: dict[str, tuple[str, ...]] = {
    "add": (F32, F16, BF16, I64),
    "mul": (F32, BF16, I64, B),
    "sub": (F32,),
    "div.no_rounding_mode": (F32, F16),
    "pow": (F32,),
    "maximum": (F32, I64),
    "where": (F32, I64, B),
    "clamp": (F32,),
    "exp": (F32, BF16),
    "log": (F32,),
    "rsqrt": (F32,),
    "sigmoid": (F32, F16),
    "tanh": (F32,),
    "erf": (F32,),
    "abs": (F32, I64),
    "nn.functional.gelu": (F32, BF16),
    "nn.functional.silu": (F32,),
    "nn.functional.relu": (F32,),
    "softmax": (F32, BF16),
    "log_softmax": (F32,),
    "nn.functional.layer_norm": (F32, BF16),
    "sum": (F32, F16, I64, B),
    "mean": (F32,),
    "amax": (F32, I64),
    "var": (F32,),
    "cumsum": (F32, I64),
    "argmax": (F32,),
    "matmul": (F32, BF16),
    "addmm": (F32,),
    "nn.functional.linear": (F32,),
    "nn.functional.conv2d": (F32,),
    "nn.functional.scaled_dot_product_attention": (F32,),
    "nn.functional.embedding": (F32,),
    "nn.functional.cross_entropy": (F32,),
    "index_select": (F32, I64),
    "gather": (F32,),
    "cat": (F32, B),
    "transpose": (F32,),
    "eq": (F32, I64, B),
    "logical_and": (B,),
    "bitwise_and": (I64, B),
    "masked_fill": (F32,),
    "to": (F32, I64),
    "round.decimals_3": (F32,),
}
QUICK_MAX_SAMPLES = 4
FULL_MAX_SAMPLES = 4
# Interpreted targets in --full: every OpInfo in float32 (the interpreter is ~100x slower than
# ATen; other dtypes' numerics are the CPU run's and the GPU run's job).
FULL_INTERP_DTYPES = (F32,)
# Ops the interpreted targets run in the quick tier (the interpreter is slow; these cover fused
# pointwise chains, reductions and a library call).
QUICK_INTERP_OPS = ("add", "mul", "sigmoid", "nn.functional.gelu", "softmax", "nn.functional.layer_norm",
                    "sum", "amax", "matmul", "where", "cumsum", "to", "round.decimals_3")
# ... plus these reduced-precision cases on interpreted targets (the generated kernels' half-type
# rounding is where they and eager can part ways).
QUICK_INTERP_EXTRA: dict[str, tuple[str, ...]] = {"nn.functional.layer_norm": (BF16,), "add": (BF16,)}


def op_id(op: Any) -> str:
    """An OpInfo's full name: ``name`` or ``name.variant``."""
    return f"{op.name}.{op.variant_test_name}" if op.variant_test_name else op.name


def load_op_db() -> dict[str, Any]:
    """torch's op_db by :func:`op_id` (importing it needs expecttest)."""
    from torch.testing._internal.common_methods_invocations import op_db

    return {op_id(op): op for op in op_db}


@dataclass(frozen=True)
class OpCase:
    """One (op, dtype) pair to check."""

    name: str
    dtype: str


def plan(level: str, run: TargetRun, db: dict[str, Any], ops: list[str] | None = None,
         dtypes: list[str] | None = None) -> list[OpCase]:
    """The (op, dtype) pairs a run checks on ``run``.

    >>> len(plan("quick", TargetRun("cpu", "measured"), {"add": None})) >= 1
    True
    """
    if level == "quick" and not ops:
        names = QUICK_INTERP_OPS if run.mode == "interpreted" else tuple(QUICK_OPS)
        cases = [OpCase(n, d) for n in names
                 for d in (QUICK_OPS[n] if run.mode != "interpreted"
                           else (F32, *QUICK_INTERP_EXTRA.get(n, ())))]
        return [c for c in cases if not dtypes or c.dtype in dtypes]
    names = ops or sorted(db)
    cases = []
    for n in names:
        op = db.get(n)
        supported = op.supported_dtypes("cpu") if op is not None else {torch.float32}
        wanted = QUICK_OPS.get(n, FULL_DTYPES) if level == "quick" else (
            FULL_INTERP_DTYPES if run.mode == "interpreted" else FULL_DTYPES)
        cases += [OpCase(n, d) for d in wanted if DTYPES[d] in supported and (not dtypes or d in dtypes)]
    return cases


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        short = {"float32": "f32", "float16": "f16", "bfloat16": "bf16", "int64": "i64", "bool": "b"}
        dt = str(x.dtype).removeprefix("torch.")
        return f"{short.get(dt, dt)}{list(x.shape)}"
    if isinstance(x, (list, tuple)):
        inner = ", ".join(_describe(v) for v in x[:4]) + (", ..." if len(x) > 4 else "")
        return f"[{inner}]" if isinstance(x, list) else f"({inner})"
    if isinstance(x, dict):
        return "{" + ", ".join(f"{k}={_describe(v)}" for k, v in list(x.items())[:4]) + "}"
    r = repr(x)
    return r if len(r) < 24 else r[:21] + "..."


def describe_sample(i: int, s: tuple) -> str:
    inp, args, kwargs = s
    parts = [f"input {_describe(inp)}"]
    if args:
        parts.append(f"args {_describe(tuple(args))}")
    if kwargs:
        parts.append(f"kwargs {_describe(kwargs)}")
    return f"sample {i}: " + ", ".join(parts)


def _clone(s: tuple) -> tuple:
    def c(x):
        if isinstance(x, torch.Tensor):
            return x.detach().clone().requires_grad_(x.requires_grad)
        return x

    return tree_map(c, s)


def _leaves(s: tuple) -> list[torch.Tensor]:
    return [t for t in tree_flatten(s)[0] if isinstance(t, torch.Tensor) and t.requires_grad]


def _samples(op: Any, dtype: torch.dtype, device: str, grad: bool, limit: int) -> Iterator[tuple]:
    torch.manual_seed(0)
    for k, s in enumerate(op.sample_inputs(device, dtype, requires_grad=grad)):
        if k >= limit:
            return
        yield (s.input, tuple(s.args), dict(s.kwargs))


def _bits_equal(x: torch.Tensor, y: torch.Tensor) -> bool:
    """Equal element for element, NaN equal to NaN (complex compared as (re, im) pairs)."""
    if x.is_complex():
        x, y = torch.view_as_real(x.resolve_conj()), torch.view_as_real(y.resolve_conj())
    if x.is_floating_point():
        return bool(((x == y) | (x.isnan() & y.isnan())).all())
    return torch.equal(x, y)


def _same_bits(a: Any, b: Any) -> bool:
    fa, fb = tree_flatten(a)[0], tree_flatten(b)[0]
    if len(fa) != len(fb):
        return False
    for x, y in zip(fa, fb):
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
            if x.shape != y.shape or x.dtype != y.dtype or not _bits_equal(x.detach(), y.detach()):
                return False
        elif isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
            return False
    return True


def _cotangents(outs: list[torch.Tensor], rounded_to: torch.dtype | None = None) -> list[torch.Tensor]:
    # The same values for eager, compiled and the fp64 reference: drawn in fp32, rounded to the dtype
    # under test, then (for the reference) widened.
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(o.shape, generator=gen, dtype=torch.float32)
            .to(rounded_to or o.dtype).to(o.dtype).to(o.device)
            for o in outs]


def _grad(outs_per_sample: list[Any], samples: list[tuple],
          rounded_to: torch.dtype | None = None) -> list[list[torch.Tensor | None]] | None:
    """Gradients of every sample's leaves under fixed cotangents; None when nothing is differentiable."""
    outs = [t for o in outs_per_sample for t in tree_flatten(o)[0]
            if isinstance(t, torch.Tensor) and t.requires_grad and t.is_floating_point()]
    leaves = [_leaves(s) for s in samples]
    flat_leaves = [t for ls in leaves for t in ls]
    if not outs or not flat_leaves:
        return None
    grads = torch.autograd.grad(outs, flat_leaves, _cotangents(outs, rounded_to), allow_unused=True)
    per, k = [], 0
    for ls in leaves:
        per.append([None if g is None else g.detach() for g in grads[k:k + len(ls)]])
        k += len(ls)
    return per


def _batch_fn(fn: Callable) -> Callable:
    def run_samples(samples):
        return [fn(inp, *args, **kwargs) for inp, args, kwargs in samples]

    return run_samples


def check_op(op: Any, case: OpCase, run: TargetRun, *, max_samples: int,
             compile_fn: Callable[[Callable, TargetRun], Callable] | None = None) -> list[Result]:
    """Check one (op, dtype) on one target: a forward Result and, where differentiable, a backward one.

    >>> from conformance.ops import load_op_db  # doctest: +SKIP
    >>> run = available_runs(["cpu"])[0]  # doctest: +SKIP
    >>> check_op(load_op_db()["add"], OpCase("add", "float32"), run, max_samples=2)  # doctest: +SKIP
    """
    t0 = time.perf_counter()
    dtype = DTYPES[case.dtype]
    base = dict(tier="op", target=run.name, case=case.name, dtype=case.dtype)
    if (getattr(op, "skip_correctness_check_compile_vs_eager", False)
            or getattr(op, "has_nondeterministic_output", False)):
        return [Result(**base, check="forward", status="skip",
                       message="op_db marks its output nondeterministic")]
    grad = (op.supports_autograd and dtype.is_floating_point
            and dtype in op.supported_backward_dtypes(run.device if run.device == "cpu" else "cuda"))
    dropped: list[str] = []
    samples: list[tuple] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            candidates = list(_samples(op, dtype, run.device, grad, max_samples))
        except Exception as exc:  # noqa: BLE001 - a sample generator that fails here is skipped, said why
            return [Result(**base, check="forward", status="skip",
                           message=f"sample_inputs raised {exc!r}"[:300])]
        for s in candidates:
            if any(isinstance(t, torch.Tensor) and t.layout != torch.strided for t in tree_flatten(s)[0]):
                dropped.append("sparse layout (out of scope: the backend compiles strided tensors)")
                continue
            try:
                first = _call(op.op, _clone(s))
                second = _call(op.op, _clone(s))
            except Exception as exc:  # noqa: BLE001 - eager cannot run it: nothing to conform to
                dropped.append(f"eager raised {type(exc).__name__}")
                continue
            if any(isinstance(t, torch.Tensor) and t.layout != torch.strided for t in tree_flatten(first)[0]):
                dropped.append("sparse output (out of scope: the backend compiles strided tensors)")
                continue
            if not _same_bits(first, second):
                dropped.append("eager nondeterministic")
                continue
            samples.append(s)
        if not samples:
            why = ", ".join(sorted(set(dropped))) or "no sample inputs"
            return [Result(**base, check="forward", status="skip", message=f"no usable samples ({why})")]

        eager_in = [_clone(s) for s in samples]
        eager_out = _batch_fn(op.op)(eager_in)
        compiled_in = [_clone(s) for s in samples]
        compiler = compile_fn or default_compile
        try:
            compiled_out = compiler(_batch_fn(op.op), run)(compiled_in)
        except Exception as exc:  # noqa: BLE001 - a compile or run error is a failure of the backend
            return [Result(**base, check="forward", status="fail",
                           message=f"compiled run raised {type(exc).__name__}: {exc}"[:600],
                           error_ratio=float("inf"), seconds=time.perf_counter() - t0)]
        results = [_verdict(base, "forward", eager_out, compiled_out, samples, dropped)]
        ref_in: list[tuple] | None = None
        ref_out: list[Any] | None = None
        if results[0].status == "fail" and dtype.is_floating_point:
            ref_in, ref_out = _reference(op, samples)
            _fp64_fallback(results[0], eager_out, compiled_out, ref_out)
        if grad:
            try:
                g_e = _grad(eager_out, eager_in)
                g_c = _grad(compiled_out, compiled_in)
            except Exception as exc:  # noqa: BLE001
                results.append(Result(**base, check="backward", status="fail", error_ratio=float("inf"),
                                      message=f"backward raised {type(exc).__name__}: {exc}"[:600]))
                g_e = g_c = None
            if g_e is not None and g_c is not None:
                results.append(_verdict(base, "backward", g_e, g_c, samples, dropped))
                if results[-1].status == "fail":
                    if ref_out is None:
                        ref_in, ref_out = _reference(op, samples)
                    g_r = None
                    if ref_out is not None and ref_in is not None:
                        try:
                            g_r = _grad(ref_out, ref_in, rounded_to=dtype)
                        except Exception:  # noqa: BLE001 - no fp64 backward: the plain verdict stands
                            g_r = None
                    _fp64_fallback(results[-1], g_e, g_c, g_r)
    elapsed = time.perf_counter() - t0
    for r in results:
        r.seconds = elapsed / len(results)
    return results


def _reference(op: Any, samples: list[tuple]) -> tuple[list[tuple] | None, list[Any] | None]:
    """Eager in float64 on the same (widened) samples, or (None, None) where the op has no fp64."""

    def widen(x):
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            return x.detach().double().requires_grad_(x.requires_grad)
        return x

    try:
        ref_in = [tree_map(widen, s) for s in samples]
        return ref_in, _batch_fn(op.op)(ref_in)
    except Exception:  # noqa: BLE001
        return None, None


def _fp64_fallback(result: Result, expected: list, actual: list, reference: list | None) -> None:
    """Where compiled and eager disagree beyond assert_close's tolerance, the compiled result still passes
    if it is at least as close to the fp64 reference as eager is (per sample, worst element, with a
    tenth of atol of slack): PyTorch's reference tests accept "more accurate than the reference" the
    same way. The result keeps the eager comparison's numbers and says it passed by this rule."""
    if reference is None:
        return
    from .compare import tolerance

    worst_margin = 0.0
    for e, a, r in zip(expected, actual, reference):
        fe, fa, fr = (tree_flatten(x)[0] for x in (e, a, r))
        for te, ta, tr in zip(fe, fa, fr):
            if not (isinstance(te, torch.Tensor) and isinstance(ta, torch.Tensor)
                    and isinstance(tr, torch.Tensor)):
                continue
            if not te.is_floating_point() or te.shape != ta.shape or te.shape != tr.shape or te.numel() == 0:
                continue
            if compare(ta, te).passed:  # this leaf already agrees with eager
                continue
            r64 = tr.detach().double()
            err_e = torch.nan_to_num((te.detach().double() - r64).abs(), nan=0.0).max().item()
            err_a = (ta.detach().double() - r64).abs()
            both_nan = ta.detach().isnan() & tr.detach().isnan()
            err_a = torch.where(both_nan, torch.zeros_like(err_a),
                                torch.nan_to_num(err_a, nan=float("inf"))).max().item()
            bound = 2 * err_e + tolerance(te.dtype)[1] / 10
            if err_a > bound:
                return
            worst_margin = max(worst_margin, err_a / bound if bound else 0.0)
    result.status = "pass"
    result.extra["fp64_fallback"] = True
    result.message = (f"passes by the fp64-reference rule (compiled is within 2x eager's distance to "
                      f"fp64, worst {worst_margin:.2g} of the bound); against eager alone: "
                      f"{result.message}")[:800]


def _call(fn: Callable, s: tuple) -> Any:
    inp, args, kwargs = s
    return fn(inp, *args, **kwargs)


def _verdict(base: dict, check: str, expected: list, actual: list, samples: list,
             dropped: list[str]) -> Result:
    worst_i, worst = 0, None
    for i, (e, a) in enumerate(zip(expected, actual)):
        c = compare(a, e)
        if (worst is None or (not c.passed and worst.passed)
                or (c.passed == worst.passed and c.error_ratio > worst.error_ratio)):
            worst_i, worst = i, c
        if not c.passed:
            break
    assert worst is not None
    note = f" ({len(dropped)} samples dropped: {', '.join(sorted(set(dropped)))})" if dropped else ""
    return Result(**base, check=check, status="pass" if worst.passed else "fail",
                  error_ratio=worst.error_ratio, abs_error=worst.abs_error,
                  sample=f"{describe_sample(worst_i, samples[worst_i])} {worst.where}",
                  message=(worst.message + note).strip(), extra={"samples": len(samples)})


def default_compile(fn: Callable, run: TargetRun) -> Callable:
    """torch.compile through backend="agnostic" with the run's options."""
    return torch.compile(fn, backend="agnostic", options=dict(run.options), dynamic=False)
