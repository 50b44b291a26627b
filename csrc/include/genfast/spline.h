// Per-element math of the rational-quadratic spline (Durkan, Bekasov, Murray,
// Papamakarios, "Neural Spline Flows", NeurIPS 2019), as nflows 0.14 computes
// it (shared/reference/flows.md). Used by csrc/cpu/flows.cpp and
// csrc/cuda/flows.cu; the loops over bins (softmax, cumsum, bin search and the
// backward scatter into the K parameters) live there.
//
// One element sits in bin k with knots (xk, yk), width w, height h and knot
// derivatives dk, dk1; with theta = (x - xk) / w, s = h / w:
//   den = s + (dk + dk1 - 2 s) theta (1 - theta)
//   y   = yk + h (s theta^2 + dk theta (1 - theta)) / den
//   lad = log(s^2 (dk1 theta^2 + 2 s theta (1 - theta) + dk (1 - theta)^2) / den^2)
// Outside the domain: identity (linear tails, lad = 0), or for the bounded
// spline a linear continuation with the boundary derivative, which keeps the
// map finite and invertible without a host-side domain check.
#pragma once

#include "genfast/flows_math.h"
#include "genfast/macros.h"

namespace genfast {

template <typename T>
struct RqBin {
  T xk, w, yk, h, dk, dk1;
};

template <typename T>
struct RqOut {
  T out, lad;
};

// Where an element falls: inside the spline's domain, below it or above it.
enum RqRegion : int { kRqInside = 0, kRqBelow = 1, kRqAbove = 2 };

template <typename T>
GENFAST_HD int rq_region(T v, T lo, T hi) {
  return v < lo ? kRqBelow : (v > hi ? kRqAbove : kRqInside);
}

template <typename T>
GENFAST_HD T rq_clamp01(T t) {
  return fl_min(fl_max(t, T(0)), T(1));
}

// log|dy/dx| inside a bin at theta: with q = s / den (in (0, 2]) the argument
// q^2 M is a product of positive terms, never 0 / 0.
template <typename T>
GENFAST_HD T rq_lad(T theta, const RqBin<T>& b) {
  const T s = b.h / b.w;
  const T t = theta * (T(1) - theta);
  const T den = s + (b.dk + b.dk1 - T(2) * s) * t;
  const T m = b.dk1 * theta * theta + T(2) * s * t + b.dk * (T(1) - theta) * (T(1) - theta);
  const T q = s / den;
  return fl_log(q * q * m);
}

// Forward map of x in bin b (region from rq_region on the x domain).
template <typename T>
GENFAST_HD RqOut<T> rq_forward(T x, const RqBin<T>& b, int region, bool identity_tails) {
  const T theta = rq_clamp01((x - b.xk) / b.w);
  const T s = b.h / b.w;
  const T t = theta * (T(1) - theta);
  const T den = s + (b.dk + b.dk1 - T(2) * s) * t;
  const T y_in = b.yk + b.h * (s * theta * theta + b.dk * t) / den;
  const T lad_in = rq_lad(theta, b);
  // bounded spline outside [left, right]: slope dk below (bin 0), dk1 above (bin K-1)
  const T y_lo = b.yk + b.dk * (x - b.xk);
  const T y_hi = (b.yk + b.h) + b.dk1 * (x - (b.xk + b.w));
  const T y_out = identity_tails ? x : (region == kRqBelow ? y_lo : y_hi);
  const T lad_out =
      identity_tails ? T(0) : fl_log(region == kRqBelow ? b.dk : b.dk1);
  RqOut<T> r;
  r.out = region == kRqInside ? y_in : y_out;
  r.lad = region == kRqInside ? lad_in : lad_out;
  return r;
}

// theta in [0, 1] with y = forward(xk + theta w) inside bin b. Solves
// a theta^2 + b theta + c = 0 by the stable form: q = -(b + sign(b) sqrt(disc)) / 2,
// theta = c / q for b >= 0 and q / a for b < 0 (a > 0 there), so no root ever
// comes from a difference of nearly equal terms. disc is clamped at 0: in
// float32 it can round slightly negative (nflows asserts, or NaNs, there).
template <typename T>
GENFAST_HD T rq_inverse_theta(T y, const RqBin<T>& b) {
  const T s = b.h / b.w;
  // clamped into the bin: inputs far outside (the tails) cannot overflow b^2
  const T d = fl_min(fl_max(y - b.yk, T(0)), b.h);
  const T g = b.dk + b.dk1 - T(2) * s;
  const T qa = d * g + b.h * (s - b.dk);
  const T qb = b.h * b.dk - d * g;
  const T qc = -s * d;
  const T disc = fl_max(qb * qb - T(4) * qa * qc, T(0));
  const T sq = fl_sqrt(disc);
  const T den_pos = -qb - sq;                    // <= 0 when qb >= 0
  const T den_neg = T(2) * qa;                   // > 0 when qb < 0
  const T theta_pos = T(2) * qc / (den_pos < T(0) ? den_pos : T(-1));
  const T theta_neg = (sq - qb) / (den_neg > T(0) ? den_neg : T(1));
  const T theta = qb >= T(0) ? (den_pos < T(0) ? theta_pos : T(0)) : theta_neg;
  return rq_clamp01(theta);
}

// Inverse map of y in bin b (region from rq_region on the y domain).
template <typename T>
GENFAST_HD RqOut<T> rq_inverse(T y, const RqBin<T>& b, int region, bool identity_tails) {
  const T theta = rq_inverse_theta(y, b);
  const T x_in = b.xk + theta * b.w;
  const T lad_in = -rq_lad(theta, b);
  const T x_lo = b.xk + (y - b.yk) / b.dk;
  const T x_hi = (b.xk + b.w) + (y - (b.yk + b.h)) / b.dk1;
  const T x_out = identity_tails ? y : (region == kRqBelow ? x_lo : x_hi);
  const T lad_out =
      identity_tails ? T(0) : -fl_log(region == kRqBelow ? b.dk : b.dk1);
  RqOut<T> r;
  r.out = region == kRqInside ? x_in : x_out;
  r.lad = region == kRqInside ? lad_in : lad_out;
  return r;
}

// Gradients of one element with respect to its input and to the six bin
// quantities, given the upstream gradients of (output, lad).
template <typename T>
struct RqGrad {
  T in, xk, w, yk, h, dk, dk1;
};

// The forward map's partial derivatives at x (f: output, l: lad); gradients of
// the inverse follow from them by the implicit function theorem (rq_backward).
template <typename T>
struct RqPartials {
  T fx, lx;                              // d/dx
  T f_xk, f_w, f_yk, f_h, f_dk, f_dk1;   // d output / d bin quantity
  T l_xk, l_w, l_h, l_dk, l_dk1;         // d lad / d bin quantity (none on yk)
};

template <typename T>
GENFAST_HD RqPartials<T> rq_partials(T x, const RqBin<T>& b, int region, bool identity_tails) {
  const T theta = rq_clamp01((x - b.xk) / b.w);
  const T inv_w = T(1) / b.w;
  const T s = b.h * inv_w;
  const T t = theta * (T(1) - theta);
  const T g = b.dk + b.dk1 - T(2) * s;
  const T den = s + g * t;
  const T inv_den = T(1) / den;
  const T n = s * theta * theta + b.dk * t;
  const T r = n * inv_den;
  const T omt = T(1) - theta;
  const T m = b.dk1 * theta * theta + T(2) * s * t + b.dk * omt * omt;
  const T inv_m = T(1) / m;
  // derivatives of den, n, m with respect to theta and s
  const T den_th = g * (T(1) - T(2) * theta);
  const T den_s = T(1) - T(2) * t;
  const T n_th = T(2) * s * theta + b.dk * (T(1) - T(2) * theta);
  const T m_th = T(2) * b.dk1 * theta + T(2) * s * (T(1) - T(2) * theta) - T(2) * b.dk * omt;
  // y = yk + h r
  const T y_th = b.h * (n_th - r * den_th) * inv_den;
  const T y_s = b.h * (theta * theta - r * den_s) * inv_den;
  const T y_dk = b.h * (t - r * t) * inv_den;
  const T y_dk1 = -b.h * r * t * inv_den;
  // lad = 2 log s + log m - 2 log den
  const T l_th = m_th * inv_m - T(2) * den_th * inv_den;
  const T l_s = T(2) / s + T(2) * t * inv_m - T(2) * den_s * inv_den;
  const T l_dk = omt * omt * inv_m - T(2) * t * inv_den;
  const T l_dk1 = theta * theta * inv_m - T(2) * t * inv_den;
  const T q = s * inv_den;

  RqPartials<T> p;
  // inside: theta = (x - xk) / w, s = h / w
  p.fx = q * q * m;  // = y_th / w, in the form that is positive by construction
  p.lx = l_th * inv_w;
  p.f_xk = -p.fx;
  p.f_w = -theta * p.fx - y_s * s * inv_w;
  p.f_yk = T(1);
  p.f_h = r + y_s * inv_w;
  p.f_dk = y_dk;
  p.f_dk1 = y_dk1;
  p.l_xk = -p.lx;
  p.l_w = -theta * p.lx - l_s * s * inv_w;
  p.l_h = l_s * inv_w;
  p.l_dk = l_dk;
  p.l_dk1 = l_dk1;
  // Outside the domain: slope dk (below) or dk1 (above), or the identity. Every
  // field is a select, so a loop over elements stays branch-free.
  const bool out = region != kRqInside;
  const bool lo = region == kRqBelow;
  const T slope = lo ? b.dk : b.dk1;
  const T id = identity_tails ? T(0) : T(1);  // identity tails: no parameter gradient
  p.fx = out ? (identity_tails ? T(1) : slope) : p.fx;
  p.lx = out ? T(0) : p.lx;
  p.f_xk = out ? -slope * id : p.f_xk;
  p.f_w = out ? (lo ? T(0) : -slope * id) : p.f_w;
  p.f_yk = out ? id : p.f_yk;
  p.f_h = out ? (lo ? T(0) : id) : p.f_h;
  p.f_dk = out ? (lo ? (x - b.xk) * id : T(0)) : p.f_dk;
  p.f_dk1 = out ? (lo ? T(0) : (x - (b.xk + b.w)) * id) : p.f_dk1;
  p.l_xk = out ? T(0) : p.l_xk;
  p.l_w = out ? T(0) : p.l_w;
  p.l_h = out ? T(0) : p.l_h;
  p.l_dk = out ? (lo ? id / b.dk : T(0)) : p.l_dk;
  p.l_dk1 = out ? (lo ? T(0) : id / b.dk1) : p.l_dk1;
  return p;
}

// Backward of one element. Forward: x is the input, (g_out, g_lad) the
// upstream gradients of (y, lad). Inverse: x is the inverse's output (the
// point whose forward image is the input y) and (g_out, g_lad) those of
// (x, -lad); with a = (g_out - g_lad l_x) / f_x, dL/dy = a and every bin
// quantity p gets -a f_p - g_lad l_p.
template <typename T>
GENFAST_HD RqGrad<T> rq_backward(T x, const RqBin<T>& b, int region, bool identity_tails,
                                 bool inverse, T g_out, T g_lad) {
  const RqPartials<T> p = rq_partials(x, b, region, identity_tails);
  const T a = (g_out - g_lad * p.lx) / p.fx;
  const T cy = inverse ? -a : g_out;
  const T cl = inverse ? -g_lad : g_lad;
  RqGrad<T> g;
  g.in = inverse ? a : g_out * p.fx + g_lad * p.lx;
  g.xk = cy * p.f_xk + cl * p.l_xk;
  g.w = cy * p.f_w + cl * p.l_w;
  g.yk = cy * p.f_yk;
  g.h = cy * p.f_h + cl * p.l_h;
  g.dk = cy * p.f_dk + cl * p.l_dk;
  g.dk1 = cy * p.f_dk1 + cl * p.l_dk1;
  return g;
}

// Knot k of the cumulative widths (or heights) receives the gradient g_k;
// parameter j's softmax entry sees G_j = sum over interior knots k > j of g_k
// (knots 0 and K are pinned to the bounds). Only knots bin and bin + 1 carry a
// gradient, so G_j has this closed form.
template <typename T>
GENFAST_HD T rq_knot_suffix(int j, int bin, int num_bins, T g_knot, T g_knot1) {
  const T a = j < bin ? g_knot : T(0);
  const T c = (j <= bin && bin + 1 < num_bins) ? g_knot1 : T(0);
  return a + c;
}

}  // namespace genfast
