"""The ``torch.compile(model, backend="agnostic")`` entry: Dynamo graph -> aot_autograd -> pipeline.

Registered through the ``torch_dynamo_backends`` entry point, so the string works after
``pip install`` with no import of ours.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.fx as fx

from . import passes
from .config import Options, configure_logging
from .decomp import decompositions_for
from .pipeline import compile_graph
from .targets import Target, get_target, host_cpu_target

log = logging.getLogger("agnostic_rt.backend")

_MODES = {"default": {}, "reduce-overhead": {"cudagraphs": True}, "max-autotune": {"autotune": True},
          "max-autotune-no-cudagraphs": {"autotune": True}}


def resolve_target(options: Options, example_inputs: Sequence[Any]) -> Target:
    """The Target a graph compiles for.

    "auto" follows the device of the graph's tensors (a CPU model on a GPU machine compiles for
    the CPU). In interpret mode the kernels are generated for a GPU part but run on CPU tensors.
    """
    if options.interpret:
        spec = options.target if options.target not in ("auto", "cuda") else "h100"
        return get_target(spec).with_device("cpu")
    if options.target == "auto":
        devices = {t.device for t in example_inputs if isinstance(t, torch.Tensor)}
        cuda = sorted((d for d in devices if d.type == "cuda"), key=lambda d: d.index or 0)
        if cuda:
            from .targets import current_target

            return current_target(cuda[0])
        return host_cpu_target()
    return get_target(options.target)


def make_aot(target: Target, compiler: Callable) -> Callable:
    """aot_autograd configured as the pipeline uses it for ``target``; ``compiler(gm, example_inputs,
    kind=...)`` receives each forward, backward and inference graph (bench/egraph.py reuses this)."""
    from torch._dynamo.backends.common import aot_autograd
    from torch._functorch.partitioners import default_partition, min_cut_rematerialization_partition

    return aot_autograd(
        fw_compiler=functools.partial(compiler, kind="forward"),
        bw_compiler=functools.partial(compiler, kind="backward"),
        inference_compiler=functools.partial(compiler, kind="inference"),
        decompositions=decompositions_for(target),
        # Recomputing cheap pointwise ops in the backward pays only where they fuse into kernels.
        partition_fn=min_cut_rematerialization_partition if target.generates_kernels else default_partition,
        keep_inference_input_mutations=True,
    )


def agnostic_backend(gm: fx.GraphModule, example_inputs: Sequence[Any], options: dict | None = None,
                     mode: str | None = None) -> Callable:
    """Dynamo backend. Use as ``torch.compile(model, backend="agnostic", options={...})``.

    Options: target ("auto", "cpu", "cuda", "rocm", "cuda:N", or a part name such as "h100"),
    numerics ("strict", "fast"), passes (bool), debug_dir (path), interpret (bool).
    """
    configure_logging()
    opts = Options.from_user(options)
    if mode is not None:
        if mode not in _MODES:
            raise ValueError(f"unknown mode {mode!r} for backend='agnostic'; expected one of: {', '.join(_MODES)}")
        opts = opts.replace(**_MODES[mode])
    target = resolve_target(opts, example_inputs)
    log.info("compiling a Dynamo graph of %d nodes for %s (%s)", len(gm.graph.nodes), target.name, target.arch)

    if opts.passes:
        # Rewrites that change what autograd differentiates (attention -> SDPA) run here, before
        # aot_autograd, so the backward is derived from the rewritten forward.
        gm = passes.rewrite_before_autograd(gm, example_inputs, target, numerics=opts.numerics)

    gains: dict[str, tuple[float, int]] = {}
    aot = make_aot(target, functools.partial(compile_graph, target=target, options=opts, gains=gains))
    fallback = opts.eager_fallback and not target.generates_kernels
    with _backward_compiled_now() if fallback else contextlib.nullcontext():
        compiled = aot(gm, example_inputs)
    if fallback and not _pays(gains, target):
        # The program would be aot_autograd's ATen graph run op by op behind its runtime wrappers;
        # the Dynamo graph (with any rewrite made before autograd) under eager autograd is the same
        # computation with less Python per call (a third of the zoo MLP's CPU training step).
        log.info("%s: the %s program(s) gain %s; running the Dynamo graph under eager autograd", target.name,
                 "/".join(sorted(gains)), ", ".join(f"{k} {v * 1e6:.1f} us" for k, (v, _) in sorted(gains.items())))
        return gm.forward
    return compiled


def _backward_compiled_now() -> contextlib.AbstractContextManager:
    """aot_autograd compiles a static backward lazily, on its first call; the fallback choice needs
    it now (torch versions without the switch keep the lazy backward and so the aot program)."""
    from torch._functorch import config

    if hasattr(config, "force_non_lazy_backward_lowering"):
        return config.patch(force_non_lazy_backward_lowering=True)
    return contextlib.nullcontext()


def _pays(gains: dict[str, tuple[float, int]], target: Target) -> bool:
    """Whether the aot programs' estimated gain beats what their runtime costs over the Dynamo graph:
    at least one Python-dispatched ATen call per node, priced at the target's per-call overhead.

    Decided only once the whole step is known: a backward still to be compiled lazily keeps the
    aot program."""
    if set(gains) not in ({"inference"}, {"forward", "backward"}):
        return True
    return sum(gain - nodes * target.launch_overhead_s for gain, nodes in gains.values()) > 0
