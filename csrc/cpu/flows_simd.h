// float32 rational-quadratic spline over 16 elements at once (one per SIMD
// lane), for csrc/cpu/flows.cpp. Every lane keeps its own bins: the K logits
// of each parameter tensor are loaded as K vectors (lane l = element l; 8x8
// register transposes, no gathers), and softmax, cumulative sum, the bin
// search (a count of knots passed, by comparisons) and the rational-quadratic
// map all run in registers. Knot derivatives need a softplus only at the two
// knots of the chosen bin: the raw logits are selected first (by comparing
// bin indices, not by gathers, whose latency would sit on the critical path),
// then transformed.
//
// The arithmetic follows the scalar code (spline.h, flows_math.h) operation
// for operation, except that the exp / log polynomials use fused multiply-add
// where the ISA has it (fewer instructions, no less accurate), so results can
// differ from the scalar path and between ISA levels by an ulp or so. The
// softmax, knots and bins are computed as torch does (reciprocal of the sum;
// the cumulative sums in double, as torch's CPU cumsum: narrow bins are
// differences of knots, so knot ulps matter).
#pragma once
#include <stdint.h>
#include <string.h>

#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "flows_kernels.h"
#include "genfast/coupling.h"
#include "genfast/flows_math.h"

#ifndef GENFAST_CPU_ISA
#error "GENFAST_CPU_ISA must name the ISA level this file is compiled for"
#endif

