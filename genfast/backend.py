"""Which backends exist, which one runs an op, and why a backend is missing.

Backends: ``reference`` (pure PyTorch, the spec), ``cpu`` (C++ extension),
``cuda`` (CUDA C++ extension), ``triton``; ``auto`` picks the fastest one that
can run on the tensors' device. Selection is process-wide (`set_backend`),
scoped to the current thread (`use_backend`) or per call (``backend=``).
Resolution reads only Python state, never tensor values, so it is free under
torch.compile and CUDA graphs; torch.compile guards on it, so code compiled
under one backend recompiles when called under another.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import threading

import torch

from ._extension import CPU_LIB, CUDA_LIB

BACKENDS = ("auto", "reference", "cpu", "cuda", "triton")
_default = "auto"  # set_backend: process-wide


class _ScopeStack:
    """One thread's open `use_backend` scopes, innermost last."""

    def __init__(self):
        self.open: list[tuple[object, str]] = []  # (scope token, backend)
        self.current: str | None = None  # backend of the innermost open scope


class _Scopes(threading.local):
    """Per thread: its _ScopeStack, made on the first `use_backend`.

    A threading.local rather than a ContextVar: torch.compile cannot read a
    ContextVar (it stops with "unsupported"), while it reads an attribute of a
    threading.local and guards on it in the calling thread. The default is a
    class attribute (no __init__), so reading it costs what a plain attribute
    read does: every op call reads it.
    """

    stack: _ScopeStack | None = None


_scopes = _Scopes()


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
    """Make ``name`` the default backend for every genfast op, in every thread
    (process-wide: read at trace time by torch.compile). An open `use_backend`
    scope still wins in its own thread."""
    global _default
    _check_name(name)
    if name != "auto":
        _require(name)
    _default = name


def get_backend() -> str:
    """The backend in force in this thread: the innermost open `use_backend`
    scope, else the process-wide default."""
    stack = _scopes.stack
    if stack is None or stack.current is None:
        return _default
    return stack.current


@contextlib.contextmanager
def use_backend(name: str):
    """Run the body with ``name`` as the backend of this thread.

    Scopes belong to the thread that opened them: other threads keep their
    own. They may close in any order (generators, interleaved coroutines):
    closing a scope removes exactly that scope, and the innermost one still
    open, or the process default, is in force again.
    """
    _check_name(name)
    if name != "auto":
        _require(name)
    # The stack is the opening thread's, also if a generator holding the scope
    # is closed from another thread.
    stack = _scopes.stack
    if stack is None:
        stack = _scopes.stack = _ScopeStack()
    token = object()
    stack.open.append((token, name))
    stack.current = name
    try:
        yield
    finally:
        stack.open[:] = [s for s in stack.open if s[0] is not token]
        stack.current = stack.open[-1][1] if stack.open else None


# (backend asked for, device type) -> backend that runs. Every op call
# resolves, and the answer never changes within a process (availability is
# fixed); errors are raised each time, never cached.
_resolved: dict[tuple[str, str], str] = {}


def resolve(name: str | None, device) -> str:
    """The concrete backend that runs an op on ``device`` (a torch.device or
    its type string, e.g. ``"cpu"``)."""
    if name is None:
        name = get_backend()
    if not isinstance(device, str):
        device = device.type
    which = _resolved.get((name, device))
    if which is None:
        which = _resolved[name, device] = _resolve(name, device)
    return which


def _resolve(name: str, device: str) -> str:
    _check_name(name)
    avail = availability()
    if name == "auto":
        order = ("cpu", "reference") if device == "cpu" else ("cuda", "triton", "reference")
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


def _fits(name: str, device: str) -> bool:
    if name == "cpu":
        return device == "cpu"
    if name == "cuda":
        return device == "cuda"
    if name == "triton":
        return device == "cuda" or (device == "cpu" and triton_interpret())
    return True
