// Per-step and per-element math of the multistep / two-stage reverse steps
// (genfast.steps dpmpp, unipc, heun, dpm_2, lms): one definition for the CPU loops
// and the CUDA kernels. No torch, no loops. Spec: genfast/reference/multistep.py.
//
// Every sampler here is, per step (stage), linear in the step's x0 prediction
// D, the sample x, the saved sample P and the history ring H (the x0 of the
// last three steps, D of step i in slot i mod 3; h0 = H[i-1], h1 = H[i-2],
// h2 = H[i-3], which shares its slot with the D this step writes):
//
//   m   = r_i (u + g_i (c - u))                    CFG (Ho & Salimans 2022), or c
//   D   = px x + pm m                              x0 by prediction type
//   xc  = cs x + cp P + cd D + sum_j ch_j h_j      UniPC's corrector of x (Zhao et
//                                                  al. 2023), or x itself (Heun's save)
//   out = ax x + ap P + ad D + sum_j ah_j h_j + az z
//   H[i mod 3] <- D (multistep), P <- xc (unipc; heun / dpm_2 stage 0)
//
// lms keeps derivatives, not x0 predictions, in the ring: it writes
// H[i mod 3] <- hx x + hd D (d = (x - D)/sigma_i: hx = 1/sigma_i,
// hd = -1/sigma_i) and its update x + c0 d + c1 h0 + c2 h1 + c3 h2 is the
// `out` form with ax = 1 + c0/sigma_i, ad = -c0/sigma_i, ah_j = c_{j+1}.
// The other samplers write D itself (their own code path: the same bits).
//
// UniPC's predictor reads the corrected sample: its coefficients are folded
// into `out` (c_x xc + ... expanded), so the corrector and the predictor are
// one pass. The coefficients come from the sampling plan's rows (float64,
// genfast/_plan.py PLAN_COLUMNS and STAGE_COLUMNS): order warm-up and the
// lower-order final steps are zero coefficients, never a branch.
#pragma once
#include <math.h>
#include <stdint.h>

#include "genfast/macros.h"
#include "genfast/steps.h"  // kAlphaFloor, kPlanCols, predictions, flags, dmax

