"""lowbit's benchmark suites and their harness, outside the wheel: run from a checkout's root as
`python -m benchmarks.<suite>` or `lowbit bench <suite>`; results are saved in benchmarks/results/."""
