"""Collect benchmarks/bench_*.py (pytest only collects test_*.py by default).

Run: ``pytest benchmarks/`` (``--benchmark-disable`` runs each case once, as a
smoke test). Environment: GENFAST_BENCH_DEVICE (default cuda if available,
else cpu), GENFAST_BENCH_FULL=1 (the `genfast bench --full` cases),
GENFAST_BENCH_SIZES (e.g. 4096,1M: element counts instead of the suite's),
GENFAST_BENCH_DTYPE (float32, float16 or bfloat16; default float32),
GENFAST_BENCH_ALLOCATOR (tuned, the default, or system: genfast/bench/malloc.py,
as `genfast bench --allocator`).
"""

import os
from fnmatch import fnmatch

import pytest


def pytest_configure(config):
    if os.environ.get("GENFAST_BENCH_ALLOCATOR", "tuned") == "tuned":
        from genfast.bench import malloc
        malloc.tune()


def pytest_collect_file(file_path, parent):
    if file_path.suffix != ".py" or not file_path.name.startswith("bench_"):
        return None
    # pytest itself collects files named on the command line or matching
    # python_files; collecting them here too would run everything twice
    if parent.session.isinitpath(file_path) or any(
            fnmatch(file_path.name, pat) for pat in parent.config.getini("python_files")):
        return None
    return pytest.Module.from_parent(parent, path=file_path)
