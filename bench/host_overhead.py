"""A CPU proxy for the per-step HOST cost of a compiled GPU program: where agnostic's step goes when
the kernels themselves cost nothing.

Small zoo models on a GPU are host-bound (agnostic was 0.52x-0.73x of Inductor's steady step on the
H200), and the dev machine has no GPU. So each model is compiled for a GPU part
(``options={"target": "h100", "interpret": True}``: the H100 program, its fusion and its Triton
kernels, run on CPU tensors) and every Triton launch is replaced by a no-op. The launcher still does
all its own host work (fitting inputs, allocating or reusing outputs, the alignment check) and takes
its GPU path: after the first (JIT) launch it calls the compiled binary's runner directly
(``KernelLauncher._prepare_direct``); here that runner is a stub that only counts its calls. What the
proxy leaves out: Triton's own runner (``CompiledKernel[grid]``: stream lookup, argument packing) and
the driver's launch, CUDA's caching allocator (CPU ``malloc`` instead), and the CUDA dispatch of the
program's ATen calls. What it adds: the CPU compute of those ATen calls (mm, SDPA) and of the eager
loss, which small batches (default 2) and one thread keep small but do not remove. The baselines
(eager, dynamo, aot_eager) also compute every elementwise op on the CPU where agnostic's stubbed
kernels compute nothing, so across columns only the host-bound parts compare; the ATen column says
how much of agnostic's step is library compute (``aten_by_op`` in the JSON names the ops). Stubbed
kernels leave their outputs unwritten, so later ATen calls read arbitrary values (flush-denormal is
on, so the values cannot slow the CPU's arithmetic).

Per model and mode (inference under no_grad in eval mode; training = forward + loss + backward, as
``agnostic-rt bench`` does it, gradients set to None before each step outside the timing), the median
step over ``--steps`` interleaved rounds (after 5 warm-up steps) of: eager (the plain model), dynamo
(``backend="eager"``, Dynamo's floor), aot_eager (aot_autograd's floor) and agnostic (stubbed). A second agnostic compile of the same model, whose
launchers, ``ViewOf`` calls and ATen calls are wrapped in ``perf_counter`` accumulators (not
cProfile, which inflates small calls), gives the breakdown per step: time and calls inside
``KernelLauncher.__call__`` (launches/step counts these calls; a zero-element group returns before
launching, as it does on a GPU; of which ``stage_call``: fitting inputs, allocating or reusing outputs,
0 where the launcher's steady state does not go through it),
inside ``ViewOf.__call__`` and inside the program's ATen OpOverload calls; ``rest`` = the
uninstrumented agnostic step minus those three (Dynamo's guards, aot's runtime wrappers, autograd,
the program's own glue, the eager loss). ``outside`` splits off the part spent outside the programs
(instrumented step minus time inside the programs: guards, wrappers, autograd, loss), so ``rest -
outside`` is the programs' own Python between calls; ``loss`` is the eager loss's forward and
backward alone, timed in the same rounds from logits of the model's output shape. Every call is
timed in situ, once per step between other work, which costs more per call than a warm loop.
``--library stub`` makes the programs' library calls (matmul, SDPA, layer norm) allocate their
outputs and compute nothing, so the breakdown holds no CPU compute of theirs (nor the cache misses
that compute causes the calls around it).

    python bench/host_overhead.py --models mlp gpt2 --modes inference training --steps 50 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from agnostic_rt.bench_compare import MODES, _Case, machine_description

BASELINES = ("eager", "dynamo", "aot_eager")
OPTIONS = {"target": "h100", "interpret": True}
WARMUP = 5
NOTE = "CPU proxy: Triton launches stubbed (no-op runner), not a GPU timing"
LIBRARY_NOTE = {
    "run": "the programs' ATen calls (mm, SDPA) and the loss compute on the CPU, their time included; the "
           "baselines also compute every elementwise op",
    "stub": "the programs' library calls (mm, SDPA, layer norm) only allocate their outputs, so agnostic's "
            "columns hold no library compute while the baselines compute everything: compare across columns "
            "with care",
}


# ---------------------------------------------------------------------------------------------------
# Stubbing: the program's launchers take their GPU path, and the kernel launch itself does nothing.

class _Counts:
    jit_launches = 0  # first launches, through the stub "JIT"
    direct_launches = 0  # later launches, through the kept binary's runner
    launchers = 0  # KernelLaunchers made while stubbed


class _FakeBinary:
    """What a Triton JIT launch returns (a CompiledKernel): ``binary[grid]`` is its runner."""

    def __getitem__(self, grid) -> Callable:
        def run(*args):
            _Counts.direct_launches += 1

        return run


class _FakeJit:
    """Stands for a ``@triton.jit`` function: ``fn[grid](*args, **constexprs)`` "launches" and returns
    the binary it launched, as Triton's JIT does."""

    def __init__(self, name: str):
        self.__name__ = name

    def __getitem__(self, grid) -> Callable:
        def launch(*args, **kwargs):
            _Counts.jit_launches += 1
            return _FakeBinary()

        return launch


