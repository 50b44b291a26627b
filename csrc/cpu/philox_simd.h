// Philox4x32-10 over W lanes at once, for the CPU kernels.
//
// The round is the one in csrc/include/genfast/philox.h (same constants, same
// word order); what differs is only how the 32x32->64 multiply is done. A
// compiler vectorising the scalar `(uint64_t)a * M` widens every lane to 64
// bits and shuffles them back (about 3x the work); here even and odd lanes are
// multiplied in place with (v)pmuludq and the high halves blended back (the
// low halves: one vpmulld on AVX2); several vectors of counters go through the
// rounds side by side to hide the multiply latency. Without AVX2 the scalar
// header runs as is. Tests check every level against the
// Random123 known answers and against each other bit for bit.
#pragma once
#include <stdint.h>

#include "genfast/philox.h"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace genfast::cpu {
namespace {

#if defined(__AVX512F__)
constexpr int kPhiloxLanes = 16;
using VecU = __m512i;
inline VecU vload(const uint32_t* p) { return _mm512_loadu_si512(p); }
inline void vstore(uint32_t* p, VecU v) { _mm512_storeu_si512(p, v); }
inline VecU vset1(uint32_t x) { return _mm512_set1_epi32(static_cast<int>(x)); }
inline VecU vxor3(VecU a, VecU b, VecU c) { return _mm512_ternarylogic_epi32(a, b, c, 0x96); }
inline void vmulhilo(VecU a, VecU m, VecU& hi, VecU& lo) {
  const VecU even = _mm512_mul_epu32(a, m);                        // lanes 0,2,4..: 64-bit products
  const VecU odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), m);  // lanes 1,3,5..
  hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
  lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
}
#elif defined(__AVX2__)
constexpr int kPhiloxLanes = 8;
using VecU = __m256i;
inline VecU vload(const uint32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline void vstore(uint32_t* p, VecU v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
inline VecU vset1(uint32_t x) { return _mm256_set1_epi32(static_cast<int>(x)); }
inline VecU vxor3(VecU a, VecU b, VecU c) { return _mm256_xor_si256(_mm256_xor_si256(a, b), c); }
inline void vmulhilo(VecU a, VecU m, VecU& hi, VecU& lo) {
  const VecU even = _mm256_mul_epu32(a, m);
  const VecU odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
  hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
  // One vpmulld for the low words rather than shift + blend: ~5% faster on
  // Zen 3 (1 uop). On Intel it is 2 uops with 10 cycles latency, but lo is
  // consumed only a round later and four chains run side by side.
  lo = _mm256_mullo_epi32(a, m);
}
#endif

// words[j][l] = word j of philox4x32_10((c0[l], c1[l], c2[l], c3[l]), (k0, k1)),
// for l < n, n a multiple of kPhiloxLanes where SIMD is used.
template <int N>
inline void philox_lanes(const uint32_t* c0, const uint32_t* c1, const uint32_t* c2,
                         const uint32_t* c3, uint32_t k0, uint32_t k1, uint32_t* w0,
                         uint32_t* w1, uint32_t* w2, uint32_t* w3) {
#if defined(__AVX512F__) || defined(__AVX2__)
  // Two vectors of counters go through the rounds side by side: one Philox
  // chain alone is latency-bound (multiply, shift, blend, xor, the next
  // multiply...), and the out-of-order window does not reach far enough ahead
  // into the next vector's chain to fill the gaps.
  constexpr int kChains = 4;
  static_assert(N % (kChains * kPhiloxLanes) == 0, "block must be whole vector pairs");
  const VecU m0 = vset1(kPhiloxM0), m1 = vset1(kPhiloxM1);
  for (int l = 0; l < N; l += kChains * kPhiloxLanes) {
    VecU x[kChains], y[kChains], z[kChains], w[kChains];
    for (int i = 0; i < kChains; ++i) {
      const int o = l + i * kPhiloxLanes;
      x[i] = vload(c0 + o);
      y[i] = vload(c1 + o);
      z[i] = vload(c2 + o);
      w[i] = vload(c3 + o);
    }
    uint32_t a = k0, b = k1;
    for (int r = 0; r < 10; ++r) {
      const VecU ka = vset1(a), kb = vset1(b);
      for (int i = 0; i < kChains; ++i) {
        VecU hi0, lo0, hi1, lo1;
        vmulhilo(x[i], m0, hi0, lo0);
        vmulhilo(z[i], m1, hi1, lo1);
        x[i] = vxor3(hi1, y[i], ka);
        y[i] = lo1;
        z[i] = vxor3(hi0, w[i], kb);
        w[i] = lo0;
      }
      a += kPhiloxW0;
      b += kPhiloxW1;
    }
    for (int i = 0; i < kChains; ++i) {
      const int o = l + i * kPhiloxLanes;
      vstore(w0 + o, x[i]);
      vstore(w1 + o, y[i]);
      vstore(w2 + o, z[i]);
      vstore(w3 + o, w[i]);
    }
  }
#else
  for (int l = 0; l < N; ++l) {
    const U32x4 r = philox4x32_10(U32x4{c0[l], c1[l], c2[l], c3[l]}, k0, k1);
    w0[l] = r.x;
    w1[l] = r.y;
    w2[l] = r.z;
    w3[l] = r.w;
  }
#endif
}

}  // namespace
}  // namespace genfast::cpu
