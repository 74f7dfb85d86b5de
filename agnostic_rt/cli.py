"""``agnostic-rt`` command line: each subcommand lives with the part it runs and is imported lazily.

    agnostic-rt bench [--models ...]        eager / aot_eager / inductor / agnostic on the zoo
    agnostic-rt conformance [--quick|--full]
    agnostic-rt simulate TRACE.csv
    agnostic-rt demo
    agnostic-rt targets                     the Target registry and this machine's devices
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module, function taking argv and returning an exit code, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "bench": ("agnostic_rt.apps.bench_compare", "main", "time eager, aot_eager, Inductor and agnostic on the zoo"),
    "conformance": ("agnostic_rt.conformance.cli", "main", "run the numerics conformance suite"),
    "simulate": ("agnostic_rt.placement.simulate", "main", "replay a spot price trace under each policy"),
    "demo": ("agnostic_rt.apps.demo", "main", "train GPT-2, survive a spot notice, resume elsewhere"),
    "targets": ("agnostic_rt.cli", "targets_main", "list known targets and this machine's devices"),
}


def targets_main(argv: list[str]) -> int:
    from .targets import KNOWN_TARGETS, current_target

    for t in KNOWN_TARGETS.values():
        print(f"{t.name:8s} {t.vendor:7s} {t.arch:8s} warp={t.warp_size:<3d} units={t.sm_count:<4d} "
              f"bw={t.mem_bandwidth / 1e12:.2f} TB/s bf16={t.flops('bfloat16') / 1e12:.0f} TFLOP/s")
    print(f"current: {current_target()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        for name, (_, _, help_) in COMMANDS.items():
            print(f"  {name:12s} {help_}")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"agnostic-rt: unknown command {name!r}; expected one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[name]
    return int(getattr(importlib.import_module(module), func)(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