namespace genfast::cpu::GENFAST_CPU_ISA {
namespace rqv {

// 16 lanes per value, held as two 8-float vectors: every dependency chain (the
// exps, the knot sums, the divisions and logs of the map) runs twice side by
// side, so the core is not left waiting on latency. (A 64-byte GCC vector
// would say the same more briefly, but below AVX-512 GCC lowers its
// comparisons and selects one lane at a time.)
constexpr int W = 16;
typedef float f8 __attribute__((vector_size(32)));
typedef int32_t i8 __attribute__((vector_size(32)));
struct vf {
  f8 a, b;  // lanes 0-7, 8-15
};
struct vi {
  i8 a, b;
};

#define GENFAST_RQ_INLINE inline __attribute__((always_inline))
GENFAST_RQ_INLINE vf splat(float x) { return {f8{} + x, f8{} + x}; }
GENFAST_RQ_INLINE vi splati(int32_t x) { return {i8{} + x, i8{} + x}; }
#define GENFAST_RQ_OP(R, T, OP, U)                                                   \
  GENFAST_RQ_INLINE R operator OP(T x, T y) { return {x.a OP y.a, x.b OP y.b}; }     \
  GENFAST_RQ_INLINE R operator OP(T x, U y) { return {x.a OP y, x.b OP y}; }         \
  GENFAST_RQ_INLINE R operator OP(U x, T y) { return {x OP y.a, x OP y.b}; }
GENFAST_RQ_OP(vf, vf, +, float)
GENFAST_RQ_OP(vf, vf, -, float)
GENFAST_RQ_OP(vf, vf, *, float)
GENFAST_RQ_OP(vf, vf, /, float)
GENFAST_RQ_OP(vi, vf, <, float)
GENFAST_RQ_OP(vi, vf, <=, float)
GENFAST_RQ_OP(vi, vf, >, float)
GENFAST_RQ_OP(vi, vf, >=, float)
GENFAST_RQ_OP(vi, vf, ==, float)
GENFAST_RQ_OP(vi, vi, +, int32_t)
GENFAST_RQ_OP(vi, vi, -, int32_t)
GENFAST_RQ_OP(vi, vi, &, int32_t)
GENFAST_RQ_OP(vi, vi, |, int32_t)
GENFAST_RQ_OP(vi, vi, <<, int32_t)
GENFAST_RQ_OP(vi, vi, >>, int32_t)
GENFAST_RQ_OP(vi, vi, ==, int32_t)
GENFAST_RQ_OP(vi, vi, <, int32_t)
GENFAST_RQ_OP(vi, vi, >=, int32_t)
GENFAST_RQ_OP(vi, vi, <=, int32_t)
#undef GENFAST_RQ_OP
GENFAST_RQ_INLINE vf operator-(vf x) { return {-x.a, -x.b}; }
GENFAST_RQ_INLINE vi operator~(vi x) { return {~x.a, ~x.b}; }
GENFAST_RQ_INLINE vf& operator+=(vf& x, vf y) { return x = x + y; }
// m ? x : y, lane-wise (m: all-ones or zero lanes, from a comparison)
GENFAST_RQ_INLINE vf sel(vi m, vf x, vf y) { return {m.a ? x.a : y.a, m.b ? x.b : y.b}; }
GENFAST_RQ_INLINE vi seli(vi m, vi x, vi y) { return {m.a ? x.a : y.a, m.b ? x.b : y.b}; }
GENFAST_RQ_INLINE vi as_int(vf x) { return {(i8)x.a, (i8)x.b}; }
GENFAST_RQ_INLINE vf as_float(vi x) { return {(f8)x.a, (f8)x.b}; }
GENFAST_RQ_INLINE vf to_float(vi x) {
  return {__builtin_convertvector(x.a, f8), __builtin_convertvector(x.b, f8)};
}
GENFAST_RQ_INLINE vi to_int(vf x) {
  return {__builtin_convertvector(x.a, i8), __builtin_convertvector(x.b, i8)};
}
// Unaligned loads and stores, one register at a time (a memcpy of the whole
// struct goes through the stack).
typedef float f8u __attribute__((vector_size(32), aligned(4), may_alias));
GENFAST_RQ_INLINE vf load(const float* p) {
  return {*reinterpret_cast<const f8u*>(p), *reinterpret_cast<const f8u*>(p + 8)};
}
GENFAST_RQ_INLINE void store(float* p, vf v) {
  *reinterpret_cast<f8u*>(p) = v.a;
  *reinterpret_cast<f8u*>(p + 8) = v.b;
}
GENFAST_RQ_INLINE void store_to(vf* dst, vf v) {
  dst->a = v.a;  // member-wise: a whole-struct store goes through integer registers
  dst->b = v.b;
}

// fl_min / fl_max semantics (the second argument wins ties and NaN), which
// are also those of the x86 min / max instructions.
GENFAST_RQ_INLINE vf vmin(vf a, vf b) {
#if defined(__AVX__)
  return {(f8)_mm256_min_ps((__m256)a.a, (__m256)b.a), (f8)_mm256_min_ps((__m256)a.b, (__m256)b.b)};
#else
  return sel(a < b, a, b);
#endif
}
GENFAST_RQ_INLINE vf vmax(vf a, vf b) {
#if defined(__AVX__)
  return {(f8)_mm256_max_ps((__m256)a.a, (__m256)b.a), (f8)_mm256_max_ps((__m256)a.b, (__m256)b.b)};
#else
  return sel(a > b, a, b);
#endif
}
// |x| by clearing the sign bit (-0 gives +0).
GENFAST_RQ_INLINE vf vabs(vf x) { return as_float(as_int(x) & 0x7fffffff); }
// a * b + c, with one rounding where the ISA has FMA (so the polynomials
// below are shorter and no less accurate than the scalar code's).
GENFAST_RQ_INLINE vf madd(vf a, vf b, vf c) {
#if defined(__FMA__)
  return {(f8)_mm256_fmadd_ps((__m256)a.a, (__m256)b.a, (__m256)c.a),
          (f8)_mm256_fmadd_ps((__m256)a.b, (__m256)b.b, (__m256)c.b)};
#else
  return a * b + c;
#endif
}
GENFAST_RQ_INLINE vf madd(vf a, float b, float c) { return madd(a, splat(b), splat(c)); }
GENFAST_RQ_INLINE vf madd(vf a, float b, vf c) { return madd(a, splat(b), c); }
GENFAST_RQ_INLINE vf madd(vf a, vf b, float c) { return madd(a, b, splat(c)); }
GENFAST_RQ_INLINE vf vsqrt(vf x) {
#if defined(__AVX__)
  return {(f8)_mm256_sqrt_ps((__m256)x.a), (f8)_mm256_sqrt_ps((__m256)x.b)};
#else
  float r[W];
  memcpy(r, &x, sizeof r);
  for (int l = 0; l < W; ++l) r[l] = __builtin_sqrtf(r[l]);
  return load(r);
#endif
}

// fl_exp, fl_log, fl_log1p_pos, fl_softplus, fl_sigmoid of flows_math.h,
// lane-wise: the same reductions and Cephes polynomials, evaluated with madd.
// e^x for x <= 0 (the softmax terms): no upper clamp needed.
GENFAST_RQ_INLINE vf vexp_nonpos(vf x) {
  x = vmax(x, splat(-87.3f));
  const vf n = madd(x, 1.44269504088896341f, 12582912.0f) - 12582912.0f;
  vf r = madd(n, -0.693359375f, x);  // n ln2_hi is exact
  r = madd(n, 2.12194440e-4f, r);
  const vf z = r * r;
  vf p = madd(splat(1.9875691500e-4f), r, splat(1.3981999507e-3f));
  p = madd(p, r, 8.3334519073e-3f);
  p = madd(p, r, 4.1665795894e-2f);
  p = madd(p, r, 1.6666665459e-1f);
  p = madd(p, r, 5.0000001201e-1f);
  const vf er = madd(p, z, r) + 1.0f;
  return er * as_float((to_int(n) + 127) << 23);
}
GENFAST_RQ_INLINE vf vexp(vf x) { return vexp_nonpos(vmin(x, splat(88.37f))); }
// ln x for x > 0 (log_pos of noise.h: x = m 2^e, m in [sqrt(1/2), sqrt(2)))
GENFAST_RQ_INLINE vf vlog(vf x) {
  x = vmax(x, splat(1.17549435e-38f));
  const vi ix = as_int(x) - 0x3f3504f3;
  const vf m = as_float((ix & 0x007fffff) + 0x3f3504f3);
  const vf f = m - 1.0f;
  const vf z = f * f;
  vf p = madd(splat(-1.0224199295e-1f), f, splat(1.6141176224e-1f));
  p = madd(p, f, -1.7166906595e-1f);
  p = madd(p, f, 1.9910238683e-1f);
  p = madd(p, f, -2.4980573356e-1f);
  p = madd(p, f, 3.3334690332e-1f);
  const vf ef = to_float(ix >> 23);
  vf y = p * f * z;
  y = madd(ef, -2.12194440e-4f, y);
  y = madd(z, -0.5f, y);
  return madd(ef, 0.693359375f, f + y);
}
inline vf vlog1p_pos(vf e) {
  const vf u = 1.0f + e;
  const vf um1 = u - 1.0f;
  const vi zero = um1 == 0.0f;
  return sel(zero, e, vlog(u) * (e / sel(zero, splat(1.0f), um1)));
}
inline vf vsoftplus(vf x) { return vmax(x, splat(0.0f)) + vlog1p_pos(vexp_nonpos(-vabs(x))); }
inline vf vsigmoid(vf x) {
  const vf e = vexp_nonpos(-vabs(x));
  const vf inv = 1.0f / (1.0f + e);
  return sel(x >= 0.0f, inv, e * inv);
}
inline vf vclamp01(vf t) { return vmin(vmax(t, splat(0.0f)), splat(1.0f)); }

// Constants of one call (RqConsts in flows.cpp, float32).
struct Consts {
  int K, nd;
  bool tails;
  float left, right, bottom, top, min_w, min_h, min_d, coef_w, coef_h, d_tail;
  explicit Consts(const RqArgs& a)
      : K(static_cast<int>(a.num_bins)), nd(a.linear_tails ? K - 1 : K + 1),
        tails(a.linear_tails), left(float(a.left)), right(float(a.right)),
        bottom(float(a.bottom)), top(float(a.top)), min_w(float(a.min_bin_width)),
        min_h(float(a.min_bin_height)), min_d(float(a.min_derivative)),
        coef_w(float(1.0 - a.min_bin_width * a.num_bins)),
        coef_h(float(1.0 - a.min_bin_height * a.num_bins)) {
    const float tail_u = float(__builtin_log(__builtin_expm1(1.0 - a.min_derivative)));
    d_tail = min_d + fl_softplus(tail_u);
  }
};

#if defined(__AVX2__)
// 8x8 transpose: r[i] = row i in, column i out.
inline void transpose8(__m256* r) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}
#endif

// cols[k] = column k of the block's rows of `width` floats at u (row l = lane
// l; lanes past n repeat row 0). A full block goes through 8x8 register
// transposes, 8 columns at a time: a row's last, partial chunk is read with a
// full 8-float load that runs into the next row (harmless), except for the
// block's last row, which is read masked (it may end the tensor).
inline void load_cols(const float* u, int n, int width, vf* cols) {
#if defined(__AVX2__)
  if (n == W) {
    for (int k0 = 0; k0 < width; k0 += 8) {
      const int rem = width - k0 < 8 ? width - k0 : 8;
      const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(rem),
                                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
      for (int g = 0; g < W / 8; ++g) {
        __m256 r[8];
        for (int l = 0; l < 8; ++l) {
          const float* q = u + (8 * g + l) * width + k0;
          r[l] = (rem == 8 || 8 * g + l != W - 1) ? _mm256_loadu_ps(q)
                                                  : _mm256_maskload_ps(q, mask);
        }
        transpose8(r);
        for (int j = 0; j < rem; ++j) (g == 0 ? cols[k0 + j].a : cols[k0 + j].b) = (f8)r[j];
      }
    }
    return;
  }
#endif
  float t[W];
  for (int k = 0; k < width; ++k) {
    for (int l = 0; l < W; ++l) t[l] = u[(l < n ? l : 0) * width + k];
    cols[k] = load(t);
  }
}

// The block's rows of `width` floats at p (l < n) from columns cols[k]. A
// full block: 8x8 transposes; a partial chunk is stored with a full 8-float
// store that runs into the next row's first floats, so partial chunks go
// first and the next row's own stores overwrite the spill later; the block's
// last row is stored masked (the next row may be another thread's).
inline void store_cols(float* p, int n, int width, const vf* cols) {
#if defined(__AVX2__)
  if (n == W) {
    const int tail = width % 8;
    const int full = width - tail;
    for (int pass = 0; pass < 2; ++pass) {
      const int k_begin = pass == 0 ? full : 0, k_end = pass == 0 ? width : full;
      for (int k0 = k_begin; k0 < k_end; k0 += 8) {
        const int rem = width - k0 < 8 ? width - k0 : 8;
        const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(rem),
                                                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        for (int g = 0; g < W / 8; ++g) {
          __m256 r[8];
          for (int j = 0; j < 8; ++j)
            r[j] = j < rem ? (__m256)(g == 0 ? cols[k0 + j].a : cols[k0 + j].b)
                           : _mm256_setzero_ps();
          transpose8(r);
          for (int l = 0; l < 8; ++l) {
            float* q = p + (8 * g + l) * width + k0;
            if (rem == 8 || 8 * g + l != W - 1) {
              _mm256_storeu_ps(q, r[l]);
            } else {
              _mm256_maskstore_ps(q, mask, r[l]);
            }
          }
        }
      }
    }
    return;
  }
#endif
  float t[W];
  for (int k = 0; k < width; ++k) {
    store(t, cols[k]);
    for (int l = 0; l < n; ++l) p[l * width + k] = t[l];
  }
}

// Softmax terms of the K logits in e[k] (in place): e[k] = exp(u_k - max);
// returns their sum (fl_exp, in knots()'s order).
inline vf softmax_terms(int K, vf* e) {
  vf m = e[0];
  for (int k = 1; k < K; ++k) m = vmax(m, e[k]);
  vf sum = splat(0.0f);
  for (int k = 0; k < K; ++k) {
    const vf t = vexp_nonpos(e[k] - m);
    store_to(e + k, t);
    sum += t;
  }
  return sum;
}

// Running sum in double of float32 terms, lane-wise, in 4-double quarters.
struct DAcc {
#if defined(__AVX__)
  __m256d q[4] = {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(),
                  _mm256_setzero_pd()};
  void add(vf v) {
    const __m256 l = (__m256)v.a, h = (__m256)v.b;
    q[0] = _mm256_add_pd(q[0], _mm256_cvtps_pd(_mm256_castps256_ps128(l)));
    q[1] = _mm256_add_pd(q[1], _mm256_cvtps_pd(_mm256_extractf128_ps(l, 1)));
    q[2] = _mm256_add_pd(q[2], _mm256_cvtps_pd(_mm256_castps256_ps128(h)));
    q[3] = _mm256_add_pd(q[3], _mm256_cvtps_pd(_mm256_extractf128_ps(h, 1)));
  }
  vf get() const {
    const __m256 l = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm256_cvtpd_ps(q[0])),
                                          _mm256_cvtpd_ps(q[1]), 1);
    const __m256 h = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm256_cvtpd_ps(q[2])),
                                          _mm256_cvtpd_ps(q[3]), 1);
    return {(f8)l, (f8)h};
  }
