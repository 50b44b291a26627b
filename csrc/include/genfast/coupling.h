// Per-element math of the affine and additive coupling transforms
// (shared/reference/flows.md). Used by csrc/cpu/flows.cpp and csrc/cuda/flows.cu;
// the per-item log-determinant sum lives in their loops.
//
// A coupling splits x into (x1, x2); a network on x1 gives shift t and raw
// scale u for x2. The scale activation is a compile-time choice:
//   kNone      additive coupling, NICE (Dinh et al. 2014): y = x + t
//   kSigmoid   nflows' AffineCouplingTransform: scale = sigmoid(u + 2) + 1e-3
//   kExp       RealNVP (Dinh et al. 2017): scale = exp(u)
//   kAtan, kTanh, kSoftSigmoid: FrEIA's soft clamp, scale = exp(clamp f(u)) with
//              f = 0.636 atan, tanh, or 2 (sigmoid - 1/2)
//   kGlow      Glow (Kingma & Dhariwal 2018): scale = sigmoid(u + 2), shift
//              first: y = (x + t) scale
// y = x scale + t (kGlow: (x + t) scale); logabsdet = sum of log scale.
#pragma once

#include "genfast/flows_math.h"
#include "genfast/macros.h"

namespace genfast {

enum AffineAct : int {
  kActNone = 0,
  kActSigmoid = 1,
  kActExp = 2,
  kActAtan = 3,
  kActTanh = 4,
  kActSoftSigmoid = 5,
  kActGlow = 6,
};
constexpr int kNumAffineActs = 7;

template <typename T>
struct AffineScale {
  T scale, log_scale, dlog;  // dlog = d log(scale) / du
};

template <int ACT, typename T>
GENFAST_HD AffineScale<T> affine_scale(T u, T clamp) {
  AffineScale<T> r;
  if constexpr (ACT == kActNone) {
    r.scale = T(1);
    r.log_scale = T(0);
    r.dlog = T(0);
  } else if constexpr (ACT == kActSigmoid) {
    const T sg = fl_sigmoid(u + T(2));
    r.scale = sg + T(1e-3);
    r.log_scale = fl_log(r.scale);
    r.dlog = sg * (T(1) - sg) / r.scale;
  } else if constexpr (ACT == kActGlow) {
    const T v = u + T(2);
    const T sg = fl_sigmoid(v);
    r.scale = sg;
    r.log_scale = -fl_softplus(-v);  // log sigmoid(v), finite for any finite v
    r.dlog = T(1) - sg;
  } else {
    T s, ds;
    if constexpr (ACT == kActExp) {
      s = u;
      ds = T(1);
    } else if constexpr (ACT == kActAtan) {
      s = clamp * T(0.636) * fl_atan(u);
      ds = clamp * T(0.636) / (T(1) + u * u);
    } else if constexpr (ACT == kActTanh) {
      const T th = fl_tanh(u);
      s = clamp * th;
      ds = clamp * (T(1) - th * th);
    } else {  // kActSoftSigmoid
      const T sg = fl_sigmoid(u);
      s = clamp * T(2) * (sg - T(0.5));
      ds = clamp * T(2) * sg * (T(1) - sg);
    }
    r.scale = fl_exp(s);
    r.log_scale = s;
    r.dlog = ds;
  }
  return r;
}

template <typename T>
struct AffineOut {
  T out, lad;  // lad: this element's log|d out / d in|
};

// One element, forward or inverse.
template <int ACT, typename T>
GENFAST_HD AffineOut<T> affine_apply(T in, T shift, T u, T clamp, bool inverse) {
  const AffineScale<T> sc = affine_scale<ACT>(u, clamp);
  AffineOut<T> r;
  r.lad = inverse ? -sc.log_scale : sc.log_scale;
  if constexpr (ACT == kActGlow) {
    r.out = inverse ? in / sc.scale - shift : (in + shift) * sc.scale;
  } else {
    r.out = inverse ? (in - shift) / sc.scale : in * sc.scale + shift;
  }
  return r;
}

template <typename T>
struct AffineGrad {
  T in, shift, u;
};

// Gradients of one element given its scale and d log(scale) / du (from
// affine_scale) and the upstream gradients of its output (g_out) and of its
// item's logabsdet (g_lad).
template <int ACT, typename T>
GENFAST_HD AffineGrad<T> affine_backward_scaled(T in, T shift, T scale, T dlog, bool inverse,
                                                T g_out, T g_lad) {
  AffineGrad<T> g;
  constexpr bool glow = ACT == kActGlow;
  if (!inverse) {
    // d y / d log(scale) = (x [+ t]) scale
    const T pre = glow ? in + shift : in;
    g.in = g_out * scale;
    g.shift = glow ? g_out * scale : g_out;
    g.u = (g_out * pre * scale + g_lad) * dlog;
  } else {
    // x = (y - t) / scale  or  y / scale - t;  d x / d log(scale) = -(y [- t]) / scale
    const T inv = T(1) / scale;
    const T pre = glow ? in * inv : (in - shift) * inv;
    g.in = g_out * inv;
    g.shift = glow ? -g_out : -g_out * inv;
    g.u = (-g_out * pre - g_lad) * dlog;
  }
  return g;
}

template <int ACT, typename T>
GENFAST_HD AffineGrad<T> affine_backward(T in, T shift, T u, T clamp, bool inverse, T g_out,
                                         T g_lad) {
  const AffineScale<T> sc = affine_scale<ACT>(u, clamp);
  return affine_backward_scaled<ACT>(in, shift, sc.scale, sc.dlog, inverse, g_out, g_lad);
}

}  // namespace genfast
