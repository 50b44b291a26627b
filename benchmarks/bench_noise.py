"""pytest-benchmark view of the noise suite: the cases and providers of
genfast/bench/noise.py (what `genfast bench --suite noise` times); see suite.py."""

import pytest

from genfast.bench import noise

from .suite import params, run


@pytest.mark.parametrize("case, provider", params(noise.cases))
def test_noise(benchmark, request, case, provider):
    run(benchmark, request, case, provider)
