"""Benchmarks: ``python -m bench`` prints figures; BENCHMARKS.md records them."""
