// CUDA kernels of the flows family. The math is csrc/include/genfast/spline.h
// and coupling.h, shared with the CPU loops. One thread per spline element,
// streaming over its K bins (maxima, softmax sums, then the cumulative knots
// while keeping the bin the input falls in), so no per-bin state is held and
// any K works; the backward repeats the passes to scatter into the parameters.
#include "flows.cuh"

#include <math.h>

#include "genfast/coupling.h"
#include "genfast/spline.h"

namespace genfast::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
struct RqScalars {
  int K, nd;
  T left, right, bottom, top, min_w, min_h, min_d, coef_w, coef_h, tail_u;
};

template <typename T>
RqScalars<T> rq_scalars(const RqLaunch& a) {
  RqScalars<T> s;
  s.K = static_cast<int>(a.num_bins);
  s.nd = a.linear_tails ? s.K - 1 : s.K + 1;
  s.left = T(a.left);
  s.right = T(a.right);
  s.bottom = T(a.bottom);
  s.top = T(a.top);
  s.min_w = T(a.min_bin_width);
  s.min_h = T(a.min_bin_height);
  s.min_d = T(a.min_derivative);
  s.coef_w = T(1.0 - a.min_bin_width * a.num_bins);
  s.coef_h = T(1.0 - a.min_bin_height * a.num_bins);
  s.tail_u = a.linear_tails ? T(log(expm1(1.0 - a.min_derivative))) : T(0);
  return s;
}

template <typename T>
struct RqState {
  RqBin<T> b;
  int bin;
  T mw, mh, sw, sh;
};

template <typename T, bool TAILS>
__device__ __forceinline__ T deriv_logit(const T* ud, int j, const RqScalars<T>& s) {
  if (TAILS) return (j == 0 || j == s.K) ? s.tail_u : ud[j - 1];
  return ud[j];
}

template <typename T, bool INV, bool TAILS>
__device__ RqState<T> find_bin(const T* uw, const T* uh, const T* ud, T v,
                               const RqScalars<T>& s) {
  RqState<T> st;
  st.mw = uw[0];
  st.mh = uh[0];
  for (int k = 1; k < s.K; ++k) {
    st.mw = fl_max(st.mw, uw[k]);
    st.mh = fl_max(st.mh, uh[k]);
  }
  st.sw = T(0);
  st.sh = T(0);
  for (int k = 0; k < s.K; ++k) {
    st.sw += fl_exp(uw[k] - st.mw);
    st.sh += fl_exp(uh[k] - st.mh);
  }
  // running sums in double for float too, as the CPU kernels (torch's cumsum)
  double aw = 0.0, ah = 0.0;
  T cw_lo = s.left, ch_lo = s.bottom;
  st.bin = 0;
  for (int k = 0; k < s.K; ++k) {
    aw += static_cast<double>(s.min_w + s.coef_w * (fl_exp(uw[k] - st.mw) / st.sw));
    ah += static_cast<double>(s.min_h + s.coef_h * (fl_exp(uh[k] - st.mh) / st.sh));
    const T cw_hi = k == s.K - 1 ? s.right : (s.right - s.left) * T(aw) + s.left;
    const T ch_hi = k == s.K - 1 ? s.top : (s.top - s.bottom) * T(ah) + s.bottom;
    const bool take = k == 0 || v >= (INV ? ch_lo : cw_lo);
    if (take) {
      st.bin = k;
      st.b.xk = cw_lo;
      st.b.w = cw_hi - cw_lo;
      st.b.yk = ch_lo;
      st.b.h = ch_hi - ch_lo;
    }
    cw_lo = cw_hi;
    ch_lo = ch_hi;
  }
  st.b.dk = s.min_d + fl_softplus(deriv_logit<T, TAILS>(ud, st.bin, s));
  st.b.dk1 = s.min_d + fl_softplus(deriv_logit<T, TAILS>(ud, st.bin + 1, s));
  return st;
}

template <typename T, bool INV, bool TAILS>
__global__ void __launch_bounds__(kThreads)
rq_forward_kernel(const T* __restrict__ in, const T* __restrict__ uw, const T* __restrict__ uh,
                  const T* __restrict__ ud, T* __restrict__ out, T* __restrict__ lad, int64_t n,
                  RqScalars<T> s) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += step) {
    const T v = in[i];
    const RqState<T> st = find_bin<T, INV, TAILS>(uw + i * s.K, uh + i * s.K, ud + i * s.nd, v, s);
    const int region = INV ? rq_region(v, s.bottom, s.top) : rq_region(v, s.left, s.right);
    const RqOut<T> r = INV ? rq_inverse(v, st.b, region, TAILS) : rq_forward(v, st.b, region, TAILS);
    out[i] = r.out;
    lad[i] = r.lad;
  }
}

