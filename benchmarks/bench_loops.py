"""pytest-benchmark view of the loops suite: the cases and providers of
genfast/bench/loops.py (what `genfast bench --suite loops` times); see suite.py."""

import pytest

from genfast.bench import loops

from .suite import params, run


@pytest.mark.parametrize("case, provider", params(loops.cases))
def test_loops(benchmark, request, case, provider):
    run(benchmark, request, case, provider)