@contextlib.contextmanager
def stubbed_launches() -> Iterator[None]:
    """While active, KernelLaunchers made get a stub kernel and take the GPU (non-interpreted) path."""
    from agnostic_rt.backends.registry import GeneratedKernel
    from agnostic_rt.backends.triton_launch import KernelLauncher

    orig_function, orig_init = GeneratedKernel.function, KernelLauncher.__init__

    def function(self, interpret: bool):
        return _FakeJit(self.name)

    def init(self, *args, **kwargs):
        orig_init(self, *args, **kwargs)
        self.interpret = False  # launch as on a GPU: the JIT once, then the kept binary's runner
        _Counts.launchers += 1

    GeneratedKernel.function, KernelLauncher.__init__ = function, init
    try:
        yield
    finally:
        GeneratedKernel.function, KernelLauncher.__init__ = orig_function, orig_init


# ---------------------------------------------------------------------------------------------------
# Instrumentation: perf_counter accumulators around launchers, ViewOf calls and the program's ATen calls.

class Meter:
    """Seconds and calls per category, reset per step."""

    def __init__(self):
        self.t: dict[str, float] = {}
        self.n: dict[str, int] = {}
        self.ops: dict[str, list] = {}  # ATen op -> [seconds, calls], over the timed rounds
        self.reset()

    def reset(self) -> None:
        for k in ("launch", "stage", "view", "aten", "program"):
            self.t[k], self.n[k] = 0.0, 0


METER = Meter()


def _timed(orig: Callable, key: str) -> Callable:
    clock = time.perf_counter
    t, n = METER.t, METER.n

    def call(*args, **kwargs):
        t0 = clock()
        try:
            return orig(*args, **kwargs)
        finally:
            t[key] += clock() - t0
            n[key] += 1

    return call


@contextlib.contextmanager
def metered_calls() -> Iterator[None]:
    """While active, every ``KernelLauncher.__call__`` and ``ViewOf.__call__`` adds to METER, and so
    does ``stage_call`` (part of the launcher's time: fitting inputs, allocating or reusing outputs)."""
    from agnostic_rt.backends import triton_launch
    from agnostic_rt.view_fold import ViewOf

    saved = [(triton_launch.KernelLauncher, "__call__"), (ViewOf, "__call__"), (triton_launch, "stage_call")]
    saved = [(owner, attr, getattr(owner, attr)) for owner, attr in saved]
    triton_launch.KernelLauncher.__call__ = _timed(triton_launch.KernelLauncher.__call__, "launch")
    ViewOf.__call__ = _timed(ViewOf.__call__, "view")
    triton_launch.stage_call = _timed(triton_launch.stage_call, "stage")
    try:
        yield
    finally:
        for owner, attr, orig in saved:
            setattr(owner, attr, orig)


def _timed_op(op: Callable, name: str) -> Callable:
    clock = time.perf_counter
    t, n, ops = METER.t, METER.n, METER.ops

    def call(*args, **kwargs):
        t0 = clock()
        try:
            return op(*args, **kwargs)
        finally:
            dt = clock() - t0
            t["aten"] += dt
            n["aten"] += 1
            acc = ops.get(name)
            if acc is None:
                acc = ops[name] = [0.0, 0]
            acc[0] += dt
            acc[1] += 1

    call.__name__ = call.__qualname__ = "timed_" + name.replace(".", "_")
    return call


