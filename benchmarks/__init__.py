"""Benchmark scripts and their harness (not part of the installed package)."""
