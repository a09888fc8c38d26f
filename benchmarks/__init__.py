"""Benchmarks of the m3rec graph itself (fake models): run `python -m benchmarks [--quick]`."""
