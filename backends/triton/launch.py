"""Launching generated Triton kernels: block-size candidates, autotuning by measurement, the disk cache.

On a GPU the first launch of a kernel for a problem size times every candidate config (outputs are
recomputed, inputs only read, so repeated launches are harmless) and keeps the fastest; the winner
is written to ``<cache>/autotune/<source hash>.json`` under a key of (device arch, device name,
driver/runtime and Triton versions, problem size), so the next process starts warm. Compiled
binaries live in Triton's cache, pointed at ``<cache>/triton`` unless TRITON_CACHE_DIR is set; its
key already holds the source hash, the target arch and the compiler versions.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from agnostic_rt.runtime.layouts import conformed, recorded_copy
from agnostic_rt.runtime.memory_plan import span_bytes
from agnostic_rt.runtime.view_fold import _guards, _reinterpret

from .emit import TritonKernelSource
from .registry import GeneratedKernel, cache_dir

log = logging.getLogger("agnostic_rt.triton_launch")


#: Problems smaller than this many elements run the first candidate config untimed.
TUNE_MIN_ELEMENTS = 1 << 18
#: Launch a kernel's binary through its own runner after the first (JIT) launch; AGNOSTIC_RT_DIRECT_LAUNCH=0
#: sends every launch through the JIT.
DIRECT_LAUNCH = os.environ.get("AGNOSTIC_RT_DIRECT_LAUNCH", "1") != "0"


def _pow2(n: int) -> int:
    return 1 << max(int(n) - 1, 0).bit_length()


def candidate_configs(kernel: TritonKernelSource, xnumel: int, rnumel: int, interpret: bool) -> list[dict]:
    """Configs to try, best guess first. Each: XBLOCK (, RBLOCK), num_warps."""
    xp = _pow2(max(xnumel, 1))
    if not kernel.constexprs or "RBLOCK" not in kernel.constexprs:
        if interpret:  # fewer, larger programs: the interpreter pays per program, not per element
            return [{"XBLOCK": min(xp, 8192), "num_warps": 4}]
        cands = [(1024, 4), (512, 4), (2048, 8)]
        seen, out = set(), []
        for xb, nw in cands:
            xb = min(xb, max(xp, 128))
            if (xb, nw) not in seen:
                seen.add((xb, nw))
                out.append({"XBLOCK": xb, "num_warps": nw})
        return out
    rp = _pow2(max(rnumel, 1))
    if kernel.persistent:
        budget = 16384 if interpret else 4096
        xb = max(1, min(xp, budget // rp))
        nw = 8 if rp >= 2048 else 4 if rp >= 256 else 2
        first = {"XBLOCK": xb, "RBLOCK": rp, "num_warps": nw}
        if interpret:
            return [first]
        out = [first]
        if xb >= 2:
            out.append({"XBLOCK": xb // 2, "RBLOCK": rp, "num_warps": nw})
        out.append({"XBLOCK": max(1, min(xp, 1024 // rp)) if rp <= 1024 else 1, "RBLOCK": rp, "num_warps": nw})
        return _dedupe(out)
    if interpret:
        return [{"XBLOCK": min(xp, 4), "RBLOCK": min(rp, 4096), "num_warps": 4}]
    out = [{"XBLOCK": 1, "RBLOCK": 2048, "num_warps": 8}, {"XBLOCK": min(xp, 8), "RBLOCK": 512, "num_warps": 4},
           {"XBLOCK": min(xp, 64), "RBLOCK": 64, "num_warps": 4}]
    return _dedupe(out)


def _dedupe(cfgs: list[dict]) -> list[dict]:
    seen, out = set(), []
    for c in cfgs:
        key = tuple(sorted(c.items()))
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


@functools.cache
def device_key(device: str) -> str:
    """What a tuned config depends on besides the kernel: the device and the software stack."""
    import triton

    parts = [f"triton{triton.__version__}", f"torch{torch.__version__}"]
    dev = torch.device(device)
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        arch = getattr(props, "gcnArchName", "") or f"sm_{props.major}{props.minor}"
        parts += [arch.split(":")[0], props.name.replace(" ", "_"),
                  f"hip{torch.version.hip}" if torch.version.hip else f"cuda{torch.version.cuda}"]
        try:
            parts.append(f"driver{torch.cuda.driver_version()}" if hasattr(torch.cuda, "driver_version") else "")
        except Exception:  # not every build exposes it
            pass
    else:
        parts.append(dev.type)
    return "-".join(p for p in parts if p)


class TuningCache:
    """Winners on disk: one JSON file per kernel source, ``{device key: {size key: config}}``.

    ``kernel`` is a Triton kernel (the file is named by its source hash) or a ready-made key string
    (the emitter choice, backends/emitters.py, names the pair of sources it chose between).
    """

    def __init__(self, root: Path | None = None):
        self.root = (root or cache_dir()) / "autotune"

    def _path(self, kernel: TritonKernelSource | str) -> Path:
        if isinstance(kernel, str):
            return self.root / f"{kernel}.json"
        return self.root / f"{hashlib.sha256(kernel.source.encode()).hexdigest()[:24]}.json"

    def get(self, kernel: TritonKernelSource | str, dkey: str, skey: str) -> dict | None:
        try:
            data = json.loads(self._path(kernel).read_text())
        except (OSError, ValueError):
            return None
        return data.get(dkey, {}).get(skey)

    def put(self, kernel: TritonKernelSource | str, dkey: str, skey: str, cfg: dict) -> None:
        path = self._path(kernel)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                data = {}
            data.setdefault(dkey, {})[skey] = cfg
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
            os.replace(tmp, path)
        except OSError as e:  # a read-only cache must not stop a run
            log.warning("could not write the tuning cache %s: %s", path, e)


class KernelLauncher:
    """Runs one generated kernel for one group: allocates outputs, passes sizes, launches.

    Everything that depends only on shapes is computed once (grid, size arguments, the bound launch);
    a call fits inputs to the strides the kernel was generated for (:func:`fit_layout`), allocates
    outputs and launches. A call with an input no copy can fit (values that vary along a dim the
    kernel reads as broadcast) runs through ``fallback`` (the group's nodes in ATen), with a debug
    line; anything unexpected at the first launch switches the launcher to it for good, with a warning.
    """

    def __init__(self, gk: GeneratedKernel, sizes: Sequence[int], in_strides: Sequence[tuple[int, ...]],
                 out_specs: Sequence[tuple[tuple[int, ...], tuple[int, ...], torch.dtype]], *, interpret: bool,
                 autotune: bool, fallback: Callable, ops: Sequence[str], device: torch.device | None = None):
        self.gk = gk
        self.kernel = gk.kernel
        self.fn = gk.function(interpret)
        self.interpret = interpret
        self.autotune = autotune and not interpret
        self.sizes = tuple(int(s) for s in sizes)
        self.in_strides = [tuple(s) for s in in_strides]
        self.out_specs = list(out_specs)
        self.fallback = fallback
        self.ops = list(ops)
        ir = self.kernel.ir
        hints = dict(zip((s.name for s in ir.sizes), self.sizes))
        self.xnumel = _eval_numel(ir.xdims, hints)
        self.rnumel = _eval_numel(ir.rdims, hints)
        self._launch: Callable | None = None
        # After the first launch: the compiled binary's own runner, its trailing arguments (sizes,
        # then constexpr values) and the alignment it was specialised for (see _direct_launch).
        self._direct: Callable | None = None
        self._direct_args: tuple = ()
        self._aligned: tuple[bool, ...] = ()
        self._cfg: dict = {}
        # Where outputs live: the graph's own answer (a kernel with no tensor inputs — arange, full —
        # has nothing else to go by); otherwise the first call's inputs decide.
        self._device: torch.device | None = device
        self._failed = False
        self._fast: Callable | None = None  # the steady-state call, once direct launches work (_make_fast)
        # Set by the program (agnostic_rt/runtime/layouts.py: trust_layouts): inputs whose layout and alignment
        # are another kernel's promise, and outputs whose plan donor is another kernel's output.
        self._trusted_in: tuple[bool, ...] = ()
        self._trusted_donor: tuple[bool, ...] = ()
        # FX names the program's call after these (the kernel's name shows in the program source).
        self.__name__ = self.__qualname__ = self.kernel.name

    #: The program's memory plan may pass ``reuse=`` (agnostic_rt/runtime/memory_plan.py).
    accepts_reuse = True

    def __call__(self, *inputs: torch.Tensor, reuse: Sequence[torch.Tensor | None] | None = None
                 ) -> tuple[torch.Tensor, ...]:
        """``reuse``: per output, a dead buffer whose storage it may be written into (the program's
        memory plan, agnostic_rt/runtime/memory_plan.py), or None to allocate."""
        fast = self._fast
        if fast is not None:  # the steady state: every input as generated, launched by the binary
            done = fast(inputs, reuse)
            if done is not None:
                return done
        if self._failed:
            return fallback_outputs(self.fallback, inputs, self.out_specs)
        staged = stage_call(inputs, self.in_strides, self.out_specs, self.kernel.ir, self._device, reuse)
        if staged is None:
            log.debug("kernel %s (%s): an input layout it cannot read; this call runs through ATen",
                      self.kernel.name, ", ".join(self.ops))
            return fallback_outputs(self.fallback, inputs, self.out_specs)
        ins, outs, dev = staged
        self._device = dev
        if self.xnumel == 0:  # nothing to compute; later calls only allocate (unless an output is initialised)
            if not self.kernel.ir.has_init:
                alloc, specs = fast_allocator(dev), tuple(self.out_specs)
                self._fast = lambda inputs, reuse: tuple(alloc(*spec) for spec in specs)
            return tuple(outs)
        launch = self._launch
        if launch is None:
            try:
                launch = self._launch = self._prepare(ins, outs, dev)
                init_outputs(self.kernel.ir, ins, outs)  # autotuning launched into them, adding to them
                compiled = launch(*ins, *outs, *self.sizes)
            except Exception as e:
                log.warning("kernel %s (%s) failed at its first launch; its ops run through ATen: %s",
                            self.kernel.name, ", ".join(self.ops), e)
                self._failed = True
                return fallback_outputs(self.fallback, inputs, self.out_specs)
            if DIRECT_LAUNCH and not self.interpret:
                self._prepare_direct(compiled, ins, outs)
            return tuple(outs)
        if self._direct is not None and self._direct_launch(ins, outs):
            return tuple(outs)
        launch(*ins, *outs, *self.sizes)
        return tuple(outs)

    def _prepare_direct(self, compiled, ins, outs) -> None:
        """Keep the binary the JIT just launched and a runner for it: on CUDA/ROCm its C launcher
        (:func:`bare_runner`), else Triton's own (``CompiledKernel[grid]``, the API ``triton.compile``
        results are launched with). Later calls skip the JIT's per-call work (argument binding,
        specialisation key, cache lookup), which is most of a small kernel's host time. The runner
        takes the JIT's arguments: every parameter in order, constexprs last."""
        if not hasattr(compiled, "__getitem__"):
            return
        device = ins[0].device if ins else outs[0].device
        try:
            runner = compiled[self._grid]
        except Exception as e:  # a Triton without the runner: the JIT launches every call
            log.debug("kernel %s launches through the JIT: %s", self.kernel.name, e)
            return
        try:
            self._direct = bare_runner(compiled, self._grid, device) or runner
        except Exception as e:  # another Triton's binary layout: its own runner launches
            log.debug("kernel %s launches through Triton's runner: %s", self.kernel.name, e)
            self._direct = runner
        self._direct_args = (*self.sizes, *(self._cfg[k] for k in self.kernel.constexprs))
        self._aligned = _alignment((*ins, *outs))
        if all(self._aligned[len(ins):]) and self.xnumel:
            self._fast = self._make_fast(device)

    def trust(self, inputs: Sequence[bool], donors: Sequence[bool]) -> None:
        """What the program knows of this call site before the first call: per input, whether it
        always arrives in ``in_strides`` 16-byte aligned (an output of one of our kernels, or a
        reinterpretation of one: see ``layouts.trusted_layout``); per output, whether its
        ``reuse=`` donor is always such an output (its storage starts the buffer and spans what the
        plan sized it for). The steady-state call skips those checks, as Inductor's wrapper trusts
        its own buffers."""
        self._trusted_in, self._trusted_donor = tuple(inputs), tuple(donors)
        if self._fast is not None and self._direct is not None:  # not the empty group's allocate-only call
            self._fast = self._make_fast(self._device)

    def _make_fast(self, device: torch.device) -> Callable:
        """The steady-state call as one function over values bound once: inputs already in their
        generated layout and 16-byte alignment (one stride compare and one pointer test each),
        outputs from the device's direct allocator (or the plan's donors), the binary's runner.
        Returns None where a call needs the general path (a restride, another alignment, a refused
        launch), which then handles it exactly as before. Fresh outputs start on the allocator's
        512-byte (CUDA) or 64-byte (CPU) boundary, and a donor's storage start is the allocator's,
        so only inputs are checked. Generated as straight-line source, as Inductor's launchers are:
        no loop over inputs, no argument tuples built per call (it runs once per kernel per step)."""
        ins = [f"i{k}" for k in range(len(self.in_strides))]
        outs = [f"o{k}" for k in range(len(self.out_specs))]
        ns: dict = {"alloc": fast_allocator(device), "output_in": _output_in, "device": device,
                    "direct": self._direct, "refused": self._refused, "init": init_outputs, "ir": self.kernel.ir,
                    "reinterpret": _reinterpret}
        src = ["def fast(inputs, reuse):"]
        if ins:
            src.append(f"    {', '.join(ins)}, = inputs")
        trusted_in = self._trusted_in if len(self._trusted_in) == len(ins) else (False,) * len(ins)
        for k, (stride, aligned) in enumerate(zip(self.in_strides, self._aligned)):
            if trusted_in[k] and aligned:  # another kernel's output: its layout is that kernel's promise
                continue
            ns[f"S{k}"] = stride
            src.append(f"    if i{k}.stride() != S{k} or (i{k}.data_ptr() % 16 == 0) is not {aligned}:")
            src.append("        return None")
        fresh, donated = [], []
        trusted_donor = self._trusted_donor if len(self._trusted_donor) == len(outs) else (False,) * len(outs)
        for k, (shape, stride, dtype) in enumerate(self.out_specs):
            ns[f"P{k}"], ns[f"N{k}"] = (shape, stride, dtype), span_bytes(shape, stride, dtype.itemsize)
            fresh.append(f"        o{k} = alloc(*P{k})")
            if trusted_donor[k] and _reinterpret is not None:  # a kernel's output, at its storage's start
                ns[f"Z{k}"], ns[f"T{k}"] = shape, stride
                donated.append(f"        o{k} = reinterpret(reuse[{k}], Z{k}, T{k}, 0)")
            else:
                donated.append(f"        o{k} = output_in(reuse[{k}], P{k}, device, alloc, N{k})")
        src += ["    if reuse is None:", *fresh, "    else:", *donated]
        outs_tuple = f"({', '.join(outs)},)"
        if self.kernel.ir.has_init:  # outputs the kernel adds into (atomics) start as a fill or an input's copy
            src.append(f"    init(ir, inputs, {outs_tuple})")
        for k, a in enumerate(self._direct_args):
            ns[f"A{k}"] = a
        args = ", ".join([*ins, *outs, *(f"A{k}" for k in range(len(self._direct_args)))])
        src += ["    try:", f"        direct({args})", "    except Exception as e:", "        return refused(e)",
                f"    return {outs_tuple}"]
        exec(compile("\n".join(src), f"<launcher of {self.kernel.name}>", "exec"), ns)
        return ns["fast"]

    def _refused(self, e: Exception) -> None:
        """The kept binary's runner refused a launch (raised before anything ran: argument packing is
        checked first): the JIT launches this call and every later one."""
        log.warning("kernel %s: the compiled runner refused a launch (%s); the JIT launches it", self.kernel.name, e)
        self._direct = self._fast = None

    def _direct_launch(self, ins, outs) -> bool:
        """Launch through the kept binary; False where the JIT must launch this call: a pointer's
        16-byte alignment differs from the one the binary was specialised for (the JIT would pick
        another binary), or the runner refused its first call (the JIT launches from then on)."""
        if _alignment((*ins, *outs)) != self._aligned:
            return False
        return self._run_direct(ins, outs)

    def _run_direct(self, ins, outs) -> bool:
        """One launch through the kept binary's runner. A refusal (raised before anything ran:
        argument packing is checked first) ends direct launches for good: False, and the JIT
        launches this call and every later one."""
        direct = self._direct
        if direct is None:
            return False
        try:
            direct(*ins, *outs, *self._direct_args)
        except Exception as e:
            self._refused(e)
            return False
        return True

    def _bind(self, cfg: dict) -> Callable:
        grid = ((self.xnumel + cfg["XBLOCK"] - 1) // cfg["XBLOCK"],)
        self._grid, self._cfg = grid, cfg
        consts = {k: v for k, v in cfg.items() if k in self.kernel.constexprs}
        if self.interpret:
            return functools.partial(self.fn[grid], **consts)
        return functools.partial(self.fn[grid], **consts, num_warps=cfg["num_warps"])

    def _prepare(self, ins, outs, dev: torch.device) -> Callable:
        cands = candidate_configs(self.kernel, self.xnumel, self.rnumel, self.interpret)
        if not self.autotune or dev.type != "cuda" or len(cands) == 1:
            return self._bind(cands[0])
        if self.xnumel * max(self.rnumel, 1) < TUNE_MIN_ELEMENTS:
            # Launch-bound: configs cannot differ by more than noise, and each one costs a compile.
            return self._bind(cands[0])
        cache = TuningCache()
        dkey, skey = device_key(str(dev)), f"x{self.xnumel}-r{self.rnumel}"
        cfg = cache.get(self.kernel, dkey, skey)
        if cfg is None:
            cfg = self._measure(cands, ins, outs)
            cache.put(self.kernel, dkey, skey, cfg)
            log.debug("autotuned %s for %s: %s", self.kernel.name, skey, cfg)
        return self._bind(cfg)

    def _measure(self, cands: list[dict], ins, outs) -> dict:
        from triton.testing import do_bench

        best, best_t = cands[0], float("inf")
        for cfg in cands:
            launch = self._bind(cfg)
            try:
                t = do_bench(lambda launch=launch: launch(*ins, *outs, *self.sizes), warmup=3, rep=10)
            except Exception as e:  # e.g. out of shared memory / registers for this config
                log.debug("config %s of %s does not run: %s", cfg, self.kernel.name, e)
                continue
            if t < best_t:
                best, best_t = cfg, t
        return best


def bare_runner(compiled, grid: tuple[int, ...], device: torch.device) -> Callable | None:
    """The binary's C launcher, called as Inductor's launchers call it on a GPU: grid, the raw
    stream of ``device``, the loaded function, the packed metadata, no launch metadata and no hooks,
    then every parameter in order. Triton's own runner (``CompiledKernel[grid]``) looks the current
    device and stream up through its driver object and asks for launch metadata on every call: a few
    microseconds of Python per launch, on a GPU model that is host-bound. None (keep Triton's runner)
    off CUDA/ROCm, where this Triton lacks the pieces, or while a launch hook is installed (a
    profiler such as Proton: Triton's runner serves it)."""
    stream_of = getattr(torch._C, "_cuda_getCurrentRawStream", None)
    if device.type != "cuda" or stream_of is None:
        return None
    try:
        from triton import knobs

        hooks = (knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook)
    except (ImportError, AttributeError):
        return None
    if any(h is not None and getattr(h, "calls", None) != [] for h in hooks):  # None, or an empty HookChain
        return None
    compiled._init_handles()  # loads the module: sets run and function
    run, function = getattr(compiled, "run", None), getattr(compiled, "function", None)
    meta = getattr(compiled, "packed_metadata", getattr(compiled, "metadata", None))
    if run is None or function is None or meta is None or not hasattr(compiled, "launch_metadata"):
        return None
    g0, g1, g2 = (*grid, 1, 1)[:3]
    index = device.index if device.index is not None else torch.cuda.current_device()

    def direct(*args):
        run(g0, g1, g2, stream_of(index), function, meta, None, None, None, *args)

    return direct


def _alignment(tensors) -> tuple[bool, ...]:
    """Which tensors start on a 16-byte boundary: what Triton specialises a pointer argument on."""
    return tuple(t.data_ptr() % 16 == 0 for t in tensors)


def _eval_numel(dims, hints: dict[str, int]) -> int:
    from agnostic_rt.backends.lowering.kernel_ir import eval_size

    n = 1
    for d in dims:
        n *= eval_size(d, hints)
    return n


def fit_layout(t: torch.Tensor, stride: Sequence[int]) -> torch.Tensor | None:
    """``t``'s values in the layout ``stride`` the kernel was generated for, or None where no tensor
    of that layout can hold them.

    The kernel addresses an input by its generated strides over the dims of extent > 1 (other dims
    read element 0). ``t`` itself serves when it agrees there; otherwise its values are copied into
    that layout. A generated stride of 0 (a broadcast input) over extent > 1 reads one element for
    the whole dim, which holds ``t`` only when ``t`` is broadcast there too (its stride 0): a copy
    would raise ("more than one element of the written-to tensor refers to a single memory
    location"), and the caller runs the group through ATen instead. Any other overlapping layout
    (an ``as_strided`` input) is refused the same way.

    >>> fit_layout(torch.randn(4, 1).expand(4, 5), (1, 0)) is not None     # still broadcast
    True
    >>> fit_layout(torch.randn(4, 5), (1, 0)) is None                      # values differ along dim 1
    True
    """
    have = t.stride()
    if have == stride:  # the common case, one tuple compare
        return t
    shape = tuple(t.shape)
    if len(stride) != len(shape):
        return None
    if t.numel() == 0 or all(n == 1 or a == g for n, a, g in zip(shape, have, stride)):
        return t
    broadcast = [d for d, (n, g) in enumerate(zip(shape, stride)) if n > 1 and g == 0]
    if any(have[d] != 0 for d in broadcast):
        return None
    reach = 0  # the layout of the other dims must be one-to-one for a copy to fill it
    for g, n in sorted((g, n) for n, g in zip(shape, stride) if n > 1 and g != 0):
        if g <= reach:
            return None
        reach += (n - 1) * g
    src = t
    for d in broadcast:
        src = src.narrow(d, 0, 1)
    out = torch.empty_strided(src.shape, tuple(stride), dtype=t.dtype, device=t.device)
    out.copy_(src)
    return out.as_strided(shape, tuple(stride))


def stage_call(inputs: Sequence[torch.Tensor], in_strides: Sequence[tuple[int, ...]],
               out_specs: Sequence[tuple[tuple[int, ...], tuple[int, ...], torch.dtype]], ir,
               device: torch.device | None, reuse: Sequence[torch.Tensor | None] | None = None):
    """What every launcher does before it launches: inputs fitted to the strides the kernel was
    generated for, outputs allocated (or laid over the storage of the dead buffer ``reuse`` names for
    them) and initialised, and the device they live on (``device``, or the first call's inputs
    decide). None when an input has a layout the kernel cannot read: the caller runs that call
    through ATen."""
    ins = fit_layouts(inputs, in_strides)
    if ins is None:
        return None
    if device is None:
        device = next((t.device for t in ins if t.dim() > 0), None) or (
            ins[0].device if ins else torch.device("cpu"))
    if reuse is None:
        outs = [torch.empty_strided(shape, stride, dtype=dt, device=device) for shape, stride, dt in out_specs]
    else:
        outs = [_output_in(donor, spec, device) for donor, spec in zip(reuse, out_specs)]
    if ir.has_init:
        init_outputs(ir, ins, outs)
    return ins, outs, device


def fast_allocator(device: torch.device) -> Callable:
    """``alloc(shape, stride, dtype)`` on ``device``: the C++ entry points Inductor's wrappers use
    (no argument parsing, ~1.3 us against ~3 us for ``torch.empty_strided`` on the dev CPU) where
    this torch has them; on CUDA only while ``device`` is the current device, which they allocate on."""
    if device.type == "cuda":
        fn = getattr(_guards, "_empty_strided_cuda", None)
        index = device.index if device.index is not None else torch.cuda.current_device()
        if fn is not None:
            def alloc(shape, stride, dtype):
                if torch._C._cuda_getDevice() == index:
                    return fn(shape, stride, dtype)
                return torch.empty_strided(shape, stride, dtype=dtype, device=device)
            return alloc
    elif device.type == "cpu":
        fn = getattr(_guards, "_empty_strided_cpu", None)
        if fn is not None:
            return fn
    return lambda shape, stride, dtype: torch.empty_strided(shape, stride, dtype=dtype, device=device)


def _output_in(donor: torch.Tensor | None, spec, device: torch.device, alloc: Callable | None = None,
               need: int | None = None) -> torch.Tensor:
    """An output of layout ``spec`` at the start of ``donor``'s storage when the plan's promise holds
    (same dtype and device, a storage of at least ``need`` bytes: the span of ``spec``); otherwise
    a fresh one from ``alloc(shape, stride, dtype)`` (``torch.empty_strided`` on ``device`` by
    default). The donor is dead, so the output is a reinterpretation of its storage (Inductor's
    ``reinterpret_tensor``, ~1 us), not a view: nothing it shared with the donor can matter."""
    shape, stride, dt = spec
    if donor is not None and donor.dtype == dt and donor.device == device:
        if need is None:
            need = span_bytes(shape, stride, dt.itemsize)
        if donor.untyped_storage().nbytes() >= need:
            if _reinterpret is not None:
                return _reinterpret(donor, shape, stride, -donor.storage_offset())
            return donor.as_strided(shape, stride, 0)
    if alloc is not None:
        return alloc(shape, stride, dt)
    return torch.empty_strided(shape, stride, dtype=dt, device=device)


def fallback_outputs(fallback: Callable, inputs: Sequence[torch.Tensor], out_specs: Sequence = ()
                     ) -> tuple[torch.Tensor, ...]:
    """The group's outputs through its ATen nodes, as the kernel would have made them: each in a
    storage of its own (an output viewing an input or an earlier output, a group ending in a view,
    is copied; the memory plan takes a kernel's outputs for fresh buffers and reuses one's storage
    once it is dead), and in the layout ``out_specs`` records at the start of their storage, 16-byte
    aligned (ATen may choose another layout than the kernel's, a slice may start mid-storage). The
    program relies on that layout: views of a kernel's outputs are reinterpreted and its readers
    trust it unchecked (agnostic_rt/runtime/layouts.py)."""
    held = {t.untyped_storage().data_ptr() for t in inputs if isinstance(t, torch.Tensor) and t.numel()}
    outs = []
    for k, o in enumerate(fallback(*inputs)):
        if isinstance(o, torch.Tensor):
            spec = out_specs[k] if k < len(out_specs) else None
            if o.numel() and o.untyped_storage().data_ptr() in held:  # shares storage: a copy of its own,
                o = o.clone() if spec is None else recorded_copy(o, *spec)  # in the recorded layout if known
            elif spec is not None:
                o = conformed(o, *spec)
            if o.numel():
                held.add(o.untyped_storage().data_ptr())
        outs.append(o)
    return tuple(outs)


def init_outputs(ir, ins: Sequence[torch.Tensor], outs: Sequence[torch.Tensor]) -> None:
    """Fill the outputs the kernel only adds into (``BufferArg.init``: a constant or an input's copy)."""
    names = [b.name for b in ir.inputs]
    for buf, out in zip(ir.outputs, outs):
        if buf.init is None:
            continue
        if isinstance(buf.init, str):
            out.copy_(ins[names.index(buf.init)])
        else:
            out.fill_(buf.init)


def fit_layouts(inputs: Sequence[torch.Tensor], strides: Sequence[tuple[int, ...]]) -> list[torch.Tensor] | None:
    """:func:`fit_layout` for every input; None when one of them cannot take its generated layout."""
    out = []
    for t, st in zip(inputs, strides):
        fitted = fit_layout(t, st)
        if fitted is None:
            return None
        out.append(fitted)
    return out


__all__ = ["KernelLauncher", "bare_runner", "candidate_configs", "TuningCache", "device_key", "fit_layout", "fit_layouts",
           "init_outputs", "stage_call", "fallback_outputs"]
