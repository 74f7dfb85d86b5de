"""The Triton backend: a fused group -> KernelIR -> Triton source -> a launcher (NVIDIA and AMD).

    backend = TritonBackend(get_target("h100"), Options())
    launcher = backend.compile(group)      # None: run the group's nodes through ATen
    outputs = launcher(*inputs)            # a tuple, one tensor per group output

In interpret mode (``options.interpret``) the same source is loaded under the Triton interpreter and
runs on CPU tensors.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import replace

import torch
import torch.fx as fx

from agnostic_rt.config import Options
from agnostic_rt.targets import Target

from .lowering import Unfusable, Unsupported, lower_group
from .registry import cache_dir, register
from .triton_emit import EmitError, TritonKernelSource, emit_triton
from .triton_launch import KernelLauncher

log = logging.getLogger("agnostic_rt.triton")


def generate(nodes, inputs, outputs, numerics: str = "strict") -> TritonKernelSource:
    """Lower and emit a group; the kernel is named by a hash of its source (equal groups share it)."""
    ir = lower_group(nodes, inputs, outputs, name="kernel")
    draft = emit_triton(ir, numerics)
    ir.name = "agn_" + hashlib.sha256(draft.source.encode()).hexdigest()[:12]
    return replace(emit_triton(ir, numerics), ir=ir)


def group_module(nodes, inputs, outputs) -> fx.GraphModule:
    """The group's nodes as a standalone ATen GraphModule: ``(*inputs) -> tuple(outputs)``."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for i, n in enumerate(inputs):
        env[n] = graph.placeholder(f"in{i}")
    for n in nodes:
        env[n] = graph.node_copy(n, lambda a: env[a])
    graph.output(tuple(env[o] for o in outputs))
    return fx.GraphModule(torch.nn.Module(), graph)


class TritonBackend:
    """Generates one Triton kernel per fused group, for both vendors."""

    name = "triton"

    def __init__(self, target: Target, options: Options):
        self.target = target
        self.options = options
        self.interpret = options.interpret or target.torch_device == "cpu"
        if not self.interpret:
            # Compiled binaries go to our cache (keyed by Triton on source, arch and versions).
            os.environ.setdefault("TRITON_CACHE_DIR", str(cache_dir() / "triton"))

    def compile(self, group) -> Callable | None:
        ops = [str(n.target) for n in group.nodes]
        try:
            kernel = generate(group.nodes, group.inputs, group.outputs, self.options.numerics)
        except (Unsupported, Unfusable, EmitError) as e:
            log.debug("not generated (%s): %s", ", ".join(ops), e)
            return None
        except Exception as e:  # a bug in lowering/emission must not break a model that eager runs
            log.warning("kernel generation failed for %s; running them through ATen: %r", ", ".join(ops), e)
            return None
        try:
            gk = register(kernel, self.options.debug_dir)
            in_strides = [tuple(int(s) for s in n.meta["val"].stride()) for n in group.inputs]
            out_specs = [(tuple(int(s) for s in o.meta["val"].shape), tuple(int(s) for s in o.meta["val"].stride()),
                          o.meta["val"].dtype) for o in group.outputs]
            return KernelLauncher(gk, [s.hint for s in kernel.ir.sizes], in_strides, out_specs,
                                  interpret=self.interpret, autotune=self.options.autotune,
                                  fallback=group_module(group.nodes, group.inputs, group.outputs), ops=ops)
        except Exception as e:
            log.warning("could not load kernel for %s; running them through ATen: %r", ", ".join(ops), e)
            return None


__all__ = ["TritonBackend", "generate", "group_module"]
