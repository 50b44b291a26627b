"""Benchmarks behind `genfast bench` (genfast/bench/cli.py).

A suite is a function ``cases(device, full=False, sizes=None) -> list[Case]``
(see runner.py) returning the cases to time on ``device``: quick ones by
default, a longer and larger set when ``full``, or the given element counts.
Register it in SUITES to make `genfast bench --suite NAME` run it; the
pytest-benchmark files in benchmarks/ reuse the same cases.
"""

from . import flows, loops, noise, steps, training

SUITES = {
    "noise": noise.cases,
    "training": training.cases,
    "flows": flows.cases,
    "steps": steps.cases,
    "loops": loops.cases,
}
