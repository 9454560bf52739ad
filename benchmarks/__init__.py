"""The exchange's benchmark harness: `python -m benchmarks [--quick]`.

See docs/benchmarks.md for what it runs and what each column of its table means.
"""
