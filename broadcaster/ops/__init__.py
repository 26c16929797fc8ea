"""For operators: the status report, readiness waits, doctor, the demo, and finding the
services tests and benchmarks use."""
