"""One C-family emitter for :class:`~backends.kernel_ir.KernelIR`; CUDA and HIP are dialects of it.

Every vendor difference lives in a :class:`CDialect` (warp size, shuffle intrinsic, kernel prefix,
launch bounds, fast-math intrinsics, half-precision conversions); :func:`render` is the same code for
all of them, as tinygrad's ``renderer/cstyle.py`` does for CUDA/HIP/Metal/OpenCL::

    kernel = render(ir, CUDA)                    # -> CKernel: .source, .name, .mode, .launch(sizes)
    kernel = render(ir, HIP, numerics="fast")

Kernel shapes (sizes are arguments, so one binary serves every batch size):

* pointwise: a grid-stride loop over ``xindex < xnumel``, one element per thread per step;
* reduction, ``mode="block"``: one block per output row (grid-stride over rows), threads stride the
  row, one accumulator per thread, then a warp-shuffle butterfly and a shared-memory step across
  warps; every thread ends with the row's value. A kernel with reductions that depend on earlier
  reductions (softmax: max, then sum of exp(x - max)) loops over the row once per *phase*
  (:meth:`KernelIR.phase_of`), re-reading its inputs, so rows of any length fit;
* reduction, ``mode="warp"``: one warp (wavefront on AMD) per row, shuffles only, for short rows.

Index width: a kernel indexes in 32 bits (``int`` sizes, numels and split variables, unsigned 32-bit
loop counters) when every index it computes fits at the sizes it is rendered for
(:func:`index_bits`: ``kernel_ir.index_fits_int32`` and every size argument an ``int``), else in 64
(``long long`` throughout). GPUs have no 64-bit integer divide: ``/`` and ``%`` on ``long long``
become ~70-instruction calls, and the index split of a transpose, a broadcast or a column reduction
made such kernels compute-bound. The size arguments are packed to match (``CKernel.index_bits``,
:func:`~backends.c_build.launch_args`). Argmax/argmin indices stay ``long long`` (their output is
int64), and gathered indices are int64 values, so an expression holding one is computed in 64 bits.

Half types are stored as 16-bit integers and converted with explicit round-to-nearest-even code or a
hardware instruction, not through cuda_fp16.h/hip_fp16.h: NVRTC from the pip wheel ships no headers,
and ROCm 5.2's hiprtc rejects hip_fp16.h/hip_bfloat16.h (they redefine its pre-included types).
Arithmetic on half data runs in float32 and is rounded once, at the store (the IR's contract).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import struct
from dataclasses import dataclass, field
from typing import Literal

from agnostic_rt.backends.lowering.kernel_ir import (
    FLOAT_DTYPES,
    INT32_MAX,
    REDUCTIONS,
    Bin,
    Const,
    IndexExpr,
    IndirectIndex,
    KernelIR,
    SizeArg,
    eval_size,
    index_fits_int32,
    index_ops,
    render_index,
)

log = logging.getLogger("agnostic_rt.backends.c.cstyle")

__all__ = ["CDialect", "CUDA", "HIP", "CKernel", "render", "render_module", "c_type", "choose_mode",
           "COMMON_PRELUDE", "FORCE_INDEX_BITS", "index_bits", "index_c"]

Numerics = Literal["strict", "fast"]
Mode = Literal["pointwise", "block", "warp"]

#: Index width for every kernel, or None to choose per kernel (:func:`index_bits`). Tests set 64 to
#: run the wide path at sizes a test can afford (as ``triton_emit.FORCE_INDEX_BITS``).
FORCE_INDEX_BITS: int | None = None

# --------------------------------------------------------------------------------------- the dialects


@dataclass(frozen=True)
class CDialect:
    """What differs between C-family GPU languages; the emitter reads nothing vendor-specific elsewhere.

    ``shfl_xor`` is a C expression template over ``{v}`` (the value) and ``{o}`` (the lane mask).
    ``prelude`` holds the dialect's half/bfloat16 conversions (``ag_h2f``/``ag_f2h``) and bit casts.
    ``fast_math`` maps float32 op names to intrinsics used only under ``numerics="fast"``.
    """

    name: str
    warp_size: int
    shfl_xor: str
    prelude: str
    kernel_prefix: str = 'extern "C" __global__'
    launch_bounds: str = "__launch_bounds__({})"
    barrier: str = "__syncthreads()"
    shared: str = "__shared__"
    fast_math: dict[str, str] = field(default_factory=dict)


# Bit casts and half conversions. CUDA converts half with the PTX instructions cuda_fp16.hpp itself
# uses; AMD's clang and the host compiler know _Float16 natively. bfloat16 is the top half of a
# float32, rounded to nearest even (quiet NaN kept), identical on every dialect.
_BF16 = r"""
__device__ __forceinline__ float ag_bf2f(unsigned short b) { return __uint_as_float(((unsigned)b) << 16); }
__device__ __forceinline__ unsigned short ag_f2bf(float f) {
  unsigned u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);  // NaN stays NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
  return (unsigned short)(u >> 16);
}
"""

_CUDA_PRELUDE = r"""
__device__ __forceinline__ float ag_h2f(unsigned short h) {
  float f; asm("{cvt.f32.f16 %0, %1;}\n" : "=f"(f) : "h"(h)); return f;
}
__device__ __forceinline__ unsigned short ag_f2h(float f) {
  unsigned short h; asm("{cvt.rn.f16.f32 %0, %1;}\n" : "=h"(h) : "f"(f)); return h;
}
""" + _BF16

_HIP_PRELUDE = r"""
__device__ __forceinline__ float ag_h2f(unsigned short h) { return (float)__builtin_bit_cast(_Float16, h); }
__device__ __forceinline__ unsigned short ag_f2h(float f) {
  return __builtin_bit_cast(unsigned short, (_Float16)f);
}
""" + _BF16

_FAST = {"exp": "__expf", "log": "__logf", "log2": "__log2f", "sin": "__sinf", "cos": "__cosf",
         "rsqrt": "rsqrtf", "truediv": "__fdividef"}

CUDA = CDialect(
    name="cuda", warp_size=32,
    shfl_xor="__shfl_xor_sync(0xffffffffu, {v}, {o})",
    prelude=_CUDA_PRELUDE, fast_math=dict(_FAST),
)
HIP = CDialect(
    name="hip", warp_size=64,
    shfl_xor="__shfl_xor({v}, {o})",
    prelude=_HIP_PRELUDE, fast_math=dict(_FAST),
)

#: Code every dialect shares: constants, ATen-semantics helpers, reduction combiners and the
#: warp/block reduction trees. ``AG_WARP``, ``AG_SHFL_XOR`` and ``AG_BARRIER`` come from the dialect.
COMMON_PRELUDE = r"""
#define AG_INF_F __int_as_float(0x7f800000)
#define AG_NAN_F __int_as_float(0x7fc00000)
#define AG_INF_D __longlong_as_double(0x7ff0000000000000LL)
#define AG_NAN_D __longlong_as_double(0x7ff8000000000000LL)
#define AG_I64_MAX 9223372036854775807LL

