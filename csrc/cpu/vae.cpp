// CPU loops of the vae family. Compiled once per ISA level (GENFAST_CPU_ISA
// names the namespace); per-element math from csrc/include/genfast/vae.h and
// training.h, noise from this level's normal_fill (csrc/cpu/noise.cpp), so z
// equals genfast.vae.reparameterize and the KL genfast.vae.kl_divergence bit
// for bit.
//
// The forward works in sub-blocks of kSubQuads Philox calls inside a chunk:
// a sub-block's normals are written into d and consumed while still in L1/L2,
// and mu / logvar are read once for z, d and the KL.
#include "vae_kernels.h"

#include <type_traits>

#include "genfast/convert.h"
#include "genfast/training.h"
#include "genfast/vae.h"
#include "noise_kernels.h"
#include "storage.h"
#include "training_kernels.h"  // kFloat64Code

#ifndef GENFAST_CPU_ISA
#error "GENFAST_CPU_ISA must name the ISA level this file is compiled for"
#endif

namespace genfast::cpu::GENFAST_CPU_ISA {
namespace {

using training::clamp_logvar;
using training::exp_lv;

constexpr int64_t kSubQuads = 512;
constexpr int kLanes = 16;  // the training family's KL lanes: the same sum, bit for bit

// z, d (over eps) and the KL lanes over n elements, n a multiple of kLanes.
// Restrict pointers, d read and written through one: the loop vectorises
// with no overlap checks.
template <typename T, typename A>
inline void lanes_block(const T* __restrict m, const T* __restrict lv, T* __restrict z,
                        T* __restrict d, int64_t n, A* __restrict acc) {
  for (int64_t i = 0; i < n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const A mv = load(m, i + l), c = clamp_logvar((A)load(lv, i + l));
      const A h = exp_lv((A)0.5 * c);  // the std: z's and (squared) the KL's
      const A dv = h * load(d, i + l);
      store(z, i + l, mv + dv);
      store(d, i + l, dv);
      acc[l] += (A)0.5 * (mv * mv + training::var_from_std(h) - (A)1 - c);  // kl_element
    }
  }
}

template <typename T>
void forward_t(const VaeForwardArgs& a, double* partials, int64_t j0, int64_t j1) {
  using A = typename Acc<T>::type;
  const T* m = static_cast<const T*>(a.mu);
  const T* lv = static_cast<const T*>(a.logvar);
  T* z = static_cast<T*>(a.z);
  T* d = static_cast<T*>(a.d);
  const int64_t chunks = (a.numel + a.chunk - 1) / a.chunk;
  const int64_t qpi = a.quads_per_item;
  const int fill_dtype = a.dtype == kFloat64Code ? kFloat32 : a.dtype;
  const int64_t size = fill_dtype == kFloat32 ? 4 : 2;
  for (int64_t j = j0; j < j1; ++j) {
    const int64_t item = j / chunks, c = j - item * chunks;
    const int64_t b = item * a.numel + c * a.chunk;  // the chunk's first element
    const int64_t n = (c + 1) * a.chunk < a.numel ? a.chunk : a.numel - c * a.chunk;
    const int64_t full = n - n % kLanes;
    A acc[kLanes] = {};
    double total = 0.0;
    // the chunk's quads (chunk is a multiple of 4: they start at its first element)
    const int64_t g_end = item * qpi + (c * a.chunk + n + 3) / 4;
    for (int64_t q0 = item * qpi + c * a.chunk / 4; q0 < g_end; q0 += kSubQuads) {
      const int64_t q1 = q0 + kSubQuads < g_end ? q0 + kSubQuads : g_end;
      const int64_t e0 = item * a.numel + 4 * (q0 - item * qpi);
      const int64_t e1 = q1 == g_end ? b + n : item * a.numel + 4 * (q1 - item * qpi);
      if constexpr (std::is_same<T, double>::value) {  // float32 normals widened (gradcheck)
        alignas(64) float buf[4 * kSubQuads];
        NormalFillArgs f{reinterpret_cast<char*>(buf) - e0 * size, fill_dtype, a.numel, qpi,
                         a.k0, a.k1, a.stream, a.sample_offset};
        normal_fill(f, q0, q1);
        for (int64_t i = e0; i < e1; ++i) d[i] = (double)buf[i - e0];
      } else {
        NormalFillArgs f{d, fill_dtype, a.numel, qpi, a.k0, a.k1, a.stream, a.sample_offset};
        normal_fill(f, q0, q1);
      }
      // sub-blocks start at multiples of 4 * kSubQuads (of kLanes) in the chunk:
      // the lane of an element is the same as in one pass over the chunk
      const int64_t stop = e1 < b + full ? e1 : b + full;
      if (stop > e0) lanes_block<T, A>(m + e0, lv + e0, z + e0, d + e0, stop - e0, acc);
      for (int64_t i = stop > e0 ? stop : e0; i < e1; ++i) {  // the chunk's tail, in order
        const A mv = load(m, i), cl = clamp_logvar((A)load(lv, i));
        const A h = exp_lv((A)0.5 * cl);
        const A dv = h * load(d, i);
        store(z, i, mv + dv);
        store(d, i, dv);
        total += (double)((A)0.5 * (mv * mv + training::var_from_std(h) - (A)1 - cl));
      }
    }
    for (int l = 0; l < kLanes; ++l) total += (double)acc[l];
    partials[j] = total;
  }
}

template <typename T, int GZ>  // GZ: 0 none, 1 one value, 2 per element
inline void backward_block(const T* __restrict gz, const T* __restrict m,
                           const T* __restrict lv, const T* __restrict d, T* __restrict gm,
                           T* __restrict gv, typename Acc<T>::type s, int64_t n) {
  using A = typename Acc<T>::type;
  const A g1 = GZ == 1 ? (A)load(gz, 0) : (A)0;
  for (int64_t i = 0; i < n; ++i) {
    const A g = GZ == 2 ? (A)load(gz, i) : g1;
    A om, ov;
    vae::reparam_kl_grads<A>(g, s, load(m, i), load(lv, i), load(d, i), om, ov);
    store(gm, i, om);
    store(gv, i, ov);
  }
}

template <typename T>
void backward_t(const VaeBackwardArgs& a, int64_t e0, int64_t e1) {
  using A = typename Acc<T>::type;
  const T* gz = static_cast<const T*>(a.gz);
  const T* m = static_cast<const T*>(a.mu);
  const T* lv = static_cast<const T*>(a.logvar);
  const T* d = static_cast<const T*>(a.d);
  T* gm = static_cast<T*>(a.g_mu);
  T* gv = static_cast<T*>(a.g_lv);
  if (a.numel == 0) return;
  for (int64_t item = e0 / a.numel, b = e0; b < e1; ++item) {
    const int64_t e = (item + 1) * a.numel < e1 ? (item + 1) * a.numel : e1;
    const A s = (A)a.scale[item];
    if (gz == nullptr) {
      backward_block<T, 0>(gz, m + b, lv + b, d + b, gm + b, gv + b, s, e - b);
    } else if (a.gz_scalar) {
      backward_block<T, 1>(gz, m + b, lv + b, d + b, gm + b, gv + b, s, e - b);
    } else {
      backward_block<T, 2>(gz + b, m + b, lv + b, d + b, gm + b, gv + b, s, e - b);
    }
    b = e;
  }
}

}  // namespace

#define GENFAST_T std::remove_pointer_t<decltype(tag)>

void reparam_kl(const VaeForwardArgs& a, double* partials, int64_t j0, int64_t j1) {
  dispatch<true>(a.dtype, [&](auto* tag) { forward_t<GENFAST_T>(a, partials, j0, j1); });
}

void reparam_kl_backward(const VaeBackwardArgs& a, int64_t e0, int64_t e1) {
  dispatch<true>(a.dtype, [&](auto* tag) { backward_t<GENFAST_T>(a, e0, e1); });
}

}  // namespace genfast::cpu::GENFAST_CPU_ISA