def _layouts(val):
    """The (shape, stride, dtype) of each tensor in a node's fake value (None where it holds None);
    None when it holds anything else (symbolic sizes, scalars)."""
    if val is None:
        return ("none",)
    if isinstance(val, torch.Tensor):
        layout = (tuple(val.shape), tuple(val.stride()), val.dtype)
        return layout if all(type(v) is int for v in (*layout[0], *layout[1])) else None
    if isinstance(val, (tuple, list)):
        parts = [_layouts(v) for v in val]
        return None if any(p is None for p in parts) else parts
    return None


def _shape_only(name: str, layouts) -> Callable:
    """A library call's stand-in (``--library stub``): its outputs allocated in the layout the graph
    recorded, nothing computed."""
    empty = torch.empty_strided

    def make(spec):
        if isinstance(spec, list):
            return tuple(make(s) for s in spec)
        if spec == ("none",):
            return None
        return empty(spec[0], spec[1], dtype=spec[2])

    def call(*args, **kwargs):
        return make(layouts)

    call.__name__ = call.__qualname__ = "stub_" + name.replace(".", "_")
    return call


@contextlib.contextmanager
def rewritten_programs(meter: bool, stub_library: bool) -> Iterator[None]:
    """While active, programs the pipeline returns are rewritten before they are boxed: with
    ``stub_library`` each library call (``passes.partition.LIBRARY_OPS``: matmul, convolution,
    attention, layer norm) allocates its outputs and computes nothing; with ``meter`` each ATen
    OpOverload call is wrapped in an accumulator (the node's target replaced, the program
    recompiled) and the whole program call is timed ("program")."""
    from torch._functorch.aot_autograd import make_boxed_func

    from agnostic_rt import pipeline
    from agnostic_rt.passes.partition import LIBRARY_OPS

    orig = pipeline.boxed

    def boxed(program, cudagraphs: bool = False):
        for node in program.graph.nodes:
            if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
                continue
            name, fn = str(node.target), node.target
            if stub_library and fn.overloadpacket in LIBRARY_OPS:
                layouts = _layouts(node.meta.get("val"))
                if layouts is not None:
                    fn = _shape_only(name, layouts)
            if meter:
                fn = _timed_op(fn, name)
            node.target = fn
        program.recompile()
        if not meter:
            return orig(program, cudagraphs)
        forward, clock, t, n = program.forward, time.perf_counter, METER.t, METER.n

        def run(*args):
            t0 = clock()
            try:
                return forward(*args)
            finally:
                t["program"] += clock() - t0
                n["program"] += 1

        return make_boxed_func(run)

    pipeline.boxed = boxed
    try:
        yield
    finally:
        pipeline.boxed = orig


# ---------------------------------------------------------------------------------------------------
# Measurement.

class Step:
    """One backend's step on ``case``: ``case.step_fn``'s (inference under no_grad in eval mode; training
    = forward + loss + backward), built here to reach the model: ``zero()``, called outside the timed
    region, sets its gradients to None as ``optimizer.zero_grad()`` does in a training loop, since
    accumulating into existing ``.grad`` tensors would be an ``add_`` per parameter, real compute on
    this CPU (milliseconds on GPT-2) where a GPU pays only the launches."""

    def __init__(self, case: _Case, backend: str, mode: str, options: dict | None = None):
        self.run = case.step_fn(backend, mode, dict(options or OPTIONS))
        self.model = self.run.model
        self.params = list(self.model.parameters()) if mode == "training" else []

    def zero(self) -> None:
        for p in self.params:
            p.grad = None

    def __call__(self):
        self.zero()
        return self.run()


class LossStep:
    """The training step's eager loss alone (forward + backward from logits that need a gradient):
    its share of every backend's training step, ``outside`` included."""

    def __init__(self, case: _Case, logits: torch.Tensor):
        leaf = logits.detach().requires_grad_()
        entry, target = case.entry, case.target

        def run():
            loss = entry.loss(leaf, target)
            loss.backward()
            return loss

        self.run, self.leaf = run, leaf

    def zero(self) -> None:
        self.leaf.grad = None

    def __call__(self):
        self.zero()
        return self.run()