// ATen's floor division and remainder (c10::div_floor_floating / div_floor_integer).
#define AG_FLOAT_HELPERS(T, FMOD, FLOOR, COPYSIGN)                                            \
  __device__ __forceinline__ T ag_floordiv(T a, T b) {                                      \
    if (b == 0) return a / b;                                                                \
    T mod = FMOD(a, b);                                                                      \
    T div = (a - mod) / b;                                                                   \
    if (mod != 0 && ((b < 0) != (mod < 0))) div -= 1;                                        \
    if (div == 0) return COPYSIGN((T)0, a / b);                                              \
    T fl = FLOOR(div);                                                                       \
    if (div - fl > (T)0.5) fl += 1;                                                          \
    return fl;                                                                               \
  }                                                                                          \
  __device__ __forceinline__ T ag_remainder(T a, T b) {                                     \
    T mod = FMOD(a, b);                                                                      \
    if (mod != 0 && ((b < 0) != (mod < 0))) mod += b;                                        \
    return mod;                                                                              \
  }
AG_FLOAT_HELPERS(float, fmodf, floorf, copysignf)
AG_FLOAT_HELPERS(double, fmod, floor, copysign)

#define AG_INT_HELPERS(T)                                                                    \
  __device__ __forceinline__ T ag_floordiv(T a, T b) {                                      \
    if ((a < 0) != (b < 0)) { T q = a / b; T r = a % b; return r ? (T)(q - 1) : q; }         \
    return (T)(a / b);                                                                       \
  }                                                                                          \
  __device__ __forceinline__ T ag_remainder(T a, T b) {                                     \
    T r = (T)(a % b);                                                                        \
    if (r != 0 && ((r < 0) != (b < 0))) r = (T)(r + b);                                      \
    return r;                                                                                \
  }                                                                                          \
  __device__ __forceinline__ T ag_ipow(T a, T b) {                                          \
    if (b < 0) { if (a == 1) return 1; if (a == -1) return (b % 2 == 0) ? 1 : -1; return 0; } \
    T r = 1;                                                                                 \
    while (b) { if (b & 1) r = (T)(r * a); b /= 2; a = (T)(a * a); }                         \
    return r;                                                                                \
  }
AG_INT_HELPERS(long long)
AG_INT_HELPERS(int)
AG_INT_HELPERS(short)
AG_INT_HELPERS(signed char)
AG_INT_HELPERS(unsigned char)

// NaN-propagating max/min (ATen's maximum/minimum and amax/amin); plain for integers.
template <typename T> __device__ __forceinline__ T ag_max(T a, T b) { return (a != a || a > b) ? a : b; }
template <typename T> __device__ __forceinline__ T ag_min(T a, T b) { return (a != a || a < b) ? a : b; }

struct AgSum { template <typename T> __device__ __forceinline__ T operator()(T a, T b) const { return a + b; } };
struct AgProd { template <typename T> __device__ __forceinline__ T operator()(T a, T b) const { return a * b; } };
struct AgMax { template <typename T> __device__ __forceinline__ T operator()(T a, T b) const { return ag_max(a, b); } };
struct AgMin { template <typename T> __device__ __forceinline__ T operator()(T a, T b) const { return ag_min(a, b); } };

// Whether (w, j) beats (v, i) for argmax/argmin: NaN is the extreme (as in ATen), ties go to the
// lower index. A total order, so the butterfly leaves the same winner in every lane.
template <bool MAX, typename T> __device__ __forceinline__ bool ag_arg_beats(T v, long long i, T w, long long j) {
  const bool vn = v != v, wn = w != w;
  if (vn || wn) return wn && (!vn || j < i);
  return (MAX ? w > v : w < v) || (w == v && j < i);
}
template <bool MAX, typename T> __device__ __forceinline__ void ag_arg_combine(T& v, long long& i, T w, long long j) {
  if (ag_arg_beats<MAX>(v, i, w, j)) { v = w; i = j; }
}

