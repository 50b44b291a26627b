// Scalar transcendental building blocks of the flow layers (spline.h,
// coupling.h), overloaded for float and double.
//
// float: our own branch-free Cephes polynomials (+,-,*,/ and bit operations
// only), so the CPU loops auto-vectorise without -ffast-math and CUDA runs the
// same code; relative error ~1-2 ulp. Arguments are clamped where the true
// result would overflow or underflow float32: finite inputs give finite
// outputs (exp saturates at ~3.4e38 instead of returning inf).
// double: the C library (the float64 path exists for gradcheck, not speed).
#pragma once
#include <math.h>
#include <stdint.h>

#include "genfast/macros.h"
#include "genfast/noise.h"  // f32_bits, bits_f32, log_pos

namespace genfast {

GENFAST_HD float fl_min(float a, float b) { return a < b ? a : b; }
GENFAST_HD float fl_max(float a, float b) { return a > b ? a : b; }
GENFAST_HD double fl_min(double a, double b) { return a < b ? a : b; }
GENFAST_HD double fl_max(double a, double b) { return a > b ? a : b; }

GENFAST_HD float fl_sqrt(float x) { return GENFAST_SQRTF(x); }
GENFAST_HD double fl_sqrt(double x) { return sqrt(x); }

// e^x. x = n ln2 + r, |r| <= ln2/2 (ln2 split in two so n ln2 is exact), Cephes
// expf polynomial for e^r, 2^n built in the exponent bits. The clamp keeps n in
// the normal range: e^x below ~1e-38 returns ~1e-38, above ~2.4e38 saturates.
GENFAST_HD float fl_exp(float x) {
  x = fl_min(fl_max(x, -87.3f), 88.37f);
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  const float z = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float er = p * z + r + 1.0f;
  const int32_t ni = (int32_t)n;
  return er * bits_f32((uint32_t)(ni + 127) << 23);
}
GENFAST_HD double fl_exp(double x) { return exp(x); }

// ln x for x > 0 (subnormals are read as the smallest normal float).
GENFAST_HD float fl_log(float x) { return log_pos(fl_max(x, 1.17549435e-38f)); }
GENFAST_HD double fl_log(double x) { return log(x); }

// Logistic sigmoid 1 / (1 + e^-x), accurate on both sides: e = e^-|x| <= 1.
GENFAST_HD float fl_sigmoid(float x) {
  const float e = fl_exp(-(x < 0.0f ? -x : x));
  const float inv = 1.0f / (1.0f + e);
  return x >= 0.0f ? inv : e * inv;
}
GENFAST_HD double fl_sigmoid(double x) {
  const double e = exp(-fabs(x));
  return x >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
}

// ln(1 + e) for e >= 0 without losing e's low bits: with u = 1 + e rounded,
// ln(u) * e / (u - 1) corrects for the rounding of u (Goldberg 1991, thm. 4).
GENFAST_HD float fl_log1p_pos(float e) {
  const float u = 1.0f + e;
  const float um1 = u - 1.0f;
  return um1 == 0.0f ? e : fl_log(u) * (e / (um1 == 0.0f ? 1.0f : um1));
}

// softplus(x) = ln(1 + e^x) = max(x, 0) + ln(1 + e^-|x|); relative accuracy
// matters (a knot derivative is min_derivative + softplus, and a slope).
GENFAST_HD float fl_softplus(float x) {
  const float ax = x < 0.0f ? -x : x;
  return fl_max(x, 0.0f) + fl_log1p_pos(fl_exp(-ax));
}
GENFAST_HD double fl_softplus(double x) { return fmax(x, 0.0) + log1p(exp(-fabs(x))); }

// atan, Cephes atanf: reduce |x| to [0, tan(pi/8)] by x -> -1/x (+pi/2) or
// (x-1)/(x+1) (+pi/4), both computed and selected so the code stays branch-free.
GENFAST_HD float fl_atan(float x) {
  const float ax = x < 0.0f ? -x : x;
  const bool big = ax > 2.414213562373095f;
  const bool mid = ax > 0.4142135623730950f;
  const float safe = ax > 1e-30f ? ax : 1e-30f;
  float r = big ? -1.0f / safe : (mid ? (ax - 1.0f) / (ax + 1.0f) : ax);
  const float y0 = big ? 1.5707963267948966f : (mid ? 0.7853981633974483f : 0.0f);
  const float z = r * r;
  float p = 8.05374449538e-2f;
  p = p * z - 1.38776856032e-1f;
  p = p * z + 1.99777106478e-1f;
  p = p * z - 3.33329491539e-1f;
  const float y = y0 + (p * z * r + r);
  return x < 0.0f ? -y : y;
}
GENFAST_HD double fl_atan(double x) { return atan(x); }

// tanh: Cephes tanhf polynomial for |x| < 0.625, 1 - 2 / (e^{2|x|} + 1) above
// (no cancellation there); fl_exp saturates, so large |x| gives exactly +-1.
GENFAST_HD float fl_tanh(float x) {
  const float ax = x < 0.0f ? -x : x;
  const float z = x * x;
  float p = -5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  const float small = p * z * x + x;
  const float big = 1.0f - 2.0f / (fl_exp(2.0f * ax) + 1.0f);
  return ax < 0.625f ? small : (x < 0.0f ? -big : big);
}
GENFAST_HD double fl_tanh(double x) { return tanh(x); }

}  // namespace genfast
