// CPU loops of the training family. Compiled once per ISA level
// (GENFAST_CPU_ISA names the namespace); per-element math from
// csrc/include/genfast/training.h, noise from this level's normal_fill
// (csrc/cpu/noise.cpp), so in-kernel noise equals genfast.randn bit for bit.
//
// Fusion on the CPU: the seeded kernels work on sub-blocks of kSubQuads
// Philox calls: the normals of a sub-block are written (to the noise output,
// or a stack buffer) and consumed while they are still in L1/L2.
#include "training_kernels.h"

#include <type_traits>

#include "genfast/convert.h"
#include "genfast/training.h"
#include "noise_kernels.h"
#include "normals_ahead.h"
#include "storage.h"

#ifndef GENFAST_CPU_ISA
#error "GENFAST_CPU_ISA must name the ISA level this file is compiled for"
#endif

namespace genfast::cpu::GENFAST_CPU_ISA {
namespace {

using training::clamp_logvar;
using training::exp_lv;
using training::logvar_inside;

// Calls body(item, begin, end) for each item's part of the flat range [e0, e1).
template <typename Body>
inline void by_item(int64_t numel, int64_t e0, int64_t e1, const Body& body) {
  if (numel == 0) return;
  int64_t item = e0 / numel;
  for (int64_t e = e0; e < e1;) {
    const int64_t stop = (item + 1) * numel < e1 ? (item + 1) * numel : e1;
    body(item, e, stop);
    e = stop;
    ++item;
  }
}

template <typename T>
void affine2_t(const Affine2Args& a, int64_t e0, int64_t e1) {
  using A = typename Acc<T>::type;
  const T* x = static_cast<const T*>(a.x);
  const T* y = static_cast<const T*>(a.y);
  T* o1 = static_cast<T*>(a.out1);
  T* o2 = static_cast<T*>(a.out2);
  by_item(a.numel, e0, e1, [&](int64_t item, int64_t b, int64_t e) {
    const double* k = a.coefs + 4 * item;
    const A k0 = (A)k[0], k1 = (A)k[1], k2 = (A)k[2], k3 = (A)k[3];
    if (y != nullptr && o2 != nullptr) {
      for (int64_t i = b; i < e; ++i) {
        const A xv = load(x, i), yv = load(y, i);
        store(o1, i, k0 * xv + k1 * yv);
        store(o2, i, k2 * xv + k3 * yv);
      }
    } else if (y != nullptr) {
      for (int64_t i = b; i < e; ++i) store(o1, i, k0 * load(x, i) + k1 * load(y, i));
    } else if (o2 != nullptr) {
      for (int64_t i = b; i < e; ++i) {
        const A xv = load(x, i);
        store(o1, i, k0 * xv);
        store(o2, i, k2 * xv);
      }
    } else {
      for (int64_t i = b; i < e; ++i) store(o1, i, k0 * load(x, i));
    }
  });
}

constexpr int64_t kSubQuads = 512;

// normal_fill's arguments for the stream's normals written in `dtype` at
// `dst`, whose element 0 is the tensor's element `base` (dst may be a
// sub-block buffer); normals() writes those of quads [g0, g1).
inline NormalFillArgs fill_args(void* dst, int64_t base, int dtype, int64_t numel,
                                const StreamArgs& s) {
  const int fill_dtype = dtype == kFloat64Code ? kFloat32 : dtype;
  const int64_t size = fill_dtype == kFloat32 ? 4 : 2;
  return NormalFillArgs{static_cast<char*>(dst) - base * size, fill_dtype, numel,
                        s.quads_per_item, s.k0, s.k1, s.stream, s.sample_offset};
}

inline void normals(void* dst, int64_t base, int dtype, int64_t numel, const StreamArgs& s,
                    int64_t g0, int64_t g1) {
  normal_fill(fill_args(dst, base, dtype, numel, s), g0, g1);
}

// z = mu + d over one sub-block, d = exp(clamp(lv) / 2) eps with eps read
// from `e`, which then receives d (or with JAC, d / 2 * [lv inside]). One
// pointer reads and writes e, all four restrict: the loop vectorises with
// no overlap checks (which can send it down the scalar path).
template <bool JAC, typename T>
inline void reparam_block(const T* __restrict m, const T* __restrict lv, T* __restrict out,
                          T* __restrict e, int64_t n) {
  using A = typename Acc<T>::type;
  for (int64_t i = 0; i < n; ++i) {
    const A l = load(lv, i);
    const A d = exp_lv((A)0.5 * clamp_logvar(l)) * load(e, i);
    store(out, i, load(m, i) + d);
    store(e, i, JAC ? (A)0.5 * d * logvar_inside(l) : d);
  }
}

// Forward: the stream's normals straight into the second output (rounded to
// the dtype, as genfast.randn(dtype=...) stores them), then z = mu + d with
// d = std * eps, and d replaces eps there: the backward then needs no exp.
// With a.jacobian, dz/dlv = d / 2 * [lv inside] replaces it instead: the
// backward's result for an upstream grad of one.
template <typename T>
void reparam_t(const ReparamArgs& a, const StreamArgs& s, int64_t g0, int64_t g1) {
  using A = typename Acc<T>::type;
  const T* m = static_cast<const T*>(a.mu_or_grad);
  const T* lv = static_cast<const T*>(a.logvar);
  T* out = static_cast<T*>(a.out);
  T* eps = static_cast<T*>(a.eps);
  for (int64_t q0 = g0; q0 < g1; q0 += kSubQuads) {
    const int64_t q1 = q0 + kSubQuads < g1 ? q0 + kSubQuads : g1;
    const int64_t e0 = quad_first_element(q0, s.quads_per_item, a.numel);
    const int64_t e1 = quad_first_element(q1, s.quads_per_item, a.numel);
    if constexpr (std::is_same<T, double>::value) {  // float32 normals widened (gradcheck path)
      alignas(64) float buf[4 * kSubQuads];
      normals(buf, e0, kFloat32, a.numel, s, q0, q1);
      for (int64_t i = e0; i < e1; ++i) store(eps, i, (A)buf[i - e0]);
    } else {
      normals(eps, 0, a.dtype, a.numel, s, q0, q1);
    }
    if (a.jacobian) {
      reparam_block<true>(m + e0, lv + e0, out + e0, eps + e0, e1 - e0);
    } else {
      reparam_block<false>(m + e0, lv + e0, out + e0, eps + e0, e1 - e0);
    }
  }
}

// Backward to logvar: g d / 2 inside the clamp (d = exp(clamp(lv)/2) eps, saved).
template <typename T>
void reparam_backward_t(const ReparamArgs& a, int64_t e0, int64_t e1) {
  using A = typename Acc<T>::type;
  const T* g = static_cast<const T*>(a.mu_or_grad) + e0;
  const T* lv = static_cast<const T*>(a.logvar) + e0;
  const T* eps = static_cast<const T*>(a.eps) + e0;
  T* out = static_cast<T*>(a.out) + e0;
  const int64_t n = e1 - e0;
  if (a.numel < 0) {  // one grad value for every element (an expanded scalar)
    const A gh = load(static_cast<const T*>(a.mu_or_grad), 0) * (A)0.5;
    for (int64_t i = 0; i < n; ++i) store(out, i, gh * load(eps, i) * logvar_inside(load(lv, i)));
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    store(out, i, load(g, i) * (A)0.5 * load(eps, i) * logvar_inside(load(lv, i)));
  }
}

constexpr int kLanes = 16;  // independent partial sums: vectorisable, and less rounding

template <typename T, typename Elem>
void partials_t(const ReduceArgs& a, double* partials, int64_t j0, int64_t j1, const Elem& elem) {
  using A = typename Acc<T>::type;
  const T* pa = static_cast<const T*>(a.a);
  const T* pb = static_cast<const T*>(a.b);
  const int64_t chunks = (a.numel + a.chunk - 1) / a.chunk;
  for (int64_t j = j0; j < j1; ++j) {
    const int64_t item = j / chunks, c = j - item * chunks;
    const int64_t b = item * a.numel + c * a.chunk;
    const int64_t n = (c + 1) * a.chunk < a.numel ? a.chunk : a.numel - c * a.chunk;
    A acc[kLanes] = {};
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes) {
      for (int l = 0; l < kLanes; ++l) acc[l] += elem(load(pa, b + i + l), load(pb, b + i + l));
    }
    double total = 0.0;
    for (; i < n; ++i) total += (double)elem(load(pa, b + i), load(pb, b + i));
    for (int l = 0; l < kLanes; ++l) total += (double)acc[l];
    partials[j] = total;
  }
}

// The loss's partial sums and, in the same pass, its gradient s (p - t) for an
// upstream grad of one: the terms, lanes and order of partials_t (the same
// loss bits) and the expression of scale_t (the same gradient bits).
template <typename T>
void sqdiff_grad_t(const ReduceArgs& a, double* partials, int64_t j0, int64_t j1) {
  using A = typename Acc<T>::type;
  const T* pa = static_cast<const T*>(a.a);
  const T* pb = static_cast<const T*>(a.b);
  T* g = static_cast<T*>(a.out1);
  const int64_t chunks = (a.numel + a.chunk - 1) / a.chunk;
  for (int64_t j = j0; j < j1; ++j) {
    const int64_t item = j / chunks, c = j - item * chunks;
    const int64_t b = item * a.numel + c * a.chunk;
    const int64_t n = (c + 1) * a.chunk < a.numel ? a.chunk : a.numel - c * a.chunk;
    const A s = (A)a.scale[item];
    A acc[kLanes] = {};
    int64_t i = b;
    for (; i + kLanes <= b + n; i += kLanes) {
      for (int l = 0; l < kLanes; ++l) {
        const A d = load(pa, i + l) - load(pb, i + l);
        acc[l] += d * d;
        store(g, i + l, s * d);
      }
    }
    double total = 0.0;
    for (; i < b + n; ++i) {
      const A d = load(pa, i) - load(pb, i);
      total += (double)(d * d);
      store(g, i, s * d);
    }
    for (int l = 0; l < kLanes; ++l) total += (double)acc[l];
    partials[j] = total;
  }
}

// The KL's partial sums and its gradient (kl_backward's, for a grad of one) in
// one pass: one exp per element serves both.
template <typename T>
void kl_grad_t(const ReduceArgs& a, double* partials, int64_t j0, int64_t j1) {
  using A = typename Acc<T>::type;
  const T* pm = static_cast<const T*>(a.a);
  const T* pl = static_cast<const T*>(a.b);
  T* gm = static_cast<T*>(a.out1);
  T* gv = static_cast<T*>(a.out2);
  const int64_t chunks = (a.numel + a.chunk - 1) / a.chunk;
  for (int64_t j = j0; j < j1; ++j) {
    const int64_t item = j / chunks, c = j - item * chunks;
    const int64_t b = item * a.numel + c * a.chunk;
    const int64_t n = (c + 1) * a.chunk < a.numel ? a.chunk : a.numel - c * a.chunk;
    const A s = (A)a.scale[item];
    const auto elem = [&](int64_t i) {
      const A mu = load(pm, i), lv = load(pl, i), l = clamp_logvar(lv), e = training::var_lv(l);
      store(gm, i, s * mu);
      store(gv, i, s * (A)0.5 * (e - (A)1) * logvar_inside(lv));
      return (A)0.5 * (mu * mu + e - (A)1 - l);  // training::kl_element
    };
    A acc[kLanes] = {};
    int64_t i = b;
    for (; i + kLanes <= b + n; i += kLanes) {
      for (int l = 0; l < kLanes; ++l) acc[l] += elem(i + l);
    }
    double total = 0.0;
    for (; i < b + n; ++i) total += (double)elem(i);
    for (int l = 0; l < kLanes; ++l) total += (double)acc[l];
    partials[j] = total;
  }
}

template <typename T>
void scale_t(const ScaleArgs& a, int64_t e0, int64_t e1, bool kl) {
  using A = typename Acc<T>::type;
  const T* pa = static_cast<const T*>(a.a);
  const T* pb = static_cast<const T*>(a.b);
  T* o1 = static_cast<T*>(a.out1);
  T* o2 = static_cast<T*>(a.out2);
  by_item(a.numel, e0, e1, [&](int64_t item, int64_t b, int64_t e) {
    const A s = (A)a.scale[item];
    if (kl) {
      for (int64_t i = b; i < e; ++i) {
        const A mu = load(pa, i), l = load(pb, i);
        store(o1, i, s * mu);
        store(o2, i, s * (A)0.5 * (training::var_lv(clamp_logvar(l)) - (A)1) * logvar_inside(l));
      }
    } else if (o2 != nullptr) {
      for (int64_t i = b; i < e; ++i) {
        const A d = s * (load(pa, i) - load(pb, i));
        store(o1, i, d);
        store(o2, i, -d);
      }
    } else {
      for (int64_t i = b; i < e; ++i) store(o1, i, s * (load(pa, i) - load(pb, i)));
    }
  });
}

}  // namespace

