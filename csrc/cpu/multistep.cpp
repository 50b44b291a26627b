// CPU loops of the multistep family. Compiled once per ISA level
// (GENFAST_CPU_ISA names the namespace); per-step math from
// csrc/include/genfast/multistep.h, noise from this level's normal_fill
// (csrc/cpu/noise.cpp), so in-kernel noise equals genfast.randn bit for bit.
//
// One pass over memory, several passes in L1: a block of kBlock elements is
// loaded (converted to float32) into stack buffers, and the linear form is
// accumulated term by term, each term a straight loop the compiler
// vectorises. Terms whose coefficient is zero (order warm-up, first-order
// final steps, history a sampler does not have) are skipped per block, so
// their buffers are never read: the memory traffic is what the step needs.
#include "multistep_kernels.h"

#include <type_traits>

#include "genfast/convert.h"
#include "genfast/multistep.h"
#include "genfast/training.h"  // f16 / bf16 loads
#include "noise_kernels.h"
#include "storage.h"

#ifndef GENFAST_CPU_ISA
#error "GENFAST_CPU_ISA must name the ISA level this file is compiled for"
#endif

namespace genfast::cpu::GENFAST_CPU_ISA {
namespace {

constexpr int64_t kBlock = 1024;  // elements per L1 block (a multiple of 4: noise quads)

template <typename T>
inline void load_block(const T* __restrict__ p, float* __restrict__ out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = load(p, i);
}

template <typename T>
inline void store_block(T* __restrict__ p, const float* __restrict__ v, int64_t n) {
  for (int64_t i = 0; i < n; ++i) store(p, i, v[i]);
}

// acc += k * v
inline void axpy(float* __restrict__ acc, float k, const float* __restrict__ v, int64_t n) {
  for (int64_t i = 0; i < n; ++i) acc[i] += k * v[i];
}

template <typename T>
void apply_t(const MultistepArgs& a, const StreamArgs& s, int64_t item, int64_t e0, int64_t e1) {
  const multistep::CoefsF k = a.k;
  alignas(64) float xb[kBlock], db[kBlock], ob[kBlock], cb[kBlock], tb[kBlock];
  alignas(64) T zt[kBlock];
  const bool cfg = a.u != nullptr;
  const float g = cfg ? a.g[item] : 0.0f, r = a.r[item];
  T* st = static_cast<T*>(a.state);
  for (int64_t b = e0; b < e1; b += kBlock) {
    const int64_t n = b + kBlock < e1 ? kBlock : e1 - b;
    const int64_t off = item * a.numel + b;
    load_block(static_cast<const T*>(a.x) + off, xb, n);
    {
      const T* __restrict__ c = static_cast<const T*>(a.c) + off;
      if (cfg) {
        const T* __restrict__ u = static_cast<const T*>(a.u) + off;
        for (int64_t i = 0; i < n; ++i) {
          const float uv = load(u, i);
          tb[i] = r * (uv + g * (load(c, i) - uv));
        }
      } else {
        for (int64_t i = 0; i < n; ++i) tb[i] = load(c, i);
      }
    }
    for (int64_t i = 0; i < n; ++i) db[i] = k.px * xb[i] + k.pm * tb[i];
    for (int64_t i = 0; i < n; ++i) ob[i] = k.ax * xb[i] + k.ad * db[i];
    if (a.write_p) {
      for (int64_t i = 0; i < n; ++i) cb[i] = k.cs * xb[i];
      if (k.cd != 0.0f) axpy(cb, k.cd, db, n);
    }
    for (int j = 0; j < 3; ++j) {
      if (a.h_slot[j] < 0) continue;
      load_block(st + a.h_slot[j] * a.slot_stride + off, tb, n);
      axpy(ob, k.ah[j], tb, n);
      if (a.write_p) axpy(cb, k.ch[j], tb, n);
    }
    if (a.read_p) {
      load_block(st + a.p_slot * a.slot_stride + off, tb, n);
      axpy(ob, k.ap, tb, n);
      if (a.write_p) axpy(cb, k.cp, tb, n);
    }
    if (a.noise) {
      const T* zp;
      if (a.seeded) {
        // quads [b/4, ceil((b+n)/4)) of this item, written as if zt were the tensor
        const int64_t q0 = item * s.quads_per_item + b / 4;
        const int64_t q1 = item * s.quads_per_item + (b + n + 3) / 4;
        NormalFillArgs f{reinterpret_cast<char*>(zt) - off * (int64_t)sizeof(T), a.dtype,
                         a.numel, s.quads_per_item, s.k0, s.k1, s.stream, s.sample_offset};
        normal_fill(f, q0, q1);
        zp = zt;
      } else {
        zp = static_cast<const T*>(a.z) + off;
      }
      load_block(zp, tb, n);
      axpy(ob, k.az, tb, n);
    }
    store_block(static_cast<T*>(a.prev) + off, ob, n);
    if (a.x0 != nullptr) store_block(static_cast<T*>(a.x0) + off, db, n);
    // after every read of the ring: slot i mod 3 held h2 until now
    if (a.d_slot >= 0) store_block(st + a.d_slot * a.slot_stride + off, db, n);
    if (a.write_p) store_block(st + a.p_slot * a.slot_stride + off, cb, n);
  }
}

}  // namespace

#define GENFAST_T std::remove_pointer_t<decltype(tag)>

void multistep_apply(const MultistepArgs& a, const StreamArgs& s, int64_t item, int64_t e0,
                     int64_t e1) {
  dispatch(a.dtype, [&](auto* tag) { apply_t<GENFAST_T>(a, s, item, e0, e1); });
}

}  // namespace genfast::cpu::GENFAST_CPU_ISA
