"""pytest-benchmark view of the flows suite: the cases and providers of
genfast/bench/flows.py (what `genfast bench --suite flows` times); see suite.py."""

import pytest

from genfast.bench import flows

from .suite import params, run


@pytest.mark.parametrize("case, provider", params(flows.cases))
def test_flows(benchmark, request, case, provider):
    run(benchmark, request, case, provider)
