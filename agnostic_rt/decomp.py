"""Decomposition tables per target.

A target whose groups are *generated* gets core ATen decompositions: its generators fuse the pieces
back together. A target that runs groups through ATen (the CPU) keeps ATen's fused composite kernels
(layer_norm, softmax, gelu, SDPA and their backwards): decomposing without fusing is how compiled
code ends up slower than eager.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from .targets import Target

aten = torch.ops.aten

# Ops a generated target still sends to the vendor library (through ATen), so their
# decompositions must not be applied.
_LIBRARY_OPS = (
    aten.mm, aten.addmm, aten.bmm, aten.baddbmm, aten.convolution, aten.convolution_backward,
    aten._scaled_dot_product_flash_attention_for_cpu, aten._scaled_dot_product_efficient_attention,
    aten._scaled_dot_product_flash_attention, aten._scaled_dot_product_cudnn_attention,
    aten.native_dropout, aten.bernoulli, aten.rand_like, aten.randn_like,
)

# Composites that core ATen leaves whole but a kernel generator fuses better from their pieces.
_FUSED_COMPOSITES = (
    aten._softmax, aten._log_softmax, aten._softmax_backward_data, aten._log_softmax_backward_data,
    aten.native_layer_norm, aten.native_layer_norm_backward, aten._native_batch_norm_legit_functional,
    aten._native_batch_norm_legit_no_training, aten.native_batch_norm_backward,
    # Eval-mode batch norm: the no_training decomposition calls the in-place _native_batch_norm_legit,
    # which must decompose too or aot_autograd meets a non-functional graph (a crash, seen on the CNN).
    aten._native_batch_norm_legit, aten._batch_norm_no_update, aten.native_batch_norm,
)


@functools.cache
def _generated_table() -> dict[torch._ops.OpOverload, Callable]:
    from torch._decomp import core_aten_decompositions, get_decompositions

    table = dict(core_aten_decompositions())
    # Core ATen keeps these composites, but their pieces (var_mean, amax, exp, sum, ...) fuse into one
    # or two generated kernels, so the generated targets decompose them too.
    table.update(get_decompositions(_FUSED_COMPOSITES))
    for packet in _LIBRARY_OPS:
        for name in packet.overloads():
            table.pop(getattr(packet, name), None)
    return table


def decompositions_for(target: Target) -> dict:
    """The decomposition table aot_autograd traces with for ``target``."""
    if target.generates_kernels:
        return _generated_table()
    return {}
