"""What the zoo's generated kernels compile to, with 32-bit and with 64-bit indices (no GPU needed).

Every distinct kernel the backend generates for the zoo's training steps (h100 target) is built
twice: with the index width the emitter picks (32-bit where every index fits) and with 64-bit
indices forced. One table per emitter, reported per model: kernels, 64-bit integer
divides/remainders in the sm_90 PTX (each a ~70-instruction call on NVIDIA: GPUs have no 64-bit
divide), and the static machine instruction count (SASS via Triton's cuobjdump, and AMDGCN). Static
counts, not timings: they show where a kernel's instructions go, not how long it runs.

* ``--emitter triton``: the Triton kernels, built with ``triton.compile`` for sm_90 and gfx942
  (``triton_emit.FORCE_INDEX_BITS = 64`` forces the wide ones).
* ``--emitter c``: the same kernel IRs rendered by the C emitter (``cstyle.render(ir, ..., bits=64)``
  against the emitter's own ``index_bits(ir)``): CUDA C through NVRTC for sm_90 (PTX; SASS, see
  :func:`assemble_sm90`), HIP C through hiprtc for gfx90a (ROCm 5.2's hiprtc knows no gfx942),
  disassembled with llvm-objdump; that column is skipped, with a note, where either is missing.
  Kernels the C emitter cannot render or build are counted under the table, not measured.

    python bench/kernel_isa.py --models mlp cnn gpt2 bert [--emitter triton|c|both]
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

from agnostic_rt.backends import kernel_backend as triton_backend
from agnostic_rt.backends.c import cuda as cuda_c
from agnostic_rt.backends.c import hip as hip_c
from agnostic_rt.backends.c.build import BuildError
from agnostic_rt.backends.c.cstyle import CUDA, HIP, render
from agnostic_rt.backends.lowering.kernel_ir import KernelIR
from agnostic_rt.backends.triton import emit as triton_emit
from agnostic_rt.backends.triton.registry import GeneratedKernel, build_for
from agnostic_rt.conformance.coverage import zoo_coverage

#: The C family's AMD arch: MI200, as ROCm 5.2's hiprtc builds no MI300 (gfx942).
C_AMD_ARCH = "gfx90a"


@dataclass
class Row:
    """One model's totals over its kernels at one index width (``amdgcn`` None: not measured)."""

    kernels: int = 0
    div64: int = 0
    sass: int = 0
    amdgcn: int | None = 0
    narrow: int = 0  # kernels indexing in 32 bits


@dataclass
class Measured:
    """One emitter's figures for one model: forced 64-bit, chosen, and the kernels left out."""

    wide: Row
    chosen: Row
    skipped: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------- counting


def div64_count(ptx: str) -> int:
    return len(re.findall(r"\b(div|rem)\.[su]64\b", ptx))


def sass_count(cubin: bytes) -> int:
    import triton

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        sass = subprocess.run([tool, "-sass", f.name], capture_output=True, text=True, check=True).stdout
    return sum(1 for line in sass.splitlines() if re.match(r"\s+/\*[0-9a-f]{4}\*/", line))


def amdgcn_count(asm: str) -> int:
    """Instructions in AMDGCN assembly (Triton's) or in llvm-objdump's disassembly of a code object."""
    return sum(1 for line in asm.splitlines() if re.match(r"\s+[a-z_][a-z0-9_]*(\s|$)", line)
               and not line.strip().startswith((".", ";")))


def code_object_count(code: bytes, arch: str = C_AMD_ARCH) -> int:
    with tempfile.NamedTemporaryFile(suffix=".hsaco") as f:
        f.write(code)
        f.flush()
        asm = subprocess.run(["llvm-objdump", "-d", f"--mcpu={arch}", f.name], capture_output=True, text=True,
                             check=True).stdout
    # The linker pads .text with hundreds of `s_nop 0` after the last s_endpgm: not the kernel's.
    end = asm.rfind("s_endpgm")
    return amdgcn_count(asm if end < 0 else asm[:end + len("s_endpgm")])


@functools.cache
def _ptxas_for_sm90() -> tuple[str, str]:
    """The ptxas Triton itself uses for sm_90, and the newest PTX ``.version`` it accepts."""
    from triton.backends.nvidia.compiler import get_ptxas, ptx_get_version

    ptxas = get_ptxas(90).path
    banner = subprocess.run([ptxas, "--version"], capture_output=True, text=True, check=True).stdout
    v = ptx_get_version(re.search(r"release (\d+\.\d+)", banner).group(1))
    return ptxas, f"{v // 10}.{v % 10}"


