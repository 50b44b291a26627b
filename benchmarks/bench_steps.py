"""pytest-benchmark view of the steps suite: the cases and providers of
genfast/bench/steps.py (what `genfast bench --suite steps` times); see suite.py."""

import pytest

from genfast.bench import steps

from .suite import params, run


@pytest.mark.parametrize("case, provider", params(steps.cases))
def test_steps(benchmark, request, case, provider):
    run(benchmark, request, case, provider)
