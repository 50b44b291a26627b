// CPU loops of the multistep family. Compiled once per ISA level
// (GENFAST_CPU_ISA names the namespace); per-step math from
// csrc/include/genfast/multistep.h, noise from this level's normal_fill
// (csrc/cpu/noise.cpp), so in-kernel noise equals genfast.randn bit for bit.
//
// One pass over memory, fused: every element of every stream (x, m, the
// history slots, P, z) is read once and every output (out, D, P, x0) written
// once, in one loop over 8-lane float32 vectors (GCC vector extensions; every
// ISA level gives the same bits, the build has no FMA contraction). The
// history terms a step does not read (order warm-up, first-order final steps,
// history a sampler does not have: zero coefficients) are dropped from the
// loop, so their memory is never touched; the loop is specialised on the
// number of terms left and on CFG. float32 streams are read and written in
// place; float16 / bfloat16 go through float32 stack blocks that stay in L1.
//
// History in place: D goes to ring slot i mod 3, the slot h2 is read from,
// and unipc's P is read and rewritten; within one vector every load comes
// before the stores, so the aliasing is harmless (the loads and stores are
// memcpy's, which the compiler may not reorder across a possible alias).
#include "multistep_kernels.h"

#include <string.h>

#include <type_traits>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "genfast/convert.h"
#include "genfast/multistep.h"
#include "genfast/training.h"  // f16 / bf16 loads
#include "noise_kernels.h"
#include "storage.h"

#ifndef GENFAST_CPU_ISA
#error "GENFAST_CPU_ISA must name the ISA level this file is compiled for"
#endif

