"""Benchmark harness and suites; `bench/*.py` scripts and `lowbit bench` call these."""
