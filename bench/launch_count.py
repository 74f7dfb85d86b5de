"""What each compiled graph does per call, agnostic vs Inductor: kernel launches, library calls, other
ATen calls and views, counted from the code each backend generates, without a GPU.

Small zoo models on a GPU are launch-bound, so launches per step decide agnostic vs Inductor there.

agnostic: each model is compiled for the H100 (``options={"target": "h100", "interpret": True}``: the
H100 program, its kernels run by Triton's interpreter on CPU tensors), and every program the pipeline
boxes (``agnostic_rt.pipeline.boxed``, patched while counting) is read node by node: generated-kernel
launchers (of which "empty": zero-element groups with no output to initialise, which allocate their
outputs and launch nothing), library calls (``passes.partition.LIBRARY_OPS``: mm, addmm, SDPA, layer
norm, ...), ``ViewOf`` and ATen view calls, and every other ATen call (fallbacks).

Inductor: Inductor's Triton code generated for the same model on the CPU device
(``cpu_backend="triton"``, ``TRITON_INTERPRET=1``). Its fusion decisions are the scheduler's, as on
CUDA, but this has not been checked against a CUDA compile; SDPA shows as the CPU flash-attention op,
counted as a library call. Layout choices made for the CPU may add launches a CUDA compile might not
have: on gpt2 two copies per layer make SDPA's k and v contiguous for the CPU flash kernel, and on cnn
the convolutions' inputs and weights are copied to channels-last. The generated wrapper of each
graph is captured as it is written (``GraphLowering.save_output_code``) and the body of its ``call``
function is parsed: ``<kernel>.run(`` lines are launches, ``extern_kernels.<op>(`` library calls,
``torch.ops.<ns>.<op>(`` ATen calls (library calls when the op is in LIBRARY_OPS),
``reinterpret_tensor(`` / ``as_strided(`` views. The backward compiles with the forward
(``force_non_lazy_backward_lowering``); running the compiled code then fails under Triton's
interpreter without a CPU driver, which is expected: the code is written by then.

Each ATen call a program makes (agnostic's "ATen" column: e.g. BatchNorm's running-stat ``copy_``)
is also a launch on a GPU, as is each library call; views launch nothing. Inductor's view count
includes the ``reinterpret_tensor`` calls it uses to reuse a dead buffer's storage.

Per (model, mode) — inference under no_grad in eval mode; training = forward + loss + backward —
one step compiles every graph; the counts are per graph call, summed over the step's graphs.

    python bench/launch_count.py --models mlp cnn gpt2 bert --modes inference training --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import operator
import os
import re
import shlex
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from agnostic_rt.apps.bench_compare import MODES, _Case, machine_description, script_command, utc_stamp

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = {"target": "h100", "interpret": True}
MODELS = ("mlp", "cnn", "gpt2", "bert")
NOTE = ("counted from the generated code, nothing timed; agnostic: the H100 program (Triton interpreter); "
        "Inductor: its Triton codegen for the CPU device (cpu_backend=triton), not a CUDA compile")


# ---------------------------------------------------------------------------------------------------
# agnostic: the programs the pipeline boxes, read node by node.

def _launcher_types() -> tuple[type, ...]:
    """The classes a program calls to launch a generated kernel (those this checkout has)."""
    from agnostic_rt.backends import kernel_backend as triton_backend
    from agnostic_rt.backends.triton import launch as triton_launch

    types = [triton_launch.KernelLauncher, getattr(triton_backend, "DynamicLauncher", None)]
    with contextlib.suppress(ImportError):
        from agnostic_rt.backends import emitters

        types += [getattr(emitters, "CLauncher", None), getattr(emitters, "EmitterAutotuner", None)]
    return tuple(t for t in types if t is not None)


def _is_empty(launcher) -> bool:
    """A launcher that launches nothing on a GPU: zero elements and no output to initialise
    (KernelLauncher.__call__ then only allocates its outputs)."""
    if hasattr(launcher, "candidates"):  # EmitterAutotuner: its candidates share one group
        return all(_is_empty(c) for c in launcher.candidates.values())
    ir = getattr(getattr(launcher, "kernel", None), "ir", None) or getattr(launcher, "ir", None)
    return getattr(launcher, "xnumel", None) == 0 and ir is not None and not ir.has_init


def _is_view_op(target) -> bool:
    """An ATen op whose output aliases its input without writing it (view, permute, expand, ...)."""
    from agnostic_rt.backends.lowering.lower import VIEW_OPS

    if target.overloadpacket in VIEW_OPS:
        return True
    returns = target._schema.returns
    return bool(returns) and all(r.alias_info is not None and not r.alias_info.is_write for r in returns)


def count_program(program: torch.fx.GraphModule) -> dict:
    """One program's calls by kind; the named lists say which kernels and ops they are."""
    from agnostic_rt.passes.partitioner import LIBRARY_OPS
    from agnostic_rt.runtime.view_fold import is_folded_view

    launchers = _launcher_types()
    out: dict = {"launches": 0, "empty": 0, "library": 0, "aten": 0, "views": 0,
                 "kernels": [], "empty_kernels": [], "library_ops": [], "aten_ops": [], "other": []}
    for node in program.graph.nodes:
        t = getattr(node.target, "aten_op", node.target)  # program.fast_op's call names its op
        if node.op != "call_function" or t is operator.getitem:
            continue  # getitem picks a launcher's output from its tuple: no call on the device
        if isinstance(t, launchers) or hasattr(t, "accepts_reuse"):
            empty = _is_empty(t)
            out["empty" if empty else "launches"] += 1
            out["empty_kernels" if empty else "kernels"].append(
                {"name": getattr(t, "__name__", type(t).__name__), "ops": list(getattr(t, "ops", []))})
        elif is_folded_view(t):
            out["views"] += 1
        elif isinstance(t, torch._ops.OpOverload):
            if t.overloadpacket in LIBRARY_OPS:
                out["library"] += 1
                out["library_ops"].append(str(t))
            elif _is_view_op(t):
                out["views"] += 1
            else:
                out["aten"] += 1
                out["aten_ops"].append(str(t))
        else:  # Python glue (SymInt arithmetic, ...): host work, no device call
            out["other"].append(getattr(t, "__name__", str(t)))
    return out