// The 8-lane type passes through functions of this file only (internal
// linkage, inlined): the baseline level's note that its ABI differs from an
// AVX build's concerns no caller.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace genfast::cpu::GENFAST_CPU_ISA {
namespace {

constexpr int64_t kBlock = 512;  // elements per L1 block (a multiple of 8: noise quads, lanes)
constexpr int kMaxTerms = 5;     // h0, h1, h2, P, z
constexpr int W = 8;
typedef float vf __attribute__((vector_size(4 * W)));

inline vf splat(float v) { return vf{} + v; }
// load / store of V (vf: 8 lanes, float: the scalar tail)
template <typename V>
inline V ld(const float* p) {
  V r;
  memcpy(&r, p, sizeof r);
  return r;
}
template <typename V, bool NTS = false>
inline void st(float* p, V v) {
#if defined(__SSE2__)
  if constexpr (NTS && std::is_same_v<V, vf>) {  // p 32-byte aligned (the binding checks)
#if defined(__AVX__)
    _mm256_stream_ps(p, (__m256)v);
#else
    _mm_stream_ps(p, __m128{v[0], v[1], v[2], v[3]});
    _mm_stream_ps(p + 4, __m128{v[4], v[5], v[6], v[7]});
#endif
    return;
  }
#endif
  memcpy(p, &v, sizeof v);
}

// The read terms of one step, in the order the sums take them: pointer,
// coefficient in out, coefficient in xc.
struct Terms {
  int n;
  bool p_read;  // P is one of the terms
  const float* p[kMaxTerms];
  float ko[kMaxTerms], kc[kMaxTerms];
};

// The step over n float32 elements (see multistep.h):
//   m = r (u + g (c - u)) (CFG) or c;  D = px x + pm m
//   out = ax x + ad D + sum ko_j t_j;  xc = cs x + cd D + sum kc_j t_j
//   ring slot d <- D, or hx x + hd D with DX (lms)
// d, xc, x0: null = not written. Vector and scalar tail do the same
// operations in the same order.
template <typename V, bool CFG, int NT, bool NTS, bool DX>
inline void one(const float* x, const float* c, const float* u, V g, V r, const Terms& t,
                const V* ko, const V* kc, V px, V pm, V ax, V ad, V cs, V cd, V hx, V hd,
                int64_t i, float* out, float* d, float* xc, float* x0) {
  const V xv = ld<V>(x + i);
  V m = ld<V>(c + i);
  if constexpr (CFG) {
    const V uv = ld<V>(u + i);
    m = r * (uv + g * (m - uv));
  }
  const V dv = px * xv + pm * m;
  V o = ax * xv + ad * dv;
  V q = cs * xv + cd * dv;
  V tv[NT > 0 ? NT : 1];
#pragma GCC unroll 5
  for (int j = 0; j < NT; ++j) tv[j] = ld<V>(t.p[j] + i);
#pragma GCC unroll 5
  for (int j = 0; j < NT; ++j) o = o + ko[j] * tv[j];
  if (xc != nullptr) {
#pragma GCC unroll 5
    for (int j = 0; j < NT; ++j) q = q + kc[j] * tv[j];
  }
  // every load above, every store below: D may overwrite h2, xc P
  st<V, NTS>(out + i, o);
  if (d != nullptr) {
    if constexpr (DX) st<V, NTS>(d + i, hx * xv + hd * dv);  // lms: the derivative
    else st<V, NTS>(d + i, dv);
  }
  if (x0 != nullptr) st<V, NTS>(x0 + i, dv);
  if (xc != nullptr) {
    // P read and rewritten: its lines are cached already, a streamed store
    // would evict them
    if (t.p_read) st<V, false>(xc + i, q);
    else st<V, NTS>(xc + i, q);
  }
}

template <bool CFG, int NT, bool NTS, bool DX>
void fused(int64_t n, const float* x, const float* c, const float* u, float g, float r,
           const Terms& t, const multistep::CoefsF& k, float* out, float* d, float* xc,
           float* x0) {
  vf kov[NT > 0 ? NT : 1], kcv[NT > 0 ? NT : 1];
  float kos[NT > 0 ? NT : 1], kcs[NT > 0 ? NT : 1];
  for (int j = 0; j < NT; ++j) {
    kov[j] = splat(t.ko[j]); kcv[j] = splat(t.kc[j]);
    kos[j] = t.ko[j]; kcs[j] = t.kc[j];
  }
  // locals, not reads of k in the loop: a float store may alias k's floats,
  // so the compiler would reload and re-broadcast them every vector
  const multistep::CoefsF kl = k;
  Terms tl = t;
  const vf gv = splat(g), rv = splat(r), px = splat(kl.px), pm = splat(kl.pm);
  const vf ax = splat(kl.ax), ad = splat(kl.ad), cs = splat(kl.cs), cd = splat(kl.cd);
  const vf hx = splat(kl.hx), hd = splat(kl.hd);
  int64_t i = 0;
  for (; i + W <= n; i += W) {
    one<vf, CFG, NT, NTS, DX>(x, c, u, gv, rv, tl, kov, kcv, px, pm, ax, ad, cs, cd, hx, hd, i,
                              out, d, xc, x0);
  }
  for (; i < n; ++i) {
    one<float, CFG, NT, false, DX>(x, c, u, g, r, tl, kos, kcs, kl.px, kl.pm, kl.ax, kl.ad,
                                   kl.cs, kl.cd, kl.hx, kl.hd, i, out, d, xc, x0);
  }
#if defined(__SSE2__)
  if constexpr (NTS) _mm_sfence();  // the streamed stores are visible before the op returns
#endif
}

using FusedFn = void (*)(int64_t, const float*, const float*, const float*, float, float,
                         const Terms&, const multistep::CoefsF&, float*, float*, float*, float*);

template <bool CFG, bool NTS, bool DX>
FusedFn fused_for(int nt) {
  if constexpr (DX) {  // lms: at most the three ring terms (no P, no noise)
    switch (nt) {
      case 0: return fused<CFG, 0, NTS, true>;
      case 1: return fused<CFG, 1, NTS, true>;
      case 2: return fused<CFG, 2, NTS, true>;
      default: return fused<CFG, 3, NTS, true>;
    }
  } else {
    switch (nt) {
      case 0: return fused<CFG, 0, NTS, false>;
      case 1: return fused<CFG, 1, NTS, false>;
      case 2: return fused<CFG, 2, NTS, false>;
      case 3: return fused<CFG, 3, NTS, false>;
      case 4: return fused<CFG, 4, NTS, false>;
      default: return fused<CFG, 5, NTS, false>;
    }
  }
}

template <bool DX>
FusedFn fused_for_dx(bool cfg, bool nts, int nt) {
  if (nts) return cfg ? fused_for<true, true, DX>(nt) : fused_for<false, true, DX>(nt);
  return cfg ? fused_for<true, false, DX>(nt) : fused_for<false, false, DX>(nt);
}

FusedFn fused_for(bool cfg, bool nts, int nt, bool dx) {
  return dx ? fused_for_dx<true>(cfg, nts, nt) : fused_for_dx<false>(cfg, nts, nt);
}

template <typename T>
inline void load_block(const T* __restrict__ p, float* __restrict__ out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = load(p, i);
}

template <typename T>
inline void store_block(T* __restrict__ p, const float* __restrict__ v, int64_t n) {
  for (int64_t i = 0; i < n; ++i) store(p, i, v[i]);
}

template <typename T>
void apply_t(const MultistepArgs& a, const StreamArgs& s, int64_t item, int64_t e0, int64_t e1) {
  constexpr bool kF32 = std::is_same_v<T, float>;
  const bool cfg = a.u != nullptr;
  const float g = cfg ? a.g[item] : 0.0f, r = a.r[item];
  // the terms' bases (T, at this item) and coefficients, in sum order
  const T* base[kMaxTerms];
  Terms t;
  t.n = 0;
  t.p_read = a.read_p;
  T* state = static_cast<T*>(a.state);
  const int64_t item0 = item * a.numel;
  int z_term = -1;
  for (int j = 0; j < 3; ++j) {
    if (a.h_slot[j] < 0) continue;
    base[t.n] = state + a.h_slot[j] * a.slot_stride + item0;
    t.ko[t.n] = a.k.ah[j]; t.kc[t.n] = a.k.ch[j];
    ++t.n;
  }
  if (a.read_p) {
    base[t.n] = state + a.p_slot * a.slot_stride + item0;
    t.ko[t.n] = a.k.ap; t.kc[t.n] = a.k.cp;
    ++t.n;
  }
  if (a.noise) {
    z_term = t.n;
    base[t.n] = a.seeded ? nullptr : static_cast<const T*>(a.z) + item0;
    t.ko[t.n] = a.k.az; t.kc[t.n] = 0.0f;
    ++t.n;
  }
  // streaming stores: float32 only (the half types store from L1 blocks)
  const FusedFn run = fused_for(cfg, kF32 && a.stream_stores, t.n, a.write_dx);
  const T* xs = static_cast<const T*>(a.x) + item0;
  const T* cs = static_cast<const T*>(a.c) + item0;
  const T* us = cfg ? static_cast<const T*>(a.u) + item0 : nullptr;
  T* po = static_cast<T*>(a.prev) + item0;
  T* x0o = a.x0 != nullptr ? static_cast<T*>(a.x0) + item0 : nullptr;
  T* dout = a.d_slot >= 0 ? state + a.d_slot * a.slot_stride + item0 : nullptr;
  T* xco = a.write_p ? state + a.p_slot * a.slot_stride + item0 : nullptr;

  alignas(64) T zt[kBlock];
  // float16 / bfloat16: float32 copies of the block
  alignas(64) float cvt[kF32 ? 1 : 3 + kMaxTerms][kF32 ? 1 : kBlock];
  alignas(64) float outb[kF32 ? 1 : 4][kF32 ? 1 : kBlock];
  for (int64_t b = e0; b < e1; b += kBlock) {
    const int64_t n = b + kBlock < e1 ? kBlock : e1 - b;
    if (z_term >= 0 && a.seeded) {
      // quads [b/4, ceil((b+n)/4)) of this item, written as if zt were the tensor
      const int64_t q0 = item * s.quads_per_item + b / 4;
      const int64_t q1 = item * s.quads_per_item + (b + n + 3) / 4;
      NormalFillArgs nf{reinterpret_cast<char*>(zt) - (item0 + b) * (int64_t)sizeof(T), a.dtype,
                        a.numel, s.quads_per_item, s.k0, s.k1, s.stream, s.sample_offset};
      normal_fill(nf, q0, q1);
    }
    Terms tb = t;
    if constexpr (kF32) {
      for (int j = 0; j < t.n; ++j) tb.p[j] = j == z_term && a.seeded ? zt : base[j] + b;
      run(n, xs + b, cs + b, cfg ? us + b : nullptr, g, r, tb, a.k, po + b,
          dout != nullptr ? dout + b : nullptr, xco != nullptr ? xco + b : nullptr,
          x0o != nullptr ? x0o + b : nullptr);
    } else {
      load_block(xs + b, cvt[0], n);
      load_block(cs + b, cvt[1], n);
      if (cfg) load_block(us + b, cvt[2], n);
      for (int j = 0; j < t.n; ++j) {
        load_block(j == z_term && a.seeded ? static_cast<const T*>(zt) : base[j] + b, cvt[3 + j],
                   n);
        tb.p[j] = cvt[3 + j];
      }
      run(n, cvt[0], cvt[1], cvt[2], g, r, tb, a.k, outb[0], dout != nullptr ? outb[1] : nullptr,
          xco != nullptr ? outb[2] : nullptr, x0o != nullptr ? outb[3] : nullptr);
      store_block(po + b, outb[0], n);
      if (dout != nullptr) store_block(dout + b, outb[1], n);
      if (xco != nullptr) store_block(xco + b, outb[2], n);
      if (x0o != nullptr) store_block(x0o + b, outb[3], n);
    }
  }
}

}  // namespace

#define GENFAST_T std::remove_pointer_t<decltype(tag)>

void multistep_apply(const MultistepArgs& a, const StreamArgs& s, int64_t item, int64_t e0,
                     int64_t e1) {
  dispatch(a.dtype, [&](auto* tag) { apply_t<GENFAST_T>(a, s, item, e0, e1); });
}

}  // namespace genfast::cpu::GENFAST_CPU_ISA
