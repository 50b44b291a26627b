"""pytest-benchmark view of the loops suite: the cases and providers of
genfast/bench/loops.py (what `genfast bench --suite loops` times: whole
sampling loops, and the drop-in scheduler cases when genfast/bench/dropin.py
exists); see suite.py. Skipped as a whole while that suite does not exist."""

import pytest

loops = pytest.importorskip("genfast.bench.loops",
                            reason="genfast/bench/loops.py (the loops suite) is not in this genfast")

from .suite import params, run  # noqa: E402  (after the skip: nothing to import otherwise)


@pytest.mark.parametrize("case, provider", params(loops.cases))
def test_loops(benchmark, request, case, provider):
    run(benchmark, request, case, provider)
