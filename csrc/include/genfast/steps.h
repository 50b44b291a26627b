// Per-step and per-element math of the single-step reverse-diffusion samplers
// (genfast.steps): one definition for the CPU loops and the CUDA kernels. No
// torch, no loops. Spec: genfast/reference/steps.py (diffusers 0.42.1 form).
//
// Every sampler of part 1 is, per step, an affine map once x0 is known:
//
//   m    = r_i (u + g_i (c - u))          classifier-free guidance (Ho & Salimans
//                                          2022), r_i the guidance_rescale factor
//                                          (Lin et al. 2024), per item i; m = c without CFG
//   x0   = px x + pm m + pz z             the model's x0 (by prediction type)
//   x0c  = clamp(x0, -lim_i, lim_i) inv_i clip_sample, or dynamic thresholding
//                                          (Saharia et al. 2022: lim = s_i, inv = 1/s_i)
//   prev = ax x + am m + a0 x0c + az z    (az -> exp(lv_a v + lv_b) for DDPM learned_range)
//   out2 = dx x + d0 x0c                  x0 (LCM: its boundary-condition "denoised")
//
// z is the step's standard noise (given, or the genfast stream in-kernel). The
// scalar coefficients are computed once per step from the sampling plan's row
// (genfast/_plan.py: float64, read by step index on the device, no host
// sync) by step_coefs() below, in double, and applied in float32. Part 2's
// multistep samplers add history terms (c_d1 D1 + c_d2 D2) to the same form.
#pragma once
#include <math.h>
#include <stdint.h>

#include "genfast/macros.h"