@contextlib.contextmanager
def agnostic_programs() -> Iterator[list[torch.fx.GraphModule]]:
    """While active, every program the pipeline boxes is appended to the list yielded."""
    from agnostic_rt import pipeline

    programs: list[torch.fx.GraphModule] = []
    orig = pipeline.boxed

    def boxed(program, cudagraphs: bool = False):
        programs.append(program)
        return orig(program, cudagraphs)

    pipeline.boxed = boxed
    try:
        yield programs
    finally:
        pipeline.boxed = orig


def agnostic_counts(case: _Case, mode: str) -> list[dict]:
    torch._dynamo.reset()
    with agnostic_programs() as programs:
        case.step_fn("agnostic", mode, dict(OPTIONS))()  # training: the backward compiles at loss.backward()
    if not programs:
        raise RuntimeError("agnostic compiled no program (an eager fallback?)")
    return [count_program(p) for p in programs]


# ---------------------------------------------------------------------------------------------------
# Inductor: its generated wrapper modules, parsed.

_FUNC = re.compile(r"^(\s*)def (call|partition_\d+)\(")  # partition_N: graph partitions' bodies, if any
_RUN = re.compile(r"(\w+)\.run\(")
_EXTERN = re.compile(r"extern_kernels\.(\w+)\(")
_OPS = re.compile(r"torch\.ops\.(\w+)\.(\w+)(?:\.\w+)?\(")  # a call; assert_size_stride names ops in strings
_VIEW = re.compile(r"\b(?:reinterpret_tensor|as_strided)\(")


