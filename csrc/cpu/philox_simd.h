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

#if defined(__AVX2__) && !defined(__AVX512F__)
// Philox4x32-10 of the noise stream on AVX2, counters (c0, c1, stream, 0),
// for G vectors of four counters, in "spread" form: each counter owns a
// 64-bit slot and its word lives in the slot's low half. vpmuludq multiplies
// exactly those low halves into the full 64-bit product, so one multiply and
// one shift give a word's hi and lo for four counters, where the packed form
// above needs three multiplies (even, odd, vpmulld) and three shuffles for
// eight: a third fewer multiplies, which share the vector multiply pipe with
// Box-Muller's float multiplies. Upper halves are left holding garbage, which
// only ever meets xors and multiplies that ignore it.
//
// Round 1 sees c2 = stream and c3 = 0 in every lane, so its z * M1 is one
// scalar product and w drops out; when c1 is the same in every lane (the
// whole block inside one item) round 1's x is a scalar too, which makes
// round 2's x * M0 and round 3's w scalar as well. StreamKeys holds what is
// the same for a whole block: the round keys, with those scalars folded in,
// as vectors (xored straight from memory: no broadcast per group).
struct StreamKeys {
  __m256i a[10], b[10];  // the values xored into x and z in round r + 1
  uint32_t x1_part;      // round 1's x = c1 ^ x1_part
  bool uniform;          // a[1..2], b[1..2] fold in c1 (the same in every lane)
};

inline void stream_keys(StreamKeys& s, uint32_t stream, uint32_t k0, uint32_t k1, bool uniform,
                        uint32_t c1_all) {
  const auto splat = [](uint32_t v) { return _mm256_set1_epi32(static_cast<int>(v)); };
  const uint64_t s1 = static_cast<uint64_t>(kPhiloxM1) * stream;  // round 1's z * M1
  const uint32_t s1_hi = static_cast<uint32_t>(s1 >> 32), s1_lo = static_cast<uint32_t>(s1);
  for (int r = 0; r < 10; ++r) {
    s.a[r] = splat(k0 + static_cast<uint32_t>(r) * kPhiloxW0);
    s.b[r] = splat(k1 + static_cast<uint32_t>(r) * kPhiloxW1);
  }
  s.x1_part = s1_hi ^ k0;
  s.a[1] = splat(s1_lo ^ (k0 + kPhiloxW0));  // round 2: y = lo(stream M1)
  s.uniform = uniform;
  if (uniform) {
    const uint32_t x1 = c1_all ^ s.x1_part;
    const uint64_t p0 = static_cast<uint64_t>(kPhiloxM0) * x1;  // round 2's x * M0
    s.b[1] = splat(static_cast<uint32_t>(p0 >> 32) ^ (k1 + kPhiloxW1));
    s.b[2] = splat(static_cast<uint32_t>(p0) ^ (k1 + 2u * kPhiloxW1));  // round 3's w
  }
}

// Output, ready for Box-Muller: u1 interleaves words 0 and 2 of each counter
// (32-bit lanes 2k, 2k + 1 = slot k's w0, w2), u2 words 1 and 3. With
// kUniform (keys from stream_keys(..., true, c1)) c1 is not read.
template <int G, bool kUniform>
inline void philox_stream_avx2(const __m256i (&c0)[G], const __m256i (&c1)[G],
                               const StreamKeys& k, __m256i (&u1)[G], __m256i (&u2)[G]) {
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(kPhiloxM0));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int>(kPhiloxM1));
  const auto mul = [](__m256i a, __m256i m) { return _mm256_mul_epu32(a, m); };
  const auto hi = [](__m256i p) { return _mm256_srli_epi64(p, 32); };
  const auto x_ = [](__m256i a, __m256i b) { return _mm256_xor_si256(a, b); };
  __m256i x[G], y[G], z[G], w[G];
  for (int i = 0; i < G; ++i) {  // round 1: z = hi(c0 M0) ^ k1, w = lo(c0 M0)
    const __m256i p0 = mul(c0[i], m0);
    z[i] = x_(hi(p0), k.b[0]);
    w[i] = p0;
  }
  int r = 1;  // rounds done
  if constexpr (kUniform) {
    for (int i = 0; i < G; ++i) {  // round 2 (x * M0 folded into b[1])
      const __m256i p1 = mul(z[i], m1);
      x[i] = x_(hi(p1), k.a[1]);
      y[i] = p1;
      z[i] = x_(w[i], k.b[1]);
    }
    for (int i = 0; i < G; ++i) {  // round 3 (w folded into b[2])
      const __m256i p0 = mul(x[i], m0), p1 = mul(z[i], m1);
      x[i] = x_(hi(p1), x_(y[i], k.a[2]));
      y[i] = p1;
      z[i] = x_(hi(p0), k.b[2]);
      w[i] = p0;
    }
    r = 3;
  } else {
    const __m256i x1_part = _mm256_set1_epi32(static_cast<int>(k.x1_part));
    for (int i = 0; i < G; ++i) {  // round 2 (y = lo(stream M1) folded into a[1])
      const __m256i p0 = mul(x_(c1[i], x1_part), m0), p1 = mul(z[i], m1);
      x[i] = x_(hi(p1), k.a[1]);
      y[i] = p1;
      z[i] = x_(hi(p0), x_(w[i], k.b[1]));
      w[i] = p0;
    }
    r = 2;
  }
  for (; r < 9; ++r) {
    for (int i = 0; i < G; ++i) {
      const __m256i p0 = mul(x[i], m0), p1 = mul(z[i], m1);
      x[i] = x_(hi(p1), x_(y[i], k.a[r]));
      y[i] = p1;
      z[i] = x_(hi(p0), x_(w[i], k.b[r]));
      w[i] = p0;
    }
  }
  for (int i = 0; i < G; ++i) {  // round 10, its z built in the upper halves
    const __m256i p0 = mul(x[i], m0), p1 = mul(z[i], m1);
    const __m256i xo = x_(hi(p1), x_(y[i], k.a[9]));
    const __m256i zo = x_(p0, x_(_mm256_slli_epi64(w[i], 32), k.b[9]));
    u1[i] = _mm256_blend_epi32(xo, zo, 0xAA);
    u2[i] = _mm256_blend_epi32(p1, _mm256_slli_epi64(p0, 32), 0xAA);
  }
}
#endif

}  // namespace
}  // namespace genfast::cpu
