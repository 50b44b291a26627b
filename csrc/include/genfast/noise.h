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

// Triton's uint_to_uniform_float: fold the sign away (i < 0 -> ~i) and scale
// by ~2^-31. The result lies in [0, 1]: the largest words round up to 1.0f.
GENFAST_HD float uint_to_uniform(uint32_t w) {
  const int32_t i = (int32_t)w;
  const int32_t folded = i ^ (i >> 31);  // == (i < 0 ? ~i : i)
  return (float)folded * 4.6566127342e-10f;
}

// Natural log for positive normal floats (we only need [1e-7, 1]).
// x = m * 2^e with m in [sqrt(1/2), sqrt(2)); ln x = e ln2 + ln(1 + f), f = m - 1,
// with the Cephes logf minimax polynomial for ln(1 + f). ln2 is split in two so
// that e*ln2 adds no rounding error. Relative error ~1 ulp, also near x = 1
// where r = sqrt(-2 ln x) is most sensitive.
//
// The reduction is integer arithmetic with no select (musl's logf trick):
// subtracting the bits of sqrt(1/2) borrows from the exponent exactly when the
// mantissa is below sqrt(1/2)'s, so e and m come out already adjusted. (A
// `low ? a : b` select here let GCC duplicate the whole polynomial and sqrt
// for both arms and blend at the end: twice the work.)
GENFAST_HD float log_pos(float x) {
  // x > 0, so the int32 difference cannot overflow; >> is arithmetic (defined so
  // since C++20, and what every compiler we build with, nvcc included, does).
  const int32_t ix = (int32_t)f32_bits(x) - 0x3f3504f3;  // 0x3f3504f3 = sqrt(1/2)
  const int32_t e = ix >> 23;                            // x = m * 2^e
  const float m = bits_f32((uint32_t)((ix & 0x007fffff) + 0x3f3504f3));  // [sqrt(1/2), sqrt(2))
  const float f = m - 1.0f;                              // exact
  const float z = f * f;
  float p = 7.0376836292e-2f;
  p = p * f - 1.1514610310e-1f;
  p = p * f + 1.1676998740e-1f;
  p = p * f - 1.2420140846e-1f;
  p = p * f + 1.4249322787e-1f;
  p = p * f - 1.6668057665e-1f;
  p = p * f + 2.0000714765e-1f;
  p = p * f - 2.4999993993e-1f;
  p = p * f + 3.3333331174e-1f;
  const float ef = (float)e;
  float y = p * f * z;
  y = y + ef * -2.12194440e-4f;
  y = y - 0.5f * z;
  float r = f + y;
  r = r + ef * 0.693359375f;
  return r;
}

// Round to nearest (ties to even) for |v| < 2^22, with no libm call: adding
// 1.5 * 2^23 pushes the fraction bits out of the mantissa.
GENFAST_HD float round_small(float v) {
  const float magic = 12582912.0f;
  return (v + magic) - magic;
}

struct SinCos {
  float s, c;
};

// sin and cos of 2*pi*u for u in [0, 1]. Reducing in turns rather than radians
// is exact: x = u - round(u) and y = x - q/4 lose no bits, so only the final
// y * 2pi is rounded. Cephes sinf/cosf polynomials on [-pi/4, pi/4], then the
// quadrant q picks and signs the pair.
GENFAST_HD SinCos sincos_2pi(float u) {
  const float x = u - round_small(u);            // [-0.5, 0.5]
  const float qf = round_small(4.0f * x);        // quadrant, -2..2
  const float a = (x - 0.25f * qf) * 6.28318530717958648f;  // [-pi/4, pi/4]
  const float z = a * a;
  float ps = -1.9515295891e-4f;
  ps = ps * z + 8.3321608736e-3f;
  ps = ps * z - 1.6666654611e-1f;
  const float s = a + a * z * ps;
  float pc = 2.443315711809948e-5f;
  pc = pc * z - 1.388731625493765e-3f;
  pc = pc * z + 4.166664568298827e-2f;
  const float c = (1.0f - 0.5f * z) + z * z * pc;
  const uint32_t q = (uint32_t)(int32_t)qf;      // two's complement: q & 3 is the quadrant
  const bool swap = (q & 1u) != 0u;
  const uint32_t sin_sign = (q & 2u) << 30;
  const uint32_t cos_sign = ((q + 1u) & 2u) << 30;
  SinCos r;
  r.s = bits_f32(f32_bits(swap ? c : s) ^ sin_sign);
  r.c = bits_f32(f32_bits(swap ? s : c) ^ cos_sign);
  return r;
}

struct F32x4 {
  float x, y, z, w;
};

// Box-Muller on one pair of words: r = sqrt(-2 ln max(1e-7, u1)), theta = 2 pi u2.
GENFAST_HD SinCos box_muller(uint32_t w1, uint32_t w2) {
  float u1 = uint_to_uniform(w1);
  u1 = u1 < 1e-7f ? 1e-7f : u1;
  const float r = GENFAST_SQRTF(-2.0f * log_pos(u1));
  const SinCos t = sincos_2pi(uint_to_uniform(w2));
  SinCos n;
  n.c = r * t.c;  // n_a
  n.s = r * t.s;  // n_b
  return n;
}

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