namespace genfast {
namespace multistep {

enum Sampler : int { kDpmpp = 0, kUnipc = 1, kHeun = 2, kDpm2 = 3, kLms = 4 };
constexpr int kNumSamplers = 5;
enum Param : int { kGuidanceScale = 0, kGuidanceRescale = 1, kNumParams = 2 };

// PLAN_COLUMNS used here (steps.h has the single-step ones)
constexpr int kColAlpha = 3, kColSigmaVp = 4, kColCx = 13, kColCd0 = 14, kColCd1 = 15,
              kColCd2 = 16, kColCnoise = 17, kColCcSelf = 20, kColCcX = 21, kColCcDnew = 22,
              kColCcD0 = 23, kColCcD1 = 24, kColCcD2 = 25;
// STAGE_COLUMNS (genfast/_plan.py; fixed order)
constexpr int kStageCols = 14;
constexpr int kSStages = 0, kSXScale = 1, kSAlpha1 = 4, kSSigmaVp1 = 5, kSXScale1 = 6,
              kSCx1 = 8, kSCp1 = 9, kSCd1 = 10, kSHx = 11, kSHd = 12, kSCd3 = 13;

GENFAST_HD int state_slots(int sampler) {
  return (sampler == kDpmpp || sampler == kLms) ? 3 : sampler == kUnipc ? 4 : 1;
}

// Samplers with the history ring (h0, h1, h2 read, slot i mod 3 written).
GENFAST_HD bool has_ring(int sampler) {
  return sampler == kDpmpp || sampler == kUnipc || sampler == kLms;
}

struct Coefs {
  double px, pm;                 // D = px x + pm m
  double cs, cp, cd, ch[3];      // xc (written to P)
  double ax, ap, ad, ah[3], az;  // out
  double hx, hd;                 // lms: H[i mod 3] <- hx x + hd D
  bool write_d, write_p, read_p;
  bool write_dx;                 // the ring gets hx x + hd D (lms), not D
};

// x0 = px x + pm m for the input's (alpha, sigma_vp) and x_vp = k x.
GENFAST_HD void x0_coefs(int pred, double a, double s, double k, double* px, double* pm) {
  if (pred == steps::kEpsilon) {
    const double as = steps::dmax(a, steps::kAlphaFloor);
    *px = k / as; *pm = -s / as;
  } else if (pred == steps::kVPrediction) {  // Salimans & Ho 2022
    *px = a * k; *pm = -s;
  } else if (pred == steps::kSample) {
    *px = 0.0; *pm = 1.0;
  } else {  // flow: x0 = x - t v
    *px = k; *pm = -s;
  }
}

// The coefficients of one step (stage) from the plan row and the stage row.
GENFAST_HD Coefs step_coefs(int sampler, int stage, int pred, const double* row,
                            const double* srow) {
  Coefs k;
  k.cs = k.cp = k.cd = k.ax = k.ap = k.ad = k.az = 0.0;
  for (int j = 0; j < 3; ++j) k.ch[j] = k.ah[j] = 0.0;
  k.hx = 0.0; k.hd = 1.0;
  k.write_d = k.write_p = k.read_p = k.write_dx = false;
  if ((sampler == kHeun || sampler == kDpm2) && stage == 1) {
    x0_coefs(pred, srow[kSAlpha1], srow[kSSigmaVp1], srow[kSXScale1], &k.px, &k.pm);
    k.ax = srow[kSCx1]; k.ap = srow[kSCp1]; k.ad = srow[kSCd1];
    k.read_p = true;
    return k;
  }
  x0_coefs(pred, row[kColAlpha], row[kColSigmaVp], srow[kSXScale], &k.px, &k.pm);
  if (sampler == kHeun || sampler == kDpm2) {  // Euler to the stage-1 sigma; save x
    k.ax = row[kColCx]; k.ad = row[kColCd0];
    k.cs = 1.0;
    k.write_p = true;
    return k;
  }
  k.write_d = true;
  if (sampler == kLms) {  // x + sum_j c_j d_{i-j}, d = (x - D)/sigma_i (header comment)
    k.cs = 1.0;
    k.ax = row[kColCx]; k.ad = row[kColCd0];
    k.ah[0] = row[kColCd1]; k.ah[1] = row[kColCd2]; k.ah[2] = srow[kSCd3];
    k.hx = srow[kSHx]; k.hd = srow[kSHd];
    k.write_dx = true;
    return k;
  }
  const double cx = row[kColCx];
  if (sampler == kUnipc) {
    k.cs = row[kColCcSelf]; k.cp = row[kColCcX]; k.cd = row[kColCcDnew];
    k.ch[0] = row[kColCcD0]; k.ch[1] = row[kColCcD1]; k.ch[2] = row[kColCcD2];
    k.write_p = true;
    k.read_p = k.cp != 0.0;
  } else {
    k.cs = 1.0;
  }
  // out = cx xc + c_d0 D + c_d1 h0 + c_d2 h1 + c_noise z, xc expanded
  k.ax = cx * k.cs; k.ap = cx * k.cp; k.ad = cx * k.cd + row[kColCd0];
  k.ah[0] = cx * k.ch[0] + row[kColCd1];
  k.ah[1] = cx * k.ch[1] + row[kColCd2];
  k.ah[2] = cx * k.ch[2];
  k.az = sampler == kDpmpp ? row[kColCnoise] : 0.0;
  return k;
}

// Float32 copies, as the element loops use them.
struct CoefsF {
  float px, pm, cs, cp, cd, ch[3], ax, ap, ad, ah[3], az, hx, hd;
};

GENFAST_HD CoefsF to_float(const Coefs& k) {
  CoefsF f;
  f.px = (float)k.px; f.pm = (float)k.pm;
  f.cs = (float)k.cs; f.cp = (float)k.cp; f.cd = (float)k.cd;
  f.ax = (float)k.ax; f.ap = (float)k.ap; f.ad = (float)k.ad; f.az = (float)k.az;
  f.hx = (float)k.hx; f.hd = (float)k.hd;
  for (int j = 0; j < 3; ++j) { f.ch[j] = (float)k.ch[j]; f.ah[j] = (float)k.ah[j]; }
  return f;
}

// Ring slot of step i - back (i >= 0).
GENFAST_HD int ring_slot(int64_t i, int back) { return (int)(((i - back) % 3 + 3) % 3); }

}  // namespace multistep
}  // namespace genfast