def assemble_sm90(ptx: str) -> bytes:
    """A cubin for NVRTC's sm_90 PTX, for counting its SASS: A MEASURING DEVICE ONLY.

    NVRTC's own cubin (what the backend launches) is newer than any disassembler here: Triton's
    cuobjdump finds no device code in it. So the PTX is relabelled down to the newest ``.version``
    Triton's sm_90 ptxas accepts (NVRTC 13.5 writes 9.5; kernels for sm_90 use nothing newer) and
    assembled with that ptxas, the same one that builds the Triton table's SASS. The result is never
    run, and the relabelling belongs nowhere outside this count.
    """
    ptxas, version = _ptxas_for_sm90()
    have = re.search(r"^\.version (\d+)\.(\d+)", ptx, flags=re.M)
    if have and tuple(map(int, have.groups())) > tuple(map(int, version.split("."))):
        ptx = ptx[:have.start()] + f".version {version}" + ptx[have.end():]
    with tempfile.TemporaryDirectory() as d:
        src, out = os.path.join(d, "k.ptx"), os.path.join(d, "k.cubin")
        with open(src, "w") as f:
            f.write(ptx)
        subprocess.run([ptxas, "-arch=sm_90", src, "-o", out], capture_output=True, text=True, check=True)
        with open(out, "rb") as f:
            return f.read()


# ------------------------------------------------------------------------------------ kernels


def kernels_of(model: str, bits: int | None) -> list[GeneratedKernel]:
    """The distinct Triton kernels of ``model``'s training step, emitted with ``bits``-wide indices
    (None: the emitter's choice)."""
    seen: dict[str, GeneratedKernel] = {}
    register = triton_backend.register

    def recording(kernel, *a, **kw):
        gk = register(kernel, *a, **kw)
        seen[gk.name] = gk
        return gk

    triton_emit.FORCE_INDEX_BITS, triton_backend.register = bits, recording
    try:
        zoo_coverage(model, target="h100", batch=2)
    finally:
        triton_emit.FORCE_INDEX_BITS, triton_backend.register = None, register
    return list(seen.values())


# ------------------------------------------------------------------------------------- Triton


def triton_row(kernels: list[GeneratedKernel]) -> Row:
    row = Row(kernels=len(kernels))
    for k in kernels:
        nv = build_for(k, "sm_90")
        row.div64 += div64_count(nv.asm["ptx"])
        row.sass += sass_count(nv.asm["cubin"])
        row.amdgcn += amdgcn_count(build_for(k, "gfx942").asm["amdgcn"])
        row.narrow += ".to(tl.int64) * XBLOCK" not in k.source
    return row


def measure_triton(model: str, chosen: list[GeneratedKernel]) -> Measured:
    return Measured(triton_row(kernels_of(model, 64)), triton_row(chosen))


# ------------------------------------------------------------------------------------------ C


def amdgcn_unavailable() -> str | None:
    """Why the C table's AMDGCN column cannot be measured here, or None."""
    if shutil.which("llvm-objdump") is None:
        return "no llvm-objdump on PATH"
    try:
        import hip  # noqa: F401  (hip-python: hiprtc's bindings)

        if C_AMD_ARCH not in hip_c.supported_archs():
            return f"hiprtc of {hip_c.hiprtc_version()} does not build {C_AMD_ARCH}"
    except (ImportError, BuildError) as e:
        return f"no hiprtc ({type(e).__name__}: {e})"
    return None


def nvrtc_unavailable() -> str | None:
    """Why NVRTC (the C table's PTX and SASS) cannot be used here, or None."""
    try:
        cuda_c.nvrtc_version()
    except Exception as e:  # ImportError without CuPy, or a missing libnvrtc
        return f"{type(e).__name__}: {e}"
    return None


