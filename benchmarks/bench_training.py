"""pytest-benchmark view of the training suite: the cases and providers of
genfast/bench/training.py (what `genfast bench --suite training` times); see suite.py."""

import pytest

from genfast.bench import training

from .suite import params, run


@pytest.mark.parametrize("case, provider", params(training.cases))
def test_training(benchmark, request, case, provider):
    run(benchmark, request, case, provider)
