"""Benchmarks (a package so its conftest does not shadow tests/conftest.py, which
tests import as `conftest`)."""