#else
  double d[W] = {};
  void add(vf v) {
    float t[W];
    store(t, v);
    for (int l = 0; l < W; ++l) d[l] += static_cast<double>(t[l]);
  }
  vf get() const {
    float t[W];
    for (int l = 0; l < W; ++l) t[l] = static_cast<float>(d[l]);
    return load(t);
  }
#endif
};

// The knot pass: sizes min + coef p_k cumulated (in double) into knots on
// [lo, hi], ends pinned. SEARCH: bin = interior knots at or below v, and the
// bin's two knots; else the knots of the given bin. KEEP: e[k] becomes p_k
// (the backward's softmax).
template <bool SEARCH, bool KEEP>
inline void knot_pass(vf* e, vf sum, int K, float lo, float hi, float min_b, float coef, vf v,
                      vi& bin, vf& k0, vf& k1) {
  const float span = hi - lo;
  // torch's CPU softmax also scales by the reciprocal of the sum
  const vf inv = 1.0f / sum;
  if (SEARCH) bin = splati(0);
  k0 = splat(lo);
  k1 = splat(hi);
  if (K == 1) {
    if (KEEP) store_to(e, e[0] * inv);
    return;
  }
  DAcc acc;
  vf p = e[0] * inv;
  if (KEEP) store_to(e, p);
  acc.add(min_b + coef * p);
  vf prev = span * acc.get() + lo;  // knot 1
  k1 = prev;
  // step k: knot k (prev) and knot k + 1 (next); lanes in bin >= k take both
  for (int k = 1; k < K - 1; ++k) {
    p = e[k] * inv;
    if (KEEP) store_to(e + k, p);
    acc.add(min_b + coef * p);
    const vf next = span * acc.get() + lo;
    const vi c = SEARCH ? (v >= prev) : (bin >= k);
    k0 = sel(c, prev, k0);
    k1 = sel(c, next, k1);
    if (SEARCH) bin = bin - c;  // c is -1 where true; knots never decrease
    prev = next;
  }
  if (KEEP) store_to(e + K - 1, e[K - 1] * inv);
  const vi c = SEARCH ? (v >= prev) : (bin >= K - 1);
  k0 = sel(c, prev, k0);
  k1 = sel(c, splat(hi), k1);
  if (SEARCH) bin = bin - c;
}

