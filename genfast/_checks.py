"""Argument checks shared by the ops: every error names the argument."""

from __future__ import annotations

import operator

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
