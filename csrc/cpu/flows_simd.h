// float32 rational-quadratic spline over 8 elements at once (one per SIMD
// lane), for csrc/cpu/flows.cpp. Every lane keeps its own bins: the K logits
// of each parameter tensor are loaded as K vectors (lane l = element l), and
// softmax, cumulative sum, the bin search (a count of knots passed, by
// comparisons) and the rational-quadratic map all run in registers, 8 lanes
// wide. Knot derivatives need a softplus only at the two knots of the chosen
// bin: the raw logits are selected first, then transformed.
//
// The arithmetic is the scalar code's (spline.h, flows_math.h) operation for
// operation, in the same order, with GCC vector extensions (no FMA: the build
// uses -ffp-contract=off): every ISA level, and the scalar float32 path, give
// the same bits. The cumulative sums run in double, as torch's CPU cumsum does
// (narrow bins are differences of knots, so knot ulps matter).
#pragma once
#include <stdint.h>
#include <string.h>

#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "flows_kernels.h"
#include "genfast/flows_math.h"
#include "genfast/noise.h"  // log_pos_t

#ifndef GENFAST_CPU_ISA
#error "GENFAST_CPU_ISA must name the ISA level this file is compiled for"
#endif

namespace genfast::cpu::GENFAST_CPU_ISA {
namespace rqv {

constexpr int W = 8;
typedef float vf __attribute__((vector_size(4 * W)));
typedef int32_t vi __attribute__((vector_size(4 * W)));

inline vf splat(float x) { return vf{} + x; }
inline vi splati(int32_t x) { return vi{} + x; }
inline vf load(const float* p) {
  vf r;
  memcpy(&r, p, sizeof r);
  return r;
}
inline void store(float* p, vf v) { memcpy(p, &v, sizeof v); }
// fl_min / fl_max semantics (the second argument wins ties and NaN).
inline vf vmin(vf a, vf b) { return a < b ? a : b; }
inline vf vmax(vf a, vf b) { return a > b ? a : b; }
inline vf vabs(vf x) { return x < 0.0f ? -x : x; }
inline vf vsqrt(vf x) {
#if defined(__AVX__)
  return (vf)_mm256_sqrt_ps((__m256)x);
#else
  vf r;
  for (int l = 0; l < W; ++l) r[l] = __builtin_sqrtf(x[l]);
  return r;
#endif
}

// p[idx[l]] for every lane.
inline vf gather(const float* p, vi idx) {
#if defined(__AVX2__)
  return (vf)_mm256_i32gather_ps(p, (__m256i)idx, 4);
#else
  vf r;
  for (int l = 0; l < W; ++l) r[l] = p[idx[l]];
  return r;
#endif
}

// Lanes type for noise.h's log_pos_t (the same polynomial as fl_log).
struct Lanes {
  using F = vf;
  using I = vi;
  static inline I bits(F f) { return (I)f; }
  static inline F from_bits(I i) { return (F)i; }
  static inline F to_float(I i) { return __builtin_convertvector(i, F); }
  static inline F splat(float x) { return rqv::splat(x); }
};

// fl_exp, fl_log, fl_log1p_pos, fl_softplus, fl_sigmoid of flows_math.h, lane-wise.
inline vf vexp(vf x) {
  x = vmin(vmax(x, splat(-87.3f)), splat(88.37f));
  const vf n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  vf r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  const vf z = r * r;
  vf p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const vf er = p * z + r + 1.0f;
  const vi ni = __builtin_convertvector(n, vi);
  return er * (vf)((ni + 127) << 23);
}
inline vf vlog(vf x) { return log_pos_t<Lanes>(vmax(x, splat(1.17549435e-38f))); }
inline vf vlog1p_pos(vf e) {
  const vf u = 1.0f + e;
  const vf um1 = u - 1.0f;
  const vi zero = um1 == 0.0f;
  return zero ? e : vlog(u) * (e / (zero ? splat(1.0f) : um1));
}
inline vf vsoftplus(vf x) { return vmax(x, splat(0.0f)) + vlog1p_pos(vexp(-vabs(x))); }
inline vf vsigmoid(vf x) {
  const vf e = vexp(-vabs(x));
  const vf inv = 1.0f / (1.0f + e);
  return x >= 0.0f ? inv : e * inv;
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

// cols[k] = column k of the rows of `width` floats at u + row[l] * width
// (row = lane, or 0 past the block's n valid lanes): 8x8 register transposes
// where a whole block of 8 rows and 8 columns is there, gathers otherwise.
inline void load_cols(const float* u, vi row, int n, int width, vf* cols) {
  int k0 = 0;
#if defined(__AVX2__)
  if (n == W) {
    for (; k0 + W <= width; k0 += W) {
      __m256 r[W];
      for (int l = 0; l < W; ++l) r[l] = _mm256_loadu_ps(u + l * width + k0);
      transpose8(r);
      for (int l = 0; l < W; ++l) cols[k0 + l] = (vf)r[l];
    }
  }
#endif
  (void)n;
  for (int k = k0; k < width; ++k) cols[k] = gather(u, row * width + k);
}

// rows of `width` floats at p + l * width, l < n, from columns cols[k].
inline void store_cols(float* p, int n, int width, const vf* cols) {
  int k0 = 0;
#if defined(__AVX2__)
  if (n == W) {
    for (; k0 + W <= width; k0 += W) {
      __m256 r[W];
      for (int l = 0; l < W; ++l) r[l] = (__m256)cols[k0 + l];
      transpose8(r);
      for (int l = 0; l < W; ++l) _mm256_storeu_ps(p + l * width + k0, r[l]);
    }
  }
#endif
  for (int l = 0; l < n; ++l)
    for (int k = k0; k < width; ++k) p[l * width + k] = cols[k][l];
}

// Softmax terms of the K logits in e[k] (in place): e[k] = exp(u_k - max);
// returns their sum (fl_exp, in knots()'s order).
inline vf softmax_terms(int K, vf* e) {
  vf m = e[0];
  for (int k = 1; k < K; ++k) m = vmax(m, e[k]);
  vf sum = splat(0.0f);
  for (int k = 0; k < K; ++k) {
    e[k] = vexp(e[k] - m);
    sum += e[k];
  }
  return sum;
}

// Running sum in double of float32 terms, 8 lanes (two 4-double halves: a
// 64-byte GCC vector would go through the stack on AVX2).
struct DAcc {
#if defined(__AVX__)
  __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
  void add(vf v) {
    const __m256 f = (__m256)v;
    lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(f)));
    hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(f, 1)));
  }
  vf get() const {
    return (vf)_mm256_insertf128_ps(_mm256_castps128_ps256(_mm256_cvtpd_ps(lo)),
                                    _mm256_cvtpd_ps(hi), 1);
  }
