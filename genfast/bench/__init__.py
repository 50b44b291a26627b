"""Benchmarks behind `genfast bench` (genfast/bench/cli.py).

A suite is a function ``cases(device, full=False, sizes=None) -> list[Case]``
(see runner.py) returning the cases to time on ``device``: quick ones by
default, a longer and larger set when ``full``, or the given element counts.
Register it in SUITES to make `genfast bench --suite NAME` run it; the
pytest-benchmark files in benchmarks/ reuse the same cases.
"""

import inspect

import torch

from . import flows, multistep, noise, steps, training


def _steps_suite(device, full=False, sizes=None, dtype=torch.float32):
    """The steps suite: single-step rows (steps.py) and multistep rows (multistep.py)."""
    if "dtype" in inspect.signature(steps.cases).parameters:
        out = steps.cases(device, full=full, sizes=sizes, dtype=dtype)
    else:
        out = steps.cases(device, full=full, sizes=sizes)
    return out + multistep.cases(device, full=full, sizes=sizes, dtype=dtype)


SUITES = {
    "noise": noise.cases,
    "training": training.cases,
    "flows": flows.cases,
    "steps": _steps_suite,
}
