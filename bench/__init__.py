"""Benchmarks: each script prints its figures and a ratio against a baseline run in the
same process, since the machine is shared and noisy. `--quick` is what CI runs."""
