"""Accuracy of the noise math (csrc/include/genfast/noise.h, mirrored op for op
by genfast/triton/noise.py) against float64 Box-Muller on the same float32
uniforms, and bit-identity of the backends that share that math.

The spec allows 1e-5; the kernels' own polynomials are held to a much tighter
bound (MAX_ERR) so that a cheaper polynomial cannot quietly eat the margin.
Measured (exhaustively over every float32 u1 in a C++ harness): |r - r64| <=
~4e-7, |sincos - f64| <= ~1.1e-7, |n - n64| ~= 1e-6 at the worst pairs.
"""

import math

import numpy as np
import pytest
import torch

import genfast
from genfast.reference import noise as ref
from conftest import available_backends

MAX_ERR = 3e-6
TINY = float(np.float32(1e-7))  # the kernels clamp u1 at float32(1e-7)

HAVE_TRITON = "triton" in available_backends()
if HAVE_TRITON:
    import triton
    import triton.language as tl

    from genfast.triton import noise as tri

    @triton.jit
    def _bm_kernel(w_ptr, out_ptr, n, BLOCK: tl.constexpr, RN: tl.constexpr):
        """Box-Muller of chosen word quads through the Triton math helpers."""
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = offs < n
        w0 = tl.load(w_ptr + 4 * offs + 0, mask=m).to(tl.uint32, bitcast=True)
        w1 = tl.load(w_ptr + 4 * offs + 1, mask=m).to(tl.uint32, bitcast=True)
        w2 = tl.load(w_ptr + 4 * offs + 2, mask=m).to(tl.uint32, bitcast=True)
        w3 = tl.load(w_ptr + 4 * offs + 3, mask=m).to(tl.uint32, bitcast=True)
        a0, a1 = tri._box_muller(w0, w1, RN)
        b0, b1 = tri._box_muller(w2, w3, RN)
        tl.store(out_ptr + 4 * offs + 0, a0, mask=m)
        tl.store(out_ptr + 4 * offs + 1, a1, mask=m)
        tl.store(out_ptr + 4 * offs + 2, b0, mask=m)
        tl.store(out_ptr + 4 * offs + 3, b1, mask=m)


def float64_normals(words: torch.Tensor) -> torch.Tensor:
    """words (N, 4) int32 -> (N, 4) float64 normals, Box-Muller in float64 on
    the float32 uniforms (the spec's element order)."""
    u = ref.uint_to_uniform(words).double()
    u1 = torch.stack([u[:, 0], u[:, 2]], 1).clamp(min=TINY)
    u2 = torch.stack([u[:, 1], u[:, 3]], 1)
    r = torch.sqrt(-2.0 * torch.log(u1))
    th = 2.0 * math.pi * u2
    na, nb = r * torch.cos(th), r * torch.sin(th)
    return torch.stack([na[:, 0], nb[:, 0], na[:, 1], nb[:, 1]], 1)


@pytest.mark.skipif("cpu" not in available_backends(), reason="cpu backend not built")
def test_cpu_every_isa_against_float64(isa_levels):
    quads, seed, stream = 1 << 20, 0x5EED_0001_2345_6789, 5
    counters = torch.zeros(quads, 4, dtype=torch.int32)
    counters[:, 0] = torch.arange(quads, dtype=torch.int32)
    counters[:, 2] = stream
    want = float64_normals(ref.philox(counters, seed)).reshape(-1)
    for isa in genfast.info()["cpu"]["isas"]:
        isa_levels(isa)
        got = genfast.randn((4 * quads,), seed=seed, stream=stream, backend="cpu")
        err = (got.double() - want).abs().max().item()
        assert err < MAX_ERR, f"ISA {isa}: max |n - n64| = {err:.3g}"


def _targeted_words() -> torch.Tensor:
    """(N, 4) words whose u1 sweeps the hard cases: below and around the 1e-7
    clamp, tiny, every binade down from 1, and just below 1 (r -> 0), paired
    with u2 on and around every octant boundary."""
    i1 = [np.arange(0, 4096),                                    # u1 <= ~1.9e-6 (clamp at i ~ 215)
          np.arange(2**31 - 65536, 2**31),                       # u1 -> 1
          (2.0 ** np.linspace(8, 31, 60000, endpoint=False)).astype(np.int64)]  # log-spread
    i1 = np.concatenate(i1)
    octants = (np.arange(0, 9)[:, None] * 2**28 + np.arange(-2000, 2000)[None, :]).reshape(-1)
    octants = np.clip(octants, 0, 2**31 - 1)
    rng = np.random.default_rng(5)
    i2 = np.concatenate([octants, rng.integers(0, 2**31, i1.size - octants.size)])
    i2 = rng.permutation(i2)[: i1.size]
    # The folded int i is w for w >= 0 and ~w for w < 0: use both signs.
    w1 = np.where(np.arange(i1.size) % 2 == 0, i1, ~i1)
    w2 = np.where(np.arange(i2.size) % 3 == 0, i2, ~i2)
    words = np.stack([w1, w2, w1[::-1], w2[::-1]], 1).astype(np.int64)
    words = np.where(words >= 2**31, words - 2**32, words)
    return torch.from_numpy(words.astype(np.int32))


@pytest.mark.skipif(not HAVE_TRITON, reason="triton backend unavailable")
def test_targeted_uniforms_triton_math_against_float64():
    """The noise math on chosen words, through the Triton helpers (the same
    float operations as noise.h; the CPU/CUDA kernels are bit-identical to
    them, see test_triton_bit_identical_to_cpu)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    words = _targeted_words()
    out = torch.empty(words.shape, dtype=torch.float32, device=device)
    n, block = words.shape[0], 4096
    _bm_kernel[(triton.cdiv(n, block),)](words.to(device), out, n, BLOCK=block, RN=tri.RN_PRODUCTS)
    want = float64_normals(words)
    err = (out.cpu().double() - want).abs()
    assert torch.isfinite(out).all()
    assert err.max().item() < MAX_ERR, f"max |n - n64| = {err.max().item():.3g}"
    # r -> 0 as u1 -> 1: the error must shrink with it, not stay at float ulp(1).
    u1 = ref.uint_to_uniform(words[:, 0]).double()
    near1 = u1 > 1 - 2**-10
    assert (err[near1, :2] <= 1e-6 * want[near1, :2].abs() + 1e-7).all()


@pytest.mark.skipif(not HAVE_TRITON or "cpu" not in available_backends(),
                    reason="needs the cpu and triton backends")
def test_triton_bit_identical_to_cpu():
    device = "cuda" if torch.cuda.is_available() else "cpu"
    kw = dict(seed=0xC0FFEE_0000_0001, stream=7, sample_offset=3)
    cpu = genfast.randn((3, 20_003), backend="cpu", **kw)
    tri = genfast.randn((3, 20_003), backend="triton", device=device, **kw).cpu()
    assert torch.equal(cpu.view(torch.int32), tri.view(torch.int32))
