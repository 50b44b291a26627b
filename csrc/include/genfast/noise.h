// Per-element math of the genfast noise stream (shared/reference/noise-stream.md):
// Philox words -> uniforms -> Box-Muller normals (Box & Muller, "A note on the
// generation of random normal deviates", Ann. Math. Stat. 1958).
//
// The transcendental functions are our own branch-free polynomials, written
// with nothing but IEEE +,-,*,sqrt and integer bit operations. That buys three
// things: the CPU loops auto-vectorise (no libm calls), the result is the same
// bit for bit on every CPU ISA and on CUDA (built without FMA contraction), and
// the error against a correctly rounded libm stays near 1 ulp, far inside the
// spec's 1e-5 (|n| <= sqrt(-2 ln 1e-7) ~= 5.68 always).
#pragma once
#include <stdint.h>

#include "genfast/macros.h"
#include "genfast/philox.h"

namespace genfast {

GENFAST_HD uint32_t f32_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  return __builtin_bit_cast(uint32_t, f);
#endif
}

GENFAST_HD float bits_f32(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  return __builtin_bit_cast(float, u);
#endif
}

// The math below is written once, generic over the "lanes" type L that does
// the arithmetic: ScalarLanes (plain float / int32_t: CUDA, one value at a
// time) or a CPU SIMD type (csrc/cpu/noise.cpp: GCC vector extensions, N
// floats per value). L supplies only what C++ operators cannot say alike for
// both: L::F / L::I (float and int32 value types), bits / from_bits
// (reinterpretation), to_float / to_int (int32 <-> float conversion), splat,
// max (of non-NaN values) and sqrt (IEEE, correctly rounded). Every float operation is an operator on
// L::F, element-wise IEEE, in the same order for every L: the same bits on
// every CPU ISA, on CUDA (--fmad=false) and in Triton (genfast/triton/noise.py
// mirrors these functions op for op). The CPU loops pass several registers'
// worth of lanes at once, so the independent dependency chains of the long
// polynomials interleave instruction by instruction.
struct ScalarLanes {
  using F = float;
  using I = int32_t;
  GENFAST_HD I bits(F f) { return (int32_t)f32_bits(f); }
  GENFAST_HD F from_bits(I i) { return bits_f32((uint32_t)i); }
  GENFAST_HD F to_float(I i) { return (float)i; }
  GENFAST_HD I to_int(F f) { return (int32_t)f; }  // only ever given integral values
  GENFAST_HD F splat(float x) { return x; }
  GENFAST_HD F max(F x, float y) { return x < y ? y : x; }  // never given a NaN
  GENFAST_HD F sqrt(F x) { return GENFAST_SQRTF(x); }
};

// Triton's uint_to_uniform_float: fold the sign away (i < 0 -> ~i) and scale
// by ~2^-31. The result lies in [0, 1]: the largest words round up to 1.0f.
// The word comes as its int32 bit pattern.
template <class L>
GENFAST_HD typename L::F uniform_t(typename L::I i) {
  const typename L::I folded = i ^ (i >> 31);  // == (i < 0 ? ~i : i)
  return L::to_float(folded) * 4.6566127342e-10f;
}

// Natural log for positive normal floats (we only need [1e-7, 1]).
// x = m * 2^e with m in [sqrt(1/2), sqrt(2)); ln x = e ln2 + ln(1 + f), f = m - 1,
// ln(1 + f) = f - f^2/2 + f^3 P(f). ln2 is split in two so that e*ln2 adds no
// rounding error. P has degree 5, fitted (weighted minimax, float32
// coefficients) to |f^3 (P - exact)| <= 6.4e-8 on the whole interval: about
// one float ulp of ln(1 + f) at its ends and relatively tiny near f = 0, where
// r = sqrt(-2 ln x) is most sensitive (Cephes' degree 8 was 3 terms and ~20
// cycles of latency more for no visible gain). r is then within ~4e-7 of
// float64 for every float32 uniform; the normals within ~1e-6 (tests/test_noise_accuracy.py).
//
// The reduction is integer arithmetic with no select (musl's logf trick):
// subtracting the bits of sqrt(1/2) borrows from the exponent exactly when the
// mantissa is below sqrt(1/2)'s, so e and m come out already adjusted. (A
// `low ? a : b` select here let GCC duplicate the whole polynomial and sqrt
// for both arms and blend at the end: twice the work.)
template <class L>
GENFAST_HD typename L::F log_pos_t(typename L::F x) {
  using F = typename L::F;
  using I = typename L::I;
  // x > 0, so the int32 difference cannot overflow; >> is arithmetic (defined so
  // since C++20, and what every compiler we build with, nvcc included, does).
  const I ix = L::bits(x) - 0x3f3504f3;                  // 0x3f3504f3 = sqrt(1/2)
  const I e = ix >> 23;                                  // x = m * 2^e
  const F m = L::from_bits((ix & 0x007fffff) + 0x3f3504f3);  // [sqrt(1/2), sqrt(2))
  const F f = m - 1.0f;                                  // exact
  const F z = f * f;
  F p = L::splat(-1.0224199295e-1f);
  p = p * f + 1.6141176224e-1f;
  p = p * f - 1.7166906595e-1f;
  p = p * f + 1.9910238683e-1f;
  p = p * f - 2.4980573356e-1f;
  p = p * f + 3.3334690332e-1f;
  const F ef = L::to_float(e);
  F y = p * f * z;
  y = y + ef * -2.12194440e-4f;
  y = y - 0.5f * z;
  F r = f + y;
  r = r + ef * 0.693359375f;
  return r;
}

