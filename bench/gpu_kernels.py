"""Bandwidth of generated kernels against a device-to-device copy (GPU only).

Each case is a whole function compiled with backend="agnostic" whose graph becomes one generated
kernel (a fused pointwise chain, a row reduction); bytes counted are the fewest it must move (each
input read once, each output written once). Inductor runs the same functions for comparison.

    python bench/gpu_kernels.py --gib 1
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.nn.functional as F


def _bench(fn, *args) -> float:
    from triton.testing import do_bench

    return do_bench(lambda: fn(*args), warmup=50, rep=200, return_mode="median") * 1e-3


def cases(n_bytes: int, device: str):
    n = n_bytes // 4
    cols = 4096
    rows = n // cols
    x = torch.randn(n, device=device)
    w = torch.randn(n, device=device)
    m = torch.randn(rows, cols, device=device)
    g = torch.randn(cols, device=device)
    b = torch.randn(cols, device=device)

    def pointwise(x, w):  # read 2, write 1
        return F.gelu(x * w + 1.0) * torch.sigmoid(x)

    def softmax(m):  # read 1, write 1
        return torch.softmax(m * 0.125, dim=-1)

    def layernorm(m, g, b):  # read 1, write 1
        return F.layer_norm(m, (cols,), g, b)

    def row_sum(m):  # read 1, write rows
        return (m * m).sum(dim=-1)

    return [
        ("pointwise gelu(x*w+1)*sigmoid(x)", pointwise, (x, w), 3 * n * 4),
        ("softmax rows of 4096", softmax, (m,), 2 * rows * cols * 4),
        ("layer_norm rows of 4096", layernorm, (m, g, b), 2 * rows * cols * 4),
        ("sum of squares per row", row_sum, (m,), rows * cols * 4 + rows * 4),
    ]


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--gib", type=float, default=1.0)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    device = "cuda"
    n_bytes = int(args.gib * 2**30)
    src = torch.empty(n_bytes // 4, device=device)
    dst = torch.empty_like(src)
    copy_s = _bench(dst.copy_, src)
    copy_bw = 2 * n_bytes / copy_s
    rows = [{"case": "device-to-device copy", "bytes": 2 * n_bytes, "agnostic_GBps": copy_bw / 1e9}]
    del src, dst
    for name, fn, inputs, nbytes in cases(n_bytes, device):
        row = {"case": name, "bytes": nbytes}
        ref = fn(*inputs)
        for backend in ("agnostic", "inductor"):
            torch._dynamo.reset()
            compiled = torch.compile(fn, backend=backend)
            try:
                out = compiled(*inputs)
                err = ((out - ref).abs().max() / ref.abs().max()).item()
                t = _bench(compiled, *inputs)
                row[f"{backend}_GBps"] = nbytes / t / 1e9
                row[f"{backend}_of_copy"] = nbytes / t / copy_bw
                row[f"{backend}_maxrel_err"] = err
            except Exception as exc:  # report, don't hide the other figures
                row[f"{backend}_error"] = f"{type(exc).__name__}: {exc}"[:200]
        rows.append(row)
    print(f"copy bandwidth (read+write): {copy_bw / 1e12:.2f} TB/s on {torch.cuda.get_device_name(0)}")
    print("| kernel | agnostic GB/s | % of copy | Inductor GB/s | % of copy | max rel err |")
    print("|---|---|---|---|---|---|")
    for r in rows[1:]:
        a, i = r.get("agnostic_GBps"), r.get("inductor_GBps")
        print(f"| {r['case']} | {a or 0:.0f} | {100 * r.get('agnostic_of_copy', 0):.0f}% | {i or 0:.0f} | "
              f"{100 * r.get('inductor_of_copy', 0):.0f}% | "
              f"{r.get('agnostic_maxrel_err', float('nan')):.1e} |"
              + (f" agnostic error: {r['agnostic_error']}" if "agnostic_error" in r else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