def measure(model: str, mode: str, steps: int, batch: int, threads: int = 1, library: str = "run") -> dict:
    """One model and mode: every backend's median step (interleaved rounds) and the agnostic breakdown."""
    case = _Case(model, "cpu", batch, dict(OPTIONS))
    # _Case gives ATen every core; one thread by default: a GPU program's host path is one thread,
    # and OpenMP's barriers between two threads on a busy 2-core machine cost more than small ops.
    torch.set_num_threads(threads)
    torch._dynamo.reset()  # this model's compiles stay under Dynamo's recompile limit
    fns = {b: Step(case, b, mode) for b in BASELINES}
    before = _Counts.launchers
    stub = library == "stub"
    with stubbed_launches():
        fns["agnostic"] = Step(case, "agnostic", mode)
        with rewritten_programs(meter=False, stub_library=stub) if stub else contextlib.nullcontext():
            for _ in range(WARMUP):  # the compile happens here, stubbed and unmetered
                fns["agnostic"]()
        # A second compile, not the first's cached code: Dynamo reuses a compile for an equal
        # torch.compile(backend, options), so the options differ in "autotune", which no launcher
        # reads in interpret mode (KernelLauncher: autotune and not interpret).
        metered = Step(case, "agnostic", mode, {**OPTIONS, "autotune": False})
        with rewritten_programs(meter=True, stub_library=stub):
            metered()  # compiles with the ATen calls wrapped
    launchers = _Counts.launchers - before
    if launchers == 0:
        raise RuntimeError(f"{model}: no Triton launcher was made; the stubbing reached nothing")
    for name in BASELINES:
        for _ in range(WARMUP):
            fns[name]()
    with metered_calls():
        for _ in range(WARMUP - 1):
            METER.reset()
            metered()
    if METER.n["program"] == 0:
        raise RuntimeError(f"{model}: the instrumented compile's programs never ran (a cached compile reused?)")

    names = [*BASELINES, "agnostic", "metered"]
    if mode == "training":
        with torch.no_grad():
            fns["loss"] = LossStep(case, fns["eager"].model(*case.inputs))
        names.append("loss")
    times: dict[str, list[float]] = {b: [] for b in names}
    per_step: list[dict] = []
    jit0, direct0 = _Counts.jit_launches, _Counts.direct_launches
    METER.ops.clear()
    for r in range(steps):
        for name in names[r % len(names):] + names[:r % len(names)]:
            step = metered if name == "metered" else fns[name]
            step.zero()
            if name == "metered":
                METER.reset()
                with metered_calls():
                    t0 = time.perf_counter()
                    step.run()
                    times[name].append(time.perf_counter() - t0)
                per_step.append({**{f"{k}_s": v for k, v in METER.t.items()},
                                 **{f"{k}_n": v for k, v in METER.n.items()}})
            else:
                t0 = time.perf_counter()
                step.run()
                times[name].append(time.perf_counter() - t0)

    def med(key: str) -> float:
        return statistics.median(s[key] for s in per_step)

    ms = {b: statistics.median(times[b]) * 1e3 for b in names}
    launch_ms, view_ms, aten_ms = med("launch_s") * 1e3, med("view_s") * 1e3, med("aten_s") * 1e3
    launches = med("launch_n")
    aten_ops = sorted(((op, t * 1e3 / steps, n / steps) for op, (t, n) in METER.ops.items()), key=lambda x: -x[1])
    row = {
        "model": model, "mode": mode, "batch": batch, "steps": steps, "threads": threads, "library": library,
        "eager_ms": ms["eager"], "dynamo_ms": ms["dynamo"], "aot_eager_ms": ms["aot_eager"],
        "agnostic_ms": ms["agnostic"], "metered_ms": ms["metered"],
        "launch_ms": launch_ms, "launches": launches, "us_per_launch": launch_ms * 1e3 / launches if launches else None,
        "stage_us_per_launch": med("stage_s") * 1e6 / launches if launches else None,
        "view_ms": view_ms, "views": med("view_n"), "aten_ms": aten_ms, "aten_calls": med("aten_n"),
        "program_ms": med("program_s") * 1e3, "program_calls": med("program_n"),
        "rest_ms": ms["agnostic"] - launch_ms - view_ms - aten_ms,
        "outside_ms": ms["metered"] - med("program_s") * 1e3, "loss_ms": ms.get("loss"),
        # Per ATen op of the programs: mean ms and calls per step, most expensive first.
        "aten_by_op": [{"op": op, "ms": round(t, 4), "calls": n} for op, t, n in aten_ops],
        "launchers": launchers,
        # Launches through the stub's runner / JIT during the timed rounds (both compiles' launchers):
        # every launch after the first should be direct, as on a GPU.
        "direct_launches": _Counts.direct_launches - direct0, "jit_launches": _Counts.jit_launches - jit0,
    }
    torch._dynamo.reset()
    return row