namespace genfast {
namespace steps {

enum Sampler : int { kDDPM = 0, kDDIM = 1, kEuler = 2, kEulerAncestral = 3, kLCM = 4, kFlowMatch = 5 };
enum Prediction : int { kEpsilon = 0, kVPrediction = 1, kSample = 2, kFlow = 3 };
enum Variance : int { kFixedSmall = 0, kFixedSmallLog = 1, kFixedLarge = 2, kLearnedRange = 3 };

// Flags of one call (bit set).
enum Flags : int {
  kCfgBatched = 1,      // model_output holds [uncond; cond] along dim 0
  kCfgSeparate = 2,     // uncond is its own tensor
  kClip = 4,            // clip_sample
  kThreshold = 8,       // dynamic thresholding (per-item s from a reduction pass)
  kUseClipped = 16,     // DDIM use_clipped_model_output
  kNoiseGiven = 32,     // z from a tensor
  kNoiseSeeded = 64,    // z from the genfast stream in-kernel
  kStochastic = 128,    // FlowMatch stochastic_sampling
  kRescale = 256,       // guidance_rescale > 0 (per-item std pass)
  kGuidanceTensor = 512,  // one guidance scale per item (a tensor)
  kWantX0 = 1024,       // write the second output
};

// Columns of the sampling plan (genfast/_plan.py PLAN_COLUMNS; fixed order).
constexpr int kColTimestep = 0, kColSigma = 1, kColSigmaNext = 2, kColAlpha = 3,
              kColSigmaVp = 4, kColAlphaNext = 5, kColSigmaVpNext = 6, kColLast = 12;
// Row stride: every column of PLAN_COLUMNS, the UniPC corrector's (20..25)
// included, which these single-step samplers do not read.
constexpr int kPlanCols = 26;

// Scalar options of a call, in one array (the op's `params`, same order).
enum Param : int {
  kGuidanceScale = 0, kGuidanceRescale, kEta, kClipRange, kThresholdRatio, kSampleMax,
  kSChurn, kSTmin, kSTmax, kSNoise, kTimestepScaling, kNumParams
};

// A zero-terminal-SNR schedule has alpha = 0 at its first step, where an
// epsilon prediction carries no information about x0 ((x - eps)/0).
// diffusers' sigma-space samplers replace abar = 0 by 2^-24 there; the VP
// samplers here divide by at least its square root, so the step stays finite
// (diffusers returns inf / NaN).
constexpr double kAlphaFloor = 2.44140625e-4;  // 2^-12 = sqrt(2^-24)

struct Coefs {
  double px, pm, pz;      // x0 = px x + pm m + pz z
  double ax, am, a0, az;  // prev = ax x + am m + a0 x0c + az z
  double dx, d0;          // out2 = dx x + d0 x0c
  double lv_a, lv_b;      // learned_range: std = exp(lv_a v + lv_b) (replaces az)
  bool learned;
  bool noise;             // z contributes (az, pz or learned std non-zero)
};

GENFAST_HD double dmax(double a, double b) { return a > b ? a : b; }
GENFAST_HD double dmin(double a, double b) { return a < b ? a : b; }

// x0 = px x + pm m and eps = ex x + em m of the VP form x = a x0 + s eps.
struct Vp {
  double px, pm, ex, em;
};

GENFAST_HD Vp vp_prediction(int pred, double a, double s) {
  Vp v;
  if (pred == kEpsilon) {
    const double as = dmax(a, kAlphaFloor);
    v.px = 1.0 / as; v.pm = -s / as; v.ex = 0.0; v.em = 1.0;
  } else if (pred == kVPrediction) {  // Salimans & Ho 2022
    v.px = a; v.pm = -s; v.ex = s; v.em = a;
  } else {  // sample
    v.px = 0.0; v.pm = 1.0; v.ex = 1.0 / s; v.em = -a / s;
  }
  return v;
}

// The coefficients of step `row` (a pointer to the plan's row) of a plan with
// `num_steps` rows.
GENFAST_HD Coefs step_coefs(int sampler, int pred, int variance, int flags, const double* row,
                            int64_t num_steps, const double* p) {
  Coefs k;
  k.px = k.pm = k.pz = k.ax = k.am = k.a0 = k.az = k.dx = 0.0;
  k.d0 = 1.0;
  k.lv_a = k.lv_b = 0.0;
  k.learned = false;
  const double t = row[kColTimestep];
  const double a = row[kColAlpha], s = row[kColSigmaVp];
  const double an = row[kColAlphaNext], sn = row[kColSigmaVpNext];
  const double sig = row[kColSigma], sig_n = row[kColSigmaNext];
  const bool last = row[kColLast] != 0.0;
  if (sampler == kDDIM) {
    // Song et al. 2021 eq. 12: x_prev = a_p x0 + sqrt(1 - a_p^2 - std^2) eps + std z,
    // std = eta sqrt((1 - a_p^2)/(1 - a^2) (1 - a^2/a_p^2)).
    const Vp v = vp_prediction(pred, a, s);
    const double var = (sn * sn) / (s * s) * (1.0 - (a * a) / (an * an));
    const double std = p[kEta] * sqrt(dmax(var, 0.0));
    const double dir = sqrt(dmax(sn * sn - std * std, 0.0));
    k.px = v.px; k.pm = v.pm;
    if (flags & kUseClipped) {  // eps recomputed from the clipped x0
      k.ax = dir / s; k.a0 = an - dir * dmax(a, 0.0) / s;
    } else {
      k.ax = dir * v.ex; k.am = dir * v.em; k.a0 = an;
    }
    k.az = p[kEta] > 0.0 ? std : 0.0;
  } else if (sampler == kDDPM) {
    // Ho et al. 2020 eqs. 6-7: posterior mean and variance; noise only for t > 0.
    const Vp v = vp_prediction(pred, a, s);
    const double abar = a * a, abar_p = an * an;
    const double beta = 1.0 - abar / abar_p;
    k.px = v.px; k.pm = v.pm;
    k.a0 = an * beta / (s * s);
    k.ax = (a / an) * (sn * sn) / (s * s);
    const double var = dmax((sn * sn) / (s * s) * beta, 1e-20);
    double std = sqrt(var);
    if (variance == kFixedLarge) std = sqrt(beta);
    if (variance == kFixedSmallLog) std = exp(0.5 * log(var));
    if (variance == kLearnedRange && t > 0.0) {
      // log var = f log beta + (1 - f) log var_small, f = (v + 1)/2 (Nichol & Dhariwal 2021)
      const double lo = log(var), hi = log(beta);
      k.learned = true;
      k.lv_a = 0.25 * (hi - lo);
      k.lv_b = 0.5 * lo + 0.25 * (hi - lo);
    }
    k.az = t > 0.0 ? std : 0.0;
  } else if (sampler == kEuler) {
    // Karras et al. 2022 alg. 2 (diffusers' form): churn to sigma_hat = sigma (gamma + 1)
    // with fresh noise, x0 at sigma_hat, Euler step to sigma_next.
    const double g = (p[kSTmin] <= sig && sig <= p[kSTmax])
                         ? dmin(p[kSChurn] / (double)num_steps, 1.4142135623730951 - 1.0)
                         : 0.0;
    const double sh = sig * (g + 1.0);
    const double c = g > 0.0 ? p[kSNoise] * sqrt(sh * sh - sig * sig) : 0.0;  // x_hat = x + c z
    if (pred == kEpsilon) { k.px = 1.0; k.pm = -sh; k.pz = c; }
    else if (pred == kVPrediction) {
      const double q = 1.0 / (sig * sig + 1.0);
      k.px = q; k.pm = -sig * sqrt(q); k.pz = c * q;
    } else { k.pm = 1.0; }
    const double r = sig_n / sh;
    k.ax = r; k.az = c * r; k.a0 = 1.0 - r;
  } else if (sampler == kEulerAncestral) {
    // k-diffusion's sample_euler_ancestral: sigma_up, sigma_down (eta = 1: diffusers).
    double up = sqrt(dmax(sig_n * sig_n * (sig * sig - sig_n * sig_n) / (sig * sig), 0.0));
    up = dmin(sig_n, p[kEta] * up);
    const double down = sqrt(dmax(sig_n * sig_n - up * up, 0.0));
    if (pred == kEpsilon) { k.px = 1.0; k.pm = -sig; }
    else if (pred == kVPrediction) {
      const double q = 1.0 / (sig * sig + 1.0);
      k.px = q; k.pm = -sig * sqrt(q);
    } else { k.pm = 1.0; }
    const double r = down / sig;
    k.ax = r; k.a0 = 1.0 - r; k.az = up;
  } else if (sampler == kLCM) {
    // Luo et al. 2023: boundary condition c_skip x + c_out x0 (sigma_data 0.5),
    // then re-noise to the next timestep (not at the last step).
    const Vp v = vp_prediction(pred, a, s);
    const double st = t * p[kTimestepScaling];
    const double skip = 0.25 / (st * st + 0.25), out = st / sqrt(st * st + 0.25);
    k.px = v.px; k.pm = v.pm;
    k.dx = skip; k.d0 = out;
    const double scale = last ? 1.0 : an;
    k.ax = scale * skip; k.a0 = scale * out;
    k.az = last ? 0.0 : sn;
  } else {  // kFlowMatch (Lipman et al. 2023; Liu et al. 2023): velocity prediction
    k.px = 1.0; k.pm = -sig;  // x0 = x - sigma v
    if (flags & kStochastic) { k.a0 = 1.0 - sig_n; k.az = sig_n; }
    else { k.ax = 1.0; k.am = sig_n - sig; }
  }
  k.noise = k.az != 0.0 || k.pz != 0.0 || k.learned;
  return k;
}

// The same coefficients in float32, as the element loops use them.
struct CoefsF {
  float px, pm, pz, ax, am, a0, az, dx, d0, lv_a, lv_b;
};

GENFAST_HD CoefsF to_float(const Coefs& k) {
  CoefsF f;
  f.px = (float)k.px; f.pm = (float)k.pm; f.pz = (float)k.pz;
  f.ax = (float)k.ax; f.am = (float)k.am; f.a0 = (float)k.a0; f.az = (float)k.az;
  f.dx = (float)k.dx; f.d0 = (float)k.d0;
  f.lv_a = (float)k.lv_a; f.lv_b = (float)k.lv_b;
  return f;
}

// Guided model output of one element (g: the item's guidance scale, r: its
// rescale factor; no CFG: u = c and g = 0).
GENFAST_HD float guided(float u, float c, float g, float r) { return r * (u + g * (c - u)); }

GENFAST_HD float x0_of(const CoefsF& k, float x, float m, float z) {
  return k.px * x + k.pm * m + k.pz * z;
}

// clamp(x0, -lim, lim) * inv; lim = +inf and inv = 1 leave x0 as is.
GENFAST_HD float clip_x0(float x0, float lim, float inv) {
  x0 = x0 < -lim ? -lim : x0;
  x0 = x0 > lim ? lim : x0;
  return x0 * inv;
}

GENFAST_HD float prev_of(const CoefsF& k, float x, float m, float x0c, float zs) {
  return k.ax * x + k.am * m + k.a0 * x0c + zs;
}

// guidance_rescale factor from the item's std of cond and of the guided output
// (Lin et al. 2024 eq. 15-16): phi std_c / std_cfg + (1 - phi). Unbiased stds
// as torch.std; an item with std_cfg = 0 keeps its output (factor 1).
GENFAST_HD double rescale_factor(double phi, double sum_c, double sq_c, double sum_g, double sq_g,
                                 double n) {
  const double var_c = dmax((sq_c - sum_c * sum_c / n) / (n - 1.0), 0.0);
  const double var_g = dmax((sq_g - sum_g * sum_g / n) / (n - 1.0), 0.0);
  if (!(var_g > 0.0)) return 1.0;
  return phi * sqrt(var_c / var_g) + (1.0 - phi);
}

// Dynamic thresholding's per-item bound (diffusers' _threshold_sample): the
// `ratio` quantile of |x0| (linear interpolation between the order statistics
// k = floor(ratio (n - 1)) and k + 1, as torch.quantile), clamped to
// [1, sample_max].
GENFAST_HD double threshold_bound(double q_lo, double q_hi, double frac, double sample_max) {
  const double q = q_lo + (q_hi - q_lo) * frac;
  return dmin(dmax(q, 1.0), sample_max);
}

}  // namespace steps
}  // namespace genfast
