"""Benchmark scripts that print figures (run by hand: ``python -m bench.engine``)."""
