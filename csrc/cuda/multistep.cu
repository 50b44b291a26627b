// CUDA kernel of the multistep reverse steps. Per-step math:
// csrc/include/genfast/multistep.h (shared with the CPU loops); noise:
// noise.h's normal4 with the genfast stream's counters, so in-kernel noise
// equals genfast.randn(dtype=sample.dtype) bit for bit. See multistep.cuh.
#include "multistep.cuh"

#include <math.h>

#include <type_traits>

#include "genfast/convert.h"
#include "genfast/multistep.h"
#include "genfast/noise.h"
#include "storage.cuh"

namespace genfast::cuda {
namespace {

namespace ms = genfast::multistep;
constexpr int kThreads = 256;

// shared layout: the float coefficients, then the int flags
struct Shared {
  ms::CoefsF k;
  int h_slot[3], d_slot, p_slot, read_p, write_p, noise, write_dx;
  uint32_t nstream;
};

__device__ __forceinline__ int64_t step_index(const MultistepLaunch& a) {
  if (a.index == nullptr) return a.step;
  return a.index_is_int32 ? (int64_t) * static_cast<const int32_t*>(a.index)
                          : *static_cast<const int64_t*>(a.index);
}

__device__ void prepare(const MultistepLaunch& a, Shared* s) {
  const int64_t i = step_index(a);
  const bool ok = i >= 0 && i < a.rows;
  const int64_t r = ok ? i : 0;
  ms::Coefs k = ms::step_coefs(a.sampler, a.stage, a.prediction,
                               a.plan + steps::kPlanCols * r, a.stage_plan + ms::kStageCols * r);
  if (!ok) {  // NaN everywhere: the step's output is NaN
    const double nan = __longlong_as_double(0x7ff8000000000000LL);
    k.ax = k.ap = k.ad = k.az = k.px = k.pm = nan;
  }
  s->k = ms::to_float(k);
  const bool multi = ms::has_ring(a.sampler);
  for (int j = 0; j < 3; ++j) {
    const bool used = multi && (k.ah[j] != 0.0 || (k.write_p && k.ch[j] != 0.0));
    s->h_slot[j] = used ? ms::ring_slot(r, j + 1) : -1;
  }
  s->d_slot = k.write_d ? ms::ring_slot(r, 0) : -1;
  s->write_dx = k.write_dx;
  s->p_slot = a.sampler == ms::kUnipc ? 3 : (multi ? -1 : 0);
  s->read_p = k.read_p && (k.ap != 0.0 || (k.write_p && k.cp != 0.0));
  s->write_p = k.write_p;
  s->noise = k.az != 0.0 && (a.noise_given || a.noise_seeded);
  s->nstream = a.stream + (uint32_t)r;
}

#define GRID_STRIDE(i, n)                                                                   \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

// One thread per quad (four elements of one item: one Philox call).
template <typename T>
__global__ void __launch_bounds__(kThreads) multistep_kernel(MultistepLaunch a, int64_t qpi) {
  __shared__ Shared sh;
  if (threadIdx.x == 0) prepare(a, &sh);
  __syncthreads();
  const ms::CoefsF k = sh.k;
  const int64_t stride = a.items * a.numel;
  T* state = static_cast<T*>(a.state);
  GRID_STRIDE(g, a.items * qpi) {
    const int64_t item = g / qpi, q = g - item * qpi;
    float z[4] = {0, 0, 0, 0};
    if (sh.noise && a.noise_seeded) {
      const F32x4 n4 = normal4((uint32_t)q, a.sample_offset + (uint32_t)item, sh.nstream, a.k0,
                               a.k1);
      z[0] = rounded(n4.x, (const T*)nullptr); z[1] = rounded(n4.y, (const T*)nullptr);
      z[2] = rounded(n4.z, (const T*)nullptr); z[3] = rounded(n4.w, (const T*)nullptr);
    }
    float gs = a.guidance_scale, rs = 1.0f;
    if (a.guidance != nullptr) { gs = a.guidance[item]; rs = a.guidance[a.items + item]; }
    for (int j = 0; j < 4; ++j) {
      const int64_t e = 4 * q + j;
      if (e >= a.numel) break;
      const int64_t off = item * a.numel + e;
      const float x = ld(static_cast<const T*>(a.x), off);
      const float c = ld(static_cast<const T*>(a.c), off);
      float m = c;
      if (a.u != nullptr) {
        const float u = ld(static_cast<const T*>(a.u), off);
        m = rs * (u + gs * (c - u));
      }
      const float d = k.px * x + k.pm * m;
      float out = k.ax * x + k.ad * d;
      float xc = k.cs * x;
      if (k.cd != 0.0f) xc += k.cd * d;
      for (int h = 0; h < 3; ++h) {
        if (sh.h_slot[h] < 0) continue;
        const float hv = ld(state, sh.h_slot[h] * stride + off);
        out += k.ah[h] * hv;
        xc += k.ch[h] * hv;
      }
      if (sh.read_p) {
        const float pv = ld(state, sh.p_slot * stride + off);
        out += k.ap * pv;
        xc += k.cp * pv;
      }
      if (sh.noise) {
        const float zv = a.noise_seeded ? z[j] : ld(static_cast<const T*>(a.z), off);
        out += k.az * zv;
      }
      st(static_cast<T*>(a.prev), off, out);
      if (a.x0 != nullptr) st(static_cast<T*>(a.x0), off, d);
      // after the reads: slot i mod 3 held h2 until now
      if (sh.d_slot >= 0) {
        st(state, sh.d_slot * stride + off, sh.write_dx ? k.hx * x + k.hd * d : d);  // lms: d
      }
      if (sh.write_p) st(state, sh.p_slot * stride + off, xc);
    }
  }
}

unsigned grid_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 65536 ? (blocks > 0 ? blocks : 1) : 65536);
}

}  // namespace

cudaError_t launch_multistep(const MultistepLaunch& a, cudaStream_t stream) {
  const int64_t qpi = (a.numel + 3) / 4;
  const unsigned grid = grid_for(a.items * qpi);
  switch (a.dtype) {
    case kFloat16: multistep_kernel<Half><<<grid, kThreads, 0, stream>>>(a, qpi); break;
    case kBFloat16: multistep_kernel<BFloat><<<grid, kThreads, 0, stream>>>(a, qpi); break;
    default: multistep_kernel<float><<<grid, kThreads, 0, stream>>>(a, qpi); break;
  }
  return cudaGetLastError();
}

}  // namespace genfast::cuda