#define GENFAST_T std::remove_pointer_t<decltype(tag)>

void affine2(const Affine2Args& a, int64_t e0, int64_t e1) {
  dispatch<true>(a.dtype, [&](auto* tag) { affine2_t<GENFAST_T>(a, e0, e1); });
}

void sqdiff_partials(const ReduceArgs& a, double* partials, int64_t j0, int64_t j1) {
  dispatch<true>(a.dtype, [&](auto* tag) {
    partials_t<GENFAST_T>(a, partials, j0, j1, [](auto p, auto t) { return (p - t) * (p - t); });
  });
}

void kl_partials(const ReduceArgs& a, double* partials, int64_t j0, int64_t j1) {
  dispatch<true>(a.dtype, [&](auto* tag) {
    partials_t<GENFAST_T>(a, partials, j0, j1,
                          [](auto mu, auto lv) { return training::kl_element(mu, lv); });
  });
}

void sqdiff_partials_grad(const ReduceArgs& a, double* partials, int64_t j0, int64_t j1) {
  dispatch<true>(a.dtype, [&](auto* tag) { sqdiff_grad_t<GENFAST_T>(a, partials, j0, j1); });
}

void kl_partials_grad(const ReduceArgs& a, double* partials, int64_t j0, int64_t j1) {
  dispatch<true>(a.dtype, [&](auto* tag) { kl_grad_t<GENFAST_T>(a, partials, j0, j1); });
}