def _call_bodies(code: str) -> list[str]:
    """The code lines of the wrapper's ``call`` function (and graph partitions'), comments left out."""
    lines, body, indent = code.splitlines(), [], None
    for line in lines:
        m = _FUNC.match(line)
        if m:
            indent = len(m.group(1))
            continue
        if indent is None or not line.strip():
            continue
        if len(line) - len(line.lstrip()) <= indent:
            indent = None  # dedent: the function ended
            continue
        if not line.lstrip().startswith("#"):
            body.append(line)
    if not body:
        raise ValueError("no `def call(` body found in Inductor's output code "
                         "(has its wrapper format changed?)")
    return body


def count_wrapper(code: str) -> dict:
    """One Inductor wrapper's calls by kind, as count_program gives them for agnostic."""
    from agnostic_rt.passes.partitioner import LIBRARY_OPS

    out: dict = {"launches": 0, "library": 0, "aten": 0, "views": 0, "kernels": [], "library_ops": [],
                 "aten_ops": []}
    for line in _call_bodies(code):
        for name in _RUN.findall(line):
            out["launches"] += 1
            out["kernels"].append(name)
        for name in _EXTERN.findall(line):
            out["library"] += 1
            out["library_ops"].append(name)
        for ns, name in _OPS.findall(line):
            packet = getattr(getattr(torch.ops, ns), name, None)
            kind = "library" if packet in LIBRARY_OPS else "aten"
            out[kind] += 1
            out[f"{kind}_ops"].append(f"{ns}.{name}")
        out["views"] += len(_VIEW.findall(line))
    return out


@contextlib.contextmanager
def inductor_codes() -> Iterator[list[str]]:
    """While active, Inductor generates Triton code for the CPU, interpreted, and every wrapper module
    it writes is appended to the list yielded; everything patched is put back afterwards."""
    import torch._functorch.config as fc
    import torch._inductor.config as ic
    import torch.utils._triton as ut
    from torch._inductor.graph import GraphLowering

    # An older or newer torch without one of these gets a clear error (its row's), not an AttributeError.
    for owner, name in ((ut, "triton_hash_with_backend"), (GraphLowering, "save_output_code"),
                        (ic, "cpu_backend"), (fc, "force_non_lazy_backward_lowering")):
        if not hasattr(owner, name):
            raise RuntimeError(f"torch {torch.__version__}: {getattr(owner, '__name__', owner)} has no "
                               f"{name}; this recipe for Inductor's code without a GPU does not apply")
    # No cache (where the keys exist): a cache hit writes no code, and "no-gpu" entries should not stay.
    ic_cache = {k: False for k in ("fx_graph_cache", "fx_graph_remote_cache") if hasattr(ic, k)}
    fc_cache = {k: False for k in ("enable_autograd_cache", "enable_remote_autograd_cache") if hasattr(fc, k)}

    codes: list[str] = []
    old_env = os.environ.get("TRITON_INTERPRET")
    old_hash = ut.triton_hash_with_backend
    old_save = GraphLowering.__dict__["save_output_code"]
    os.environ["TRITON_INTERPRET"] = "1"
    ut.triton_hash_with_backend = lambda: "no-gpu"  # no active Triton driver without a GPU
    GraphLowering.save_output_code = staticmethod(codes.append)
    try:
        with ic.patch(cpu_backend="triton", **ic_cache), \
                fc.patch(force_non_lazy_backward_lowering=True, **fc_cache), \
                warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Could not find an active CPU backend")
            yield codes
    finally:
        GraphLowering.save_output_code = old_save
        ut.triton_hash_with_backend = old_hash
        if old_env is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = old_env


def inductor_counts(case: _Case, mode: str) -> list[dict]:
    torch._dynamo.reset()
    failed: Exception | None = None
    with inductor_codes() as codes:
        step = case.step_fn("inductor", mode)
        # Running Inductor's code fails under the interpreter (no CPU driver); every graph of the
        # step is written by then (the backward with the forward), unless a graph break hides one
        # behind the failure: the row's graph counts then differ.
        try:
            step()
        except Exception as exc:
            failed = exc
    torch._dynamo.reset()
    if not codes:
        raise RuntimeError(f"Inductor wrote no output code; its step raised {failed!r}")
    return [count_wrapper(c) for c in codes]


# ---------------------------------------------------------------------------------------------------
# Rows and table.

