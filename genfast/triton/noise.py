"""The genfast noise stream in Triton (spec: shared/reference/noise-stream.md).

noise(seed, stream, sample, element) is built from three pieces:

* Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy
  as 1, 2, 3", SC'11): counter (element // 4, sample, stream, 0), key
  (seed & 0xffffffff, seed >> 32). Each round computes the 64-bit products
  M0 * c0 and M1 * c2 (M0 = 0xD2511F53, M1 = 0xCD9E8D57) and maps
      (c0, c1, c2, c3) -> (hi(M1 c2) ^ c1 ^ k0, lo(M1 c2), hi(M0 c0) ^ c3 ^ k1, lo(M0 c0)),
  with the key bumped by (0x9E3779B9, 0xBB67AE85) between rounds.
* Uniforms as Triton's ``uint_to_uniform_float``: i = int32(w), i < 0 -> ~i,
  u = float32(i) * 4.6566127342e-10.
* Box-Muller (Box & Muller, "A note on the generation of random normal
  deviates", Ann. Math. Stat. 1958) on the word pairs (w0, w1) and (w2, w3):
      r = sqrt(-2 ln max(1e-7, u1)),  (n_a, n_b) = r (cos 2 pi u2, sin 2 pi u2).

We write our own Philox instead of calling ``tl.philox`` so that the
known-answer tests exercise this code, and our own log / sincos so that the
float operations are exactly those of csrc/include/genfast/noise.h: under the
interpreter (numpy float32, no FMA) the normals are bit-identical to the C++
CPU kernels, and on a GPU we ask Triton not to contract into FMAs, as the CUDA
build does.

Public entry points (used by genfast/ops/noise.py): ``noise_normal`` and
``philox``, which call the registered ops ``genfast::noise_normal_triton`` and
``genfast::noise_philox_triton``.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

from triton.language.extra import libdevice

from .._checks import as_int64_bits
from .._inplace import register_inplace
from ..backend import triton_interpret
from ..reference.noise import key_words, split_items


# Philox4x32 constants (Random123 / cuRAND / tl.philox).
_PHILOX_M0 = tl.constexpr(0xD2511F53)
_PHILOX_M1 = tl.constexpr(0xCD9E8D57)
_PHILOX_W0 = tl.constexpr(0x9E3779B9)  # golden ratio
_PHILOX_W1 = tl.constexpr(0xBB67AE85)  # sqrt(3) - 1


@triton.jit
def _philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 on uint32 blocks (Salmon et al., SC'11).

    Per round: hi/lo halves of M0*c0 and M1*c2; the high halves are xored
    with the other two words and the key. tl.umulhi gives the high word;
    uint32 multiplication wraps, which is the low word.
    """
    for r in tl.static_range(10):
        p0_hi = tl.umulhi(c0, _PHILOX_M0)
        p1_hi = tl.umulhi(c2, _PHILOX_M1)
        # sanitize_overflow=False: wrap-around is the point, not a bug to trap
        # when the kernel is built with debug checks.
        p0_lo = tl.mul(c0, _PHILOX_M0, sanitize_overflow=False)
        p1_lo = tl.mul(c2, _PHILOX_M1, sanitize_overflow=False)
        c0 = p1_hi ^ c1 ^ k0
        c1 = p1_lo
        c2 = p0_hi ^ c3 ^ k1
        c3 = p0_lo
        if r < 9:
            k0 = tl.add(k0, _PHILOX_W0, sanitize_overflow=False)
            k1 = tl.add(k1, _PHILOX_W1, sanitize_overflow=False)
    return c0, c1, c2, c3


@triton.jit
def _mul(a, b, RN: tl.constexpr):
    """a * b rounded on its own, never fused into an FMA with a later add.

    On a GPU (RN) through libdevice's __nv_fmul_rn (PTX mul.rn.f32, which
    neither LLVM nor ptxas contracts): the kernel then gives the CPU kernels'
    bits whatever the compile options, also under torch.compile, whose
    inductor drops a user kernel's enable_fp_fusion=False. The interpreter
    (numpy) never fuses, so there it is a plain product.
    """
    if RN:
        return libdevice.mul_rn(a, b)
    else:
        return a * b


@triton.jit
def _uint_to_uniform(w):
    """uint32 word -> float32 in [0, 1] (Triton's uint_to_uniform_float)."""
    i = w.to(tl.int32, bitcast=True)
    # Arithmetic shift: i ^ (i >> 31) == (i < 0 ? ~i : i) without a select.
    i = i ^ (i >> 31)
    return i.to(tl.float32) * 4.6566127342e-10


