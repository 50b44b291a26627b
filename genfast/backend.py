"""Which backends exist, which one runs an op, and why a backend is missing.

Backends: ``reference`` (pure PyTorch, the spec), ``cpu`` (C++ extension),
``cuda`` (CUDA C++ extension), ``triton``; ``auto`` picks the fastest one that
can run on the tensors' device. Selection is global (`set_backend`), scoped
(`use_backend`) or per call (``backend=``). Resolution reads only Python state,
never tensor values, so it is free under torch.compile and CUDA graphs.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os

import torch

from ._extension import CPU_LIB, CUDA_LIB

BACKENDS = ("auto", "reference", "cpu", "cuda", "triton")
_current = "auto"


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run here; the message says why."""


def triton_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _triton_status() -> tuple[bool, str]:
    if importlib.util.find_spec("triton") is None:
        return False, "triton is not installed (pip install triton)"
    if not hasattr(torch.library, "triton_op"):
        return False, f"torch {torch.__version__} has no torch.library.triton_op (needs >= 2.6)"
    if torch.cuda.is_available() or triton_interpret():
        return True, ""
    return False, "no GPU (set TRITON_INTERPRET=1 before importing triton to run it on the CPU)"


@functools.cache
def availability() -> dict[str, tuple[bool, str]]:
    """backend -> (usable, why not). Computed once: it looks up modules and
    devices, which would cost tens of microseconds on every op call."""
    triton_ok, triton_why = _triton_status()
    if not CUDA_LIB.loaded:
        cuda = (False, CUDA_LIB.reason)
    elif not torch.cuda.is_available():
        cuda = (False, "no GPU visible to torch")
    else:
        cuda = (True, "")
    return {
        "reference": (True, ""),
        "cpu": (CPU_LIB.loaded, CPU_LIB.reason),
        "cuda": cuda,
        "triton": (triton_ok, triton_why),
    }


def _check_name(name: str) -> None:
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {name!r}")


def _require(name: str) -> None:
    ok, why = availability()[name]
    if not ok:
        raise BackendUnavailableError(f"genfast backend {name!r} is not available: {why}")


def set_backend(name: str) -> None:
    """Make ``name`` the default backend for every genfast op (process-wide,
    shared by all threads: it is read at trace time by torch.compile)."""
    global _current
    _check_name(name)
    if name != "auto":
        _require(name)
    _current = name


def get_backend() -> str:
    return _current


@contextlib.contextmanager
def use_backend(name: str):
    """Run the body with ``name`` as the default backend (process-wide, like
    `set_backend`; restored on exit, also on error)."""
    global _current
    previous = _current
    set_backend(name)
    try:
        yield
    finally:
        _current = previous


def resolve(name: str | None, device: torch.device) -> str:
    """The concrete backend that runs an op on ``device``."""
    name = _current if name is None else name
    _check_name(name)
    avail = availability()
    if name == "auto":
        order = ("cpu", "reference") if device.type == "cpu" else ("cuda", "triton", "reference")
        for candidate in order:
            if avail[candidate][0] and _fits(candidate, device):
                return candidate
        return "reference"
    _require(name)
    if not _fits(name, device):
        raise BackendUnavailableError(
            f"genfast backend {name!r} cannot run on device {device}: "
            + {"cpu": "it runs on CPU tensors",
               "cuda": "it runs on CUDA tensors",
               "triton": "on the CPU it needs TRITON_INTERPRET=1"}[name])
    return name


def _fits(name: str, device: torch.device) -> bool:
    if name == "cpu":
        return device.type == "cpu"
    if name == "cuda":
        return device.type == "cuda"
    if name == "triton":
        return device.type == "cuda" or (device.type == "cpu" and triton_interpret())
    return True
