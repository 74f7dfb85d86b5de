"""Eager / aot_eager / Inductor / agnostic on the zoo: ``python bench/compare.py --help``.

The implementation lives in agnostic_rt/apps/bench_compare.py so that ``agnostic-rt bench`` works from an
installed package too.
"""

import sys

from agnostic_rt.apps.bench_compare import main

if __name__ == "__main__":
    sys.exit(main())
