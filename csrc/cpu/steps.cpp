// CPU loops of the reverse-step family. Compiled once per ISA level
// (GENFAST_CPU_ISA names the namespace); per-element math from
// csrc/include/genfast/steps.h, noise from this level's normal_fill
// (csrc/cpu/noise.cpp), so in-kernel noise equals genfast.randn bit for bit.
//
// One pass over the sample: the block's normals (when the step draws any) are
// written to a stack buffer and consumed while in L1; the element loop is
// specialised on CFG / noise / learned variance / x0 output so that each
// variant is a straight, vectorisable loop.
#include "steps_kernels.h"

#include <type_traits>

#include "genfast/convert.h"
#include "genfast/steps.h"
#include "genfast/training.h"  // exp_f, f16/bf16 loads
#include "noise_kernels.h"
#include "storage.h"

#ifndef GENFAST_CPU_ISA
#error "GENFAST_CPU_ISA must name the ISA level this file is compiled for"
#endif

namespace genfast::cpu::GENFAST_CPU_ISA {
namespace {

using steps::CoefsF;

constexpr int64_t kBlock = 2048;  // elements per noise sub-block (multiple of 4)

template <typename T, bool CFG, bool NOISE, bool LEARNED, bool X0>
void apply_block(const StepArgs& a, int64_t item, int64_t e0, int64_t n, const T* zb) {
  const CoefsF k = a.k;
  // __restrict__: outputs never alias inputs (fresh tensors); without it GCC
  // needs a run-time overlap check per pointer pair and, with six pointers,
  // gives up vectorising the loop.
  const T* __restrict__ x = static_cast<const T*>(a.x) + item * a.numel + e0;
  const T* __restrict__ c = static_cast<const T*>(a.c) + item * a.m_stride + e0;
  const T* __restrict__ u = CFG ? static_cast<const T*>(a.u) + item * a.m_stride + e0 : nullptr;
  const T* __restrict__ v = LEARNED ? static_cast<const T*>(a.v) + item * a.m_stride + e0 : nullptr;
  const T* __restrict__ zr = zb;
  T* __restrict__ prev = static_cast<T*>(a.prev) + item * a.numel + e0;
  T* __restrict__ out2 = X0 ? static_cast<T*>(a.out2) + item * a.numel + e0 : nullptr;
  const float g = CFG ? a.g[item] : 0.0f, r = a.r[item];
  const float lim = a.lim[item], inv = a.inv[item];
  for (int64_t i = 0; i < n; ++i) {
    const float xv = load(x, i);
    const float cv = load(c, i);
    const float m = CFG ? steps::guided(load(u, i), cv, g, r) : r * cv;
    const float zv = NOISE ? load(zr, i) : 0.0f;
    const float x0c = steps::clip_x0(steps::x0_of(k, xv, m, zv), lim, inv);
    float zs = 0.0f;
    if constexpr (NOISE) {
      if constexpr (LEARNED) zs = training::exp_f(k.lv_a * load(v, i) + k.lv_b) * zv;
      else zs = k.az * zv;
    }
    store(prev, i, steps::prev_of(k, xv, m, x0c, zs));
    if constexpr (X0) store(out2, i, k.dx * xv + k.d0 * x0c);
  }
}

// The plain step (no guidance, noise or clipping): x0 = px x + pm c, prev =
// ax x + am c + a0 x0, out2 = x0 (X0_ONLY: dx = 0, d0 = 1, every sampler but
// LCM) or dx x + d0 x0. The general loop's terms for the absent parts are
// exact no-ops (r = 1, clamp to +-inf, scale 1, + 0 z), so dropping them
// changes no value (at most the sign of a zero); it saves a third of the
// arithmetic, which is what bounds a latent that sits in L2.
template <typename T, bool X0, bool X0_ONLY>
void apply_plain(const StepArgs& a, int64_t item, int64_t e0, int64_t n) {
  const CoefsF k = a.k;
  const T* __restrict__ x = static_cast<const T*>(a.x) + item * a.numel + e0;
  const T* __restrict__ c = static_cast<const T*>(a.c) + item * a.m_stride + e0;
  T* __restrict__ prev = static_cast<T*>(a.prev) + item * a.numel + e0;
  T* __restrict__ out2 = X0 ? static_cast<T*>(a.out2) + item * a.numel + e0 : nullptr;
  for (int64_t i = 0; i < n; ++i) {
    const float xv = load(x, i);
    const float cv = load(c, i);
    const float x0 = k.px * xv + k.pm * cv;
    store(prev, i, k.ax * xv + k.am * cv + k.a0 * x0);
    if constexpr (X0) store(out2, i, X0_ONLY ? x0 : k.dx * xv + k.d0 * x0);
  }
}

template <typename T, bool CFG, bool NOISE, bool LEARNED>
void apply_x0(const StepArgs& a, int64_t item, int64_t e0, int64_t n, const T* zb) {
  if (!CFG && !NOISE && !LEARNED && a.lim[item] == __builtin_inff() && a.inv[item] == 1.0f &&
      a.r[item] == 1.0f) {
    if (a.out2 == nullptr) apply_plain<T, false, false>(a, item, e0, n);
    else if (a.k.dx == 0.0f && a.k.d0 == 1.0f) apply_plain<T, true, true>(a, item, e0, n);
    else apply_plain<T, true, false>(a, item, e0, n);
    return;
  }
  if (a.out2 != nullptr) apply_block<T, CFG, NOISE, LEARNED, true>(a, item, e0, n, zb);
  else apply_block<T, CFG, NOISE, LEARNED, false>(a, item, e0, n, zb);
}

template <typename T, bool NOISE, bool LEARNED>
void apply_cfg(const StepArgs& a, int64_t item, int64_t e0, int64_t n, const T* zb) {
  if (a.u != nullptr) apply_x0<T, true, NOISE, LEARNED>(a, item, e0, n, zb);
  else apply_x0<T, false, NOISE, LEARNED>(a, item, e0, n, zb);
}

template <typename T>
void step_t(const StepArgs& a, const StreamArgs& s, int64_t item, int64_t e0, int64_t e1) {
  alignas(64) T buf[kBlock];
  for (int64_t b = e0; b < e1; b += kBlock) {
    const int64_t n = b + kBlock < e1 ? kBlock : e1 - b;
    if (!a.noise) {
      apply_cfg<T, false, false>(a, item, b, n, nullptr);
      continue;
    }
    const T* zb;
    if (a.seeded) {
      // quads [b/4, ceil((b+n)/4)) of this item, written as if buf were the tensor
      const int64_t q0 = item * s.quads_per_item + b / 4;
      const int64_t q1 = item * s.quads_per_item + (b + n + 3) / 4;
      NormalFillArgs f{reinterpret_cast<char*>(buf) - (item * a.numel + b) * (int64_t)sizeof(T),
                       a.dtype, a.numel, s.quads_per_item, s.k0, s.k1, s.stream, s.sample_offset};
      normal_fill(f, q0, q1);
      zb = buf;
    } else {
      zb = static_cast<const T*>(a.z) + item * a.numel + b;
    }
    if (a.learned) apply_cfg<T, true, true>(a, item, b, n, zb);
    else apply_cfg<T, true, false>(a, item, b, n, zb);
  }
}

template <typename T>
void moments_t(const StepArgs& a, int64_t item, int64_t e0, int64_t e1, double* out4) {
  constexpr int L = 8;
  const T* c = static_cast<const T*>(a.c) + item * a.m_stride;
  const T* u = static_cast<const T*>(a.u) + item * a.m_stride;
  const float g = a.g[item];
  double tot[4] = {0, 0, 0, 0};
  for (int64_t b = e0; b < e1; b += kBlock) {
    const int64_t n = b + kBlock < e1 ? kBlock : e1 - b;
    float acc[4][L] = {};
    int64_t i = b;
    for (; i + L <= b + n; i += L) {
      for (int l = 0; l < L; ++l) {
        const float cv = load(c, i + l);
        const float m = steps::guided(load(u, i + l), cv, g, 1.0f);
        acc[0][l] += cv;
        acc[1][l] += cv * cv;
        acc[2][l] += m;
        acc[3][l] += m * m;
      }
    }
    for (; i < b + n; ++i) {
      const float cv = load(c, i);
      const float m = steps::guided(load(u, i), cv, g, 1.0f);
      tot[0] += cv;
      tot[1] += (double)cv * cv;
      tot[2] += m;
      tot[3] += (double)m * m;
    }
    for (int j = 0; j < 4; ++j) {
      for (int l = 0; l < L; ++l) tot[j] += acc[j][l];
    }
  }
  for (int j = 0; j < 4; ++j) out4[j] = tot[j];
}

template <typename T>
void abs_x0_t(const StepArgs& a, int64_t item, float* buf) {
  const CoefsF k = a.k;
  const T* x = static_cast<const T*>(a.x) + item * a.numel;
  const T* c = static_cast<const T*>(a.c) + item * a.m_stride;
  const T* u = a.u != nullptr ? static_cast<const T*>(a.u) + item * a.m_stride : nullptr;
  const float g = u != nullptr ? a.g[item] : 0.0f, r = a.r[item];
  for (int64_t i = 0; i < a.numel; ++i) {
    const float cv = load(c, i);
    const float m = u != nullptr ? steps::guided(load(u, i), cv, g, r) : r * cv;
    const float x0 = steps::x0_of(k, load(x, i), m, 0.0f);
    buf[i] = x0 < 0.0f ? -x0 : x0;
  }
}

}  // namespace

#define GENFAST_T std::remove_pointer_t<decltype(tag)>

void step_apply(const StepArgs& a, const StreamArgs& s, int64_t item, int64_t e0, int64_t e1) {
  dispatch(a.dtype, [&](auto* tag) { step_t<GENFAST_T>(a, s, item, e0, e1); });
}

void cfg_moments(const StepArgs& a, int64_t item, int64_t e0, int64_t e1, double* out4) {
  dispatch(a.dtype, [&](auto* tag) { moments_t<GENFAST_T>(a, item, e0, e1, out4); });
}

void abs_x0(const StepArgs& a, int64_t item, float* buf) {
  dispatch(a.dtype, [&](auto* tag) { abs_x0_t<GENFAST_T>(a, item, buf); });
}

}  // namespace genfast::cpu::GENFAST_CPU_ISA