// The bin of every lane: knots, derivatives, region masks; sm_w / sm_h keep
// the softmax of widths and heights ([k] = one vector) for the backward, and
// uk / uk1 the raw derivative logits (linear tails: undefined at the padded
// knots, where has_k / has_k1 are false).
struct Bin {
  vf v, xk, w, yk, h, dk, dk1;
  vi bin, below, above;
  vf uk, uk1;
  vi has_k, has_k1;
};

// Loads the block of lanes starting at element i0 (n of them valid; the rest
// repeat element i0) and finds each lane's bin. ew, eh: K columns each; ed:
// nd columns (the derivative logits, selected by bin afterwards: selects
// instead of gathers, whose latency sits on the critical path).
template <bool INV, bool KEEP>
inline Bin find_bin(const Consts& c, const RqArgs& a, int64_t i0, int n, vf* ew, vf* eh,
                    vf* ed) {
  const int K = c.K;
  const float* in = static_cast<const float*>(a.in) + i0;
  const float* uw = static_cast<const float*>(a.uw) + i0 * K;
  const float* uh = static_cast<const float*>(a.uh) + i0 * K;
  const float* ud = static_cast<const float*>(a.ud) + i0 * c.nd;
  Bin b;
  if (n == W) {
    b.v = load(in);
  } else {
    float t[W];
    for (int l = 0; l < W; ++l) t[l] = in[l < n ? l : 0];
    b.v = load(t);
  }
  load_cols(uw, n, K, ew);
  load_cols(uh, n, K, eh);
  if (c.nd > 0) load_cols(ud, n, c.nd, ed);
  const vf sw = softmax_terms(K, ew);
  const vf sh = softmax_terms(K, eh);
  vf xk1, yk1;
  if (INV) {
    knot_pass<true, KEEP>(eh, sh, K, c.bottom, c.top, c.min_h, c.coef_h, b.v, b.bin, b.yk, yk1);
    knot_pass<false, KEEP>(ew, sw, K, c.left, c.right, c.min_w, c.coef_w, b.v, b.bin, b.xk, xk1);
  } else {
    knot_pass<true, KEEP>(ew, sw, K, c.left, c.right, c.min_w, c.coef_w, b.v, b.bin, b.xk, xk1);
    knot_pass<false, KEEP>(eh, sh, K, c.bottom, c.top, c.min_h, c.coef_h, b.v, b.bin, b.yk, yk1);
  }
  b.w = xk1 - b.xk;
  b.h = yk1 - b.yk;
  const float lo = INV ? c.bottom : c.left, hi = INV ? c.top : c.right;
  b.below = b.v < lo;
  b.above = b.v > hi;
  // derivative logits at knots bin and bin + 1 (linear tails: ud[j] is knot j + 1)
  const int off = c.tails ? 1 : 0;
  const vi j0 = b.bin - off, j1 = b.bin + 1 - off;
  b.has_k = j0 >= 0;
  b.has_k1 = j1 < c.nd;
  b.uk = b.uk1 = splat(0.0f);  // (K = 1 with linear tails has no derivative logits)
  for (int j = 0; j < c.nd; ++j) {
    b.uk = sel(j0 == j, ed[j], b.uk);
    b.uk1 = sel(j1 == j, ed[j], b.uk1);
  }
  const vf dt = splat(c.d_tail);
  b.dk = sel(b.has_k, c.min_d + vsoftplus(b.uk), dt);
  b.dk1 = sel(b.has_k1, c.min_d + vsoftplus(b.uk1), dt);
  return b;
}

