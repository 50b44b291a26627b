// CPU loops of the flows family. Compiled once per ISA level (GENFAST_CPU_ISA
// names the namespace); the math is csrc/include/genfast/spline.h and
// coupling.h.
//
// float32 runs the explicit 16-lane code of flows_simd.h (the spline, and the
// affine coupling for the activations built from exp / log / sigmoid). The
// generic loops here serve float64 (gradcheck) and the atan / tanh couplings.
// The generic spline works on blocks of L elements held "lanes innermost": each
// element's K logits are transposed into [k][lane] arrays, so every loop over
// bins runs L independent lanes the compiler vectorises (softmax, cumsum, the
// branch-free bin search as a count of knots passed, the gathers of the bin's
// quantities, and the backward scatter into the K parameters).
#include "flows_kernels.h"
#include "flows_simd.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "genfast/coupling.h"
#include "genfast/spline.h"

#ifndef GENFAST_CPU_ISA
#error "GENFAST_CPU_ISA must name the ISA level this file is compiled for"
#endif

namespace genfast::cpu::GENFAST_CPU_ISA {
namespace {

constexpr int L = 16;  // lanes per block: two AVX-512 / four AVX2 float registers

template <typename T>
struct RqConsts {
  int K;
  bool inverse, tails;
  T left, right, bottom, top;
  T min_w, min_h, min_d;
  T coef_w, coef_h;  // 1 - min K, rounded once like nflows' Python scalar
  T tail_u;          // the padded logit that makes the boundary derivative 1
  explicit RqConsts(const RqArgs& a)
      : K(static_cast<int>(a.num_bins)), inverse(a.inverse), tails(a.linear_tails),
        left(T(a.left)), right(T(a.right)), bottom(T(a.bottom)), top(T(a.top)),
        min_w(T(a.min_bin_width)), min_h(T(a.min_bin_height)), min_d(T(a.min_derivative)),
        coef_w(T(1.0 - a.min_bin_width * a.num_bins)),
        coef_h(T(1.0 - a.min_bin_height * a.num_bins)),
        tail_u(T(std::log(std::expm1(1.0 - a.min_derivative)))) {}
  int nd() const { return tails ? K - 1 : K + 1; }
};

// Per-thread scratch: every array is [index][lane].
template <typename T>
struct Work {
  std::vector<T> tw, th, td;      // transposed logits: K, K, nd rows
  std::vector<T> smw, smh;        // softmax of widths / heights: K rows
  std::vector<T> cw, ch, d, sig;  // knots and derivatives: K + 1 rows
  explicit Work(int K, int nd)
      : tw(size_t(K) * L), th(size_t(K) * L), td(size_t(std::max(nd, 1)) * L),
        smw(size_t(K) * L), smh(size_t(K) * L), cw(size_t(K + 1) * L),
        ch(size_t(K + 1) * L), d(size_t(K + 1) * L), sig(size_t(K + 1) * L) {}
};

// Lanes past n repeat the block's first element (valid values, never stored).
template <typename T>
void transpose_in(const T* src, int64_t i0, int n, int width, T* dst) {
  for (int l = 0; l < L; ++l) {
    const T* row = src + (i0 + (l < n ? l : 0)) * width;
    for (int k = 0; k < width; ++k) dst[k * L + l] = row[k];
  }
}

// softmax -> min width + (1 - min K) softmax -> cumsum -> knots on [lo, hi],
// the end knots pinned to the bounds (nflows' order of operations).
template <typename T>
void knots(const T* tu, int K, T lo, T hi, T min_b, T coef, T* sm, T* knot) {
  alignas(64) T m[L], sum[L];
  // the running sum in double, as torch's CPU cumsum accumulates: narrow bins
  // are differences of knots, so knot ulps matter
  alignas(64) double acc[L];
  for (int l = 0; l < L; ++l) m[l] = tu[l];
  for (int k = 1; k < K; ++k)
    for (int l = 0; l < L; ++l) m[l] = fl_max(m[l], tu[k * L + l]);
  for (int l = 0; l < L; ++l) sum[l] = T(0);
  for (int k = 0; k < K; ++k)
    for (int l = 0; l < L; ++l) {
      const T e = fl_exp(tu[k * L + l] - m[l]);
      sm[k * L + l] = e;
      sum[l] += e;
    }
  const T span = hi - lo;
  for (int l = 0; l < L; ++l) {
    acc[l] = 0.0;
    knot[l] = lo;
  }
  for (int k = 0; k < K; ++k)
    for (int l = 0; l < L; ++l) {
      const T p = sm[k * L + l] / sum[l];
      sm[k * L + l] = p;
      acc[l] += static_cast<double>(min_b + coef * p);
      knot[(k + 1) * L + l] = span * static_cast<T>(acc[l]) + lo;
    }
  for (int l = 0; l < L; ++l) knot[K * L + l] = hi;
}

// Knot derivatives d[k] = min_d + softplus(u) and, for the backward,
// sig[k] = sigmoid(u) = dd/du; with linear tails d[0] and d[K] come from the
// constant padding (no gradient). Each row is one straight loop over lanes (a
// select between a constant and a load would keep it scalar).
template <typename T>
void derivatives(const RqConsts<T>& c, const T* td, T* d, T* sig, bool need_sig) {
  const int K = c.K;
  const int first = c.tails ? 1 : 0, last = c.tails ? K - 1 : K, off = c.tails ? 1 : 0;
  if (c.tails) {
    const T dt = c.min_d + fl_softplus(c.tail_u);
    for (int l = 0; l < L; ++l) {
      d[l] = dt;
      d[K * L + l] = dt;
      sig[l] = T(0);
      sig[K * L + l] = T(0);
    }
  }
  for (int k = first; k <= last; ++k) {
    const T* u = td + (k - off) * L;
    T* dk = d + k * L;
    for (int l = 0; l < L; ++l) dk[l] = c.min_d + fl_softplus(u[l]);
    if (need_sig) {
      T* sk = sig + k * L;
      for (int l = 0; l < L; ++l) sk[l] = fl_sigmoid(u[l]);
    }
  }
}

template <typename T>
struct Prepared {
  alignas(64) T v[L];
  alignas(64) int bin[L];
  alignas(64) int region[L];
};

// Loads a block, builds its knots, and finds every lane's bin and region.
template <typename T>
void prepare(const RqConsts<T>& c, const RqArgs& a, int64_t i0, int n, Work<T>& w,
             Prepared<T>& p, bool need_sig) {
  const int K = c.K;
  const T* in = static_cast<const T*>(a.in);
  transpose_in(static_cast<const T*>(a.uw), i0, n, K, w.tw.data());
  transpose_in(static_cast<const T*>(a.uh), i0, n, K, w.th.data());
  if (c.nd() > 0) transpose_in(static_cast<const T*>(a.ud), i0, n, c.nd(), w.td.data());
  knots(w.tw.data(), K, c.left, c.right, c.min_w, c.coef_w, w.smw.data(), w.cw.data());
  knots(w.th.data(), K, c.bottom, c.top, c.min_h, c.coef_h, w.smh.data(), w.ch.data());
  derivatives(c, w.td.data(), w.d.data(), w.sig.data(), need_sig);
  const T* kn = c.inverse ? w.ch.data() : w.cw.data();
  const T lo = c.inverse ? c.bottom : c.left;
  const T hi = c.inverse ? c.top : c.right;
  for (int l = 0; l < L; ++l) {
    p.v[l] = in[i0 + (l < n ? l : 0)];
    p.bin[l] = 0;
  }
  // bin = number of interior knots passed: in [0, K - 1] for any input
  for (int k = 1; k < K; ++k)
    for (int l = 0; l < L; ++l) p.bin[l] += p.v[l] >= kn[k * L + l] ? 1 : 0;
  for (int l = 0; l < L; ++l) p.region[l] = rq_region(p.v[l], lo, hi);
}

template <typename T>
RqBin<T> gather(const Work<T>& w, int b, int l) {
  RqBin<T> r;
  r.xk = w.cw[b * L + l];
  r.w = w.cw[(b + 1) * L + l] - r.xk;
  r.yk = w.ch[b * L + l];
  r.h = w.ch[(b + 1) * L + l] - r.yk;
  r.dk = w.d[b * L + l];
  r.dk1 = w.d[(b + 1) * L + l];
  return r;
}

template <typename T, bool INV, bool TAILS>
void rq_forward_range(const RqArgs& a, int64_t begin, int64_t end) {
  if constexpr (std::is_same_v<T, float>) {
    return rqv::forward_range<INV, TAILS>(a, begin, end);
  }
  const RqConsts<T> c(a);
  Work<T> w(c.K, c.nd());
  Prepared<T> p;
  T* out = static_cast<T*>(a.out);
  T* lad = static_cast<T*>(a.lad);
  alignas(64) T o[L], ld[L];
  for (int64_t i0 = begin; i0 < end; i0 += L) {
    const int n = static_cast<int>(std::min<int64_t>(L, end - i0));
    prepare(c, a, i0, n, w, p, false);
    for (int l = 0; l < L; ++l) {
      const RqBin<T> b = gather(w, p.bin[l], l);
      RqOut<T> r;
      if constexpr (INV) {
        r = rq_inverse(p.v[l], b, p.region[l], TAILS);
      } else {
        r = rq_forward(p.v[l], b, p.region[l], TAILS);
      }
      o[l] = r.out;
      ld[l] = r.lad;
    }
    for (int l = 0; l < n; ++l) {
      out[i0 + l] = o[l];
      lad[i0 + l] = ld[l];
    }
  }
}

template <typename T, bool INV, bool TAILS>
void rq_backward_range(const RqArgs& a, int64_t begin, int64_t end) {
  if constexpr (std::is_same_v<T, float>) {
    return rqv::backward_range<INV, TAILS>(a, begin, end);
  }
  const RqConsts<T> c(a);
  const int K = c.K;
  const int nd = c.nd();
  Work<T> w(K, nd);
  Prepared<T> p;
  const T* g_out = static_cast<const T*>(a.g_out);
  const T* g_lad = static_cast<const T*>(a.g_lad);
  T* g_in = static_cast<T*>(a.g_in);
  T* g_uw = static_cast<T*>(a.g_uw);
  T* g_uh = static_cast<T*>(a.g_uh);
  T* g_ud = static_cast<T*>(a.g_ud);
  alignas(64) T gi[L], gcw0[L], gcw1[L], gch0[L], gch1[L], gd0[L], gd1[L], dot[L];
  std::vector<T> gs(size_t(std::max(K + 1, 1)) * L);
  const T sw = (c.right - c.left) * c.coef_w;
  const T sh = (c.top - c.bottom) * c.coef_h;
  for (int64_t i0 = begin; i0 < end; i0 += L) {
    const int n = static_cast<int>(std::min<int64_t>(L, end - i0));
    prepare(c, a, i0, n, w, p, true);
    for (int l = 0; l < L; ++l) {
      const int64_t i = i0 + (l < n ? l : 0);
      const RqBin<T> b = gather(w, p.bin[l], l);
      // the point in x whose forward image is y (inverse), or x itself
      T x = p.v[l];
      if constexpr (INV) x = rq_inverse(p.v[l], b, p.region[l], TAILS).out;
      const RqGrad<T> g = rq_backward(x, b, p.region[l], TAILS, INV, g_out[i], g_lad[i]);
      gi[l] = g.in;
      gcw0[l] = g.xk - g.w;
      gcw1[l] = g.w;
      gch0[l] = g.yk - g.h;
      gch1[l] = g.h;
      gd0[l] = g.dk;
      gd1[l] = g.dk1;
    }
    for (int l = 0; l < n; ++l) g_in[i0 + l] = gi[l];
    // softmax backward: g_u = sm (g_s - sum_j sm_j g_s_j)
    for (int pass = 0; pass < 2; ++pass) {
      const T* sm = pass == 0 ? w.smw.data() : w.smh.data();
      const T* g0 = pass == 0 ? gcw0 : gch0;
      const T* g1 = pass == 0 ? gcw1 : gch1;
      const T scale = pass == 0 ? sw : sh;
      T* dst = pass == 0 ? g_uw : g_uh;
      for (int l = 0; l < L; ++l) dot[l] = T(0);
      for (int k = 0; k < K; ++k)
        for (int l = 0; l < L; ++l) {
          const T v = scale * rq_knot_suffix(k, p.bin[l], K, g0[l], g1[l]);
          gs[k * L + l] = v;
          dot[l] += sm[k * L + l] * v;
        }
      for (int k = 0; k < K; ++k)
        for (int l = 0; l < L; ++l) gs[k * L + l] = sm[k * L + l] * (gs[k * L + l] - dot[l]);
      for (int l = 0; l < n; ++l)
        for (int k = 0; k < K; ++k) dst[(i0 + l) * K + k] = gs[k * L + l];
    }
    const int off = c.tails ? 1 : 0;  // ud[j] is knot j + off
    for (int j = 0; j < nd; ++j)
      for (int l = 0; l < L; ++l) {
        const int k = j + off;
        const T gd = (k == p.bin[l] ? gd0[l] : T(0)) + (k == p.bin[l] + 1 ? gd1[l] : T(0));
        gs[j * L + l] = w.sig[k * L + l] * gd;
      }
    for (int l = 0; l < n; ++l)
      for (int j = 0; j < nd; ++j) g_ud[(i0 + l) * nd + j] = gs[j * L + l];
  }
}

template <int ACT, bool INV, typename T>
void affine_forward_tasks(const AffineArgs& a, int64_t begin, int64_t end) {
  if constexpr (std::is_same_v<T, float> && rqv::affine_simd_ok<ACT>) {
    return rqv::affine_forward_simd<ACT, INV>(a, begin, end);
  }
  const T* in = static_cast<const T*>(a.in);
  const T* sh = static_cast<const T*>(a.shift);
  const T* uu = static_cast<const T*>(a.u);
  T* out = static_cast<T*>(a.out);
  T* part = static_cast<T*>(a.lad_partial);
  const T clamp = T(a.clamp);
  for (int64_t t = begin; t < end; ++t) {
    const int64_t row = t / a.chunks_per_row;
    const int64_t j0 = (t - row * a.chunks_per_row) * a.chunk;
    const int64_t j1 = std::min(a.row_len, j0 + a.chunk);
    const int64_t base = row * a.row_len;
    // Element loop first (it vectorises), then the log-scales are summed with
    // one accumulator per lane: a vectorisable sum without reassociation.
    constexpr int kBuf = 256;
    alignas(64) T buf[kBuf];
    alignas(64) T acc[L] = {};
    for (int64_t j = j0; j < j1; j += kBuf) {
      const int n = static_cast<int>(std::min<int64_t>(kBuf, j1 - j));
      const int64_t e0 = base + j;
      for (int i = 0; i < n; ++i) {
        const AffineOut<T> r = affine_apply<ACT>(in[e0 + i], sh[e0 + i], uu[e0 + i], clamp, INV);
        out[e0 + i] = r.out;
        buf[i] = r.lad;
      }
      int i = 0;
      for (; i + L <= n; i += L)
        for (int l = 0; l < L; ++l) acc[l] += buf[i + l];
      for (; i < n; ++i) acc[0] += buf[i];
    }
    T total = T(0);
    for (int l = 0; l < L; ++l) total += acc[l];
    part[t] = total;
  }
}

template <int ACT, bool INV, typename T>
void affine_backward_tasks(const AffineArgs& a, int64_t begin, int64_t end) {
  if constexpr (std::is_same_v<T, float> && rqv::affine_simd_ok<ACT>) {
    return rqv::affine_backward_simd<ACT, INV>(a, begin, end);
  }
  const T* in = static_cast<const T*>(a.in);
  const T* sh = static_cast<const T*>(a.shift);
  const T* uu = static_cast<const T*>(a.u);
  const T* go = static_cast<const T*>(a.g_out);
  const T* gl = static_cast<const T*>(a.g_lad);
  T* gi = static_cast<T*>(a.g_in);
  T* gs = static_cast<T*>(a.g_shift);
  T* gu = static_cast<T*>(a.g_u);
  const T clamp = T(a.clamp);
  for (int64_t t = begin; t < end; ++t) {
    const int64_t row = t / a.chunks_per_row;
    const int64_t j0 = (t - row * a.chunks_per_row) * a.chunk;
    const int64_t j1 = std::min(a.row_len, j0 + a.chunk);
    const int64_t base = row * a.row_len;
    const T g_lad = gl[row];
    // int inner index over a contiguous run, and __restrict__: with seven
    // pointers GCC gives up its overlap checks and would run the loop scalar
    const T* __restrict__ x = in + base + j0;
    const T* __restrict__ sft = sh + base + j0;
    const T* __restrict__ v = uu + base + j0;
    const T* __restrict__ g_o = go + base + j0;
    T* __restrict__ d_in = gi + base + j0;
    T* __restrict__ d_sh = gs + base + j0;
    T* __restrict__ d_u = gu + base + j0;
    const int n = static_cast<int>(j1 - j0);
    // the scale first, in its own loop (as the forward's: it vectorises);
    // then plain arithmetic
    constexpr int kBuf = 256;
    alignas(64) T sc[kBuf], dl[kBuf];
    for (int c0 = 0; c0 < n; c0 += kBuf) {
      const int m = std::min(kBuf, n - c0);
      for (int i = 0; i < m; ++i) {
        const AffineScale<T> r = affine_scale<ACT>(v[c0 + i], clamp);
        sc[i] = r.scale;
        dl[i] = r.dlog;
      }
      for (int i = 0; i < m; ++i) {
        const AffineGrad<T> g =
            affine_backward_scaled<ACT>(x[c0 + i], sft[c0 + i], sc[i], dl[i], INV, g_o[c0 + i], g_lad);
        d_in[c0 + i] = g.in;
        d_sh[c0 + i] = g.shift;
        d_u[c0 + i] = g.u;
      }
    }
  }
}

template <typename T, bool BACKWARD>
void affine_dispatch(const AffineArgs& a, int64_t begin, int64_t end) {
#define GENFAST_AFFINE_CASE(ACT)                                                   \
  case ACT:                                                                        \
    if (a.inverse)                                                                 \
      return BACKWARD ? affine_backward_tasks<ACT, true, T>(a, begin, end)         \
                      : affine_forward_tasks<ACT, true, T>(a, begin, end);         \
    return BACKWARD ? affine_backward_tasks<ACT, false, T>(a, begin, end)          \
                    : affine_forward_tasks<ACT, false, T>(a, begin, end);
  switch (a.act) {
    GENFAST_AFFINE_CASE(kActNone)
    GENFAST_AFFINE_CASE(kActSigmoid)
    GENFAST_AFFINE_CASE(kActExp)
    GENFAST_AFFINE_CASE(kActAtan)
    GENFAST_AFFINE_CASE(kActTanh)
    GENFAST_AFFINE_CASE(kActSoftSigmoid)
    GENFAST_AFFINE_CASE(kActGlow)
    default: return;  // the bindings check act
  }
#undef GENFAST_AFFINE_CASE
}

// Direction and tails are template arguments: the element loops then carry no
// branch and vectorise.
template <typename T, bool BACKWARD>
void rq_dispatch(const RqArgs& a, int64_t b, int64_t e) {
  const int which = (a.inverse ? 2 : 0) + (a.linear_tails ? 1 : 0);
  switch (which) {
    case 0: return BACKWARD ? rq_backward_range<T, false, false>(a, b, e)
                            : rq_forward_range<T, false, false>(a, b, e);
    case 1: return BACKWARD ? rq_backward_range<T, false, true>(a, b, e)
                            : rq_forward_range<T, false, true>(a, b, e);
    case 2: return BACKWARD ? rq_backward_range<T, true, false>(a, b, e)
                            : rq_forward_range<T, true, false>(a, b, e);
    default: return BACKWARD ? rq_backward_range<T, true, true>(a, b, e)
                             : rq_forward_range<T, true, true>(a, b, e);
  }
}

}  // namespace

void rq_spline_f32(const RqArgs& a, int64_t b, int64_t e) { rq_dispatch<float, false>(a, b, e); }
void rq_spline_f64(const RqArgs& a, int64_t b, int64_t e) { rq_dispatch<double, false>(a, b, e); }
void rq_spline_backward_f32(const RqArgs& a, int64_t b, int64_t e) {
  rq_dispatch<float, true>(a, b, e);
}
void rq_spline_backward_f64(const RqArgs& a, int64_t b, int64_t e) {
  rq_dispatch<double, true>(a, b, e);
}
void affine_coupling_f32(const AffineArgs& a, int64_t b, int64_t e) {
  affine_dispatch<float, false>(a, b, e);
}
void affine_coupling_f64(const AffineArgs& a, int64_t b, int64_t e) {
  affine_dispatch<double, false>(a, b, e);
}
void affine_coupling_backward_f32(const AffineArgs& a, int64_t b, int64_t e) {
  affine_dispatch<float, true>(a, b, e);
}
void affine_coupling_backward_f64(const AffineArgs& a, int64_t b, int64_t e) {
  affine_dispatch<double, true>(a, b, e);
}

}  // namespace genfast::cpu::GENFAST_CPU_ISA
