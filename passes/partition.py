"""Partition an ATen graph into groups: generated kernels, vendor-library calls, ATen fallbacks."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
import torch.fx as fx

from agnostic_rt.targets import Target

log = logging.getLogger("agnostic_rt.partition")
aten = torch.ops.aten

KERNEL = "kernel"  # a fused group a backend generates code for
LIBRARY = "library"  # matmul / conv / attention: the vendor library through ATen
ATEN = "aten"  # run node by node through ATen (the CPU target, or a fallback)

# Packets whose work belongs to the vendor library (cuBLAS/hipBLASLt, cuDNN/MIOpen, flash attention).
LIBRARY_OPS = frozenset({
    aten.mm, aten.addmm, aten.bmm, aten.baddbmm, aten.matmul, aten.linear, aten.convolution,
    aten.convolution_backward, aten.scaled_dot_product_attention,
    aten._scaled_dot_product_flash_attention_for_cpu, aten._scaled_dot_product_flash_attention_for_cpu_backward,
    aten._scaled_dot_product_efficient_attention, aten._scaled_dot_product_efficient_attention_backward,
    aten._scaled_dot_product_flash_attention, aten._scaled_dot_product_flash_attention_backward,
    aten._scaled_dot_product_cudnn_attention, aten._scaled_dot_product_cudnn_attention_backward,
    aten.native_layer_norm, aten.native_layer_norm_backward, aten.embedding_dense_backward,
})


@dataclass
class Group:
    """A set of nodes that runs as one unit. ``nodes`` are in graph order."""

    kind: str
    nodes: list[fx.Node]
    inputs: list[fx.Node] = field(default_factory=list)  # values defined outside, read inside
    outputs: list[fx.Node] = field(default_factory=list)  # values defined inside, read outside

    @property
    def ops(self) -> list[str]:
        return [str(n.target) for n in self.nodes]


def packet_of(node: fx.Node):
    target = node.target
    return getattr(target, "overloadpacket", target)


def partition(gm: fx.GraphModule, target: Target) -> list[Group]:
    """Split ``gm`` into groups in graph order.

    On a target that runs everything through ATen, every node is its own ATen group: the program
    inlines them, so there is nothing to gain from grouping.
    """
    groups: list[Group] = []
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        kind = LIBRARY if packet_of(node) in LIBRARY_OPS else ATEN
        groups.append(Group(kind, [node], inputs=list(node.all_input_nodes), outputs=[node]))
    return groups