template <typename T, bool INV, bool TAILS>
__global__ void __launch_bounds__(kThreads)
rq_backward_kernel(const T* __restrict__ g_out, const T* __restrict__ g_lad,
                   const T* __restrict__ in, const T* __restrict__ uw_all,
                   const T* __restrict__ uh_all, const T* __restrict__ ud_all,
                   T* __restrict__ g_in, T* __restrict__ g_uw, T* __restrict__ g_uh,
                   T* __restrict__ g_ud, int64_t n, RqScalars<T> s) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += step) {
    const T* uw = uw_all + i * s.K;
    const T* uh = uh_all + i * s.K;
    const T* ud = ud_all + i * s.nd;
    const T v = in[i];
    const RqState<T> st = find_bin<T, INV, TAILS>(uw, uh, ud, v, s);
    const int region = INV ? rq_region(v, s.bottom, s.top) : rq_region(v, s.left, s.right);
    const T x = INV ? rq_inverse(v, st.b, region, TAILS).out : v;
    const RqGrad<T> g = rq_backward(x, st.b, region, TAILS, INV, g_out[i], g_lad[i]);
    g_in[i] = g.in;
    const T gw0 = g.xk - g.w, gw1 = g.w, gh0 = g.yk - g.h, gh1 = g.h;
    const T scale_w = (s.right - s.left) * s.coef_w;
    const T scale_h = (s.top - s.bottom) * s.coef_h;
    T dot_w = T(0), dot_h = T(0);
    for (int k = 0; k < s.K; ++k) {
      dot_w += fl_exp(uw[k] - st.mw) / st.sw * scale_w * rq_knot_suffix(k, st.bin, s.K, gw0, gw1);
      dot_h += fl_exp(uh[k] - st.mh) / st.sh * scale_h * rq_knot_suffix(k, st.bin, s.K, gh0, gh1);
    }
    for (int k = 0; k < s.K; ++k) {
      const T pw = fl_exp(uw[k] - st.mw) / st.sw;
      const T ph = fl_exp(uh[k] - st.mh) / st.sh;
      g_uw[i * s.K + k] = pw * (scale_w * rq_knot_suffix(k, st.bin, s.K, gw0, gw1) - dot_w);
      g_uh[i * s.K + k] = ph * (scale_h * rq_knot_suffix(k, st.bin, s.K, gh0, gh1) - dot_h);
    }
    const int off = TAILS ? 1 : 0;
    for (int j = 0; j < s.nd; ++j) {
      const int k = j + off;
      const T gd = (k == st.bin ? g.dk : T(0)) + (k == st.bin + 1 ? g.dk1 : T(0));
      g_ud[i * s.nd + j] = fl_sigmoid(ud[j]) * gd;
    }
  }
}

unsigned grid_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 65536 ? blocks : 65536);
}

template <typename T, bool INV, bool TAILS>
cudaError_t rq_launch(const RqLaunch& a, bool backward, cudaStream_t stream) {
  const RqScalars<T> s = rq_scalars<T>(a);
  if (backward) {
    rq_backward_kernel<T, INV, TAILS><<<grid_for(a.n), kThreads, 0, stream>>>(
        static_cast<const T*>(a.g_out), static_cast<const T*>(a.g_lad),
        static_cast<const T*>(a.in), static_cast<const T*>(a.uw), static_cast<const T*>(a.uh),
        static_cast<const T*>(a.ud), static_cast<T*>(a.g_in), static_cast<T*>(a.g_uw),
        static_cast<T*>(a.g_uh), static_cast<T*>(a.g_ud), a.n, s);
  } else {
    rq_forward_kernel<T, INV, TAILS><<<grid_for(a.n), kThreads, 0, stream>>>(
        static_cast<const T*>(a.in), static_cast<const T*>(a.uw), static_cast<const T*>(a.uh),
        static_cast<const T*>(a.ud), static_cast<T*>(a.out), static_cast<T*>(a.lad), a.n, s);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t rq_dispatch(const RqLaunch& a, bool backward, cudaStream_t stream) {
  if (a.n == 0) return cudaSuccess;
  if (a.inverse) {
    return a.linear_tails ? rq_launch<T, true, true>(a, backward, stream)
                          : rq_launch<T, true, false>(a, backward, stream);
  }
  return a.linear_tails ? rq_launch<T, false, true>(a, backward, stream)
                        : rq_launch<T, false, false>(a, backward, stream);
}

// ------------------------------------------------------------------- coupling

template <int ACT, bool INV, typename T>
__global__ void __launch_bounds__(kThreads)
affine_forward_kernel(const T* __restrict__ in, const T* __restrict__ sh,
                      const T* __restrict__ uu, T* __restrict__ out, T* __restrict__ part,
                      int64_t row_len, int64_t chunks, T clamp) {
  __shared__ T red[kThreads];
  const int64_t row = blockIdx.y;
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) * kAffineChunk;
  const int64_t j1 = j0 + kAffineChunk < row_len ? j0 + kAffineChunk : row_len;
  T acc = T(0);
  for (int64_t j = j0 + threadIdx.x; j < j1; j += kThreads) {
    const int64_t e = row * row_len + j;
    const AffineOut<T> r = affine_apply<ACT>(in[e], sh[e], uu[e], clamp, INV);
    out[e] = r.out;
    acc += r.lad;
  }
  red[threadIdx.x] = acc;
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w /= 2) {  // fixed tree: deterministic
    if (static_cast<int>(threadIdx.x) < w) red[threadIdx.x] += red[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) part[row * chunks + blockIdx.x] = red[0];
}

template <int ACT, bool INV, typename T>
__global__ void __launch_bounds__(kThreads)
affine_backward_kernel(const T* __restrict__ go, const T* __restrict__ gl,
                       const T* __restrict__ in, const T* __restrict__ sh,
                       const T* __restrict__ uu, T* __restrict__ gi, T* __restrict__ gs,
                       T* __restrict__ gu, int64_t row_len, int64_t total, T clamp) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += step) {
    const AffineGrad<T> g = affine_backward<ACT>(in[e], sh[e], uu[e], clamp, INV, go[e],
                                                 gl[e / row_len]);
    gi[e] = g.in;
    gs[e] = g.shift;
    gu[e] = g.u;
  }
}

