"""The Triton backend: a fused group -> KernelIR -> Triton source -> a launcher (NVIDIA and AMD).

    backend = KernelBackend(get_target("h100"), Options())
    launcher = backend.compile(group)      # None: run the group's nodes through ATen
    outputs = launcher(*inputs)            # a tuple, one tensor per group output

In interpret mode (``options.interpret``) the same source is loaded under the Triton interpreter and
runs on CPU tensors. ``options.emitter`` may instead make the group a C kernel (CUDA C / HIP C, or
g++ on the CPU in interpret mode) or time both on a GPU: see backends/emitters.py.
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

from .emitters import CLauncher, CUnavailable, EmitterAutotuner, LaunchSpec, c_launcher, choice_key
from .lowering.lower import Unfusable, Unsupported, is_symbolic, lower_group
from .triton.emit import EmitError, TritonKernelSource, emit_triton
from .triton.launch import KernelLauncher
from .triton.registry import cache_dir, register

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


class KernelBackend:
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
        if any(is_symbolic(n) for n in (*group.nodes, *group.inputs)) or \
                any(not isinstance(n.meta.get("val"), torch.Tensor) for n in group.inputs):
            try:  # fusion was decided on the example sizes; each concrete shape is lowered when met
                generate(group.nodes, group.inputs, group.outputs, self.options.numerics)
            except (Unsupported, Unfusable, EmitError) as e:
                log.debug("not generated (%s): %s", ", ".join(ops), e)
                return None
            except Exception as e:
                log.warning("kernel generation failed for %s; running them through ATen: %r", ", ".join(ops), e)
                return None
            return DynamicLauncher(self, group_module(group.nodes, group.inputs, group.outputs), ops)
        try:
            kernel = generate(group.nodes, group.inputs, group.outputs, self.options.numerics)
        except (Unsupported, Unfusable, EmitError) as e:
            log.debug("not generated (%s): %s", ", ".join(ops), e)
            return None
        except Exception as e:  # a bug in lowering/emission must not break a model that eager runs
            log.warning("kernel generation failed for %s; running them through ATen: %r", ", ".join(ops), e)
            return None
        try:
            in_strides = [tuple(int(s) for s in n.meta["val"].stride()) for n in group.inputs]
            out_specs = [(tuple(int(s) for s in o.meta["val"].shape), tuple(int(s) for s in o.meta["val"].stride()),
                          o.meta["val"].dtype) for o in group.outputs]
            spec = LaunchSpec([s.hint for s in kernel.ir.sizes], in_strides, out_specs,
                              group_module(group.nodes, group.inputs, group.outputs), ops,
                              _output_device(group.outputs))
            return self.launcher(kernel, spec)
        except Exception as e:
            log.warning("could not load kernel for %s; running them through ATen: %r", ", ".join(ops), e)
            return None

    def launcher(self, kernel: TritonKernelSource, spec: LaunchSpec) -> Callable:
        """The launcher ``options.emitter`` asks for: Triton, C (Triton where C is unavailable), or both
        timed on first use."""
        emitter = self.options.emitter
        c = None
        if emitter == "c" or (emitter == "autotune" and not self.interpret):
            try:
                c = c_launcher(kernel.ir, self.target, spec, numerics=self.options.numerics,
                               interpret=self.interpret)
            except CUnavailable as e:
                log.debug("%s (%s) emitted as Triton: no C kernel: %s", kernel.name, ", ".join(spec.ops), e)
            if c is not None and self.options.debug_dir is not None:
                _dump_c(c, self.options.debug_dir)
            if c is not None and emitter == "c":
                return c
        gk = register(kernel, self.options.debug_dir)
        triton = KernelLauncher(gk, spec.sizes, spec.in_strides, spec.out_specs, interpret=self.interpret,
                                autotune=self.options.autotune, fallback=spec.fallback, ops=spec.ops,
                                device=spec.device)
        if c is None:
            return triton
        return EmitterAutotuner({"triton": triton, "c": c}, choice_key(kernel.source, _c_source(c)), spec.sizes)


class DynamicLauncher:
    """A group from a dynamic-shape graph: specialised per concrete input layout on first sight.

    The group's nodes are re-propagated with the call's real shapes (FakeTensorProp on the group's
    own small module), lowered and emitted; sizes being kernel arguments, every shape of one group
    yields the same source, so only the first shape compiles a binary. Later calls with a known
    layout cost one dict lookup. A shape the lowering refuses runs the group through ATen.
    """

    def __init__(self, backend: KernelBackend, module: fx.GraphModule, ops: list[str]):
        self.backend = backend
        self.module = module
        self.ops = ops
        self.by_layout: dict[tuple, Callable] = {}
        self.__name__ = "dynamic_kernel"

    def __call__(self, *args):
        key = tuple((tuple(a.shape), a.stride(), a.dtype) if isinstance(a, torch.Tensor) else a for a in args)
        run = self.by_layout.get(key)
        if run is None:
            run = self.by_layout[key] = self._specialize(args)
        return run(*args)

    def _specialize(self, args) -> Callable:
        from torch.fx.passes.fake_tensor_prop import FakeTensorProp

        gm = group_module(*_group_parts(self.module))
        current: list[tuple] = [args]  # the full argument list, for a fallback that needs the sizes too
        try:
            FakeTensorProp(gm).propagate(*args)
            nodes, inputs, outputs = _group_parts(gm)
            tensor_pos = [k for k, n in enumerate(inputs) if isinstance(n.meta.get("val"), torch.Tensor)]
            kernel = generate(nodes, inputs, outputs, self.backend.options.numerics)
            launcher = self.backend.launcher(kernel, LaunchSpec(
                [s.hint for s in kernel.ir.sizes], [tuple(inputs[k].meta["val"].stride()) for k in tensor_pos],
                [(tuple(o.meta["val"].shape), tuple(o.meta["val"].stride()), o.meta["val"].dtype) for o in outputs],
                lambda *_: self.module(*current[0]), self.ops, _output_device(outputs)))
        except Exception as e:
            log.debug("shape %s of (%s) runs through ATen: %r", [tuple(getattr(a, "shape", ())) for a in args],
                      ", ".join(self.ops), e)
            return self.module
        def run(*a):
            current[0] = a
            return launcher(*(a[k] for k in tensor_pos))
        return run


def _c_source(c: CLauncher) -> str:
    return getattr(getattr(c.kernel, "kernel", None), "source", c.ir.render())


def _dump_c(c: CLauncher, debug_dir: str) -> None:
    """The C kernel next to the Triton ones in ``<debug_dir>/kernels`` (``.cu``: CUDA, HIP or host C)."""
    from pathlib import Path

    d = Path(debug_dir) / "kernels"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{c.__name__}.cu").write_text(_c_source(c))


def _output_device(outputs) -> torch.device | None:
    """The device the graph says a group's outputs live on (fake values carry it)."""
    val = outputs[0].meta.get("val") if outputs else None
    return val.device if isinstance(val, torch.Tensor) else None


def _group_parts(gm: fx.GraphModule):
    """(nodes, inputs, outputs) of a module made by group_module."""
    inputs = [n for n in gm.graph.nodes if n.op == "placeholder"]
    nodes = [n for n in gm.graph.nodes if n.op == "call_function"]
    out = next(n for n in gm.graph.nodes if n.op == "output")
    return nodes, inputs, list(out.args[0])


__all__ = ["KernelBackend", "DynamicLauncher", "generate", "group_module"]