void scaled_diff(const ScaleArgs& a, int64_t e0, int64_t e1) {
  dispatch<true>(a.dtype, [&](auto* tag) { scale_t<GENFAST_T>(a, e0, e1, false); });
}

void kl_backward(const ScaleArgs& a, int64_t e0, int64_t e1) {
  dispatch<true>(a.dtype, [&](auto* tag) { scale_t<GENFAST_T>(a, e0, e1, true); });
}

void reparameterize(const ReparamArgs& a, const StreamArgs& s, int64_t g0, int64_t g1) {
  dispatch<true>(a.dtype, [&](auto* tag) { reparam_t<GENFAST_T>(a, s, g0, g1); });
}

void reparameterize_backward(const ReparamArgs& a, int64_t e0, int64_t e1) {
  dispatch<true>(a.dtype, [&](auto* tag) { reparam_backward_t<GENFAST_T>(a, e0, e1); });
}

void add_noise_seeded(const Affine2Args& a, void* noise, const StreamArgs& s, int64_t g0,
                      int64_t g1) {
  Affine2Args b = a;
  b.y = noise;
  for (int64_t q0 = g0; q0 < g1; q0 += kSubQuads) {
    const int64_t q1 = q0 + kSubQuads < g1 ? q0 + kSubQuads : g1;
    const int64_t e0 = quad_first_element(q0, s.quads_per_item, a.numel);
    const int64_t e1 = quad_first_element(q1, s.quads_per_item, a.numel);
    if (a.dtype == kFloat64Code) {  // float32 normals widened (gradcheck path)
      alignas(64) float buf[4 * kSubQuads];
      normals(buf, e0, kFloat32, a.numel, s, q0, q1);
      double* d = static_cast<double*>(noise);
      for (int64_t i = e0; i < e1; ++i) d[i] = buf[i - e0];
    } else {
      const AheadStreams ahead{
          {a.x, a.out1, a.out2, noise}, {false, true, true, true}, a.dtype == kFloat32 ? 4 : 2};
      normal_fill_ahead(fill_args(noise, 0, a.dtype, a.numel, s), q0, q1, g1, ahead);
    }
    affine2(b, e0, e1);
  }
}

}  // namespace genfast::cpu::GENFAST_CPU_ISA
