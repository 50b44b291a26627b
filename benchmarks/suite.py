"""What every benchmarks/bench_<suite>.py shares: the settings from the
environment, one pytest param per (case, provider) of a genfast bench suite,
and the timed call.

pytest-benchmark does its own calibration and rounds; it does not interleave
providers, so on a noisy machine prefer `genfast bench` for ratios.
"""

import os

import pytest
import torch

from genfast.bench import call_suite
from genfast.bench.cli import DTYPES, _sizes
from genfast.bench.runner import size_label

DEVICE = torch.device(os.environ.get("GENFAST_BENCH_DEVICE")
                      or ("cuda" if torch.cuda.is_available() else "cpu"))
FULL = os.environ.get("GENFAST_BENCH_FULL", "") not in ("", "0")
SIZES = _sizes(os.environ["GENFAST_BENCH_SIZES"]) if os.environ.get("GENFAST_BENCH_SIZES") else None
DTYPE = DTYPES[os.environ.get("GENFAST_BENCH_DTYPE") or "float32"]


def params(cases):
    """One pytest param per provider of every case of a suite's ``cases`` (a
    suite whose cases() takes no dtype yet gives none for float16 / bfloat16)."""
    tag = "" if DTYPE == torch.float32 else f"-{str(DTYPE).removeprefix('torch.')}"
    return [pytest.param(case, provider, id=f"{case.op}-{size_label(case.numel)}-{case.mode}"
                                            f"-{provider.name}{tag}")
            for case in call_suite(cases, DEVICE, FULL, SIZES, DTYPE)
            for provider in case.providers]


def _sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def run(benchmark, request, case, provider):
    """Time one provider of one case, grouped by op + size + mode so that
    providers are shown side by side."""
    if provider.skip:
        pytest.skip(provider.skip)
    if "compile" in provider.name and request.config.getoption("benchmark_disable"):
        pytest.skip("smoke run (--benchmark-disable): torch.compile providers only when timing")
    fn = provider.make()  # untimed set-up (buffers, compilation)
    benchmark.group = f"{case.op} {size_label(case.numel)} {case.mode}"
    benchmark.extra_info.update(provider=provider.name, numel=case.numel, mode=case.mode,
                                bytes_moved=case.bytes_moved, device=str(DEVICE),
                                dtype=case.dtype)

    def call():  # on CUDA, time the kernels rather than their launch
        fn()
        _sync()
    benchmark(call)