def _f(v, fmt: str = "{:.3g}") -> str:
    return "—" if v is None else fmt.format(v)


HEAD = ("| model | mode | eager ms | dynamo ms | aot_eager ms | agnostic ms | launcher µs/launch | of which stage "
        "µs | launches/step | launcher ms | view calls/step | view ms | ATen calls/step | ATen ms | rest ms | of "
        "which outside program ms | of which loss ms |")


def table(rows: list[dict]) -> str:
    lines = [HEAD, "|" + "---|" * HEAD.count(" |")]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['mode']} | error: {r['error'][:150]} |" + " |" * (HEAD.count("|") - 4))
            continue
        lines.append(
            f"| {r['model']} | {r['mode']} | {_f(r['eager_ms'])} | {_f(r['dynamo_ms'])} | {_f(r['aot_eager_ms'])} | "
            f"{_f(r['agnostic_ms'])} | {_f(r['us_per_launch'], '{:.1f}')} | {_f(r['stage_us_per_launch'], '{:.1f}')} | "
            f"{r['launches']:g} | {_f(r['launch_ms'])} | {r['views']:g} | {_f(r['view_ms'])} | {r['aten_calls']:g} | "
            f"{_f(r['aten_ms'])} | {_f(r['rest_ms'])} | {_f(r['outside_ms'])} | {_f(r['loss_ms'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from agnostic_rt.conformance.zoo import ZOO

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["mlp", "gpt2", "bert"], choices=list(ZOO))
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch", type=int, default=2, help="small, so the CPU compute of ATen calls stays small")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads for the ATen calls")
    p.add_argument("--library", choices=("run", "stub"), default="run",
                   help="run: the programs' library calls (mm, SDPA, ...) compute on the CPU; stub: they only "
                        "allocate their outputs (the agnostic columns only; the baselines compute everything)")
    p.add_argument("--json", default=None, help="write the rows (and the machine note) here")
    args = p.parse_args(argv)

    threads, denormal = torch.get_num_threads(), torch.set_flush_denormal(True)
    rows = []
    try:
        for model in args.models:
            for mode in args.modes:
                try:
                    row = measure(model, mode, args.steps, args.batch, args.threads, args.library)
                except Exception as exc:  # one model failing must not hide the others' figures
                    torch._dynamo.reset()
                    row = {"model": model, "mode": mode, "error": f"{type(exc).__name__}: {exc}"}
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    finally:
        torch.set_num_threads(threads)
        if denormal:
            torch.set_flush_denormal(False)
    machine = f"{machine_description('cpu')}; {NOTE}; {LIBRARY_NOTE[args.library]}"
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"machine": machine, "options": OPTIONS, "argv": argv or sys.argv[1:],
                                               "rows": rows}, indent=1))
    print(f"Machine: {machine}. Median ms per step over {args.steps} interleaved rounds after {WARMUP} warm-up "
          f"steps, batch {args.batch}, {args.threads} CPU thread(s); breakdown from a second, instrumented "
          f"agnostic compile (rest = agnostic ms - launcher - view - ATen).\n")
    print(table(rows))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
