"""What the zoo's generated kernels compile to, with 32-bit and with 64-bit indices (no GPU needed).

Every kernel the backend generates for the zoo's training steps (h100 target) is built for sm_90 and
gfx942 twice: with the index width the emitter picks (32-bit where every index fits) and with
64-bit indices forced. Reported per model: kernels, 64-bit integer divides/remainders in the PTX
(each a ~70-instruction call on NVIDIA: GPUs have no 64-bit divide), and the static machine
instruction count (SASS via Triton's cuobjdump; AMDGCN from the assembly). Static counts, not
timings: they show where a kernel's instructions go, not how long it runs.

    python bench/kernel_isa.py --models mlp cnn gpt2 bert
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile

from agnostic_rt.backends import triton_backend, triton_emit
from agnostic_rt.backends.coverage import zoo_coverage
from agnostic_rt.backends.registry import build_for


def sass_count(cubin: bytes) -> int:
    import triton

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        sass = subprocess.run([tool, "-sass", f.name], capture_output=True, text=True, check=True).stdout
    return sum(1 for line in sass.splitlines() if re.match(r"\s+/\*[0-9a-f]{4}\*/", line))


def amdgcn_count(asm: str) -> int:
    return sum(1 for line in asm.splitlines() if re.match(r"\s+[a-z_][a-z0-9_]*(\s|$)", line)
               and not line.strip().startswith((".", ";")))


def measure(kernels) -> dict:
    row = {"kernels": len(kernels), "div64": 0, "sass": 0, "amdgcn": 0}
    for k in kernels:
        nv = build_for(k, "sm_90")
        row["div64"] += len(re.findall(r"\b(div|rem)\.[su]64\b", nv.asm["ptx"]))
        row["sass"] += sass_count(nv.asm["cubin"])
        row["amdgcn"] += amdgcn_count(build_for(k, "gfx942").asm["amdgcn"])
    return row


def kernels_of(model: str, bits: int | None) -> list:
    """The distinct kernels of ``model``'s training step, emitted with ``bits``-wide indices (None:
    the emitter's choice)."""
    seen: dict[str, object] = {}
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--models", nargs="+", default=["mlp", "cnn", "gpt2", "bert"])
    args = p.parse_args(argv)
    print("| model | kernels | 64-bit div/rem in PTX: forced 64 → chosen | SASS instructions: forced 64 → chosen "
          "| AMDGCN instructions: forced 64 → chosen | 32-bit kernels |")
    print("|---|---|---|---|---|---|")
    for model in args.models:
        wide = measure(kernels_of(model, 64))
        chosen_kernels = kernels_of(model, None)
        chosen = measure(chosen_kernels)
        narrow = sum(".to(tl.int64) * XBLOCK" not in k.source for k in chosen_kernels)
        print(f"| {model} | {chosen['kernels']} | {wide['div64']} → {chosen['div64']} | {wide['sass']} → "
              f"{chosen['sass']} ({chosen['sass'] / wide['sass'] - 1:+.0%}) | {wide['amdgcn']} → {chosen['amdgcn']} "
              f"({chosen['amdgcn'] / wide['amdgcn'] - 1:+.0%}) | {narrow} of {chosen['kernels']} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