#else
  double a[W] = {};
  void add(vf v) {
    for (int l = 0; l < W; ++l) a[l] += static_cast<double>(v[l]);
  }
  vf get() const {
    vf r;
    for (int l = 0; l < W; ++l) r[l] = static_cast<float>(a[l]);
    return r;
  }
#endif
};

// The knot pass: sizes min + coef p_k cumulated (in double) into knots on
// [lo, hi], ends pinned. SEARCH: bin = interior knots at or below v, and the
// bin's two knots; else the knots of the given bin. e[k] becomes p_k.
template <bool SEARCH>
inline void knot_pass(vf* e, vf sum, int K, float lo, float hi, float min_b, float coef, vf v,
                      vi& bin, vf& k0, vf& k1) {
  const float span = hi - lo;
  // torch's CPU softmax also scales by the reciprocal of the sum
  const vf inv = 1.0f / sum;
  DAcc acc;
  vf prev = splat(lo);
  if (SEARCH) bin = splati(0);
  for (int k = 0; k < K; ++k) {
    const vf p = e[k] * inv;
    e[k] = p;
    acc.add(min_b + coef * p);
    const vf next = k == K - 1 ? splat(hi) : span * acc.get() + lo;
    if (k == 0) {
      k0 = prev;
      k1 = next;
    } else {
      const vi c = SEARCH ? (v >= prev) : (bin == k);
      k0 = c ? prev : k0;
      k1 = c ? next : k1;
      if (SEARCH) bin = c ? splati(k) : bin;
    }
    prev = next;
  }
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

inline vi rows_of(int64_t i0, int n) {
  vi r;
  for (int l = 0; l < W; ++l) r[l] = static_cast<int32_t>(l < n ? l : 0);
  (void)i0;
  return r;
}

// Loads the block of lanes starting at element i0 (n of them valid; the rest
// repeat element i0) and finds each lane's bin. Offsets are relative to i0.
template <bool INV>
inline Bin find_bin(const Consts& c, const RqArgs& a, int64_t i0, int n, vf* ew, vf* eh) {
  const int K = c.K;
  const float* in = static_cast<const float*>(a.in) + i0;
  const float* uw = static_cast<const float*>(a.uw) + i0 * K;
  const float* uh = static_cast<const float*>(a.uh) + i0 * K;
  const float* ud = static_cast<const float*>(a.ud) + i0 * c.nd;
  const vi lane = rows_of(i0, n);
  Bin b;
  if (n == W) {
    b.v = load(in);
  } else {
    for (int l = 0; l < W; ++l) b.v[l] = in[lane[l]];
  }
  load_cols(uw, lane, n, K, ew);
  load_cols(uh, lane, n, K, eh);
  const vf sw = softmax_terms(K, ew);
  const vf sh = softmax_terms(K, eh);
  vf xk1, yk1;
  if (INV) {
    knot_pass<true>(eh, sh, K, c.bottom, c.top, c.min_h, c.coef_h, b.v, b.bin, b.yk, yk1);
    knot_pass<false>(ew, sw, K, c.left, c.right, c.min_w, c.coef_w, b.v, b.bin, b.xk, xk1);
  } else {
    knot_pass<true>(ew, sw, K, c.left, c.right, c.min_w, c.coef_w, b.v, b.bin, b.xk, xk1);
    knot_pass<false>(eh, sh, K, c.bottom, c.top, c.min_h, c.coef_h, b.v, b.bin, b.yk, yk1);
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
  const vi base = lane * c.nd;
  if (c.nd > 0) {  // (K = 1 with linear tails has no derivative logits)
    b.uk = gather(ud, base + (b.has_k ? j0 : splati(0)));
    b.uk1 = gather(ud, base + (b.has_k1 ? j1 : splati(0)));
  } else {
    b.uk = b.uk1 = splat(0.0f);
  }
  const vf dt = splat(c.d_tail);
  b.dk = b.has_k ? c.min_d + vsoftplus(b.uk) : dt;
  b.dk1 = b.has_k1 ? c.min_d + vsoftplus(b.uk1) : dt;
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
  const vf theta_pos = 2.0f * qc / (pos ? den_pos : splat(-1.0f));
  const vf theta_neg = (sq - qb) / (den_neg > 0.0f ? den_neg : splat(1.0f));
  const vf theta = qb >= 0.0f ? (pos ? theta_pos : splat(0.0f)) : theta_neg;
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
      r.out = out ? x : y_in;
      r.lad = out ? splat(0.0f) : lad_in;
    } else {
      const vf y_lo = b.yk + b.dk * (x - b.xk);
      const vf y_hi = (b.yk + b.h) + b.dk1 * (x - (b.xk + b.w));
      r.out = out ? (b.below ? y_lo : y_hi) : y_in;
      r.lad = out ? vlog(b.below ? b.dk : b.dk1) : lad_in;
    }
  } else {
    const vf y = b.v;
    const vf theta = inverse_theta(y, b);
    const vf x_in = b.xk + theta * b.w;
    const vf lad_in = -lad_at(theta, b);
    if (TAILS) {
      r.out = out ? y : x_in;
      r.lad = out ? splat(0.0f) : lad_in;
    } else {
      const vf x_lo = b.xk + (y - b.yk) / b.dk;
      const vf x_hi = (b.xk + b.w) + (y - (b.yk + b.h)) / b.dk1;
      r.out = out ? (b.below ? x_lo : x_hi) : x_in;
      r.lad = out ? -vlog(b.below ? b.dk : b.dk1) : lad_in;
    }
  }
  return r;
}

