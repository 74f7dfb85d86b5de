"""``libdevice`` for kernels run by the Triton interpreter (TRITON_INTERPRET=1).

The interpreter implements ``tl.math`` with NumPy but leaves ``triton.language.extra.libdevice``
as bodiless stubs. A module loaded for the interpreter gets this object bound to the name
``libdevice`` instead, so the *same generated source* runs compiled and interpreted. Each function
evaluates in NumPy at the argument's precision (float64 for float64, float32 otherwise), which is
what libdevice's 1-2 ulp functions approximate.
"""

from __future__ import annotations

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
