"""Benchmarks behind `genfast bench` (genfast/bench/cli.py).

A suite is a function ``cases(device, full=False, sizes=None,
dtype=torch.float32) -> list[Case]`` (see runner.py) returning the cases to
time on ``device``: quick ones by default, a longer and larger set when
``full``, or the given element counts, in ``dtype`` (float32, float16 or
bfloat16). Register it in SUITES to make `genfast bench --suite NAME` run it;
the pytest-benchmark files in benchmarks/ reuse the same cases.

"steps" is steps.py (single-step samplers) + multistep.py; "loops" is
loops.py (which adds dropin.py's cases, the diffusers drop-in schedulers).
"""

from __future__ import annotations

import inspect
import sys

import torch

from . import flows, loops, multistep, noise, steps, training


def takes_dtype(fn) -> bool:
    """Whether a suite's ``cases`` accepts ``dtype=`` (every suite should; until
    all branches are merged some may not, and then run float32 only)."""
    try:
        return "dtype" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def call_suite(fn, device, full: bool = False, sizes=None, dtype=torch.float32) -> list:
    """``fn(device, full=, sizes=, dtype=)``, each case labelled with its dtype.
    A suite that takes no dtype gives its (float32) cases for float32 and
    nothing otherwise, with a note on stderr."""
    name = getattr(fn, "__module__", "?").rsplit(".", 1)[-1]
    if takes_dtype(fn):
        out = fn(device, full=full, sizes=sizes, dtype=dtype)
    elif dtype == torch.float32:
        out = fn(device, full=full, sizes=sizes)
    else:
        print(f"genfast bench: the {name} suite runs float32 only (its cases() takes no "
              f"dtype yet): left out of this {str(dtype).removeprefix('torch.')} run",
              file=sys.stderr)
        return []
    label = str(dtype).removeprefix("torch.")
    for case in out:
        case.dtype = label
    return out


def _join(*fns):
    def cases(device, full=False, sizes=None, dtype=torch.float32):
        return [c for fn in fns for c in call_suite(fn, device, full, sizes, dtype)]
    cases.parts = fns
    return cases


SUITES = {
    "noise": noise.cases,
    "training": training.cases,
    "flows": flows.cases,
    "steps": _join(steps.cases, multistep.cases),
    "loops": loops.cases,
}
