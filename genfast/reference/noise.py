"""Reference noise stream (spec: shared/reference/noise-stream.md).

noise(seed, stream, sample, element) is a pure function of four integers:
the 32-bit words of Philox4x32-10 (Salmon et al., "Parallel random numbers: as
easy as 1, 2, 3", SC'11) at counter (element // 4, sample, stream, 0) and key
(seed & 0xffffffff, seed >> 32), turned into uniforms as Triton's
``uint_to_uniform_float`` does, and into normals by Box-Muller (Box & Muller,
Ann. Math. Stat. 1958) on the pairs (w0, w1) and (w2, w3).

Everything here is plain int64 / float32 tensor arithmetic: slow, obvious, and
the thing every backend is tested against.
"""

from __future__ import annotations

import torch

M0, M1 = 0xD2511F53, 0xCD9E8D57
W0, W1 = 0x9E3779B9, 0xBB67AE85
MASK32 = 0xFFFFFFFF


def philox4x32_10_int(counter, key):
    """Philox4x32-10 on Python ints: ``counter`` 4 words, ``key`` 2 words."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for r in range(10):
        p0, p1 = M0 * c0, M1 * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 & MASK32, (p0 >> 32) ^ c3 ^ k1, p0 & MASK32
        if r < 9:
            k0, k1 = (k0 + W0) & MASK32, (k1 + W1) & MASK32
    return c0, c1, c2, c3


def key_words(seed: int) -> tuple[int, int]:
    """Philox key (k0, k1) = (seed & 0xffffffff, seed >> 32) of a 64-bit seed,
    given as the uint64 or as the int64 with the same bits."""
    return seed & MASK32, (seed >> 32) & MASK32


def _mulhilo(a: torch.Tensor, m: int):
    """(hi, lo) 32-bit halves of a * m, for int64 tensors holding uint32 values.

    Split m into 16-bit halves so no intermediate leaves int64's range.
    """
    t = a * (m & 0xFFFF)  # < 2**48
    u = a * (m >> 16)  # < 2**48
    hi = (u + (t >> 16)) >> 16
    lo = (((u & 0xFFFF) << 16) + t) & MASK32
    return hi, lo


def philox4x32_10(c0, c1, c2, c3, k0: int, k1: int):
    """Philox4x32-10 on int64 tensors of uint32 values (broadcasting)."""
    for r in range(10):
        hi0, lo0 = _mulhilo(c0, M0)
        hi1, lo1 = _mulhilo(c2, M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        if r < 9:
            k0, k1 = (k0 + W0) & MASK32, (k1 + W1) & MASK32
    return c0, c1, c2, c3


def philox(counter: torch.Tensor, seed: int) -> torch.Tensor:
    """Philox words for an int32 ``counter`` tensor of shape (..., 4).

    Words are uint32 bit patterns stored in int32, as the kernels return them.
    """
    c = counter.to(torch.int64) & MASK32
    words = philox4x32_10(c[..., 0], c[..., 1], c[..., 2], c[..., 3], *key_words(seed))
    w = torch.stack(words, dim=-1)
    return torch.where(w >= 2**31, w - 2**32, w).to(torch.int32)


def uint_to_uniform(w: torch.Tensor) -> torch.Tensor:
    """int64 tensor of uint32 words -> float32 uniforms in [0, 1] (Triton's mapping)."""
    i = torch.where(w >= 2**31, w - 2**32, w)  # reinterpret as int32
    i = torch.where(i < 0, -i - 1, i)  # ~i
    return i.to(torch.float32) * 4.6566127342e-10


def box_muller(u1: torch.Tensor, u2: torch.Tensor):
    """(n_a, n_b) = r (cos th, sin th), r = sqrt(-2 ln max(1e-7, u1)), th = 2 pi u2."""
    r = torch.sqrt(-2.0 * torch.log(torch.clamp(u1, min=1e-7)))
    th = 6.283185307179586 * u2
    return r * torch.cos(th), r * torch.sin(th)


def split_items(shape) -> tuple[int, int]:
    """(items, elements per item): the leading dimension is the batch; a 0-d or
    1-d shape is one item."""
    shape = tuple(shape)
    if len(shape) <= 1:
        return 1, (shape[0] if shape else 1)
    items = shape[0]
    numel = 1
    for s in shape[1:]:
        numel *= s
    return items, numel


def randn(shape, seed: int, stream: int = 0, sample_offset: int = 0,
          dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """Standard normals of ``shape``: element e of item b is
    noise(seed, stream, sample_offset + b, e)."""
    items, numel = split_items(shape)
    quads = (numel + 3) // 4
    dev = torch.device("cpu") if device is None else torch.device(device)
    q = torch.arange(quads, dtype=torch.int64, device=dev).view(1, quads)
    s = (sample_offset + torch.arange(items, dtype=torch.int64, device=dev)).view(items, 1)
    zero = torch.zeros((), dtype=torch.int64, device=dev)
    w0, w1, w2, w3 = philox4x32_10(q, s, zero + stream, zero, *key_words(seed))
    shp = (items, quads)
    na, nb = box_muller(uint_to_uniform(w0.expand(shp)), uint_to_uniform(w1.expand(shp)))
    nc, nd = box_muller(uint_to_uniform(w2.expand(shp)), uint_to_uniform(w3.expand(shp)))
    out = torch.stack([na, nb, nc, nd], dim=-1).reshape(items, quads * 4)[:, :numel]
    return out.reshape(tuple(shape)).to(dtype)