SIDES = {"agnostic": ("launches", "empty", "library", "aten", "views"),
         "inductor": ("launches", "library", "aten", "views")}


def measure(model: str, mode: str) -> dict:
    """One (model, mode): both sides' totals and per-graph lists. A side that fails leaves its error
    in ``error`` (``<side>: ...``) and the other side's counts stand."""
    case = _Case(model, "cpu", None, dict(OPTIONS))
    row: dict = {"model": model, "mode": mode}
    errors = []
    for side, count in (("agnostic", agnostic_counts), ("inductor", inductor_counts)):
        try:
            graphs = count(case, mode)
        except Exception as exc:
            torch._dynamo.reset()
            errors.append(f"{side}: {type(exc).__name__}: {exc}")
            continue
        row["graphs" if side == "agnostic" else "inductor_graphs"] = len(graphs)
        row.update({f"{side}_{key}": sum(g[key] for g in graphs) for key in SIDES[side]})
        row[f"{side}_per_graph"] = graphs
    if errors:
        row["error"] = "; ".join(errors)
    return row


HEAD = ("| model | mode | graphs | agnostic launches | agnostic empty | agnostic library | agnostic ATen | "
        "agnostic views | Inductor launches | Inductor library | Inductor ATen | Inductor views |")


def _cells(r: dict, side: str) -> list[str]:
    """A side's cells of row ``r``: its counts, or "error" where it failed."""
    if f"{side}_launches" not in r:
        return ["error", *["—"] * (len(SIDES[side]) - 1)]
    return [str(r[f"{side}_{key}"]) for key in SIDES[side]]


def table(rows: list[dict]) -> str:
    cols = HEAD.count(" |")
    lines = [HEAD, "|" + "---|" * cols]
    for r in rows:
        ag, ind = r.get("graphs", "—"), r.get("inductor_graphs", "—")
        graphs = str(ag) if ag == ind else f"{ag} / {ind}"
        lines.append(f"| {r['model']} | {r['mode']} | {graphs} | "
                     + " | ".join(_cells(r, "agnostic") + _cells(r, "inductor")) + " |")
    # Totals over the rows where both sides counted, so the two launch sums compare.
    both = [r for r in rows if "agnostic_launches" in r and "inductor_launches" in r]
    lines.append(f"| total | {len(both)} rows | {sum(r['graphs'] for r in both)} | "
                 f"{sum(r['agnostic_launches'] for r in both)} | "
                 f"{sum(r['agnostic_empty'] for r in both)} | | | | "
                 f"{sum(r['inductor_launches'] for r in both)} | | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from agnostic_rt.conformance.zoo import ZOO

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(ZOO))
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--json", default=None, help="write the rows, with per-graph lists, here")
    args = p.parse_args(argv)

    threads = torch.get_num_threads()
    rows = []
    try:
        for model in args.models:
            for mode in args.modes:
                try:
                    row = measure(model, mode)
                except Exception as exc:  # one model failing must not hide the others' figures
                    row = {"model": model, "mode": mode, "error": f"{type(exc).__name__}: {exc}"}
                torch._dynamo.reset()
                rows.append(row)
                brief = {k: v for k, v in row.items() if not k.endswith("_per_graph")}
                print(json.dumps(brief), file=sys.stderr, flush=True)
    finally:
        torch.set_num_threads(threads)  # _Case gives ATen every core
    machine = f"{machine_description('cpu')}; {NOTE}"
    # Called as main(argv) (tests), sys.argv is another program's.
    command = script_command(ROOT) if argv is None else f"python bench/launch_count.py {shlex.join(argv)}"
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"machine": machine, "command": command,
                                               "measured": utc_stamp(), "options": OPTIONS, "rows": rows},
                                              indent=1))
    print(f"Machine: {machine}. Calls per step, summed over each step's compiled graphs; agnostic launches "
          f"exclude the empty ones (zero elements: allocation only, no launch); graphs shows "
          f"'agnostic / Inductor' where the two differ.\n")
    for r in rows:
        if "error" in r:
            print(f"Error, {r['model']} {r['mode']}: {r['error']}")
    print(table(rows))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
