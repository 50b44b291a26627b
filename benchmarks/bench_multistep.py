"""pytest-benchmark view of the multistep rows of the steps suite: the cases
and providers of genfast/bench/multistep.py; see suite.py."""

import pytest

from genfast.bench import multistep

from .suite import params, run


@pytest.mark.parametrize("case, provider", params(multistep.cases))
def test_multistep(benchmark, request, case, provider):
    run(benchmark, request, case, provider)
