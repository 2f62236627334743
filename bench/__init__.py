"""Benchmark harness comparing redis_cache with other Redis clients.

Not a test suite: it measures. Run ``.venv/bin/python bench/run.py --help``;
docs/benchmarks.md holds the last full run and how to reproduce it.
"""