// rq_lad of spline.h.
inline vf lad_at(vf theta, const Bin& b) {
  const vf s = b.h / b.w;
  const vf t = theta * (1.0f - theta);
  const vf den = s + (b.dk + b.dk1 - 2.0f * s) * t;
  const vf m = b.dk1 * theta * theta + 2.0f * s * t + b.dk * (1.0f - theta) * (1.0f - theta);
  const vf q = s / den;
  return vlog(q * q * m);
}

// rq_inverse_theta of spline.h.
inline vf inverse_theta(vf y, const Bin& b) {
  const vf s = b.h / b.w;
  const vf d = vmin(vmax(y - b.yk, splat(0.0f)), b.h);
  const vf g = b.dk + b.dk1 - 2.0f * s;
  const vf qa = d * g + b.h * (s - b.dk);
  const vf qb = b.h * b.dk - d * g;
  const vf qc = -s * d;
  const vf disc = vmax(qb * qb - 4.0f * qa * qc, splat(0.0f));
  const vf sq = vsqrt(disc);
  const vf den_pos = -qb - sq;
  const vf den_neg = 2.0f * qa;
  const vi pos = den_pos < 0.0f;
  const vf theta_pos = 2.0f * qc / sel(pos, den_pos, splat(-1.0f));
  const vf theta_neg = (sq - qb) / sel(den_neg > 0.0f, den_neg, splat(1.0f));
  const vf theta = sel(qb >= 0.0f, sel(pos, theta_pos, splat(0.0f)), theta_neg);
  return vclamp01(theta);
}

struct Out {
  vf out, lad;
};

// rq_forward / rq_inverse of spline.h.
template <bool INV, bool TAILS>
inline Out apply(const Bin& b) {
  const vi out = b.below | b.above;
  Out r;
  if (!INV) {
    const vf x = b.v;
    const vf theta = vclamp01((x - b.xk) / b.w);
    const vf s = b.h / b.w;
    const vf t = theta * (1.0f - theta);
    const vf den = s + (b.dk + b.dk1 - 2.0f * s) * t;
    const vf y_in = b.yk + b.h * (s * theta * theta + b.dk * t) / den;
    const vf lad_in = lad_at(theta, b);
    if (TAILS) {
      r.out = sel(out, x, y_in);
      r.lad = sel(out, splat(0.0f), lad_in);
    } else {
      const vf y_lo = b.yk + b.dk * (x - b.xk);
      const vf y_hi = (b.yk + b.h) + b.dk1 * (x - (b.xk + b.w));
      r.out = sel(out, sel(b.below, y_lo, y_hi), y_in);
      r.lad = sel(out, vlog(sel(b.below, b.dk, b.dk1)), lad_in);
    }
  } else {
    const vf y = b.v;
    const vf theta = inverse_theta(y, b);
    const vf x_in = b.xk + theta * b.w;
    const vf lad_in = -lad_at(theta, b);
    if (TAILS) {
      r.out = sel(out, y, x_in);
      r.lad = sel(out, splat(0.0f), lad_in);
    } else {
      const vf x_lo = b.xk + (y - b.yk) / b.dk;
      const vf x_hi = (b.xk + b.w) + (y - (b.yk + b.h)) / b.dk1;
      r.out = sel(out, sel(b.below, x_lo, x_hi), x_in);
      r.lad = sel(out, -vlog(sel(b.below, b.dk, b.dk1)), lad_in);
    }
  }
  return r;
}