def c_figures(ir: KernelIR, bits: int | None, amd: bool) -> Row:
    """One kernel rendered by the C emitter at ``bits`` (None: its own choice), built and counted."""
    cuda = render(ir, CUDA, bits=bits)
    ptx = cuda_c.build_ptx(cuda.source, "sm_90")
    row = Row(1, div64_count(ptx), sass_count(assemble_sm90(ptx)), None, int(cuda.index_bits == 32))
    if amd:
        row.amdgcn = code_object_count(hip_c.build_code_object(render(ir, HIP, bits=bits).source, C_AMD_ARCH))
    return row


def add(total: Row, one: Row) -> None:
    total.kernels += one.kernels
    total.div64 += one.div64
    total.sass += one.sass
    total.narrow += one.narrow
    total.amdgcn = None if total.amdgcn is None or one.amdgcn is None else total.amdgcn + one.amdgcn


def measure_c(kernels: list[GeneratedKernel], amd: bool) -> Measured:
    """The C emitter on the IRs of ``kernels``; a kernel it cannot render or build at either width
    (the backend would run it as Triton) is listed in ``skipped``, not measured."""
    m = Measured(Row(amdgcn=0 if amd else None), Row(amdgcn=0 if amd else None))
    for k in kernels:
        try:
            wide, chosen = c_figures(k.ir, 64, amd), c_figures(k.ir, None, amd)
        except Exception as e:  # BuildError, NotImplementedError...: as the backend, which then emits Triton
            reason = getattr(e, "stderr", None) or str(e)
            m.skipped.append(f"{k.name} ({type(e).__name__}: {reason.strip().splitlines()[0][:160]})")
            continue
        add(m.wide, wide)
        add(m.chosen, chosen)
    return m


# -------------------------------------------------------------------------------------- tables


def header(sass: str, amdgcn: str) -> str:
    return (f"| model | kernels | 64-bit div/rem in PTX: forced 64 → chosen "
            f"| {sass} instructions: forced 64 → chosen | {amdgcn} instructions: forced 64 → chosen "
            f"| 32-bit kernels |\n|---|---|---|---|---|---|")


def change(wide: int | None, chosen: int | None) -> str:
    if wide is None or chosen is None:
        return "n/a"
    return f"{wide} → {chosen}" + (f" ({chosen / wide - 1:+.0%})" if wide else "")


def table_row(model: str, m: Measured) -> str:
    w, c = m.wide, m.chosen
    return (f"| {model} | {c.kernels} | {w.div64} → {c.div64} | {change(w.sass, c.sass)} | "
            f"{change(w.amdgcn, c.amdgcn)} | {c.narrow} of {c.kernels} |")


def print_table(title: str, head: str, models: list[str], measure: Callable[[str], Measured],
                notes: list[str]) -> None:
    print(f"\n{title}\n\n{head}", flush=True)
    skipped: list[str] = []
    for model in models:
        m = measure(model)
        print(table_row(model, m), flush=True)
        if m.skipped:
            total = m.chosen.kernels + len(m.skipped)
            skipped.append(f"- {model}: {len(m.skipped)} of {total} kernels not measured "
                           "(not rendered or built):")
            skipped += [f"  - {s}" for s in m.skipped]
    for line in notes + skipped:
        print(line)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--models", nargs="+", default=["mlp", "cnn", "gpt2", "bert"])
    p.add_argument("--emitter", choices=["triton", "c", "both"], default="both")
    args = p.parse_args(argv)
    chosen = functools.cache(lambda model: kernels_of(model, None))  # one zoo run serves both tables

    if args.emitter in ("triton", "both"):
        print_table("Triton (triton.compile: sm_90 PTX and SASS, gfx942 AMDGCN)", header("SASS", "AMDGCN"),
                    args.models, lambda model: measure_triton(model, chosen(model)), [])
    if args.emitter in ("c", "both") and (no_nvrtc := nvrtc_unavailable()):
        print(f"\nC: not measured, no NVRTC ({no_nvrtc})")
    elif args.emitter in ("c", "both"):
        why = amdgcn_unavailable()
        notes = [f"- {C_AMD_ARCH} AMDGCN not measured: {why}"] if why else []
        print_table(f"C (NVRTC {cuda_c.nvrtc_version()}: sm_90 PTX, SASS via PTX relabelled for Triton's "
                    f"ptxas; hiprtc: {C_AMD_ARCH} AMDGCN)",
                    header("SASS", f"{C_AMD_ARCH} AMDGCN"), args.models,
                    lambda model: measure_c(chosen(model), amd=why is None), notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