// Butterfly over a warp: every lane ends with the warp's total.
template <typename T, typename F> __device__ __forceinline__ T ag_warp_reduce(T v, F f) {
  for (int o = AG_WARP / 2; o > 0; o >>= 1) v = f(v, (T)AG_SHFL_XOR(v, o));
  return v;
}
template <bool MAX, typename T> __device__ __forceinline__ void ag_warp_arg(T& v, long long& i) {
  for (int o = AG_WARP / 2; o > 0; o >>= 1) {
    T w = (T)AG_SHFL_XOR(v, o);
    long long j = AG_SHFL_XOR(i, o);
    ag_arg_combine<MAX>(v, i, w, j);
  }
}

// Across the warps of a block through shared memory (blockDim.x is a multiple of AG_WARP). Every
// thread combines the per-warp values in the same order, so all end with the same bits. The first
// barrier keeps a previous call's readers from seeing this call's writes.
template <typename T, typename F> __device__ __forceinline__ T ag_block_reduce(T v, F f, T* smem) {
  v = ag_warp_reduce(v, f);
  const int nw = blockDim.x / AG_WARP;
  if (nw == 1) return v;
  AG_BARRIER;
  if (threadIdx.x % AG_WARP == 0) smem[threadIdx.x / AG_WARP] = v;
  AG_BARRIER;
  v = smem[0];
  for (int w = 1; w < nw; ++w) v = f(v, smem[w]);
  return v;
}
template <bool MAX, typename T> __device__ __forceinline__ void ag_block_arg(T& v, long long& i, T* sv, long long* si) {
  ag_warp_arg<MAX>(v, i);
  const int nw = blockDim.x / AG_WARP;
  if (nw == 1) return;
  AG_BARRIER;
  if (threadIdx.x % AG_WARP == 0) { sv[threadIdx.x / AG_WARP] = v; si[threadIdx.x / AG_WARP] = i; }
  AG_BARRIER;
  v = sv[0]; i = si[0];
  for (int w = 1; w < nw; ++w) ag_arg_combine<MAX>(v, i, sv[w], si[w]);
}
"""

# --------------------------------------------------------------------------------------------- types

_STORAGE = {
    "float32": "float", "float16": "unsigned short", "bfloat16": "unsigned short", "float64": "double",
    "int64": "long long", "int32": "int", "int16": "short", "int8": "signed char", "uint8": "unsigned char",
    "bool": "bool",
}
_INT_RANGE = {"int64": (-(2**63), 2**63 - 1), "int32": (-(2**31), 2**31 - 1), "int16": (-(2**15), 2**15 - 1),
              "int8": (-128, 127), "uint8": (0, 255), "bool": (0, 1)}


def c_type(dtype: str, storage: bool = False) -> str:
    """C type of a value of ``dtype``: in memory (``storage``) or in registers (halves compute as float)."""
    if not storage and dtype in ("float16", "bfloat16"):
        return "float"
    return _STORAGE[dtype]


def _acc_type(dtype: str) -> str:
    """Accumulator type of a reduction: small integers widen to int so shuffles exist for them."""
    if dtype in ("int16", "int8", "uint8", "bool"):
        return "int"
    return c_type(dtype)


def _is_float(dtype: str) -> bool:
    return dtype in FLOAT_DTYPES


def c_const(value, dtype: str) -> str:
    """A C literal of ``value`` as ``dtype`` (exact for float32: the value is rounded once, here)."""
    if dtype == "bool":
        return "true" if value else "false"
    if not _is_float(dtype):
        v = int(value)
        return f"{v}LL" if dtype == "int64" else f"(({c_type(dtype)}){v})"
    v = float(value)
    double = dtype == "float64"
    if math.isnan(v):
        return "AG_NAN_D" if double else "AG_NAN_F"
    if not double:
        try:
            v = struct.unpack("f", struct.pack("f", v))[0]
        except OverflowError:
            v = math.copysign(math.inf, v)
    if math.isinf(v):
        inf = "AG_INF_D" if double else "AG_INF_F"
        return inf if v > 0 else f"(-{inf})"
    text = repr(v)
    return f"({text})" if double else f"({text}f)"


def _identity(kind: str, dtype: str) -> str:
    """The identity of reduction ``kind`` over values of ``dtype`` (masked lanes hold it)."""
    if kind == "sum":
        return c_const(0, dtype) if _is_float(dtype) else "0"
    if kind == "prod":
        return c_const(1, dtype) if _is_float(dtype) else "1"
    high = kind in ("min", "argmin")
    if _is_float(dtype):
        return c_const(math.inf if high else -math.inf, "float64" if dtype == "float64" else "float32")
    lo, hi = _INT_RANGE[dtype]
    return f"{hi if high else lo}LL" if dtype == "int64" else str(hi if high else lo)


# ------------------------------------------------------------------------------------------ scalar ops

_LIBM = {  # float op -> (float32 function, float64 function), called with the op's arguments
    "exp": ("expf", "exp"), "exp2": ("exp2f", "exp2"), "expm1": ("expm1f", "expm1"), "log": ("logf", "log"),
    "log2": ("log2f", "log2"), "log1p": ("log1pf", "log1p"), "sqrt": ("sqrtf", "sqrt"),
    "tanh": ("tanhf", "tanh"), "erf": ("erff", "erf"), "sin": ("sinf", "sin"), "cos": ("cosf", "cos"),
    "floor": ("floorf", "floor"), "ceil": ("ceilf", "ceil"), "trunc": ("truncf", "trunc"),
    "round": ("rintf", "rint"),  # rint rounds half to even in the default rounding mode, as torch.round
    "fmod": ("fmodf", "fmod"), "pow": ("powf", "pow"), "abs": ("fabsf", "fabs"),
}
_CMP = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
# Binary ops that are one C operator, the result cast back to the op's type (C promotes small
# integers to int); _INT_INFIX only on integers (their float versions are libm calls).
_INFIX = {"add": "+", "sub": "-", "mul": "*", "bitwise_and": "&", "bitwise_or": "|", "bitwise_xor": "^"}
_INT_INFIX = {"truediv": "/", "fmod": "%"}


def _infix(ct: str, a: list[str], sym: str) -> str:
    return f"(({ct})({a[0]} {sym} {a[1]}))"


class _OpWriter:
    """Turns one op of the DAG into a C expression, with ATen's semantics for every SCALAR_OPS name."""

    def __init__(self, ir: KernelIR, dialect: CDialect, numerics: Numerics, bits: int = 64):
        self.ir, self.dialect, self.fast, self.bits = ir, dialect, numerics == "fast", bits

    def _intrinsic(self, name: str, dtype: str) -> str | None:
        """The dialect's fast-math intrinsic for op ``name`` on ``dtype``: only under numerics="fast"
        and never for float64 (the intrinsics are float32)."""
        if not self.fast or dtype == "float64":
            return None
        return self.dialect.fast_math.get(name)

    def _fn(self, name: str, dtype: str) -> str:
        f32, f64 = _LIBM[name]
        return f64 if dtype == "float64" else self._intrinsic(name, dtype) or f32

    def cast(self, a: str, src: str, dst: str) -> str:
        """``a`` (a value of dtype ``src``) converted to ``dst``, in register form."""
        if dst == "bool":
            return f"({a} != 0)" if src != "bool" else a
        if dst == "float16":
            return f"ag_h2f(ag_f2h((float){a}))"
        if dst == "bfloat16":
            return f"ag_bf2f(ag_f2bf((float){a}))"
        if src == dst or (c_type(src) == c_type(dst) and src not in ("float16", "bfloat16")):
            return a
        return f"(({c_type(dst)}){a})"

    def load(self, buffer: str, index: str) -> str:
        dtype = self.ir.buffers[buffer].dtype
        if dtype == "float16":
            return f"ag_h2f({buffer}[{index}])"
        if dtype == "bfloat16":
            return f"ag_bf2f({buffer}[{index}])"
        return f"{buffer}[{index}]"

    def store_value(self, value: str, src: str, buffer_dtype: str) -> str:
        if buffer_dtype == "float16":
            return f"ag_f2h((float){value})"
        if buffer_dtype == "bfloat16":
            return f"ag_f2bf((float){value})"
        return self.cast(value, src, buffer_dtype)

    def expr(self, i: int) -> str:
        """The C expression of op ``i`` (loads, leaves and pointwise ops; not reductions)."""
        op = self.ir.ops[i]
        t, ct = op.dtype, c_type(op.dtype)
        a = [f"v{j}" for j in op.args]
        src = [self.ir.ops[j].dtype for j in op.args]
        flt = _is_float(t)
        name = op.op
        if name == "load":
            text = self.load(op.attrs["buffer"], index_c(op.attrs["index"], self.bits))
            if op.attrs.get("masked"):
                # The conditional operator evaluates only the chosen side: no memory is touched
                # where the mask is false (cat/pad read each source only inside its range).
                return f"({a[0]} ? ({ct}){text} : {c_const(op.attrs.get('other', 0), t)})"
            return text
        if name == "const":
            return c_const(op.attrs["value"], t)
        if name == "size":
            return f"(({ct}){op.attrs['name']})"
        if name == "index":
            return f"(({ct}){index_c(op.attrs['index'], self.bits)})"
        if name == "cast":
            return self.cast(a[0], src[0], t)
        if name == "where":
            return f"(({ct})({a[0]} ? {a[1]} : {a[2]}))"
        if name in _CMP:
            return f"({a[0]} {_CMP[name]} {a[1]})"
        if name == "logical_and":
            return f"((bool){a[0]} && (bool){a[1]})"
        if name == "logical_or":
            return f"((bool){a[0]} || (bool){a[1]})"
        if name == "logical_not":
            return f"(!(bool){a[0]})"
        if name == "isnan":
            return f"({a[0]} != {a[0]})" if _is_float(src[0]) else "false"
        if name == "isinf":
            if not _is_float(src[0]):
                return "false"
            inf = "AG_INF_D" if src[0] == "float64" else "AG_INF_F"
            return f"({self._fn('abs', src[0])}({a[0]}) == {inf})"
        if name in _INFIX:
            return _infix(ct, a, _INFIX[name])
        if name == "bitwise_not":
            return f"(!{a[0]})" if t == "bool" else f"(({ct})~{a[0]})"
        if name == "neg":
            return f"(({ct})-{a[0]})"
        if name == "maximum":
            return f"ag_max<{ct}>({a[0]}, {a[1]})"
        if name == "minimum":
            return f"ag_min<{ct}>({a[0]}, {a[1]})"
        if name in ("floordiv", "remainder"):
            return f"ag_{name}(({ct}){a[0]}, ({ct}){a[1]})"
        if not flt:
            return self._int_only(name, a, ct)
        one = c_const(1, t)
        if fn := self._intrinsic(name, t):  # numerics="fast": the dialect's intrinsic for the op
            return f"{fn}({', '.join(a)})"
        if name == "truediv":
            return f"({a[0]} / {a[1]})"
        if name == "reciprocal":
            return f"({one} / {a[0]})"
        if name == "rsqrt":
            return f"({one} / {self._fn('sqrt', t)}({a[0]}))"  # correctly rounded sqrt, then divide
        if name == "sigmoid":
            return f"({one} / ({one} + {self._fn('exp', t)}(-{a[0]})))"
        if name == "sign":
            return f"(({ct})((({ct})0 < {a[0]}) - ({a[0]} < ({ct})0)))"  # NaN -> 0, as ATen on the CPU
        if name in _LIBM:
            return f"{self._fn(name, t)}({', '.join(a)})"
        raise NotImplementedError(f"C emitter: op {name!r} on {t} (op {i} of {self.ir.name})")

    @staticmethod
    def _int_only(name: str, a: list[str], ct: str) -> str:
        """Integer (and bool) versions of ops whose float version is a libm call."""
        if name in ("floor", "ceil", "trunc", "round"):
            return a[0]
        if name == "abs":
            return f"(({ct})({a[0]} < 0 ? -{a[0]} : {a[0]}))"
        if name == "sign":
            return f"(({ct})((0 < {a[0]}) - ({a[0]} < 0)))"
        if name in _INT_INFIX:
            return _infix(ct, a, _INT_INFIX[name])
        if name == "pow":
            return f"ag_ipow(({ct}){a[0]}, ({ct}){a[1]})"
        raise NotImplementedError(f"C emitter: op {name!r} on integers ({ct})")