inline void store_n(float* p, vf v, int n) {
  if (n == W) {
    store(p, v);
  } else {
    for (int l = 0; l < n; ++l) p[l] = v[l];
  }
}

template <bool INV, bool TAILS>
void forward_range(const RqArgs& a, int64_t begin, int64_t end) {
  const Consts c(a);
  std::vector<vf> ew(c.K), eh(c.K);
  float* out = static_cast<float*>(a.out);
  float* lad = static_cast<float*>(a.lad);
  for (int64_t i0 = begin; i0 < end; i0 += W) {
    const int n = static_cast<int>(end - i0 < W ? end - i0 : W);
    const Bin b = find_bin<INV>(c, a, i0, n, ew.data(), eh.data());
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
  const vf slope = lo ? b.dk : b.dk1;
  const vf id = TAILS ? zero : one;
  fx = out ? (TAILS ? one : slope) : fx;
  lx = out ? zero : lx;
  f_xk = out ? -slope * id : f_xk;
  f_w = out ? (lo ? zero : -slope * id) : f_w;
  const vf f_yk = out ? id : one;
  f_h = out ? (lo ? zero : id) : f_h;
  f_dk = out ? (lo ? (x - b.xk) * id : zero) : f_dk;
  f_dk1 = out ? (lo ? zero : (x - (b.xk + b.w)) * id) : f_dk1;
  l_xk = out ? zero : l_xk;
  l_w = out ? zero : l_w;
  l_h = out ? zero : l_h;
  l_dk = out ? (lo ? id / b.dk : zero) : l_dk;
  l_dk1 = out ? (lo ? zero : id / b.dk1) : l_dk1;

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
  vf r = splat(0.0f);
  for (int l = 0; l < n; ++l) r[l] = p[l];
  return r;
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
    const vf a = k < bin ? g0 : zero;
    const vf c = (k <= bin) & has1 ? g1 : zero;
    const vf v = scale * (a + c);
    cols[k] = v;
    dot += p[k] * v;
  }
  for (int k = 0; k < K; ++k) cols[k] = p[k] * (cols[k] - dot);
}

