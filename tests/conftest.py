"""Test configuration.

Without a GPU, Triton kernels run on its CPU interpreter, which must be
switched on before triton is first imported: do it here, before any test
module imports genfast (whose Triton backend imports triton lazily).
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import genfast  # noqa: E402


def available_backends() -> list[str]:
    return [name for name, (ok, _) in genfast.backend.availability().items() if ok]


def cpu_isas() -> list[str]:
    info = genfast.info()["cpu"]
    return info["isas"]


@pytest.fixture
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture
def isa_levels():
    """Yields a setter for the CPU ISA level and restores the default after."""
    if not genfast.backend.availability()["cpu"][0]:
        pytest.skip("the cpu backend is not built")
    before = torch.ops.genfast._cpu_isa("")
    yield lambda name: torch.ops.genfast._cpu_isa(name)
    torch.ops.genfast._cpu_isa(before)