def index_c(expr: IndexExpr, bits: int = 64) -> str:
    """C text of an index expression in a kernel indexing in ``bits`` (loop variables and sizes are
    ``int`` or ``long long``).

    ``//`` and ``%`` become C's ``/`` and ``%``: the IR promises non-negative operands, where the two agree.
    In 64 bits every constant is ``LL``; in 32 they are plain ``int`` literals (an ``LL`` would widen
    the whole expression), and a gathered index is cast to ``long long``, so the expression holding
    it is computed in 64 bits by C's promotions (``index_fits_int32`` does not bound such a term).
    """
    if isinstance(expr, Const):
        return f"{expr.value}LL" if bits == 64 else str(expr.value)
    if isinstance(expr, IndirectIndex) and bits == 32:
        return f"((long long)v{expr.op})"
    if isinstance(expr, Bin):
        kind = "/" if expr.kind == "//" else expr.kind
        return f"({index_c(expr.a, bits)} {kind} {index_c(expr.b, bits)})"
    return render_index(expr)


def _fits_int32(ir: KernelIR) -> bool:
    # Every size argument must be an int too, also one only a "size" op reads (index_fits_int32
    # bounds the sizes that appear in index expressions).
    return all(abs(s.hint) <= INT32_MAX for s in ir.sizes) and index_fits_int32(ir)


