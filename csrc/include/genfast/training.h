// Per-element and per-item math of the training family (genfast.add_noise,
// genfast.diffusion_loss, genfast.vae): one definition for the CPU loops and
// the CUDA kernels. No torch, no loops. Reference: genfast/reference/training.py.
//
// Schedule kinds (genfast/schedules.py builds the tables):
//   kVP    discrete variance-preserving (Ho et al. 2020): integer timestep t
//          indexes a float64 table of rows [sqrt(abar_t), sqrt(1 - abar_t), snr_t,
//          sigma_t]; x_t = sqrt(abar) x0 + sqrt(1 - abar) eps.
//   kSigma sigma space / variance exploding (Karras et al. 2022, EDM): the float
//          timestep is sigma itself; x_t = x0 + sigma eps.
//   kFlow  rectified flow / flow matching (Lipman et al. 2023; Liu et al. 2023):
//          the float timestep is t = sigma in [0, 1]; x_t = (1 - t) x0 + t eps.
// An out-of-range timestep gives NaN coefficients: the CPU binding rejects it
// before any kernel runs; on a GPU it poisons that item (see ops/training.py).
#pragma once
#include <math.h>
#include <stdint.h>

#include "genfast/macros.h"
#include "genfast/noise.h"

namespace genfast {
namespace training {

enum Kind : int { kVP = 0, kSigma = 1, kFlow = 2 };
enum Prediction : int { kEpsilon = 0, kVPrediction = 1, kSample = 2, kFlowVelocity = 3 };
enum Weighting : int { kNone = 0, kMinSnr = 1, kEdm = 2 };
enum Reduction : int { kReduceNone = 0, kReduceMean = 1, kReduceSum = 2 };
constexpr int kTableCols = 4;  // sqrt_abar, sqrt_1m_abar, snr, sigma

// diffusers' DiagonalGaussianDistribution clamps logvar to this range: exp
// stays finite (exp(20) ~ 4.9e8, exp(-30) ~ 9e-14) and the gradient is zero
// outside, as torch.clamp's is.
constexpr double kLogvarMin = -30.0;
constexpr double kLogvarMax = 20.0;

GENFAST_HD double quiet_nan() {
#if defined(__CUDA_ARCH__)
  return __longlong_as_double(0x7ff8000000000000ll);
#else
  return __builtin_bit_cast(double, 0x7ff8000000000000ull);
#endif
}

// exp for float32 |x| <= 87 with IEEE +,-,* only (Cephes expf: x = n ln2 + r,
// ln2 split in two, degree-6 polynomial, 2^n by bits), so the CPU loops
// vectorise without libm; ~1 ulp. The double overload (gradcheck) uses libm.
// The shared core of exp_f and exp_lv: x = n ln2 + r, returns e^r in
// [0.7, 1.42] and n (an integral float).
GENFAST_HD float exp_reduced(float x, float& n) {
  n = round_small(x * 1.44269504088896341f);
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  const float z = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  return (p * z + r) + 1.0f;
}

GENFAST_HD float exp_f(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  float n;
  const float y = exp_reduced(x, n);
  // 2^n in two halves: n + 127 leaves the exponent range for n near +-127
  const int32_t ni = (int32_t)n;
  const int32_t h = ni >> 1;
  return y * bits_f32((uint32_t)(h + 127) << 23) * bits_f32((uint32_t)(ni - h + 127) << 23);
}
GENFAST_HD double exp_f(double x) { return exp(x); }

// exp_f for the clamped log-variances of the VAE ops (|x| <= 30): the same
// reduction and polynomial, minus what that range never needs (the outer
// clamps, 2^n in two halves): 2^n goes straight into y's exponent bits, y in
// [0.7, 1.42] and n in [-44, 29] staying far from the subnormals. A fifth
// fewer operations in the three passes over 1M elements that each need one.
GENFAST_HD float exp_lv(float x) {
  float n;
  const float y = exp_reduced(x, n);
  return bits_f32(f32_bits(y) + ((uint32_t)(int32_t)n << 23));
}
GENFAST_HD double exp_lv(double x) { return exp(x); }

// x_t = a x0 + b eps; target = c x0 + d eps.
struct NoiseCoefs {
  double a, b, c, d;
};

GENFAST_HD bool timestep_valid(int kind, double t, int64_t table_rows) {
  if (kind == kVP) return t >= 0.0 && t < (double)table_rows && t == (double)(int64_t)t;
  if (kind == kSigma) return t >= 0.0 && t < 1e30;  // also false for NaN
  return t >= 0.0 && t <= 1.0;
}

// Per-item coefficients of add_noise. VP velocity (Salimans & Ho 2022):
// v = sqrt(abar) eps - sqrt(1 - abar) x0; in sigma space the same velocity of
// the VP-scaled sample, v = (eps - sigma x0) / sqrt(sigma^2 + 1); flow target
// eps - x0 (diffusers' flow-matching training scripts).
GENFAST_HD NoiseCoefs add_noise_coefs(int kind, int pred, double t, const double* table,
                                      int64_t table_rows) {
  NoiseCoefs k;
  double alpha, sigma;  // x_t = alpha x0 + sigma eps
  double v_eps, v_x0;   // velocity coefficients
  if (kind == kVP) {
    const int64_t i = (int64_t)t;
    const bool ok = timestep_valid(kind, t, table_rows);
    const double* row = table + kTableCols * (ok ? i : 0);
    alpha = row[0];
    sigma = row[1];
    v_eps = alpha;
    v_x0 = -sigma;
  } else if (kind == kSigma) {
    alpha = 1.0;
    sigma = t;
    const double s = 1.0 / sqrt(t * t + 1.0);
    v_eps = s;
    v_x0 = -t * s;
  } else {
    alpha = 1.0 - t;
    sigma = t;
    v_eps = quiet_nan();  // rejected by the wrapper: flow has no VP velocity
    v_x0 = quiet_nan();
  }
  k.a = alpha;
  k.b = sigma;
  if (pred == kEpsilon) {
    k.c = 0.0;
    k.d = 1.0;
  } else if (pred == kVPrediction) {
    k.c = v_x0;
    k.d = v_eps;
  } else if (pred == kSample) {
    k.c = 1.0;
    k.d = 0.0;
  } else {
    k.c = -1.0;
    k.d = 1.0;
  }
  if (!timestep_valid(kind, t, table_rows)) {
    k.a = k.b = k.c = k.d = quiet_nan();
  }
  return k;
}

// Signal-to-noise ratio alpha^2 / sigma^2 of an item.
GENFAST_HD double item_snr(int kind, double t, const double* table, int64_t table_rows) {
  if (kind == kVP) {
    const bool ok = timestep_valid(kind, t, table_rows);
    return table[kTableCols * (ok ? (int64_t)t : 0) + 2];
  }
  if (kind == kSigma) return 1.0 / (t * t);
  const double r = (1.0 - t) / t;
  return r * r;
}

// Per-item loss weight.
//  min-SNR-gamma (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR
//  Weighting Strategy"): the x0-space weight min(snr, gamma) expressed in the
//  predicted quantity: epsilon min(snr, g)/snr, v min(snr, g)/(snr + 1),
//  sample min(snr, g). At snr = 0 (zero-terminal SNR, Lin et al. 2024) the
//  epsilon weight takes its limit 1 instead of 0/0.
//  EDM (Karras et al. 2022, eq. 8 / table 1): lambda(sigma) = (sigma^2 +
//  sigma_data^2) / (sigma sigma_data)^2, for sigma-space schedules.
GENFAST_HD double loss_weight(int kind, int weighting, int pred, double t, const double* table,
                              int64_t table_rows, double gamma, double sigma_data) {
  if (!timestep_valid(kind, t, table_rows)) return quiet_nan();
  if (weighting == kNone) return 1.0;
  if (weighting == kEdm) {
    const double sd2 = sigma_data * sigma_data;
    return (t * t + sd2) / (t * t * sd2);
  }
  const double snr = item_snr(kind, t, table, table_rows);
  const double m = snr < gamma ? snr : gamma;
  if (pred == kEpsilon) return snr > 0.0 ? m / snr : 1.0;
  if (pred == kVPrediction) return m / (snr + 1.0);
  return m;
}

// Clamped log-variance of the VAE posterior.
GENFAST_HD float clamp_logvar(float lv) {
  const float lo = (float)kLogvarMin, hi = (float)kLogvarMax;
  lv = lv < lo ? lo : lv;
  return lv > hi ? hi : lv;
}
GENFAST_HD double clamp_logvar(double lv) {
  lv = lv < kLogvarMin ? kLogvarMin : lv;
  return lv > kLogvarMax ? kLogvarMax : lv;
}
// d clamp(lv) / d lv: 1 inside, 0 outside (ties count as inside, like torch).
template <typename A>
GENFAST_HD A logvar_inside(A lv) {
  return (lv >= (A)kLogvarMin && lv <= (A)kLogvarMax) ? (A)1 : (A)0;
}

// The variance exp(l) of a clamped log-variance l, as exp(l / 2)^2 from the
// standard deviation h = exp_lv(l / 2) that the reparameterisation computes
// anyway: the fused reparameterize_kl forward then gets the KL's exp(l) with
// one multiply instead of a second exp. Every KL term and KL gradient uses
// this form, so the fused and the separate ops give the same bits. ~2.5 ulp
// (exp_lv ~1 ulp, doubled by the square, plus its rounding).
template <typename A>
GENFAST_HD A var_from_std(A h) {
  return h * h;
}
template <typename A>
GENFAST_HD A var_lv(A l) {
  return var_from_std(exp_lv((A)0.5 * l));
}

// KL(N(mu, exp(lv)) || N(0, 1)) of one element (Kingma & Welling 2014, app. B):
// 0.5 (mu^2 + exp(lv) - 1 - lv), lv clamped.
template <typename A>
GENFAST_HD A kl_element(A mu, A lv) {
  const A l = clamp_logvar(lv);
  return (A)0.5 * (mu * mu + var_lv(l) - (A)1 - l);
}

// ---------------------------------------------------------------- storage
// float16 / bfloat16 bits -> float32 (exact), for the loads; the stores use
// convert.h. Branch-free (selects) so the CPU loops vectorise.
GENFAST_HD float bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

GENFAST_HD float f16_to_f32(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  const uint32_t em = (uint32_t)(h & 0x7fffu);
  // normal and subnormal in one: the bits as a denormal-scaled float times 2^112
  const float scaled = bits_f32(em << 13) * 5.192296858534828e33f;  // 2^112
  const uint32_t inf_nan = 0x7f800000u | ((em & 0x3ffu) << 13);
  const uint32_t mag = em >= 0x7c00u ? inf_nan : f32_bits(scaled);
  return bits_f32(mag | sign);
}

}  // namespace training
}  // namespace genfast
