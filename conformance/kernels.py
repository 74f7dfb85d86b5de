"""Kernel tier: every generated kernel run alone under the Triton interpreter (CPU) against its group's
FX nodes through ATen, and built for every GPU target we claim — Triton for cuda sm_80/sm_90 and hip
gfx90a/gfx942, NVRTC for CUDA C (sm_80/sm_90, each its own target), hiprtc for HIP C (gfx90a:
Debian's ROCm 5.2 hiprtc cannot target gfx942) — whatever hardware is present.

Alone (:func:`check_alone`): each kernel group the backend forms for a zoo model's training step on
an interpreted target (:mod:`conformance.kernel_groups`) is compiled by the backend, launched once on
the values its inputs held in that step, and compared with the same nodes run through ATen, with
:mod:`conformance.compare`'s per-dtype tolerances. One result per kernel, named
``<model>.<graph>.k<n>``, so a wrong kernel fails under its own name instead of somewhere inside a
model's loss.

Built (:func:`check_generated`): every kernel generated in this process (the op and model tiers' and
the alone checks'), from the backend's enumeration (:func:`generated_kernels`). The toolchain
canaries of :mod:`conformance.canary_kernels` run too, reported as ``canary.*`` cases so nobody
mistakes them for coverage of generated code.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .results import Result, TierNote
from .runs import BUILD_TARGETS

log = logging.getLogger("agnostic_rt.conformance")


def generated_kernels() -> list[Any] | None:
    """The kernels the backend generated in this process, or None when it exposes no enumeration.

    Reads ``agnostic_rt.backends.triton.registry.generated_kernels()``: every Triton kernel the op and model
    tiers' interpreted targets generated (and ran, under the interpreter, inside those tiers).
    """
    try:
        from agnostic_rt.backends.triton.registry import generated_kernels as enumerate_kernels
    except Exception:  # noqa: BLE001 - an older backend without the registry
        return None
    return list(enumerate_kernels())


def _build_generated(kernel: Any, name: str, family: str, arch: str) -> tuple[str, str, float | None]:
    """Build one generated kernel for one claimed target."""
    if family in ("cuda", "hip"):
        from agnostic_rt.backends.triton.registry import build_for

        compiled = build_for(kernel, arch)
        binary = "cubin" if family == "cuda" else "hsaco"
        if binary not in compiled.asm:
            return "fail", f"no {binary} produced; stages: {list(compiled.asm)}", None
        return "pass", f"{binary} {len(compiled.asm[binary])} bytes", None
    from agnostic_rt.backends.c.cstyle import CUDA, HIP, render

    if family == "nvrtc":
        from agnostic_rt.backends.c.cuda import build_cubin

        return "pass", f"cubin {len(build_cubin(render(kernel.ir, CUDA).source, arch))} bytes", None
    from agnostic_rt.backends.c.hip import build_code_object, ensure_hiprtc

    ensure_hiprtc()
    return "pass", f"code object {len(build_code_object(render(kernel.ir, HIP).source, arch))} bytes", None


def check_generated(kernels: list[Any], report_add: Callable[[Result], Any],
                    limit: int | None = None) -> None:
    """Build every generated kernel (up to ``limit``) for every claimed target."""
    for k in kernels[:limit]:
        for name, family, arch in BUILD_TARGETS:
            base = dict(tier="kernel", target=name, case=k.name, dtype="")
            r = _timed(base, "build", lambda k=k, n=name, f=family, a=arch: _build_generated(k, n, f, a))
            r.extra["generated"] = True
            ops = getattr(getattr(k, "ir", None), "ops", None)
            if ops is not None:
                r.sample = f"{len(ops)} IR ops"
            report_add(r)


# Zoo models whose training step's kernels run alone on each interpreted target. The quick tier takes
# the MLP (forward + backward: GELU, layer norm, ReLU, bias and loss reductions); --full every family.
QUICK_ALONE_MODELS = ("mlp",)
FULL_ALONE_MODELS = ("mlp", "cnn", "gpt2", "bert")


class KernelLaunchError(RuntimeError):
    """A generated kernel failed at its launch (the backend would have run its group through ATen)."""


def _no_fallback(name: str) -> Callable:
    def refuse(*_):
        # Called by the launcher inside its ``except`` block: the launch error is the one in flight.
        import sys

        raise KernelLaunchError(f"kernel {name} failed at its first launch: {sys.exc_info()[1]!r}")
    return refuse


def check_alone(kg: Any, target: str, seen: dict[tuple, str] | None = None) -> Result | None:
    """Run the kernel the backend generates for one group (a ``KernelGroup``) alone and compare it with
    the group's nodes through ATen. None when the backend does not generate the group, or when
    ``seen`` (kernel name and input layouts -> case) already holds the same kernel on the same inputs."""
    from .compare import compare

    t0 = time.perf_counter()
    launcher = kg.compile()
    if launcher is None:
        return None
    kernel = getattr(launcher, "kernel", None)
    name = getattr(kernel, "name", type(launcher).__name__)
    if seen is not None:
        layout = (name, *((tuple(v.shape), v.stride(), v.dtype) if isinstance(v, torch.Tensor) else v
                          for v in kg.values))
        if layout in seen:
            return None
        seen[layout] = kg.case
    outs = [o.meta.get("val") for o in kg.group.outputs]
    dtype = str(outs[0].dtype).removeprefix("torch.") if outs and isinstance(outs[0], torch.Tensor) else ""
    base = dict(tier="kernel", target=target, case=kg.case, dtype=dtype)

    def run() -> tuple[str, str, float | None]:
        if not hasattr(launcher, "fallback"):
            # A DynamicLauncher (a group with symbolic sizes) falls back to ATen inside, unseen from
            # here; the zoo's steps are captured with static shapes, so this is not expected.
            return "skip", f"{name}: a per-shape launcher; its kernel cannot be run alone", None
        launcher.fallback = _no_fallback(name)
        got = launcher(*kg.values)
        want = kg.reference(*kg.values)
        c = compare(list(got), list(want))
        if c.passed:
            return ("pass", f"{name} matches ATen (worst: {c.where or 'out'} at {c.error_ratio:.2g} "
                    "of the tolerance)", c.error_ratio)
        return "fail", f"{name}: {c.message}", c.error_ratio

    r = _timed(base, "interpret", run)
    r.seconds = time.perf_counter() - t0
    r.sample = kg.shapes()
    r.extra.update(generated=True, alone=True, kernel=name, ops=kg.group.ops)
    return r


def check_alone_all(runs: list[Any], models: list[str], report_add: Callable[[Result], Any],
                    notes: list[TierNote]) -> None:
    """Capture each model's kernel groups on each interpreted run and check every kernel alone."""
    from .kernel_groups import BATCH, kernel_groups

    for run in runs:
        seen: dict[tuple, str] = {}
        checked = groups = 0
        for model in models:
            try:
                found = kernel_groups(model, run)
            except Exception as exc:  # noqa: BLE001 - a model the capture cannot run is this tier's failure
                log.exception("kernel tier: capturing %s on %s failed", model, run.name)
                report_add(Result("kernel", run.name, f"{model}.capture", "", "interpret", "fail",
                                  error_ratio=float("inf"), message=f"{type(exc).__name__}: {exc}"[:600],
                                  extra={"generated": True}))
                continue
            groups += len(found)
            for kg in found:
                r = check_alone(kg, run.name, seen)
                if r is not None:
                    checked += 1
                    report_add(r)
        notes.append(TierNote("kernel", run.name, "kernels checked alone",
                              f"{checked} distinct kernels of {groups} kernel groups in the training step "
                              f"(batch {BATCH}) of {', '.join(models)}, each run alone under the Triton "
                              "interpreter and compared with its nodes through ATen"))


