"""Zoo numerics on a GPU: backend="agnostic" against eager and fp64, inference and training.

    python bench/gpu_numerics.py --models mlp gpt2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from agnostic_rt.conformance.models import check_model
from agnostic_rt.conformance.zoo import ZOO


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--models", nargs="+", default=list(ZOO))
    p.add_argument("--device", default="cuda")
    p.add_argument("--options", default="{}")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    rows, failed = [], 0
    for name in args.models:
        for training in (False, True):
            torch._dynamo.reset()
            t0 = time.perf_counter()
            try:
                check = check_model(ZOO[name], training=training, device=args.device,
                                    options=json.loads(args.options))
                worst_name, worst = check.worst()
                row = {"model": name, "mode": check.mode, "passed": check.passed, "worst": worst_name,
                       "compiled_err": worst.compiled_error, "eager_err": worst.eager_error,
                       "bound": worst.bound}
            except Exception as exc:
                row = {"model": name, "mode": "training" if training else "inference", "passed": False,
                       "error": f"{type(exc).__name__}: {exc}"[:300]}
            row["seconds"] = time.perf_counter() - t0
            failed += not row["passed"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("| model | mode | fp64 rule | worst tensor | compiled err | eager err |\n|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | {r['mode']} | ERROR | {r['error'][:80]} | | |")
        else:
            print(f"| {r['model']} | {r['mode']} | {'pass' if r['passed'] else 'FAIL'} | {r['worst']} | "
                  f"{r['compiled_err']:.2e} | {r['eager_err']:.2e} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