template <int ACT, bool INV, typename T>
cudaError_t affine_launch(const AffineLaunch& a, bool backward, cudaStream_t stream) {
  const int64_t total = a.rows * a.row_len;
  if (total == 0) return cudaSuccess;
  if (backward) {
    affine_backward_kernel<ACT, INV, T><<<grid_for(total), kThreads, 0, stream>>>(
        static_cast<const T*>(a.g_out), static_cast<const T*>(a.g_lad),
        static_cast<const T*>(a.in), static_cast<const T*>(a.shift), static_cast<const T*>(a.u),
        static_cast<T*>(a.g_in), static_cast<T*>(a.g_shift), static_cast<T*>(a.g_u), a.row_len,
        total, T(a.clamp));
  } else {
    const int64_t chunks = (a.row_len + kAffineChunk - 1) / kAffineChunk;
    const dim3 grid(static_cast<unsigned>(chunks), static_cast<unsigned>(a.rows));
    affine_forward_kernel<ACT, INV, T><<<grid, kThreads, 0, stream>>>(
        static_cast<const T*>(a.in), static_cast<const T*>(a.shift), static_cast<const T*>(a.u),
        static_cast<T*>(a.out), static_cast<T*>(a.lad_partial), a.row_len, chunks, T(a.clamp));
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t affine_dispatch(const AffineLaunch& a, bool backward, cudaStream_t stream) {
#define GENFAST_AFFINE_CASE(ACT)                                                  \
  case ACT:                                                                       \
    return a.inverse ? affine_launch<ACT, true, T>(a, backward, stream)           \
                     : affine_launch<ACT, false, T>(a, backward, stream);
  switch (a.act) {
    GENFAST_AFFINE_CASE(kActNone)
    GENFAST_AFFINE_CASE(kActSigmoid)
    GENFAST_AFFINE_CASE(kActExp)
    GENFAST_AFFINE_CASE(kActAtan)
    GENFAST_AFFINE_CASE(kActTanh)
    GENFAST_AFFINE_CASE(kActSoftSigmoid)
    GENFAST_AFFINE_CASE(kActGlow)
    default: return cudaErrorInvalidValue;
  }
#undef GENFAST_AFFINE_CASE
}

}  // namespace

cudaError_t launch_rq_spline(const RqLaunch& a, bool is_double, cudaStream_t stream) {
  return is_double ? rq_dispatch<double>(a, false, stream) : rq_dispatch<float>(a, false, stream);
}

cudaError_t launch_rq_spline_backward(const RqLaunch& a, bool is_double, cudaStream_t stream) {
  return is_double ? rq_dispatch<double>(a, true, stream) : rq_dispatch<float>(a, true, stream);
}

cudaError_t launch_affine_coupling(const AffineLaunch& a, bool is_double, cudaStream_t stream) {
  return is_double ? affine_dispatch<double>(a, false, stream)
                   : affine_dispatch<float>(a, false, stream);
}

cudaError_t launch_affine_coupling_backward(const AffineLaunch& a, bool is_double,
                                            cudaStream_t stream) {
  return is_double ? affine_dispatch<double>(a, true, stream)
                   : affine_dispatch<float>(a, true, stream);
}

}  // namespace genfast::cuda