@triton.jit
def _log_pos(x, RN: tl.constexpr):
    """ln x for positive normal float32 x, as genfast::log_pos (noise.h).

    x = m 2^e with m in [sqrt(1/2), sqrt(2)); ln x = e ln2 + ln(1 + f),
    f = m - 1, ln(1 + f) = f - f^2/2 + f^3 P(f) with P of degree 5 (see
    noise.h for the fit); ln2 split in two so e*ln2 is exact.
    """
    # Integer reduction with no select (musl's logf trick): subtracting the
    # bits of sqrt(1/2) borrows from the exponent exactly when the mantissa is
    # below sqrt(1/2)'s. x > 0, so the int32 difference cannot overflow.
    ix = x.to(tl.int32, bitcast=True) - 0x3F3504F3
    e = ix >> 23
    m = ((ix & 0x007FFFFF) + 0x3F3504F3).to(tl.float32, bitcast=True)
    f = m - 1.0  # exact
    # Every product that feeds a sum goes through _mul: see there.
    z = _mul(f, f, RN)
    p = _mul(-1.0224199295e-1, f, RN) + 1.6141176224e-1
    p = _mul(p, f, RN) - 1.7166906595e-1
    p = _mul(p, f, RN) + 1.9910238683e-1
    p = _mul(p, f, RN) - 2.4980573356e-1
    p = _mul(p, f, RN) + 3.3334690332e-1
    ef = e.to(tl.float32)
    # Same association as the C++ ((p * f) * z) so the rounding is the same.
    y = _mul(_mul(p, f, RN), z, RN)
    y = y + _mul(ef, -2.12194440e-4, RN)
    y = y - _mul(0.5, z, RN)
    r = f + y
    r = r + _mul(ef, 0.693359375, RN)
    return r


@triton.jit
def _round_small(v):
    # 1.5 * 2^23 pushes the fraction bits out of the mantissa: round to nearest
    # even for |v| < 2^22 with no libm call (and no FMA to spoil it).
    return (v + 12582912.0) - 12582912.0


@triton.jit
def _sincos_2pi(u, RN: tl.constexpr):
    """(sin 2 pi u, cos 2 pi u) for u in [0, 1], as genfast::sincos_2pi.

    Reduction in turns is exact (q = round(4u) and u - q/4 lose no bits); only
    the final multiply by 2 pi rounds. Cephes sinf/cosf on [-pi/4, pi/4], then
    the quadrant q & 3 swaps and signs the pair.
    """
    qf = _round_small(_mul(4.0, u, RN))
    a = (u - _mul(0.25, qf, RN)) * 6.28318530717958648
    z = _mul(a, a, RN)
    ps = _mul(-1.9515295891e-4, z, RN) + 8.3321608736e-3
    ps = _mul(ps, z, RN) - 1.6666654611e-1
    s = a + _mul(_mul(a, z, RN), ps, RN)
    pc = _mul(2.443315711809948e-5, z, RN) - 1.388731625493765e-3
    pc = _mul(pc, z, RN) + 4.166664568298827e-2
    c = (1.0 - _mul(0.5, z, RN)) + _mul(_mul(z, z, RN), pc, RN)
    # q in 0..4; q & 3 is the quadrant.
    q = qf.to(tl.int32).to(tl.uint32, bitcast=True)
    swap = (q & 1) != 0
    sin_sign = (q & 2) << 30
    cos_sign = (tl.add(q, 1, sanitize_overflow=False) & 2) << 30
    sn = (tl.where(swap, c, s).to(tl.uint32, bitcast=True) ^ sin_sign).to(tl.float32, bitcast=True)
    cs = (tl.where(swap, s, c).to(tl.uint32, bitcast=True) ^ cos_sign).to(tl.float32, bitcast=True)
    return sn, cs


@triton.jit
def _box_muller(w1, w2, RN: tl.constexpr):
    """(n_a, n_b) = r (cos th, sin th), r = sqrt(-2 ln max(1e-7, u1)), th = 2 pi u2."""
    u1 = _uint_to_uniform(w1)
    u1 = tl.where(u1 < 1e-7, 1e-7, u1)
    # sqrt_rn: IEEE-rounded, like the C++ kernels (tl.sqrt may be approximate).
    r = tl.sqrt_rn(-2.0 * _log_pos(u1, RN))
    sn, cs = _sincos_2pi(_uint_to_uniform(w2), RN)
    return r * cs, r * sn


