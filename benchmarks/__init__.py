"""Benchmark suite for fastconv: pytest-benchmark tests and a report command.

Run ``python -m pytest benchmarks --benchmark-enable`` for the pytest-benchmark tables and
``python -m benchmarks.report`` for one interleaved markdown report (see benchmarks/README.md).
Nothing here runs in CI: the project's ``testpaths`` is ``tests``.
"""
