"""The noise stream as ops: ``genfast.randn`` and the raw Philox words.

Spec: shared/reference/noise-stream.md; reference: genfast/reference/noise.py;
kernels: csrc/include/genfast/noise.h (math), csrc/cpu/noise.cpp,
csrc/cuda/noise.cu, genfast/triton/noise.py.

Registered ops (namespace ``genfast``):
  noise_normal(Tensor(a!) out, SymInt seed, SymInt stream, SymInt sample_offset) -> ()
  noise_philox(Tensor counter, SymInt seed) -> Tensor
  noise_normal_reference(...)  the reference as an op, so torch.compile treats it
                               as opaque (see below); Triton's are in genfast/triton.
The seed travels as the int64 with the same bits as the uint64 seed.
"""

from __future__ import annotations

import torch

from .. import backend as _backend
from .._checks import (FLOAT_DTYPES, as_int64_bits, check_int, check_out, check_shape,
                       new_output)
from .._inplace import register_inplace
from .._extension import CPU_LIB
from ..reference import noise as _ref

U64, U32, I64_MAX = 1 << 64, 1 << 32, 1 << 63
_SHAPE_TYPES = (tuple, torch.Size)

if CPU_LIB.loaded:
    # The overload itself, looked up once: calling it skips the packet's
    # overload resolution on every call.
    _NOISE_NORMAL = torch.ops.genfast.noise_normal.default

    @torch.library.register_fake("genfast::noise_normal")
    def _noise_normal_fake(out, seed, stream, sample_offset):
        return None

    @torch.library.register_fake("genfast::noise_philox")
    def _noise_philox_fake(counter, seed):
        # The kernels return a fresh contiguous tensor whatever counter's
        # strides (empty_like would copy a transposed counter's layout).
        return counter.new_empty(counter.shape)


@torch.library.custom_op("genfast::noise_normal_reference", mutates_args={"out"})
def _noise_normal_reference(out: torch.Tensor, seed: int, stream: int, sample_offset: int) -> None:
    # An op rather than inline PyTorch: inductor fed the reference's ten rounds
    # of int64 Philox arithmetic took over ten minutes to compile (torch 2.13),
    # so `backend="reference"` inside torch.compile would look like a hang.
    out.copy_(_ref.randn(tuple(out.shape), seed % U64, stream, sample_offset, out.dtype,
                         out.device))


@_noise_normal_reference.register_fake
def _(out, seed, stream, sample_offset):
    return None


register_inplace("noise_normal_reference")


def _check_stream_args(seed, stream, sample_offset, items):
    seed = check_int("seed", seed, 0, U64)
    stream = check_int("stream", stream, 0, U32)
    sample_offset = check_int("sample_offset", sample_offset, 0, U32)
    if items > 0 and sample_offset + items > U32:
        raise ValueError(f"sample_offset + batch size must be <= 2**32 (samples are 32-bit), "
                         f"got sample_offset={sample_offset} with {items} items")
    return seed, stream, sample_offset


def _check_item_size(shape: tuple[int, ...]) -> None:
    items, numel = _ref.split_items(shape)
    if numel > 4 * U32:
        raise ValueError(f"shape {shape}: at most 2**34 elements per item (the element "
                         f"counter is 32-bit and counts groups of 4), got {numel}")


