"""``libdevice`` for kernels run by the Triton interpreter (TRITON_INTERPRET=1).

The interpreter implements ``tl.math`` with NumPy but leaves ``triton.language.extra.libdevice``
as bodiless stubs. A module loaded for the interpreter gets this object bound to the name
``libdevice`` instead, so the *same generated source* runs compiled and interpreted. Each function
evaluates in NumPy at the argument's precision (float64 for float64, float32 otherwise), which is
what libdevice's 1-2 ulp functions approximate.
"""

from __future__ import annotations

import operator

import numpy as np


def _unary(fn):
    def call(x):
        import triton.language as tl
        from triton.runtime.interpreter import TensorHandle

        data = x.handle.data
        with np.errstate(all="ignore"):
            out = fn(data).astype(data.dtype)
        return tl.tensor(TensorHandle(out, x.handle.dtype.scalar), x.type)
    return call


def _binary(fn):
    def call(x, y):
        import triton.language as tl
        from triton.runtime.interpreter import TensorHandle

        a, b = np.broadcast_arrays(x.handle.data, y.handle.data)
        with np.errstate(all="ignore"):
            out = fn(a, b).astype(x.handle.data.dtype)
        ty = x.type if len(x.handle.data.shape) >= len(y.handle.data.shape) else y.type
        if ty.is_block() and tuple(ty.shape) != out.shape:
            ty = tl.block_type(x.handle.dtype.scalar, list(out.shape))
        return tl.tensor(TensorHandle(out, x.handle.dtype.scalar), ty)
    return call


class InterpreterLibdevice:
    """The subset of libdevice the Triton emitter calls."""

    exp = staticmethod(_unary(np.exp))
    exp2 = staticmethod(_unary(np.exp2))
    expm1 = staticmethod(_unary(np.expm1))
    log = staticmethod(_unary(np.log))
    log2 = staticmethod(_unary(np.log2))
    log1p = staticmethod(_unary(np.log1p))
    tanh = staticmethod(_unary(np.tanh))
    sin = staticmethod(_unary(np.sin))
    cos = staticmethod(_unary(np.cos))
    trunc = staticmethod(_unary(np.trunc))
    nearbyint = staticmethod(_unary(np.rint))
    pow = staticmethod(_binary(np.power))
    fmod = staticmethod(_binary(np.fmod))


libdevice = InterpreterLibdevice()


def _tensor(out: np.ndarray, like):
    import triton.language as tl
    from triton.runtime.interpreter import TensorHandle

    scalar = like.handle.dtype.scalar
    return tl.tensor(TensorHandle(out, scalar), tl.block_type(scalar, list(out.shape)))


def _reduce(fn):
    def call(v):
        data = v.handle.data
        with np.errstate(all="ignore"):
            return _tensor(fn(data, axis=1, keepdims=True).astype(data.dtype), v)
    return call


def _arg_reduce(largest: bool):
    """First index of the row's extreme value; NaN is the extreme, as in ATen."""
    def call(v, i):
        vals, idx = np.broadcast_arrays(v.handle.data, i.handle.data)
        nan = vals != vals
        with np.errstate(all="ignore"):
            best = (np.max if largest else np.min)(np.where(nan, -np.inf if largest else np.inf, vals), axis=1,
                                                   keepdims=True)
        row_nan = nan.any(axis=1, keepdims=True)
        hit = np.where(row_nan, nan, vals == best)
        big = np.iinfo(np.int64).max
        out = np.where(hit, idx, big).min(axis=1, keepdims=True).astype(idx.dtype)
        return _tensor(out, i)
    return call


def _to_bf16(v):
    """fp32 -> bf16 rounding to nearest even (the interpreter's own cast truncates)."""
    import triton.language as tl
    from triton.runtime.interpreter import TensorHandle

    bits = np.ascontiguousarray(v.handle.data, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = v.handle.data != v.handle.data
    rounded = np.where(nan, ((bits >> 16) | 0x40).astype(np.uint16), rounded)
    ty = tl.block_type(tl.bfloat16, list(rounded.shape)) if v.type.is_block() else tl.bfloat16
    return tl.tensor(TensorHandle(rounded, tl.bfloat16), ty)


def interp_range(*bounds):
    """``range`` for interpreted kernels. A looped reduction's bound (``rnumel = s1 * s0``) is an
    interpreter tensor; Triton 3.6's interpreter holds such scalars as 1-element 1-d arrays and takes
    their ``__index__`` with ``int(array)``, which NumPy >= 2.4 refuses for ndim > 0 (Triton 3.9
    squeezes first). Read each bound's one value here instead, on either Triton."""
    return range(*(int(np.asarray(b.handle.data).reshape(-1)[0]) if hasattr(b, "handle") else operator.index(b)
                   for b in bounds))


#: Replacements for the emitter's helpers (``_reduce_<kind>``, ``_to_bf16``) in interpreted modules.
HELPER_SHIMS = {
    "_to_bf16": _to_bf16,
    "_reduce_sum": _reduce(np.sum), "_reduce_prod": _reduce(np.prod), "_reduce_max": _reduce(np.max),
    "_reduce_min": _reduce(np.min), "_reduce_argmax": _arg_reduce(True), "_reduce_argmin": _arg_reduce(False),
}