inline void store_n(float* p, vf v, int n) {
  if (n == W) {
    store(p, v);
  } else {
    float t[W];
    store(t, v);
    for (int l = 0; l < n; ++l) p[l] = t[l];
  }
}

template <bool INV, bool TAILS>
void forward_range(const RqArgs& a, int64_t begin, int64_t end) {
  const Consts c(a);
  std::vector<vf> ew(c.K), eh(c.K), ed(c.nd > 0 ? c.nd : 1);
  float* out = static_cast<float*>(a.out);
  float* lad = static_cast<float*>(a.lad);
  for (int64_t i0 = begin; i0 < end; i0 += W) {
    const int n = static_cast<int>(end - i0 < W ? end - i0 : W);
    const Bin b = find_bin<INV, false>(c, a, i0, n, ew.data(), eh.data(), ed.data());
    const Out r = apply<INV, TAILS>(b);
    store_n(out + i0, r.out, n);
    store_n(lad + i0, r.lad, n);
  }
}

// Gradients of one block with respect to the input and the six bin
// quantities: rq_partials + rq_backward of spline.h, lane-wise. x is the
// forward map's input (for the inverse: the inverse's output).
struct Grad {
  vf in, xk, w, yk, h, dk, dk1;
};

template <bool INV, bool TAILS>
inline Grad grad(vf x, const Bin& b, vf g_out, vf g_lad) {
  const vf one = splat(1.0f), zero = splat(0.0f);
  const vf theta = vclamp01((x - b.xk) / b.w);
  const vf inv_w = 1.0f / b.w;
  const vf s = b.h * inv_w;
  const vf t = theta * (1.0f - theta);
  const vf g = b.dk + b.dk1 - 2.0f * s;
  const vf den = s + g * t;
  const vf inv_den = 1.0f / den;
  const vf n = s * theta * theta + b.dk * t;
  const vf r = n * inv_den;
  const vf omt = 1.0f - theta;
  const vf m = b.dk1 * theta * theta + 2.0f * s * t + b.dk * omt * omt;
  const vf inv_m = 1.0f / m;
  const vf den_th = g * (1.0f - 2.0f * theta);
  const vf den_s = 1.0f - 2.0f * t;
  const vf m_th = 2.0f * b.dk1 * theta + 2.0f * s * (1.0f - 2.0f * theta) - 2.0f * b.dk * omt;
  const vf y_s = b.h * (theta * theta - r * den_s) * inv_den;
  const vf y_dk = b.h * (t - r * t) * inv_den;
  const vf y_dk1 = -b.h * r * t * inv_den;
  const vf l_th = m_th * inv_m - 2.0f * den_th * inv_den;
  const vf l_s = 2.0f / s + 2.0f * t * inv_m - 2.0f * den_s * inv_den;
  const vf l_dk_in = omt * omt * inv_m - 2.0f * t * inv_den;
  const vf l_dk1_in = theta * theta * inv_m - 2.0f * t * inv_den;
  const vf q = s * inv_den;
  vf fx = q * q * m;
  vf lx = l_th * inv_w;
  vf f_xk = -fx;
  vf f_w = -theta * fx - y_s * s * inv_w;
  vf f_h = r + y_s * inv_w;
  vf f_dk = y_dk, f_dk1 = y_dk1;
  vf l_xk = -lx;
  vf l_w = -theta * lx - l_s * s * inv_w;
  vf l_h = l_s * inv_w;
  vf l_dk = l_dk_in, l_dk1 = l_dk1_in;
  // outside the domain: slope dk (below) or dk1 (above), or the identity
  const vi out = b.below | b.above;
  const vi lo = b.below;
  const vf slope = sel(lo, b.dk, b.dk1);
  const vf id = TAILS ? zero : one;
  fx = sel(out, TAILS ? one : slope, fx);
  lx = sel(out, zero, lx);
  f_xk = sel(out, -slope * id, f_xk);
  f_w = sel(out, sel(lo, zero, -slope * id), f_w);
  const vf f_yk = sel(out, id, one);
  f_h = sel(out, sel(lo, zero, id), f_h);
  f_dk = sel(out, sel(lo, (x - b.xk) * id, zero), f_dk);
  f_dk1 = sel(out, sel(lo, zero, (x - (b.xk + b.w)) * id), f_dk1);
  l_xk = sel(out, zero, l_xk);
  l_w = sel(out, zero, l_w);
  l_h = sel(out, zero, l_h);
  l_dk = sel(out, sel(lo, id / b.dk, zero), l_dk);
  l_dk1 = sel(out, sel(lo, zero, id / b.dk1), l_dk1);

  const vf a = (g_out - g_lad * lx) / fx;
  const vf cy = INV ? -a : g_out;
  const vf cl = INV ? -g_lad : g_lad;
  Grad gr;
  gr.in = INV ? a : g_out * fx + g_lad * lx;
  gr.xk = cy * f_xk + cl * l_xk;
  gr.w = cy * f_w + cl * l_w;
  gr.yk = cy * f_yk;
  gr.h = cy * f_h + cl * l_h;
  gr.dk = cy * f_dk + cl * l_dk;
  gr.dk1 = cy * f_dk1 + cl * l_dk1;
  return gr;
}

