"""pytest-benchmark view of the steps suite: the cases and providers of
genfast/bench/steps.py (what `genfast bench --suite steps` times), grouped by
op + size + mode so providers are shown side by side.

pytest-benchmark does its own calibration and rounds; it does not interleave
providers, so on a noisy machine prefer `genfast bench` for ratios.
"""

import os

import pytest
import torch

from genfast.bench import steps
from genfast.bench.cli import _sizes
from genfast.bench.runner import size_label

DEVICE = torch.device(os.environ.get("GENFAST_BENCH_DEVICE")
                      or ("cuda" if torch.cuda.is_available() else "cpu"))
FULL = os.environ.get("GENFAST_BENCH_FULL", "") not in ("", "0")
SIZES = _sizes(os.environ["GENFAST_BENCH_SIZES"]) if os.environ.get("GENFAST_BENCH_SIZES") else None

PARAMS = [pytest.param(case, provider,
                       id=f"{case.op}-{size_label(case.numel)}-{case.mode}-{provider.name}")
          for case in steps.cases(DEVICE, full=FULL, sizes=SIZES)
          for provider in case.providers]


def _sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


@pytest.mark.parametrize("case, provider", PARAMS)
def test_steps(benchmark, case, provider):
    if provider.skip:
        pytest.skip(provider.skip)
    fn = provider.make()  # untimed set-up (buffers, compilation)
    benchmark.group = f"{case.op} {size_label(case.numel)} {case.mode}"
    benchmark.extra_info.update(provider=provider.name, numel=case.numel, mode=case.mode,
                                bytes_moved=case.bytes_moved, device=str(DEVICE))

    def call():  # on CUDA, time the kernels rather than their launch
        fn()
        _sync()
    benchmark(call)
