"""The tensor analysis carried by every e-class: value metadata, constant value, purity.

A class's data holds a fake value (a FakeTensor with shape -- symbolic sizes included, as Dynamo
made them -- dtype, device and strides; a SymInt; a Python scalar; or a tuple of those for
multi-output ops). New e-nodes built by rules get theirs by running the op on the children's fake
values under the graph's FakeTensorMode: a rewrite whose right-hand side does not type-check there is
refused, and a union whose two sides disagree on shape or dtype is refused too. That check is the
engine's last line of defence against an unsound rule.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch.fx.experimental.symbolic_shapes import statically_known_true
from torch.utils._python_dispatch import _disable_current_modes

from .egraph import Barrier, EGraph, ENode
from .ops import denormalize, fill_template, is_impure_op

log = logging.getLogger("agnostic_rt.analysis")
aten = torch.ops.aten

# Ops whose value is known when their arguments are: they seed the constant analysis.
_CONST_CREATORS = {aten.scalar_tensor.default: 0, aten.full.default: 1}
_FOLDABLE_MAX_NUMEL = 1  # fold only scalar-sized values: folding never grows the graph's constants


_MISSING = object()


class Refused(Exception):
    """A rewrite the analysis rejects (does not type-check, or changes shape or dtype)."""


@dataclass
class EData:
    """Analysis of one e-class."""

    val: Any  # fake value: FakeTensor | SymInt | scalar | tuple | None
    const: float | int | bool | None = None  # the value of every element, when known
    pure: bool = True
    leaf: str | None = None  # "input" | "param" | "constant" for placeholders and attributes

    @property
    def is_tensor(self) -> bool:
        return isinstance(self.val, torch.Tensor)

    @property
    def shape(self) -> tuple | None:
        return tuple(self.val.shape) if isinstance(self.val, torch.Tensor) else None

    @property
    def dtype(self) -> torch.dtype | None:
        return self.val.dtype if isinstance(self.val, torch.Tensor) else None

    @property
    def device(self) -> torch.device | None:
        return self.val.device if isinstance(self.val, torch.Tensor) else None

    @property
    def ndim(self) -> int:
        return self.val.dim() if isinstance(self.val, torch.Tensor) else -1

    def static_shape(self) -> tuple[int, ...] | None:
        """The shape as plain ints, or None when any size is symbolic."""
        shape = self.shape
        if shape is None or not all(isinstance(s, int) for s in shape):
            return None
        return shape


def real_values():
    """A context in which tensor ops run on real values, whatever dispatch mode the caller is in.

    Constants (folding, attribute values) are real tensors; aot_autograd calls its compilers inside
    its FakeTensorMode, where a real tensor's ``.item()`` fails and ``torch.full`` makes a fake one.

    >>> with real_values():  # doctest: +SKIP
    ...     value.item()
    """
    return _disable_current_modes()


def fake_mode_of(vals: list[Any]):
    """The FakeTensorMode the values were made in (not the ambient one: inside a Dynamo backend the
    tracing context may hold a different mode than the graph's values)."""
    from torch._subclasses.fake_tensor import FakeTensor

    modes = {id(v.fake_mode): v.fake_mode for v in vals if isinstance(v, FakeTensor)}
    if len(modes) > 1:
        raise ValueError(f"values from {len(modes)} different fake modes")
    if modes:
        return next(iter(modes.values()))
    from torch._guards import detect_fake_mode

    return detect_fake_mode(vals)


def same_size(a: Any, b: Any) -> bool:
    """Sizes known equal without adding a guard (symbolic sizes compare through the ShapeEnv)."""
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    try:
        return statically_known_true(a == b)
    except Exception:
        return False


def same_shape(a: tuple | None, b: tuple | None) -> bool:
    return a is not None and b is not None and len(a) == len(b) and all(same_size(x, y) for x, y in zip(a, b))


def _same_meta(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.dtype == b.dtype and a.device == b.device and same_shape(tuple(a.shape), tuple(b.shape))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same_meta(x, y) for x, y in zip(a, b))
    return type(a) is type(b) or (isinstance(a, (int, torch.SymInt)) and isinstance(b, (int, torch.SymInt)))


class TensorAnalysis:
    """make/merge for :class:`EGraph`, evaluating new e-nodes on fake values.

    ``leaf_data`` gives the data of leaf e-nodes (placeholders, attributes, barriers), keyed by e-node;
    the FX bridge fills it from the graph's ``meta["val"]``.
    """

    def __init__(self, fake_mode):
        self.fake_mode = fake_mode
        self.leaf_data: dict[ENode, EData] = {}
        self.known_vals: dict[ENode, Any] = {}  # fake values FX already recorded (meta["val"])
        self.folds = 0

    def make(self, egraph: EGraph, node: ENode) -> EData:
        known = self.leaf_data.get(node)
        if known is not None:
            return known
        op = node.op.op if isinstance(node.op, Barrier) else node.op
        child_data = [egraph.data(c) for c in node.children]
        full = fill_template(node.template, [d.val for d in child_data])
        val = self.known_vals.pop(node, _MISSING)
        if val is _MISSING:
            args, kwargs = denormalize(op, tuple(full))
            try:
                with self.fake_mode:
                    val = op(*args, **kwargs)
            except Exception as e:  # the rewrite does not type-check: refuse it
                raise Refused(f"{op}: {type(e).__name__}: {e}") from None
        # Purity is the node's own: a pure op over a random value is still pure (and rewritable).
        data = EData(val=val, pure=not isinstance(node.op, Barrier) and not is_impure_op(op, tuple(full)))
        data.const = self._const_of(op, node, child_data)
        return data

    def _const_of(self, op: Any, node: ENode, child_data: list[EData]) -> Any:
        """Constant folding: the value of scalar-sized results of ops over known constants."""
        if op in _CONST_CREATORS:
            value = node.template[_CONST_CREATORS[op]]
            return value if isinstance(value, (int, float, bool)) else None
        if op in (aten.zeros.default, aten.zeros_like.default):
            return 0
        if op in (aten.ones.default, aten.ones_like.default):
            return 1
        if not child_data or not isinstance(op, torch._ops.OpOverload):
            return None
        if torch.Tag.pointwise not in op.tags or any(d.const is None for d in child_data):
            return None
        if any(not d.is_tensor or d.val.numel() > _FOLDABLE_MAX_NUMEL for d in child_data):
            return None
        with real_values():
            vals = [torch.full((), d.const, dtype=d.dtype) for d in child_data]
            args, kwargs = denormalize(op, tuple(fill_template(node.template, vals)))
            kwargs.pop("device", None)
            try:
                out = op(*args, **kwargs)
            except Exception:
                return None
            if isinstance(out, torch.Tensor) and out.numel() == 1:
                self.folds += 1
                return out.item()
        return None

    def merge(self, a: EData, b: EData) -> EData:
        if not _same_meta(a.val, b.val):
            raise Refused(f"union of different values: {_describe(a.val)} vs {_describe(b.val)}")
        if a.const is not None and b.const is not None and a.const != b.const:
            if not (a.const != a.const and b.const != b.const):  # NaN == NaN for our purposes
                raise Refused(f"union of different constants {a.const} and {b.const}")
        return EData(val=a.val, const=a.const if a.const is not None else b.const,
                     pure=a.pure and b.pure, leaf=a.leaf or b.leaf)


def _describe(val: Any) -> str:
    if isinstance(val, torch.Tensor):
        return f"{val.dtype}{list(val.shape)}"
    return type(val).__name__