@triton.jit
def quad_normals(q, item, k0, k1, stream, sample_offset, BLOCK: tl.constexpr,
                 RN: tl.constexpr):
    """[BLOCK, 4] normals of quads q of items ``item`` (genfast.randn's
    numbering: counter (q, sample_offset + item, stream, 0)): elements
    4q..4q+3, in element order. The key words, stream and sample offset
    arrive as 32-bit patterns (int32, see launch_words, or uint32) and are
    reinterpreted; sample_offset + items <= 2**32 is the caller's check."""
    zero = tl.zeros([BLOCK], dtype=tl.uint32)
    c1 = zero + (sample_offset.to(tl.uint32, bitcast=True) + item.to(tl.uint32))
    c2 = zero + stream.to(tl.uint32, bitcast=True)
    w0, w1, w2, w3 = _philox4x32_10(q.to(tl.uint32), c1, c2, zero,
                                    k0.to(tl.uint32, bitcast=True),
                                    k1.to(tl.uint32, bitcast=True))
    na, nb = _box_muller(w0, w1, RN)
    nc, nd = _box_muller(w2, w3, RN)
    # [BLOCK, 2, 2] indexed [., k, l] = element 2k + l; reshape gives [BLOCK, 4]
    # in element order, so each program stores contiguous runs of 4.
    return tl.reshape(tl.join(tl.join(na, nc), tl.join(nb, nd)), [BLOCK, 4])


# The key words, stream and sample offset change from call to call (e.g. one
# stream per sampler step): do not specialise on their values, or every new
# value divisible by 16 (or equal to 1) could compile another kernel.
@triton.jit(do_not_specialize=["k0", "k1", "stream", "sample_offset"])
def _noise_normal_kernel(out_ptr, total_quads, quads_per_item, item_numel,
                         k0, k1, stream, sample_offset, BLOCK: tl.constexpr,
                         RN: tl.constexpr):
    """Write normals for the quads g in [pid*BLOCK, (pid+1)*BLOCK).

    Quad g is (item, q) = (g // quads_per_item, g % quads_per_item); its four
    normals are elements 4q..4q+3 of that item, stored at
    item * item_numel + 4q + j when 4q + j < item_numel.
    """
    # int64 offsets: items * item_numel may exceed 2**31.
    g = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    live = g < total_quads
    item = g // quads_per_item
    q = g - item * quads_per_item
    # The 32-bit words arrive as int32 bit patterns (see _i32): reinterpret.
    vals = quad_normals(q, item, k0, k1, stream, sample_offset, BLOCK, RN)
    j = tl.arange(0, 4).to(tl.int64)
    elem = (4 * q)[:, None] + j[None, :]
    offs = (item * item_numel)[:, None] + elem
    mask = live[:, None] & (elem < item_numel)
    tl.store(out_ptr + offs, vals.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["k0", "k1"])
