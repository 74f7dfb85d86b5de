"""Per-target cost model: roofline time of each e-node, with the partitioner's fusion in mind.

time(node) = max(flops / peak(dtype), bytes / bandwidth) + launch overhead, in seconds.

Fusion, as far as it is practical to foresee here: on targets that generate kernels (GPUs), a
pointwise op fuses into its neighbours -- it costs the bytes of its output and a quarter of a launch
(chains of about four ops share one kernel) -- and views cost nothing. On the CPU every op is its
own ATen call: launch overhead plus its full roofline. Symbolic sizes are costed at their hints.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from agnostic_rt.targets import Target

from .analysis import EData
from .egraph import Barrier, EGraph, ENode
from .ops import cost_class, packet

aten = torch.ops.aten

# The smallest cost of any node: keeps tree costs strictly increasing along edges, which is what
# makes the greedy extraction acyclic, and makes a smaller graph win a tie.
EPSILON = 1e-12
_DEFAULT_HINT = 64


def size_hint(s: Any) -> int:
    if isinstance(s, int):
        return s
    try:
        hint = s.node.hint
        if hint is not None:
            return int(hint)
        env = s.node.shape_env
        # A size with no hint is data-dependent (nonzero's row count); torch >= 2.13 deprecates
        # size_hint for it in favour of optimization_hint, which takes the fallback itself.
        if hasattr(env, "optimization_hint"):
            return int(env.optimization_hint(s.node.expr, fallback=_DEFAULT_HINT))
        return int(env.size_hint(s.node.expr))
    except Exception:
        return _DEFAULT_HINT


def numel(val: Any) -> int:
    if isinstance(val, torch.Tensor):
        return math.prod(size_hint(s) for s in val.shape)
    return 0


def nbytes(val: Any) -> int:
    if isinstance(val, torch.Tensor):
        return numel(val) * val.element_size()
    if isinstance(val, (tuple, list)):
        return sum(nbytes(v) for v in val)
    return 0


class CostModel:
    """Estimated seconds per e-node for one :class:`Target`.

    >>> CostModel(get_target("h100")).roofline(flops=2e12, nbytes=0, dtype=torch.float16)  # doctest: +SKIP
    """

    def __init__(self, target: Target):
        self.target = target
        self.fuses = target.generates_kernels

    def roofline(self, flops: float, nbytes: float, dtype: torch.dtype | None, launches: float = 1.0) -> float:
        peak = self.target.flops(dtype or torch.float32)
        return max(flops / peak, nbytes / self.target.mem_bandwidth) + launches * self.target.launch_overhead_s

    def node_cost(self, eg: EGraph, cid: int, node: ENode) -> float:
        """Seconds to compute ``node`` (whose class is ``cid``), its inputs already computed."""
        op = node.op.op if isinstance(node.op, Barrier) else node.op
        out = eg.data(cid).val
        ins = [eg.data(c) for c in dict.fromkeys(node.children)]
        return EPSILON + self.op_cost(op, out, ins, node.template)

    def op_cost(self, op: Any, out: Any, ins: list[EData], template: tuple) -> float:
        kind = cost_class(op)
        if kind == "view":
            return 0.0
        out_t = out[0] if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor) else out
        dtype = out_t.dtype if isinstance(out_t, torch.Tensor) else None
        in_bytes = sum(nbytes(d.val) for d in ins)
        out_bytes = nbytes(out)
        if kind == "pointwise":
            if self.fuses:
                return self.roofline(numel(out_t), out_bytes, dtype, launches=0.25)
            return self.roofline(numel(out_t), in_bytes + out_bytes, dtype)
        if kind == "matmul":
            return self.roofline(self._matmul_flops(op, out_t, ins), in_bytes + out_bytes, dtype)
        if kind == "attention":
            return self.roofline(self._attention_flops(ins), in_bytes + out_bytes, dtype)
        if kind == "conv":
            return self.roofline(self._conv_flops(out_t, ins, template), in_bytes + out_bytes, dtype)
        # reductions and everything else: one kernel reading its inputs and writing its outputs
        if packet(op) in (aten.full, aten.scalar_tensor, aten.zeros, aten.ones, aten.empty, aten.arange):
            return self.roofline(0, out_bytes, dtype, launches=0.25 if self.fuses else 1.0)
        return self.roofline(4 * max(numel(d.val) for d in ins) if ins else 0, in_bytes + out_bytes, dtype)

    @staticmethod
    def _matmul_flops(op: Any, out: Any, ins: list[EData]) -> float:
        tensors = [d.val for d in ins if isinstance(d.val, torch.Tensor) and d.val.dim() >= 2]
        if not isinstance(out, torch.Tensor) or not tensors:
            return 0.0
        k = size_hint(tensors[0].shape[-1])
        return 2.0 * numel(out) * k

    @staticmethod
    def _attention_flops(ins: list[EData]) -> float:
        q, k = ins[0].val, ins[1].val if len(ins) > 1 else ins[0].val
        if not isinstance(q, torch.Tensor) or not isinstance(k, torch.Tensor):
            return 0.0
        # q @ k^T and p @ v: 2 x (2 L S D) per batch-head
        return 4.0 * numel(q) * size_hint(k.shape[-2])

    @staticmethod
    def _conv_flops(out: Any, ins: list[EData], template: tuple) -> float:
        if len(ins) < 2 or not isinstance(ins[1].val, torch.Tensor) or not isinstance(out, torch.Tensor):
            return 0.0
        w = ins[1].val
        per_output = math.prod(size_hint(s) for s in w.shape[1:])
        return 2.0 * numel(out) * per_output