template <bool INV, bool TAILS>
void backward_range(const RqArgs& a, int64_t begin, int64_t end) {
  const Consts c(a);
  const int K = c.K, nd = c.nd;
  std::vector<vf> ew(K), eh(K), cols(K > nd ? K : nd);
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
    const Bin b = find_bin<INV>(c, a, i0, n, ew.data(), eh.data());
    const vf x = INV ? apply<true, TAILS>(b).out : b.v;
    const Grad g = grad<INV, TAILS>(x, b, load_n(go + i0, n), load_n(gl + i0, n));
    store_n(g_in + i0, g.in, n);
    softmax_backward(ew.data(), b.bin, K, sw, g.xk - g.w, g.w, cols.data());
    store_cols(g_uw + i0 * K, n, K, cols.data());
    softmax_backward(eh.data(), b.bin, K, sh, g.yk - g.h, g.h, cols.data());
    store_cols(g_uh + i0 * K, n, K, cols.data());
    if (nd > 0) {
      // only the bin's two knots carry a gradient; d = min + softplus(u), d' = sigmoid(u)
      const vf zero = splat(0.0f);
      const vf gk = b.has_k ? vsigmoid(b.uk) * g.dk : zero;
      const vf gk1 = b.has_k1 ? vsigmoid(b.uk1) * g.dk1 : zero;
      for (int j = 0; j < nd; ++j) {
        const int k = j + off;
        cols[j] = b.bin == k ? gk : (b.bin + 1 == k ? gk1 : zero);
      }
      store_cols(g_ud + i0 * nd, n, nd, cols.data());
    }
  }
}

}  // namespace rqv
}  // namespace genfast::cpu::GENFAST_CPU_ISA