def _philox_kernel(counter_ptr, out_ptr, n, k0, k1, BLOCK: tl.constexpr):
    """Raw Philox words for n counters (int32 (n, 4) in, int32 (n, 4) out)."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    live = i < n
    src = counter_ptr + 4 * i
    c0 = tl.load(src + 0, mask=live, other=0).to(tl.uint32, bitcast=True)
    c1 = tl.load(src + 1, mask=live, other=0).to(tl.uint32, bitcast=True)
    c2 = tl.load(src + 2, mask=live, other=0).to(tl.uint32, bitcast=True)
    c3 = tl.load(src + 3, mask=live, other=0).to(tl.uint32, bitcast=True)
    w0, w1, w2, w3 = _philox4x32_10(c0, c1, c2, c3, k0.to(tl.uint32, bitcast=True),
                                    k1.to(tl.uint32, bitcast=True))
    dst = out_ptr + 4 * i
    tl.store(dst + 0, w0.to(tl.int32, bitcast=True), mask=live)
    tl.store(dst + 1, w1.to(tl.int32, bitcast=True), mask=live)
    tl.store(dst + 2, w2.to(tl.int32, bitcast=True), mask=live)
    tl.store(dst + 3, w3.to(tl.int32, bitcast=True), mask=live)


def _i32(word: int) -> int:
    """A uint32 word as the int32 with the same bits.

    Triton types a Python int argument by its value: int32 below 2**31, int64
    above. Passed as is, each of the four words of a launch (key halves,
    stream, sample offset) could be either, so seeds and streams alone would
    compile up to 16 variants of a kernel, one of them perhaps in the middle
    of a CUDA graph capture. Always int32: one variant.
    """
    return word - (1 << 32) if word >= (1 << 31) else word


def launch_words(seed: int, stream: int, sample_offset: int) -> tuple[int, int, int, int]:
    """(k0, k1, stream, sample_offset) as the kernels receive them: int32 bits."""
    k0, k1 = key_words(seed)
    return _i32(k0), _i32(k1), _i32(stream), _i32(sample_offset)


def _on_device(t: torch.Tensor):
    """Triton launches on the current CUDA device: make it ``t``'s (an out on
    cuda:1 while cuda:0 is current would otherwise run on the wrong GPU)."""
    if t.is_cuda and t.get_device() != torch.cuda.current_device():
        return torch.cuda.device(t.device)
    return contextlib.nullcontext()


# Products through libdevice's mul_rn on a GPU; plain (numpy never fuses) in
# the interpreter, which has no libdevice.
RN_PRODUCTS = not triton_interpret()


def _block(n: int, gpu_block: int) -> int:
    # The interpreter runs one program at a time in numpy: fewer, larger
    # programs are much faster there. On a GPU a fixed block keeps one compiled
    # kernel per dtype.
    if triton_interpret():
        return max(16, min(4096, triton.next_power_of_2(max(n, 1))))
    return gpu_block


@torch.library.triton_op("genfast::noise_normal_triton", mutates_args={"out"},
                         schema="(Tensor(a!) out, int seed, int stream, int sample_offset) -> ()")
def _noise_normal_op(out: torch.Tensor, seed: int, stream: int, sample_offset: int) -> None:
    items, item_numel = split_items(out.shape)
    quads_per_item = (item_numel + 3) // 4
    total_quads = items * quads_per_item
    if total_quads == 0:
        return
    # Element order is logical (row-major), whatever out's strides are.
    dst = out if out.is_contiguous() else torch.empty(out.shape, dtype=out.dtype, device=out.device)
    k0, k1, stream32, offset32 = launch_words(seed, stream, sample_offset)
    block = _block(total_quads, 256)
    grid = (triton.cdiv(total_quads, block),)
    with _on_device(out):
        torch.library.wrap_triton(_noise_normal_kernel)[grid](
            dst, total_quads, quads_per_item, item_numel, k0, k1, stream32, offset32,
            BLOCK=block, RN=RN_PRODUCTS, num_warps=4,
            # No FMA contraction, as the CUDA build: bit-identical normals. RN
            # keeps that under torch.compile too, which drops this option.
            enable_fp_fusion=False)
    if dst is not out:
        out.copy_(dst)


register_inplace("noise_normal_triton")


@torch.library.triton_op("genfast::noise_philox_triton", mutates_args=(),
                         schema="(Tensor counter, int seed) -> Tensor")
def _noise_philox_op(counter: torch.Tensor, seed: int) -> torch.Tensor:
    src = counter.contiguous()
    out = torch.empty_like(src)
    n = src.numel() // 4
    if n == 0:
        return out
    k0, k1, _, _ = launch_words(seed, 0, 0)
    block = _block(n, 256)
    grid = (triton.cdiv(n, block),)
    # Integer-only kernel: the flag changes nothing but silences Triton 3.9's
    # warning about the fp-fusion default.
    with _on_device(counter):
        torch.library.wrap_triton(_philox_kernel)[grid](src, out, n, k0, k1, BLOCK=block,
                                                        num_warps=4, enable_fp_fusion=False)
    return out


def noise_normal(out: torch.Tensor, seed: int, stream: int, sample_offset: int) -> None:
    """Fill ``out`` with noise(seed, stream, sample_offset + b, e) for item b
    (leading dim; a 0-d or 1-d tensor is one item) and element e (row-major).

    ``seed`` in [0, 2**64); it travels to the op as the int64 with the same bits.
    Computed in float32, rounded to out.dtype on store.
    """
    torch.ops.genfast.noise_normal_triton(out, as_int64_bits(seed), stream, sample_offset)


def philox(counter: torch.Tensor, seed: int) -> torch.Tensor:
    """Philox4x32-10 words (uint32 bits in int32) for an int32 counter tensor of
    shape (..., 4) and the 64-bit key ``seed`` in [0, 2**64)."""
    return torch.ops.genfast.noise_philox_triton(counter, as_int64_bits(seed))