// Round to nearest (ties to even) for |v| < 2^22, with no libm call: adding
// 1.5 * 2^23 pushes the fraction bits out of the mantissa.
template <class F>
GENFAST_HD F round_small_t(F v) {
  const float magic = 12582912.0f;
  return (v + magic) - magic;
}

template <class F>
struct SinCosT {
  F s, c;
};
using SinCos = SinCosT<float>;

// sin and cos of 2*pi*u for u in [0, 1]. Reducing in turns rather than radians
// is exact: q = round(4u) and y = u - q/4 lose no bits (for q >= 1, u and q/4
// are within a factor of 2: Sterbenz), so only the final y * 2pi is rounded.
// Cephes sinf/cosf polynomials on [-pi/4, pi/4], then the quadrant q & 3
// picks and signs the pair.
template <class L>
GENFAST_HD SinCosT<typename L::F> sincos_2pi_t(typename L::F u) {
  using F = typename L::F;
  using I = typename L::I;
  const F qf = round_small_t(4.0f * u);          // 0..4; q & 3 is the quadrant
  const F a = (u - 0.25f * qf) * 6.28318530717958648f;  // [-pi/4, pi/4]
  const F z = a * a;
  F ps = L::splat(-1.9515295891e-4f);
  ps = ps * z + 8.3321608736e-3f;
  ps = ps * z - 1.6666654611e-1f;
  const F s = a + a * z * ps;
  F pc = L::splat(2.443315711809948e-5f);
  pc = pc * z - 1.388731625493765e-3f;
  pc = pc * z + 4.166664568298827e-2f;
  const F c = (1.0f - 0.5f * z) + z * z * pc;
  const I q = L::to_int(qf);
  // Odd quadrants swap sin and cos: integer bit operations rather than a
  // select (a `?:` on wide GCC vectors is split up lane by lane).
  const I bs = L::bits(s), bc = L::bits(c);
  const I swap = (bs ^ bc) & -(q & 1);           // -(q & 1): all ones in odd quadrants
  const I sin_sign = (q & 2) << 30;              // 0 or the sign bit
  const I cos_sign = ((q + 1) & 2) << 30;
  SinCosT<F> r;
  r.s = L::from_bits((bs ^ swap) ^ sin_sign);
  r.c = L::from_bits((bc ^ swap) ^ cos_sign);
  return r;
}

// Box-Muller on one pair of words (int32 bit patterns):
// r = sqrt(-2 ln max(1e-7, u1)), theta = 2 pi u2.
template <class L>
GENFAST_HD SinCosT<typename L::F> box_muller_t(typename L::I w1, typename L::I w2) {
  using F = typename L::F;
  const F u1 = L::max(uniform_t<L>(w1), 1e-7f);
  const F r = L::sqrt(-2.0f * log_pos_t<L>(u1));
  const SinCosT<F> t = sincos_2pi_t<L>(uniform_t<L>(w2));
  SinCosT<F> n;
  n.c = r * t.c;  // n_a
  n.s = r * t.s;  // n_b
  return n;
}

// The scalar forms.
GENFAST_HD float uint_to_uniform(uint32_t w) { return uniform_t<ScalarLanes>((int32_t)w); }
GENFAST_HD float log_pos(float x) { return log_pos_t<ScalarLanes>(x); }
GENFAST_HD float round_small(float v) { return round_small_t(v); }
GENFAST_HD SinCos sincos_2pi(float u) { return sincos_2pi_t<ScalarLanes>(u); }
GENFAST_HD SinCos box_muller(uint32_t w1, uint32_t w2) {
  return box_muller_t<ScalarLanes>((int32_t)w1, (int32_t)w2);
}

struct F32x4 {
  float x, y, z, w;
};

// The four normals of counter (quad, sample, stream, 0): elements 4*quad + 0..3
// of item `sample` are (n_a(w0,w1), n_b(w0,w1), n_a(w2,w3), n_b(w2,w3)).
GENFAST_HD F32x4 normal4(uint32_t quad, uint32_t sample, uint32_t stream,
                         uint32_t k0, uint32_t k1) {
  U32x4 c;
  c.x = quad;
  c.y = sample;
  c.z = stream;
  c.w = 0u;
  const U32x4 w = philox4x32_10(c, k0, k1);
  const SinCos a = box_muller(w.x, w.y);
  const SinCos b = box_muller(w.z, w.w);
  F32x4 n;
  n.x = a.c;
  n.y = a.s;
  n.z = b.c;
  n.w = b.s;
  return n;
}

}  // namespace genfast
