"""Reproducible benchmarks: Tidelog and its peers, same workloads, same machine, one run.

Entry point: ``python -m benchmarks`` (see ``benchmarks/cli.py`` and BENCHMARKS.md).
"""
