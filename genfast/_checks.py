"""Argument checks shared by the ops: every error names the argument."""

from __future__ import annotations

import functools
import math
import operator
import os

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_int(name: str, value, lo: int, hi: int) -> int:
    """``value`` must be a Python int (not bool) in [lo, hi).

    Under torch.compile an int argument may arrive as a SymInt (dynamic); the
    range check then becomes a guard.
    """
    if torch.compiler.is_compiling():  # eager calls already checked the types
        torch._check(lo <= value, lambda: f"{name} must be >= {lo}")
        torch._check(value < hi, lambda: f"{name} must be < {hi:#x}")
        return value
    if isinstance(value, (bool, float, torch.Tensor)) or not hasattr(value, "__index__"):
        raise TypeError(f"{name} must be a Python int, got {type(value).__name__} {value!r}")
    value = operator.index(value)  # accepts numpy integer scalars
    if not lo <= value < hi:
        raise ValueError(f"{name} must be in [{lo}, {hi:#x}), got {value}")
    return value


def check_shape(name: str, shape) -> tuple[int, ...]:
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of ints, got {type(shape).__name__}") from None
    out = []
    for i, d in enumerate(dims):
        if isinstance(d, bool) or not isinstance(d, int):
            try:
                d = operator.index(d)
            except TypeError:
                raise TypeError(f"{name}[{i}] must be an int, got {type(d).__name__} {d!r}") from None
        if d < 0:
            raise ValueError(f"{name}[{i}] must be >= 0, got {d} (shape {tuple(dims)})")
        out.append(d)
    return tuple(out)


def check_float_dtype(name: str, dtype) -> torch.dtype:
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be torch.float32, torch.float16 or torch.bfloat16, "
                        f"got {dtype}")
    return dtype


def as_int64_bits(value: int) -> int:
    """A uint64 as the int64 with the same bits (torch schemas carry int64)."""
    return value - (1 << 64) if value >= (1 << 63) else value


# ----------------------------------------------------------------- outputs
# Every op with an ``out=`` argument goes through these two helpers: the op
# calls them only when its own cheap test of the common case fails (see
# genfast/ops/noise.py), so checking costs nothing on the hot path.

def check_out(op: str, out, shape: tuple[int, ...], dtype=None) -> None:
    """``out`` must be a float Tensor of ``shape`` (and ``dtype`` if given)
    that autograd lets us write: not requiring grad while grad mode is on
    (as torch.randn(out=...) refuses), and not an inference tensor outside
    inference mode (the op itself refuses that too)."""
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{op}: out must be a Tensor, got {type(out).__name__}")
    if tuple(out.shape) != shape:
        raise ValueError(f"{op}: out has shape {tuple(out.shape)} but shape is {shape}")
    check_float_dtype("out.dtype", out.dtype)
    if dtype is not None and dtype != out.dtype:
        raise TypeError(f"{op}: dtype={dtype} does not match out.dtype={out.dtype}")
    check_writable(op, "out", out)


def check_writable(op: str, name: str, t: torch.Tensor) -> None:
    """Refuse to write a tensor that requires grad while grad mode is on, or
    an inference tensor outside inference mode: what the ops themselves do
    (csrc/bindings/ops.cpp def_inplace, genfast/_inplace.py), checked before
    any work with a message naming the wrapper's argument."""
    if t.requires_grad and torch.is_grad_enabled():
        raise RuntimeError(
            f"{op}: {name} requires grad; ops that write into a tensor do not support "
            f"autograd (as torch.randn(out=...)): pass a tensor that does not require "
            f"grad, e.g. {name}.detach(), or call under torch.no_grad()")
    if (not torch.compiler.is_compiling()  # dynamo cannot trace is_inference()
            and t.is_inference() and not torch.is_inference_mode_enabled()):
        raise RuntimeError(f"{op}: {name} is an inference tensor and cannot be written "
                           f"outside torch.inference_mode() (clone it first)")


@functools.cache
def _device_memory(device_type: str, index: int | None) -> int | None:
    """Total memory in bytes of a device, or None when unknown. Cached: it
    does not change, and a CUDA query is not free."""
    if device_type == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None
    if device_type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_properties(index or 0).total_memory
    return None


def new_output(op: str, shape, dtype, device) -> torch.Tensor:
    """A fresh tensor of ``shape`` / ``dtype`` on ``device``, after checking
    that it can exist there: a shape larger than the device's whole memory is
    refused at once, naming the shape, rather than attempted."""
    shape = check_shape("shape", shape)
    dtype = check_float_dtype("dtype", torch.float32 if dtype is None else dtype)
    dev = torch.device("cpu" if device is None else device)
    numel = math.prod(shape)
    nbytes = numel * dtype.itemsize
    # (Under torch.compile the shape is the compiled code's own; skip the
    # query, which dynamo cannot trace.)
    total = None if torch.compiler.is_compiling() else _device_memory(dev.type, dev.index)
    if total is not None and nbytes > total:
        raise ValueError(f"{op}: shape {shape} needs {nbytes / 2**30:.1f} GiB but {dev} has "
                         f"{total / 2**30:.1f} GiB of memory in all")
    try:
        return torch.empty(shape, dtype=dtype, device=dev)
    except RuntimeError as e:  # torch.OutOfMemoryError is one
        raise MemoryError(f"{op}: cannot allocate shape {shape} ({nbytes / 2**30:.2f} GiB) on "
                          f"{dev}: {str(e).splitlines()[0]}") from None
