"""``agnostic-rt conformance``: run the suite, print a summary, write JSON and HTML, exit non-zero on
any unexpected result.

    agnostic-rt conformance --quick                      # what CI runs on every change
    agnostic-rt conformance --full --out build/conf      # every OpInfo, the whole zoo
    agnostic-rt conformance --tiers op --targets cpu --ops add,sigmoid
    agnostic-rt conformance --full --collect-expect      # regenerate the expected-failure files
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .expect import collect_requested

log = logging.getLogger("agnostic_rt.conformance")


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="agnostic-rt conformance", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    level = p.add_mutually_exclusive_group()
    level.add_argument("--quick", dest="level", action="store_const", const="quick",
                       help="fixed representative subset (default; a few minutes on 2 cores)")
    level.add_argument("--full", dest="level", action="store_const", const="full",
                       help="every OpInfo in op_db and the whole zoo")
    p.set_defaults(level="quick")
    p.add_argument("--tiers", help="comma-separated: op,model,kernel,migration (default: all)")
    p.add_argument("--targets", help="comma-separated target runs: cpu,cuda,rocm,h100-interp,mi300x-interp "
                                     "(default: every one available)")
    p.add_argument("--ops", help="comma-separated op_db names (op tier), e.g. add,nn.functional.gelu")
    p.add_argument("--dtypes", help="comma-separated dtypes for the op tier: float32,float16,bfloat16,int64,bool")
    p.add_argument("--models", help="comma-separated zoo names (model tier)")
    p.add_argument("--max-samples", type=int, help="sample inputs per op and dtype")
    p.add_argument("--out", default="conformance-report", help="folder for report.json and report.html")
    p.add_argument("--expect-dir", help="folder of expected_failures_<target>.json (default: the package's)")
    p.add_argument("--collect-expect", action="store_true",
                   help="rewrite the expected-failure files from this run (also AGNOSTIC_RT_COLLECT_EXPECT=1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the suite from command-line arguments; returns the exit code.

    >>> main(["--tiers", "kernel", "--no-progress", "--out", "/tmp/conf"])  # doctest: +SKIP
    0
    """
    args = parser().parse_args(argv)
    if not logging.getLogger("agnostic_rt").handlers:
        logging.basicConfig(level=logging.WARNING, format="[%(name)s] %(levelname)s %(message)s")
    import warnings

    warnings.filterwarnings("ignore")  # op_db samples and Triton warn by the hundred; results say what matters
    from .report import write_html, write_json
    from .suite import TIERS, SuiteConfig, run_suite

    config = SuiteConfig(
        level=args.level,
        tiers=_split(args.tiers) or list(TIERS),
        targets=_split(args.targets),
        ops=_split(args.ops),
        dtypes=_split(args.dtypes),
        models=_split(args.models),
        max_samples=args.max_samples,
        expect_dir=Path(args.expect_dir) if args.expect_dir else None,
        collect_expect=args.collect_expect or collect_requested(),
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config.stream = out / "results.jsonl"
    config.stream.write_text("")
    report = run_suite(config)
    jpath, hpath = write_json(report, out / "report.json"), write_html(report, out / "report.html")
    print(summary(report))
    print(f"report: {jpath}  {hpath}")
    return report.exit_code()


def summary(report) -> str:
    """Plain-text counts per tier and target, how each target ran, and every unexpected result."""
    from .results import STATUSES

    modes = {t.name: t.mode for t in report.targets}
    lines = [f"agnostic-rt conformance ({report.level}): "
             f"{(report.finished or report.started) - report.started:.0f} s"]
    for tier, per in report.counts().items():
        for target, c in per.items():
            lines.append(f"  {tier:9s} {target:20s} {modes.get(target, ''):11s} "
                         + " ".join(f"{s}={c[s]}" for s in STATUSES))
    for n in report.notes:
        lines.append(f"  {n.tier:9s} {n.target:20s} {n.status}: {n.message}")
    bad = report.unexpected()
    for r in bad[:50]:
        lines.append(f"  {r.status.upper():5s} [{r.tier}/{r.target}] {r.key}: {r.sample} {r.message[:300]}")
    lines.append("RESULT: " + ("PASS" if not bad else f"FAIL ({len(bad)} unexpected)"))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
