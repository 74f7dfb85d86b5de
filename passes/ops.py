"""What the optimiser knows about ops: argument normalisation, purity, and the cost classes.

Arguments are normalised to the op's full schema (every positional and keyword-only argument, in
schema order, defaults filled in) so that ``sum(x, [1])`` and ``sum(x, [1], False)`` are one e-node
and a pattern written without the defaults matches both.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch

from .egraph import SLOT

aten = torch.ops.aten
OpOverload = torch._ops.OpOverload

# Namespaces whose ops talk to other processes or the outside world.
_EFFECT_NAMESPACES = frozenset({"_c10d_functional", "c10d_functional", "c10d", "_dtensor", "profiler", "prims_rng"})

# Pure Python callables that can appear in ATen graphs (symbolic-size arithmetic, tuple access).
PURE_CALLABLES: frozenset[Callable] = frozenset({
    operator.getitem, operator.add, operator.sub, operator.mul, operator.floordiv, operator.truediv,
    operator.mod, operator.neg, operator.pow, operator.eq, operator.ne, operator.lt, operator.le,
    operator.gt, operator.ge, operator.and_, operator.or_, torch.sym_int, torch.sym_float,
    torch.sym_max, torch.sym_min, torch.sym_not, torch.sym_sqrt,
})

VIEW_PACKETS = frozenset({
    aten.view, aten._unsafe_view, aten.reshape, aten.expand, aten.transpose, aten.permute, aten.t,
    aten.squeeze, aten.unsqueeze, aten.slice, aten.select, aten.alias, aten.detach, aten.split,
    aten.split_with_sizes, aten.unbind, aten.as_strided, aten.unflatten, aten.flatten, aten.narrow,
    aten.lift_fresh_copy, aten.sym_size, aten.sym_stride, aten.sym_numel, aten.sym_storage_offset,
})
MATMUL_PACKETS = frozenset({aten.mm, aten.addmm, aten.bmm, aten.baddbmm, aten.matmul, aten.linear})
CONV_PACKETS = frozenset({aten.convolution, aten.convolution_backward})
ATTENTION_PACKETS = frozenset({
    aten.scaled_dot_product_attention, aten._scaled_dot_product_flash_attention_for_cpu,
    aten._scaled_dot_product_flash_attention, aten._scaled_dot_product_efficient_attention,
    aten._scaled_dot_product_cudnn_attention,
})


def packet(op: Any) -> Any:
    return getattr(op, "overloadpacket", op)


def is_mutating(op: Any) -> bool:
    return isinstance(op, OpOverload) and op._schema.is_mutable


def is_impure_op(op: Any, args: tuple = ()) -> bool:
    """Random, mutating, collective, effectful or unknown ops: barriers for the optimiser.

    A seeded random op with probability 0 (``native_dropout(x, 0.0, ...)``) draws nothing and is pure.
    """
    if isinstance(op, OpOverload):
        if op._schema.is_mutable or op.namespace in _EFFECT_NAMESPACES:
            return True
        if torch.Tag.nondeterministic_seeded in op.tags:
            return not (packet(op) is aten.native_dropout and len(args) > 1 and args[1] == 0)
        if op in (aten._assert_async.msg, aten._assert_scalar.default, aten.sym_constrain_range.default,
                  aten.sym_constrain_range_for_size.default, aten._print.default):
            return True
        return False
    return op not in PURE_CALLABLES


def is_data_dependent(op: Any) -> bool:
    """Ops whose output value or shape comes from their input's data (``.item()``, ``nonzero``,
    ``masked_select``, ``unique``): each call binds fresh unbacked symbols (u0, u1, ...) that later
    nodes' sizes and runtime asserts name, so the optimiser keeps every call as it is -- a barrier,
    never merged with an identical one, with the value FX recorded (never evaluated again).
    """
    return isinstance(op, OpOverload) and (torch.Tag.data_dependent_output in op.tags
                                           or torch.Tag.dynamic_output_shape in op.tags)


def normalize(op: Any, args: tuple, kwargs: dict) -> tuple:
    """The full positional argument tuple of an ATen op (schema order, defaults filled in).

    Non-ATen callables keep ``args`` and append sorted kwargs items, so they still hash.
    """
    if not isinstance(op, OpOverload):
        return tuple(args) + ((("__kwargs__", tuple(sorted(kwargs.items()))),) if kwargs else ())
    out = []
    for i, arg in enumerate(op._schema.arguments):
        if i < len(args) and not arg.kwarg_only:
            out.append(args[i])
        elif arg.name in kwargs:
            out.append(kwargs[arg.name])
        elif arg.has_default_value():
            out.append(arg.default_value)
        elif arg.kwarg_only or arg.type.kind() == "OptionalType":
            out.append(None)
        else:
            raise TypeError(f"{op}: missing required argument {arg.name!r} in {args!r} {kwargs!r}")
    return tuple(out)


def denormalize(op: Any, full: tuple) -> tuple[tuple, dict]:
    """``(args, kwargs)`` to call ``op`` with, from a normalised tuple (keyword-only ones as kwargs)."""
    if not isinstance(op, OpOverload):
        if full and isinstance(full[-1], tuple) and len(full[-1]) == 2 and full[-1][0] == "__kwargs__":
            return tuple(full[:-1]), dict(full[-1][1])
        return tuple(full), {}
    args, kwargs = [], {}
    for arg, value in zip(op._schema.arguments, full):
        if arg.kwarg_only:
            if not (arg.has_default_value() and _same(value, arg.default_value)) and value is not None:
                kwargs[arg.name] = value
        else:
            args.append(value)
    return tuple(args), kwargs


def _same(a: Any, b: Any) -> bool:
    try:
        return type(a) is type(b) and a == b
    except Exception:
        return False


def to_template(value: Any, is_child: Callable[[Any], bool], children: list) -> Any:
    """Replace child values in a nested argument by SLOT (appending them to ``children``); lists
    become tuples so the template hashes."""
    if is_child(value):
        children.append(value)
        return SLOT
    if isinstance(value, (list, tuple)):
        return tuple(to_template(v, is_child, children) for v in value)
    if isinstance(value, dict):
        return ("__dict__", tuple(sorted((k, to_template(v, is_child, children)) for k, v in value.items())))
    return value


def fill_template(template: Any, values: list, pos: list[int] | None = None, as_list: bool = True) -> Any:
    """The inverse of :func:`to_template`: SLOTs replaced by ``values`` in order."""
    if pos is None:
        pos = [0]
    if template is SLOT:
        v = values[pos[0]]
        pos[0] += 1
        return v
    if isinstance(template, tuple):
        if len(template) == 2 and template[0] == "__dict__":
            return {k: fill_template(v, values, pos, as_list) for k, v in template[1]}
        items = [fill_template(v, values, pos, as_list) for v in template]
        return items if as_list else tuple(items)
    return template


def cost_class(op: Any) -> str:
    """"view" (no kernel), "pointwise", "matmul", "conv", "attention", "reduction" or "other"."""
    p = packet(op)
    if not isinstance(op, OpOverload) or p in VIEW_PACKETS:
        return "view"
    if p in MATMUL_PACKETS:
        return "matmul"
    if p in CONV_PACKETS:
        return "conv"
    if p in ATTENTION_PACKETS:
        return "attention"
    if torch.Tag.pointwise in op.tags or p in (aten.where, aten._to_copy, aten.clone):
        return "pointwise"
    if p in (aten.sum, aten.mean, aten.amax, aten.amin, aten.max, aten.min, aten.var, aten.var_mean,
             aten._softmax, aten._log_softmax, aten.native_layer_norm, aten.prod, aten.argmax):
        return "reduction"
    return "other"