inline vf load_n(const float* p, int n) {
  if (n == W) return load(p);
  float t[W] = {};
  for (int l = 0; l < n; ++l) t[l] = p[l];
  return load(t);
}

// Softmax backward into the K logits of one parameter set: knot k (interior
// ones only; the ends are pinned) gets g0 at the bin's left knot and g1 at
// its right one; logit j sees G_j = scale * sum over interior knots k > j
// (rq_knot_suffix), then g_u = p (G - sum_j p_j G_j).
inline void softmax_backward(const vf* p, vi bin, int K, float scale, vf g0, vf g1, vf* cols) {
  const vf zero = splat(0.0f);
  const vi has1 = bin + 1 < K;
  vf dot = zero;
  for (int k = 0; k < K; ++k) {
    const vf a = sel(k < bin, g0, zero);
    const vf c = sel((k <= bin) & has1, g1, zero);
    const vf v = scale * (a + c);
    store_to(cols + k, v);
    dot += p[k] * v;
  }
  for (int k = 0; k < K; ++k) store_to(cols + k, p[k] * (cols[k] - dot));
}

template <bool INV, bool TAILS>
void backward_range(const RqArgs& a, int64_t begin, int64_t end) {
  const Consts c(a);
  const int K = c.K, nd = c.nd;
  std::vector<vf> ew(K), eh(K), ed(nd > 0 ? nd : 1), cols(K > nd ? K : nd);
  const float* go = static_cast<const float*>(a.g_out);
  const float* gl = static_cast<const float*>(a.g_lad);
  float* g_in = static_cast<float*>(a.g_in);
  float* g_uw = static_cast<float*>(a.g_uw);
  float* g_uh = static_cast<float*>(a.g_uh);
  float* g_ud = static_cast<float*>(a.g_ud);
  const float sw = (c.right - c.left) * c.coef_w;
  const float sh = (c.top - c.bottom) * c.coef_h;
  const int off = c.tails ? 1 : 0;  // ud[j] is knot j + off
  for (int64_t i0 = begin; i0 < end; i0 += W) {
    const int n = static_cast<int>(end - i0 < W ? end - i0 : W);
    const Bin b = find_bin<INV, true>(c, a, i0, n, ew.data(), eh.data(), ed.data());
    const vf x = INV ? apply<true, TAILS>(b).out : b.v;
    const vf g_o = a.g_out_broadcast ? splat(go[0]) : load_n(go + i0, n);
    const vf g_l = a.g_lad_broadcast ? splat(gl[0]) : load_n(gl + i0, n);
    const Grad g = grad<INV, TAILS>(x, b, g_o, g_l);
    store_n(g_in + i0, g.in, n);
    softmax_backward(ew.data(), b.bin, K, sw, g.xk - g.w, g.w, cols.data());
    store_cols(g_uw + i0 * K, n, K, cols.data());
    softmax_backward(eh.data(), b.bin, K, sh, g.yk - g.h, g.h, cols.data());
    store_cols(g_uh + i0 * K, n, K, cols.data());
    if (nd > 0) {
      // only the bin's two knots carry a gradient; d = min + softplus(u), d' = sigmoid(u)
      const vf zero = splat(0.0f);
      const vf gk = sel(b.has_k, vsigmoid(b.uk) * g.dk, zero);
      const vf gk1 = sel(b.has_k1, vsigmoid(b.uk1) * g.dk1, zero);
      for (int j = 0; j < nd; ++j) {
        const int k = j + off;
        store_to(cols.data() + j, sel(b.bin == k, gk, sel(b.bin + 1 == k, gk1, zero)));
      }
      store_cols(g_ud + i0 * nd, n, nd, cols.data());
    }
  }
}


// ---------------------------------------------------------------- affine
// affine_scale / affine_apply / affine_backward_scaled of coupling.h, 16
// lanes at a time, for the activations built from exp, log and sigmoid (atan
// and tanh stay on the scalar loops of flows.cpp).
template <int ACT>
constexpr bool affine_simd_ok = ACT == kActNone || ACT == kActSigmoid || ACT == kActExp ||
                                ACT == kActSoftSigmoid || ACT == kActGlow;

struct VScale {
  vf scale, log_scale, dlog;
};

template <int ACT, bool LOG, bool DLOG>
GENFAST_RQ_INLINE VScale vaffine_scale(vf u, float clamp) {
  VScale r;
  if constexpr (ACT == kActNone) {
    r.scale = splat(1.0f);
    r.log_scale = r.dlog = splat(0.0f);
  } else if constexpr (ACT == kActSigmoid) {
    const vf sg = vsigmoid(u + 2.0f);
    r.scale = sg + 1e-3f;
    if (LOG) r.log_scale = vlog(r.scale);
    if (DLOG) r.dlog = sg * (1.0f - sg) / r.scale;
  } else if constexpr (ACT == kActGlow) {
    const vf v = u + 2.0f;
    const vf sg = vsigmoid(v);
    r.scale = sg;
    if (LOG) r.log_scale = -vsoftplus(-v);
    if (DLOG) r.dlog = 1.0f - sg;
  } else if constexpr (ACT == kActExp) {
    r.scale = vexp(u);
    r.log_scale = u;
    r.dlog = splat(1.0f);
  } else {  // kActSoftSigmoid
    const vf sg = vsigmoid(u);
    const vf sc = (clamp * 2.0f) * (sg - 0.5f);
    r.scale = vexp(sc);
    r.log_scale = sc;
    if (DLOG) r.dlog = clamp * 2.0f * sg * (1.0f - sg);
  }
  return r;
}