def index_bits(ir: KernelIR) -> int:
    """32 where every index ``ir`` computes and every size argument fits an int at its size hints
    (launchers are made per shape, so the hints are the call's sizes), else 64; or
    :data:`FORCE_INDEX_BITS`."""
    if FORCE_INDEX_BITS is not None:
        if FORCE_INDEX_BITS not in (32, 64):
            raise ValueError(f"FORCE_INDEX_BITS={FORCE_INDEX_BITS!r}; expected 32, 64 or None")
        return FORCE_INDEX_BITS
    return 32 if _fits_int32(ir) else 64


# --------------------------------------------------------------------------------------------- kernels


@dataclass(frozen=True)
class CKernel:
    """Rendered source of one kernel and how to launch it.

    ``source`` is a complete translation unit (prelude + one ``extern "C"`` kernel called ``name``);
    ``body`` is the kernel alone, for joining many kernels into one module (:func:`render_module`).
    """

    name: str
    source: str
    body: str
    mode: Mode
    max_threads: int
    warp_size: int
    dialect: str
    ir: KernelIR
    #: 32 or 64: the C type of the size arguments, numels and index arithmetic (``int``/``long long``).
    index_bits: int = 64
    _fits: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def size_ctype(self) -> str:
        """C type of the size arguments: what a launcher packs them as."""
        return "int" if self.index_bits == 32 else "long long"

    def check_sizes(self, sizes: dict[str, int]) -> None:
        """Raise ValueError when a 32-bit kernel is called with sizes some index of it overflows at.

        Launchers are made per shape and pass the hints, which fit; a caller passing other sizes (one
        binary for several batch sizes) gets them checked once per distinct tuple.
        """
        if self.index_bits == 64:
            return
        key = tuple(int(sizes[s.name]) for s in self.ir.sizes)
        ok = self._fits.get(key)
        if ok is None:
            at = dataclasses.replace(self.ir, sizes=[SizeArg(s.name, v) for s, v in zip(self.ir.sizes, key)])
            if len(self._fits) >= 256:  # a bounded memo, whatever the caller varies
                self._fits.clear()
            ok = self._fits[key] = _fits_int32(at)
        if not ok:
            named = dict(zip((s.name for s in self.ir.sizes), key))
            raise ValueError(f"{self.name} indexes in 32 bits, which sizes {named} overflow; render the "
                             f"kernel for these sizes (it will index in 64 bits)")

    def launch(self, sizes: dict[str, int] | None = None, max_grid: int = 1 << 16) -> tuple[int, int]:
        """``(grid, block)`` for size values ``sizes`` (default: the IR's hints); grid 0: nothing to do."""
        hints = {s.name: s.hint for s in self.ir.sizes}
        hints.update(sizes or {})
        ir = self.ir
        xnumel = math.prod(eval_size(d, hints) for d in ir.xdims)
        rnumel = math.prod(eval_size(d, hints) for d in ir.rdims)
        w = self.warp_size
        if xnumel <= 0:
            return 0, w
        if self.mode == "pointwise":
            block = min(self.max_threads, _round_up(xnumel, w))
            grid = -(-xnumel // block)
        elif self.mode == "warp":
            block = self.max_threads
            grid = -(-xnumel // (block // w))
        else:
            block = min(self.max_threads, max(w, _next_pow2(max(rnumel, 1))))
            grid = xnumel
        if self.index_bits == 32:
            # The 32-bit grid-stride counters are unsigned and step by at most grid * block: below
            # 2**31 a step from an index < xnumel <= INT32_MAX cannot wrap (see _KernelWriter.loop).
            max_grid = min(max_grid, (1 << 31) // block)
        return min(grid, max_grid), block


def _round_up(n: int, k: int) -> int:
    return -(-n // k) * k


def _next_pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


#: Rows at most this long (in units of the warp size) get one warp each instead of one block.
WARP_ROW_LIMIT = 8


def choose_mode(ir: KernelIR, warp_size: int) -> Mode:
    """Pointwise, or for a reduction one warp per row (short rows) or one block per row."""
    if not ir.is_reduction:
        return "pointwise"
    return "warp" if ir.rnumel_hint <= WARP_ROW_LIMIT * warp_size else "block"


def kernel_name(ir: KernelIR, mode: Mode, bits: int = 64) -> str:
    """A C identifier unique to the kernel's structure and shape: IR name, fingerprint, mode, index
    width (the two widths of one IR may share a module)."""
    base = re.sub(r"\W", "_", ir.name) or "kernel"
    if base[0].isdigit():
        base = "k_" + base
    return f"{base}_{ir.fingerprint()[:10]}_{mode[0]}{bits}"


def _prelude(dialect: CDialect) -> str:
    head = (f"// generated by agnostic_rt.backends.c.cstyle for {dialect.name}\n"
            f"#define AG_WARP {dialect.warp_size}\n"
            f"#define AG_SHFL_XOR(v, o) {dialect.shfl_xor.format(v='(v)', o='(o)')}\n"
            f"#define AG_BARRIER {dialect.barrier}\n")
    return head + dialect.prelude + COMMON_PRELUDE


def render(ir: KernelIR, dialect: CDialect, *, numerics: Numerics = "strict", mode: Mode | None = None,
           max_threads: int | None = None, bits: int | None = None) -> CKernel:
    """Emit ``ir`` as one C kernel in ``dialect``, indexing in ``bits`` (default :func:`index_bits`).

    >>> k = render(ir, CUDA)                                    # doctest: +SKIP
    >>> grid, block = k.launch({"s0": 8192})                    # doctest: +SKIP
    """
    if numerics not in ("strict", "fast"):
        raise ValueError(f"unknown numerics {numerics!r}; expected 'strict' or 'fast'")
    ir.verify()
    mode = mode or choose_mode(ir, dialect.warp_size)
    if (mode == "pointwise") != (not ir.is_reduction):
        raise ValueError(f"mode {mode!r} does not fit {'a reduction' if ir.is_reduction else 'a pointwise'} kernel")
    w = dialect.warp_size
    if max_threads is None:
        max_threads = {"pointwise": 256, "warp": 4 * w, "block": 1024}[mode]
    if max_threads % w:
        raise ValueError(f"max_threads={max_threads} is not a multiple of the warp size {w}")
    bits = bits or index_bits(ir)
    if bits not in (32, 64):
        raise ValueError(f"index bits {bits!r}; expected 32 or 64")
    name = kernel_name(ir, mode, bits)
    body = _KernelWriter(ir, dialect, numerics, mode, max_threads, name, bits).write()
    source = _prelude(dialect) + "\n" + body
    log.debug("rendered %s for %s (%s, %d threads max, %d-bit indices):\n%s", name, dialect.name, mode,
              max_threads, bits, body)
    return CKernel(name, source, body, mode, max_threads, w, dialect.name, ir, bits)


def render_module(kernels: list[CKernel], dialect: CDialect) -> str:
    """One translation unit holding many kernels (one compiler invocation builds them all)."""
    seen, bodies = set(), []
    for k in kernels:
        if k.dialect != dialect.name:
            raise ValueError(f"kernel {k.name} was rendered for {k.dialect}, not {dialect.name}")
        if k.name not in seen:
            seen.add(k.name)
            bodies.append(k.body)
    return _prelude(dialect) + "\n" + "\n".join(bodies)


class _KernelWriter:
    """Writes one kernel: signature, index decomposition, op DAG placed by phase, reductions, stores."""

    def __init__(self, ir: KernelIR, dialect: CDialect, numerics: Numerics, mode: Mode, max_threads: int,
                 name: str, bits: int = 64):
        self.ir, self.d, self.mode, self.max_threads, self.name = ir, dialect, mode, max_threads, name
        self.bits = bits
        self.it = "int" if bits == 32 else "long long"  # sizes, numels, split variables
        self.ops = _OpWriter(ir, dialect, numerics, bits)
        self.lines: list[str] = []
        self.phase = ir.phase_of()

    def emit(self, depth: int, text: str) -> None:
        self.lines.append("  " * depth + text)

    def signature(self) -> str:
        ir = self.ir
        args = [f"const {c_type(b.dtype, storage=True)}* __restrict__ {b.name}" for b in ir.inputs]
        args += [f"{c_type(b.dtype, storage=True)}* __restrict__ {b.name}" for b in ir.outputs]
        args += [f"const {self.it} {s.name}" for s in ir.sizes]
        bounds = self.d.launch_bounds.format(self.max_threads) if self.d.launch_bounds else ""
        return f"{self.d.kernel_prefix} void {bounds} {self.name}({', '.join(args)})".replace("  ", " ")

    def idx(self, expr: IndexExpr) -> str:
        return index_c(expr, self.bits)

    def numel(self, dims: tuple[IndexExpr, ...]) -> str:
        return " * ".join(f"({self.idx(d)})" for d in dims) or ("1LL" if self.bits == 64 else "1")

    def loop(self, var: str, start: str, bound: str, step: str) -> str:
        """``for`` over ``var`` = start, start + step, ... < bound (a grid- or block-stride loop).

        In 64 bits the counter is ``long long``. In 32 it is ``unsigned``: ``bound`` (a numel) is at
        most INT32_MAX and the launch keeps ``step`` <= grid * block below 2**31 (CKernel.launch), so
        the step past the last index stays below 2**32 and never wraps, where a signed ``int`` would
        overflow (index_fits_int32 leaves only 2**17 above the numel; a pointwise grid-stride step is
        up to 2**24). The split variables are signed ``int`` (an index may add a negative constant),
        so every ``/`` and ``%`` of the index split is a 32-bit one.
        """
        if self.bits == 64:
            return f"for (long long {var} = {start}; {var} < {bound}; {var} += {step}) {{"
        return f"for (unsigned {var} = {start}; {var} < (unsigned){bound}; {var} += {step}) {{"

    def decompose(self, depth: int, var: str, prefix: str, dims: tuple[IndexExpr, ...]) -> None:
        """``x0..x{k-1}`` (row-major, last fastest) from the linear ``xindex``; same for r."""
        if not dims:
            return
        rest = var
        for k in range(len(dims) - 1, 0, -1):
            self.emit(depth, f"const {self.it} {prefix}{k} = {rest} % ({self.idx(dims[k])});")
            self.emit(depth, f"const {self.it} {prefix}rest{k} = {rest} / ({self.idx(dims[k])});")
            rest = f"{prefix}rest{k}"
        self.emit(depth, f"const {self.it} {prefix}0 = {rest};")

    def define(self, depth: int, i: int) -> None:
        op = self.ir.ops[i]
        self.emit(depth, f"const {c_type(op.dtype)} v{i} = {self.ops.expr(i)};")

    def store(self, depth: int, st) -> None:
        buf = self.ir.buffers[st.buffer]
        val = self.ops.store_value(f"v{st.value}", self.ir.ops[st.value].dtype, buf.dtype)
        if st.accumulate:  # threads may hit one element; the result is unused, so a RED on NVIDIA
            guard = "" if st.mask is None else f"if (v{st.mask}) "
            self.emit(depth, f"{guard}atomicAdd(&{st.buffer}[{self.idx(st.index)}], {val});")
            return
        self.emit(depth, f"{st.buffer}[{self.idx(st.index)}] = {val};")

    def deps(self, i: int) -> list[int]:
        op = self.ir.ops[i]
        out = list(op.args)
        if op.op in ("load", "index"):
            out += sorted(index_ops(op.attrs["index"]))
        return out

    def closure_xr(self, roots: list[int]) -> list[int]:
        """The space-"xr" ops ``roots`` need, in DAG order (x ops are already defined per row)."""
        need, stack = set(), [r for r in roots if self.ir.ops[r].space == "xr"]
        while stack:
            i = stack.pop()
            if i in need:
                continue
            need.add(i)
            stack += [j for j in self.deps(i) if self.ir.ops[j].space == "xr" and self.ir.ops[j].op != "reduce"]
        return sorted(need)

    def write(self) -> str:
        self.emit(0, self.signature() + " {")
        if self.mode == "pointwise":
            self.pointwise()
        else:
            self.reduction()
        self.emit(0, "}")
        return "\n".join(self.lines) + "\n"

    def pointwise(self) -> None:
        ir = self.ir
        self.emit(1, f"const {self.it} xnumel = {self.numel(ir.xdims)};")
        wide = "(long long)" if self.bits == 64 else ""
        self.emit(1, self.loop("xindex", f"{wide}blockIdx.x * blockDim.x + threadIdx.x", "xnumel",
                               f"{wide}blockDim.x * gridDim.x"))
        self.decompose(2, "xindex", "x", ir.xdims)
        for i in range(len(ir.ops)):
            self.define(2, i)
        for st in ir.stores:
            self.store(2, st)
        self.emit(1, "}")

    def reduction(self) -> None:
        ir, d, w = self.ir, self.d, self.d.warp_size
        reds = [i for i, op in enumerate(ir.ops) if op.op == "reduce"]
        xr_stores = [s for s in ir.stores if ir.ops[s.value].space == "xr"]
        x_stores = [s for s in ir.stores if ir.ops[s.value].space == "x"]
        loops = max([self.phase[i] - 1 for i in reds] + [self.phase[s.value] for s in xr_stores] + [0]) + 1
        block = self.mode == "block"
        if block:  # shared scratch per accumulator type, one slot per warp
            nw = self.max_threads // w
            for t in sorted({self.acc_ctype(i) for i in reds}):
                self.emit(1, f"{d.shared} {t} ag_smem_{_ident(t)}[{nw}];")
            if any(ir.ops[i].attrs["kind"] in ("argmax", "argmin") for i in reds):
                self.emit(1, f"{d.shared} long long ag_smem_index[{nw}];")
        self.emit(1, f"const {self.it} xnumel = {self.numel(ir.xdims)};")
        self.emit(1, f"const {self.it} rnumel = {self.numel(ir.rdims)};")
        if block:
            self.emit(1, "const int ag_tid = threadIdx.x, ag_nthreads = blockDim.x;")
            self.emit(1, self.loop("xindex", "blockIdx.x", "xnumel", "gridDim.x"))
        else:
            wide = "(long long)" if self.bits == 64 else ""
            self.emit(1, "const int ag_tid = threadIdx.x % AG_WARP, ag_nthreads = AG_WARP;")
            self.emit(1, f"const {'long long' if self.bits == 64 else 'unsigned'} ag_rows = blockDim.x / AG_WARP;")
            self.emit(1, self.loop("xindex", f"{wide}blockIdx.x * ag_rows + threadIdx.x / AG_WARP", "xnumel",
                                   f"{wide}gridDim.x * ag_rows"))
        self.decompose(2, "xindex", "x", ir.xdims)
        for p in range(loops):
            self.row_ops(p)
            loop_reds = [i for i in reds if self.phase[i] - 1 == p]
            loop_stores = [s for s in xr_stores if self.phase[s.value] == p]
            for i in loop_reds:
                kind, t = ir.ops[i].attrs["kind"], self.acc_ctype(i)
                self.emit(2, f"{t} acc{i} = {_identity(kind, self.arg_dtype(i))};")
                if kind in ("argmax", "argmin"):
                    self.emit(2, f"long long acc{i}_i = AG_I64_MAX;")
            self.emit(2, self.loop("rindex", "ag_tid", "rnumel", "ag_nthreads"))
            self.decompose(3, "rindex", "r", ir.rdims)
            for j in self.closure_xr([ir.ops[i].args[0] for i in loop_reds] + [s.value for s in loop_stores]):
                self.define(3, j)
            for i in loop_reds:
                self.accumulate(3, i)
            for st in loop_stores:
                self.store(3, st)
            self.emit(2, "}")
            for i in loop_reds:
                self.finish(2, i, block)
        self.row_ops(loops)
        if x_stores:
            self.emit(2, "if (ag_tid == 0) {")
            for st in x_stores:
                self.store(3, st)
            self.emit(2, "}")
        self.emit(1, "}")

    def row_ops(self, p: int) -> None:
        """Define the per-row (space "x") ops of phase ``p``; reductions are defined by finish()."""
        for i, op in enumerate(self.ir.ops):
            if op.space == "x" and op.op != "reduce" and self.phase[i] == p:
                self.define(2, i)

    def arg_dtype(self, i: int) -> str:
        return self.ir.ops[self.ir.ops[i].args[0]].dtype

    def acc_ctype(self, i: int) -> str:
        op = self.ir.ops[i]
        return _acc_type(self.arg_dtype(i) if op.attrs["kind"] in ("argmax", "argmin") else op.dtype)

    def accumulate(self, depth: int, i: int) -> None:
        op = self.ir.ops[i]
        kind, t, a = op.attrs["kind"], self.acc_ctype(i), f"v{op.args[0]}"
        if kind in ("argmax", "argmin"):
            self.emit(depth, f"ag_arg_combine<{'true' if kind == 'argmax' else 'false'}>(acc{i}, acc{i}_i, "
                             f"({t}){a}, rindex);")
        else:
            self.emit(depth, f"acc{i} = {_COMBINER[kind]}()(acc{i}, ({t}){a});")

    def finish(self, depth: int, i: int, block: bool) -> None:
        """Combine the threads' accumulators of reduction ``i`` into ``v{i}``, visible to all threads."""
        op = self.ir.ops[i]
        kind, t = op.attrs["kind"], self.acc_ctype(i)
        ct = c_type(op.dtype)
        if kind in ("argmax", "argmin"):
            flag = "true" if kind == "argmax" else "false"
            if block:
                self.emit(depth, f"ag_block_arg<{flag}>(acc{i}, acc{i}_i, ag_smem_{_ident(t)}, ag_smem_index);")
            else:
                self.emit(depth, f"ag_warp_arg<{flag}>(acc{i}, acc{i}_i);")
            self.emit(depth, f"const {ct} v{i} = ({ct})acc{i}_i;")
            return
        if block:
            red = f"ag_block_reduce(acc{i}, {_COMBINER[kind]}(), ag_smem_{_ident(t)})"
        else:
            red = f"ag_warp_reduce(acc{i}, {_COMBINER[kind]}())"
        self.emit(depth, f"const {ct} v{i} = ({ct}){red};")


_COMBINER = {"sum": "AgSum", "prod": "AgProd", "max": "AgMax", "min": "AgMin"}
assert set(_COMBINER) | {"argmax", "argmin"} == set(REDUCTIONS)


def _ident(ctype: str) -> str:
    return ctype.replace(" ", "_")
