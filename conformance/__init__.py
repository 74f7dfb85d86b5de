"""The numerics suite users run in their CI: ``agnostic-rt conformance`` or
``pytest --pyargs agnostic_rt.conformance``. The model zoo lives here so tests and benchmarks reuse it."""