def randn(shape, *, seed: int, stream: int = 0, sample_offset: int = 0, dtype=None,
          device=None, backend: str | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """Standard normal noise from the genfast stream.

    Element ``e`` (row-major within an item) of item ``b`` (index along the
    leading dimension) is ``noise(seed, stream, sample_offset + b, e)``; a 0-d
    or 1-d shape is a single item. So a batch of 8 equals 8 batches of 1 drawn
    with sample offsets 0..7, on every backend, thread count and world size.

    Args:
        shape: output shape (sequence of ints, or an int).
        seed: int in [0, 2**64).  stream: int in [0, 2**32), what the noise is
        for (e.g. the sampler step).  sample_offset: int in [0, 2**32), the
        sample index of item 0.
        dtype: float32 (default), float16 or bfloat16; computed in float32.
        device: where to allocate (default CPU); ignored when ``out`` is given.
        backend: "auto", "reference", "cpu", "cuda" or "triton" (default: the
            current one, see genfast.set_backend).
        out: write into this tensor (its shape must be ``shape``); returned.
            It must not require grad (unless under torch.no_grad()), as for
            torch.randn(out=...); its version counter moves, so autograd
            notices if it was saved for backward.
    """
    # The common case is recognised with a few attribute reads; anything
    # unusual (a list shape, a numpy int, a bad value) takes the full checks,
    # which raise naming the argument. The C++ op refuses an out that requires
    # grad or is an inference tensor itself; for the other backends the full
    # checks run below. This keeps
    # the wrapper within ~1 us of the raw op: a sampler calls it every step.
    if out is None:  # everything is checked before allocating
        shape = check_shape("shape", shape)
        _check_item_size(shape)
        seed, stream, sample_offset = _check_stream_args(seed, stream, sample_offset,
                                                         _ref.split_items(shape)[0])
        out = new_output("genfast.randn", shape, dtype, device)
    else:
        if type(shape) is int:
            shape = (shape,)
        if (type(shape) not in _SHAPE_TYPES or out.shape != shape or out.dtype not in FLOAT_DTYPES
                or (dtype is not None and dtype != out.dtype)):
            check_out("genfast.randn", out, check_shape("shape", shape), dtype)
        # (sample_offset + batch <= 2**32 is left to the op: the C++ op checks
        # it, and the Python backends run the full checks below.)
        if not (type(seed) is int and type(stream) is int and type(sample_offset) is int
                and 0 <= seed < U64 and 0 <= stream < U32 and 0 <= sample_offset < U32):
            seed, stream, sample_offset = _check_stream_args(
                seed, stream, sample_offset, out.shape[0] if out.dim() > 1 else 1)
    dev = "cpu" if out.is_cpu else out.device.type
    which = (_backend._resolved.get((backend or _backend.get_backend(), dev))
             or _backend.resolve(backend, dev))
    if which == "cpu" or which == "cuda":
        _NOISE_NORMAL(out, seed - U64 if seed >= I64_MAX else seed, stream, sample_offset)
        return out
    # Python backends: the checks the C++ op makes.
    check_out("genfast.randn", out, tuple(out.shape), dtype)
    _check_item_size(tuple(out.shape))
    _check_stream_args(seed, stream, sample_offset, out.shape[0] if out.dim() > 1 else 1)
    if which == "triton":
        from ..triton import noise as _triton_noise
        _triton_noise.noise_normal(out, seed, stream, sample_offset)
    else:
        torch.ops.genfast.noise_normal_reference(out, as_int64_bits(seed), stream, sample_offset)
    return out


def philox(counter: torch.Tensor, seed: int, *, backend: str | None = None) -> torch.Tensor:
    """Philox4x32-10 words (uint32 bits in int32) for an int32 counter tensor of
    shape (..., 4) and a 64-bit key ``seed``: the raw generator, for tests and
    for users who build their own noise."""
    if not isinstance(counter, torch.Tensor) or counter.dtype != torch.int32:
        raise TypeError("counter must be an int32 Tensor of shape (..., 4)")
    if counter.dim() == 0 or counter.shape[-1] != 4:
        raise ValueError(f"counter must have shape (..., 4), got {tuple(counter.shape)}")
    seed = check_int("seed", seed, 0, U64)
    which = _backend.resolve(backend, counter.device)
    if which in ("cpu", "cuda"):
        return torch.ops.genfast.noise_philox(counter, as_int64_bits(seed))
    if which == "triton":
        from ..triton import noise as _triton_noise
        return _triton_noise.philox(counter, seed)
    return _ref.philox(counter, seed)