def _load_canary(interpret: bool):
    """The canary module, decorated with or without the Triton interpreter."""
    # Import Triton (and what it imports lazily) before flipping the variable: its own modules
    # assert they were decorated in the mode they run in.
    import triton  # noqa: F401
    import triton.compiler  # noqa: F401
    import triton.language  # noqa: F401

    path = Path(__file__).with_name("canary_kernels.py")
    name = f"_agnostic_canary_{'interp' if interpret else 'build'}"
    old = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1" if interpret else "0"
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        if old is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = old


def _timed(base: dict, check: str, fn: Callable[[], tuple[str, str, float | None]]) -> Result:
    t0 = time.perf_counter()
    try:
        status, message, ratio = fn()
    except Exception as exc:  # noqa: BLE001 - a build error is this tier's failure, with its message
        message = f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:600]
        status, ratio = "fail", float("inf")
    return Result(**base, check=check, status=status, message=message, error_ratio=ratio,
                  seconds=time.perf_counter() - t0, extra={"generated": False})


def interpret_canary() -> tuple[str, str, float | None]:
    """Run the canary through the Triton interpreter on CPU tensors and compare with torch."""
    from .compare import compare

    mod = _load_canary(interpret=True)
    gen = torch.Generator().manual_seed(0)
    n = 1000
    x, y = torch.randn(n, generator=gen), torch.randn(n, generator=gen)
    out = torch.empty(n)
    block = mod.CONSTEXPRS["BLOCK"]
    mod.fused_add_gelu[((n + block - 1) // block,)](x, y, out, n, BLOCK=block)
    c = compare(out, torch.nn.functional.gelu(x + y))
    return ("pass" if c.passed else "fail"), c.message, c.error_ratio


def build_triton(family: str, arch: str) -> tuple[str, str, float | None]:
    """triton.compile the canary for a GPUTarget; passes when the binary (cubin / hsaco) is produced."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    mod = _load_canary(interpret=False)
    target = GPUTarget(family, int(arch[3:]) if family == "cuda" else arch, 32 if family == "cuda" else 64)
    source = ASTSource(mod.fused_add_gelu, mod.SIGNATURE, constexprs=mod.CONSTEXPRS)
    kernel = triton.compile(source, target=target)
    binary = "cubin" if family == "cuda" else "hsaco"
    if binary not in kernel.asm:
        return "fail", f"no {binary} produced; stages: {list(kernel.asm)}", None
    return "pass", f"{binary} {len(kernel.asm[binary])} bytes", None


def build_nvrtc(arch: str) -> tuple[str, str, float | None]:
    """Compile the CUDA C canary to a cubin with NVRTC (no driver, no GPU needed)."""
    try:
        from cupy_backends.cuda.libs import nvrtc
    except ImportError as exc:
        return "skip", f"NVRTC not installed ({exc}); pip install 'agnostic-rt[cuda]'", None
    from .canary_kernels import CUDA_C_SOURCE

    prog = nvrtc.createProgram(CUDA_C_SOURCE, "canary.cu", [], [])
    try:
        nvrtc.compileProgram(prog, [f"--gpu-architecture={arch}"])
        return "pass", f"cubin {len(nvrtc.getCUBIN(prog))} bytes", None
    finally:
        nvrtc.destroyProgram(prog)


def build_hiprtc(arch: str) -> tuple[str, str, float | None]:
    """Compile the HIP C canary to a code object with hiprtc (through the backend's HIP builder)."""
    try:
        from agnostic_rt.backends.c.hip import build_code_object, ensure_hiprtc
    except ImportError as exc:
        return "skip", f"no HIP C builder ({exc}); pip install 'agnostic-rt[rocm]'", None
    from .canary_kernels import CUDA_C_SOURCE

    try:
        ensure_hiprtc()
    except Exception as exc:  # noqa: BLE001 - no ROCm libraries on this machine: say so, do not fail
        return "skip", f"hiprtc not available here: {' '.join(str(exc).split())}", None
    return "pass", f"code object {len(build_code_object(CUDA_C_SOURCE, arch, cache=False))} bytes", None


def kernel_check(target: str) -> Result:
    """The canary check for one kernel-tier target: "triton-interpreter" or a BUILD_TARGETS name."""
    base = dict(tier="kernel", target=target, case="canary.fused_add_gelu", dtype="float32")
    if target == "triton-interpreter":
        return _timed(base, "interpret", interpret_canary)
    family, arch = next((f, a) for n, f, a in BUILD_TARGETS if n == target)
    if family in ("cuda", "hip"):
        return _timed(base, "build", lambda: build_triton(family, arch))
    if family == "nvrtc":
        return _timed(base, "build", lambda: build_nvrtc(arch))
    return _timed(base, "build", lambda: build_hiprtc(arch))


# The quick tier builds this many generated kernels (the first ones, in generation order, which is
# fixed for a fixed plan) for each claimed target; --full builds every one.
QUICK_BUILD_LIMIT = 12


def run_kernel_tier(report_add: Callable[[Result], Any], notes: list[TierNote], limit: int | None = None,
                    runs: list[Any] | None = None, models: list[str] | None = None) -> None:
    """Run the kernel tier, adding its results through ``report_add``: the kernels of ``models``' training
    steps alone on each interpreted run in ``runs``, then builds of at most ``limit`` generated kernels."""
    interpreted = [r for r in runs or [] if r.mode == "interpreted"]
    if interpreted and models:
        check_alone_all(interpreted, models, report_add, notes)
    elif not interpreted:
        notes.append(TierNote("kernel", "*", "no kernels checked alone", "no interpreted target selected"))
    kernels = generated_kernels()
    if not kernels:
        why = ("the backend exposes no kernel enumeration yet (agnostic_rt.backends.generated_kernels)"
               if kernels is None else "no kernels were generated in this run")
        notes.append(TierNote("kernel", "*", "no generated kernels",
                              why + "; only toolchain canaries were built"))
    else:
        quick = f"; builds checked for the first {limit} (quick)" if limit and limit < len(kernels) else ""
        notes.append(TierNote("kernel", "*", "built", f"{len(kernels)} generated kernels" + quick))
        check_generated(kernels, report_add, limit)
    for target in ["triton-interpreter"] + [n for n, _, _ in BUILD_TARGETS]:
        report_add(kernel_check(target))