// Tasks [begin, end) of AffineArgs (flows_kernels.h): outputs and each task's
// part of its row's log-determinant (16 lane sums, then the lanes in order).
template <int ACT, bool INV>
void affine_forward_simd(const AffineArgs& a, int64_t begin, int64_t end) {
  const float* in = static_cast<const float*>(a.in);
  const float* sh = static_cast<const float*>(a.shift);
  const float* uu = static_cast<const float*>(a.u);
  float* out = static_cast<float*>(a.out);
  float* part = static_cast<float*>(a.lad_partial);
  const float clamp = static_cast<float>(a.clamp);
  for (int64_t t = begin; t < end; ++t) {
    const int64_t row = t / a.chunks_per_row;
    const int64_t j0 = (t - row * a.chunks_per_row) * a.chunk;
    const int64_t j1 = a.row_len < j0 + a.chunk ? a.row_len : j0 + a.chunk;
    const int64_t base = row * a.row_len;
    vf acc = splat(0.0f);
    int64_t j = j0;
    for (; j + W <= j1; j += W) {
      const int64_t e = base + j;
      const vf x = load(in + e), s = load(sh + e);
      const VScale sc = vaffine_scale<ACT, true, false>(load(uu + e), clamp);
      vf y;
      if constexpr (ACT == kActGlow) {
        y = INV ? x / sc.scale - s : (x + s) * sc.scale;
      } else {
        y = INV ? (x - s) / sc.scale : x * sc.scale + s;
      }
      store(out + e, y);
      acc += INV ? -sc.log_scale : sc.log_scale;
    }
    float lanes[W];
    store(lanes, acc);
    float total = 0.0f;
    for (int l = 0; l < W; ++l) total += lanes[l];
    for (; j < j1; ++j) {
      const int64_t e = base + j;
      const AffineOut<float> r = affine_apply<ACT>(in[e], sh[e], uu[e], clamp, INV);
      out[e] = r.out;
      total += r.lad;
    }
    part[t] = total;
  }
}

// Gradients for tasks [begin, end); g_out may be one broadcast value.
template <int ACT, bool INV>
void affine_backward_simd(const AffineArgs& a, int64_t begin, int64_t end) {
  const float* in = static_cast<const float*>(a.in);
  const float* sh = static_cast<const float*>(a.shift);
  const float* uu = static_cast<const float*>(a.u);
  const float* go = static_cast<const float*>(a.g_out);
  const float* gl = static_cast<const float*>(a.g_lad);
  float* gi = static_cast<float*>(a.g_in);
  float* gs = static_cast<float*>(a.g_shift);
  float* gu = static_cast<float*>(a.g_u);
  const float clamp = static_cast<float>(a.clamp);
  const bool bcast = a.g_out_broadcast;
  for (int64_t t = begin; t < end; ++t) {
    const int64_t row = t / a.chunks_per_row;
    const int64_t j0 = (t - row * a.chunks_per_row) * a.chunk;
    const int64_t j1 = a.row_len < j0 + a.chunk ? a.row_len : j0 + a.chunk;
    const int64_t base = row * a.row_len;
    const vf g_lad = splat(gl[row]);
    int64_t j = j0;
    for (; j + W <= j1; j += W) {
      const int64_t e = base + j;
      const vf x = load(in + e), s = load(sh + e);
      const vf g = bcast ? splat(go[0]) : load(go + e);
      const VScale sc = vaffine_scale<ACT, false, true>(load(uu + e), clamp);
      vf d_in, d_sh, d_u;
      if (!INV) {
        const vf pre = ACT == kActGlow ? x + s : x;
        d_in = g * sc.scale;
        d_sh = ACT == kActGlow ? g * sc.scale : g;
        d_u = (g * pre * sc.scale + g_lad) * sc.dlog;
      } else {
        const vf inv = 1.0f / sc.scale;
        const vf pre = ACT == kActGlow ? x * inv : (x - s) * inv;
        d_in = g * inv;
        d_sh = ACT == kActGlow ? -g : -g * inv;
        d_u = (-g * pre - g_lad) * sc.dlog;
      }
      store(gi + e, d_in);
      store(gs + e, d_sh);
      store(gu + e, d_u);
    }
    for (; j < j1; ++j) {
      const int64_t e = base + j;
      const AffineGrad<float> r = genfast::affine_backward<ACT>(in[e], sh[e], uu[e], clamp, INV,
                                                       bcast ? go[0] : go[e], gl[row]);
      gi[e] = r.in;
      gs[e] = r.shift;
      gu[e] = r.u;
    }
  }
}

}  // namespace rqv
}  // namespace genfast::cpu::GENFAST_CPU_ISA
