// CPU loops of the noise family. Compiled once per ISA level (GENFAST_CPU_ISA
// names the namespace); all math comes from csrc/include/genfast/noise.h.
// Philox runs W counters at a time through philox_simd.h; Box-Muller runs
// noise.h's generic math on VecLanes (a few native SIMD registers side by
// side) over the 2W word pairs.
// Built with GCC's pre-allocation instruction scheduler on (CMakeLists.txt:
// -fschedule-insns -fsched-pressure for this file): without it Box-Muller's
// chains (log polynomial, sqrt, sin / cos) reach the out-of-order core one
// after another and run latency-bound. Instruction order only: the
// operations, and so the bits, stay the same.
#include "noise_kernels.h"

#include <string.h>

#include "genfast/convert.h"
#include "genfast/noise.h"
#include "philox_simd.h"

#if defined(__SSE2__) || defined(__AVX__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#ifndef GENFAST_CPU_ISA
#error "GENFAST_CPU_ISA must name the ISA level this file is compiled for"
#endif

namespace genfast::cpu::GENFAST_CPU_ISA {
namespace {

// The lanes type for noise.h's math (see ScalarLanes there): kBmChains native
// SIMD registers (GCC vector extensions) side by side, each operator applied
// to all of them in turn, so kBmChains independent dependency chains run
// through the long polynomials interleaved (one chain alone is latency-bound).
// Element-wise IEEE operations: the bits are the scalar ones.
#if defined(__AVX512F__)
constexpr int kNativeFloats = 16;
#elif defined(__AVX__)
constexpr int kNativeFloats = 8;
#else
constexpr int kNativeFloats = 4;  // SSE2 on x86-64, NEON on aarch64
#endif
typedef float NativeF __attribute__((vector_size(4 * kNativeFloats)));
typedef int32_t NativeI __attribute__((vector_size(4 * kNativeFloats)));
// Two chains for AVX-512; four for AVX2 (measured fastest there: the
// spills cost less than the latency they hide) and for the 4-lane SSE2 /
// NEON registers.
constexpr int kBmChains = kNativeFloats == 16 ? 2 : 4;
constexpr int kBmLanes = kBmChains * kNativeFloats;

template <class V>
struct Multi {
  V v[kBmChains];
};

// Multi op Multi, Multi op scalar, scalar op Multi (partial ordering picks the
// first for two Multis).
#define GENFAST_MULTI_BINOP(op)                                                \
  template <class V>                                                           \
  inline Multi<V> operator op(const Multi<V>& x, const Multi<V>& y) {          \
    Multi<V> r;                                                                \
    for (int k = 0; k < kBmChains; ++k) r.v[k] = x.v[k] op y.v[k];             \
    return r;                                                                  \
  }                                                                            \
  template <class V, class S>                                                  \
  inline Multi<V> operator op(const Multi<V>& x, S y) {                        \
    Multi<V> r;                                                                \
    for (int k = 0; k < kBmChains; ++k) r.v[k] = x.v[k] op y;                  \
    return r;                                                                  \
  }                                                                            \
  template <class V, class S>                                                  \
  inline Multi<V> operator op(S x, const Multi<V>& y) {                        \
    Multi<V> r;                                                                \
    for (int k = 0; k < kBmChains; ++k) r.v[k] = x op y.v[k];                  \
    return r;                                                                  \
  }
GENFAST_MULTI_BINOP(+)
GENFAST_MULTI_BINOP(-)
GENFAST_MULTI_BINOP(*)
GENFAST_MULTI_BINOP(&)
GENFAST_MULTI_BINOP(^)
GENFAST_MULTI_BINOP(>>)
GENFAST_MULTI_BINOP(<<)
#undef GENFAST_MULTI_BINOP

template <class V>
inline Multi<V> operator-(const Multi<V>& x) {
  Multi<V> r;
  for (int k = 0; k < kBmChains; ++k) r.v[k] = -x.v[k];
  return r;
}

struct VecLanes {
  using F = Multi<NativeF>;
  using I = Multi<NativeI>;
  static inline I bits(const F& f) {
    I r;
    for (int k = 0; k < kBmChains; ++k) r.v[k] = (NativeI)f.v[k];  // reinterpret
    return r;
  }
  static inline F from_bits(const I& i) {
    F r;
    for (int k = 0; k < kBmChains; ++k) r.v[k] = (NativeF)i.v[k];
    return r;
  }
  static inline F to_float(const I& i) {
    F r;
    for (int k = 0; k < kBmChains; ++k) r.v[k] = __builtin_convertvector(i.v[k], NativeF);
    return r;
  }
  static inline I to_int(const F& f) {
    I r;
    for (int k = 0; k < kBmChains; ++k) r.v[k] = __builtin_convertvector(f.v[k], NativeI);
    return r;
  }
  static inline F splat(float x) {
    F r;
    for (int k = 0; k < kBmChains; ++k) r.v[k] = NativeF{} + x;
    return r;
  }
  static inline F max(const F& x, float y) {
    F r;
    for (int k = 0; k < kBmChains; ++k) {
#if defined(__AVX512F__)
      r.v[k] = (NativeF)_mm512_max_ps((__m512)x.v[k], _mm512_set1_ps(y));
#elif defined(__AVX__)
      r.v[k] = (NativeF)_mm256_max_ps((__m256)x.v[k], _mm256_set1_ps(y));
#elif defined(__SSE2__)
      r.v[k] = (NativeF)_mm_max_ps((__m128)x.v[k], _mm_set1_ps(y));
#else
      for (int i = 0; i < kNativeFloats; ++i) r.v[k][i] = x.v[k][i] < y ? y : x.v[k][i];
#endif
    }
    return r;
  }
  static inline F sqrt(const F& x) {
    F r;
    for (int k = 0; k < kBmChains; ++k) {
#if defined(__AVX512F__)
      r.v[k] = (NativeF)_mm512_sqrt_ps((__m512)x.v[k]);
#elif defined(__AVX__)
      r.v[k] = (NativeF)_mm256_sqrt_ps((__m256)x.v[k]);
#elif defined(__SSE2__)
      r.v[k] = (NativeF)_mm_sqrt_ps((__m128)x.v[k]);
#else
      for (int i = 0; i < kNativeFloats; ++i) r.v[k][i] = __builtin_sqrtf(x.v[k][i]);
#endif
    }
    return r;
  }
  static inline I load(const uint32_t* p) {
    I r;
    for (int k = 0; k < kBmChains; ++k) memcpy(&r.v[k], p + k * kNativeFloats, sizeof r.v[k]);
    return r;
  }
  static inline void store(float* p, const F& x) {
    for (int k = 0; k < kBmChains; ++k) memcpy(p + k * kNativeFloats, &x.v[k], sizeof x.v[k]);
  }
};

// Counters per block: 4 AVX-512 registers per Philox word (16 AVX2 ones in
// the spread form below), enough independent work to hide the latencies.
constexpr int W = 64;

#if defined(__AVX2__) && !defined(__AVX512F__)
// AVX2: Philox in philox_simd.h's spread form, four counters per register,
// slot k of register g holding counter 4g + {0, 2, 1, 3}[k]. Its output
// feeds Box-Muller as is (u1 lanes: w0, w2 of slot 0, slot 1 | slot 2, 3),
// and n_a / n_b come out so that one unpack each gives two counters' four
// consecutive normals: no transposition through memory.
//
// Philox runs for the whole block first (kPhiloxGroup registers side by
// side, enough independent chains to hide the multiply latency), its words
// parked in u1 / u2, then Box-Muller over them: each phase alone has the
// instruction-level parallelism that one group run end to end lacks (its
// Philox and Box-Muller are one long dependency chain, and the out-of-order
// window cannot reach the next group past ~350 instructions). Running the
// next group's Philox beside this group's Box-Muller measured slower.
// Every element goes through the same straight-line code, whatever its
// position, so results never depend on where a block or thread starts.
static_assert(kNativeFloats == 8 && (W / 4) % kBmChains == 0, "AVX2 layout");
constexpr int kPhiloxGroup = 4;
static_assert((W / 4) % kPhiloxGroup == 0, "Philox runs whole groups");

// The normals of W counters: c0 (and c1 unless kUniform) in spread form.
template <bool kUniform>
inline void normals_words(const __m256i* c0, const __m256i* c1, const StreamKeys& keys,
                          float* out) {
  alignas(32) __m256i u1[W / 4], u2[W / 4];
  for (int g = 0; g < W / 4; g += kPhiloxGroup) {
    __m256i a[kPhiloxGroup], b[kPhiloxGroup], o1[kPhiloxGroup], o2[kPhiloxGroup];
    for (int i = 0; i < kPhiloxGroup; ++i) {
      a[i] = c0[g + i];
      b[i] = kUniform ? a[i] : c1[g + i];
    }
    philox_stream_avx2<kPhiloxGroup, kUniform>(a, b, keys, o1, o2);
    for (int i = 0; i < kPhiloxGroup; ++i) {
      u1[g + i] = o1[i];
      u2[g + i] = o2[i];
    }
  }
  for (int g = 0; g < W / 4; g += kBmChains) {
    VecLanes::I w1, w2;
    for (int k = 0; k < kBmChains; ++k) {
      w1.v[k] = (NativeI)u1[g + k];
      w2.v[k] = (NativeI)u2[g + k];
    }
    const SinCosT<VecLanes::F> n = box_muller_t<VecLanes>(w1, w2);
    for (int k = 0; k < kBmChains; ++k) {
      const __m256 a = (__m256)n.c.v[k], b = (__m256)n.s.v[k];
      float* o = out + 16 * (g + k);
      _mm256_storeu_ps(o, _mm256_unpacklo_ps(a, b));      // counters 4k, 4k + 1
      _mm256_storeu_ps(o + 8, _mm256_unpackhi_ps(a, b));  // counters 4k + 2, 4k + 3
    }
  }
}

// The W counters quad0 + l of item `sample` (the common case: one item).
inline void normals_block_uniform(uint32_t quad0, uint32_t sample, uint32_t stream, uint32_t k0,
                                  uint32_t k1, float* out) {
  StreamKeys keys;
  stream_keys(keys, stream, k0, k1, true, sample);
  const __m256i order = _mm256_set_epi64x(3, 1, 2, 0);
  alignas(32) __m256i c0[W / 4];
  for (int g = 0; g < W / 4; ++g) {
    c0[g] = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(quad0 + 4 * g)), order);
  }
  normals_words<true>(c0, c0, keys, out);
}

// Counters (quad[l], sample[l]), l < W.
inline void normals_block(const uint32_t* quad, const uint32_t* sample, uint32_t stream,
                          uint32_t k0, uint32_t k1, float* out) {
  StreamKeys keys;
  stream_keys(keys, stream, k0, k1, false, 0u);
  alignas(32) __m256i c0[W / 4], c1[W / 4];
  for (int g = 0; g < W / 4; ++g) {
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(quad + 4 * g));
    const __m128i s = _mm_loadu_si128(reinterpret_cast<const __m128i*>(sample + 4 * g));
    c0[g] = _mm256_permute4x64_epi64(_mm256_cvtepu32_epi64(q), 0xD8);  // slots 0, 2, 1, 3
    c1[g] = _mm256_permute4x64_epi64(_mm256_cvtepu32_epi64(s), 0xD8);
  }
  normals_words<false>(c0, c1, keys, out);
}
#else
// Every element goes through this same straight-line block, whatever its
// position, so results never depend on where a block or thread starts.
inline void normals_block(const uint32_t* quad, const uint32_t* sample, uint32_t stream,
                          uint32_t k0, uint32_t k1, float* out) {
  alignas(64) uint32_t c2[W], c3[W];
  // u1 words (w0 | w2) and u2 words (w1 | w3): Box-Muller then runs over 2W pairs
  alignas(64) uint32_t u1[2 * W], u2[2 * W];
  for (int l = 0; l < W; ++l) {
    c2[l] = stream;
    c3[l] = 0u;
  }
  philox_lanes<W>(quad, sample, c2, c3, k0, k1, u1, u2, u1 + W, u2 + W);
  alignas(64) float na[2 * W], nb[2 * W];
  static_assert((2 * W) % kBmLanes == 0, "Box-Muller runs whole lane vectors");
  for (int l = 0; l < 2 * W; l += kBmLanes) {
    const SinCosT<VecLanes::F> n =
        box_muller_t<VecLanes>(VecLanes::load(u1 + l), VecLanes::load(u2 + l));
    VecLanes::store(na + l, n.c);
    VecLanes::store(nb + l, n.s);
  }
  for (int l = 0; l < W; ++l) {
    out[4 * l + 0] = na[l];
    out[4 * l + 1] = nb[l];
    out[4 * l + 2] = na[W + l];
    out[4 * l + 3] = nb[W + l];
  }
}

inline void normals_block_uniform(uint32_t quad0, uint32_t sample, uint32_t stream, uint32_t k0,
                                  uint32_t k1, float* out) {
  alignas(64) uint32_t quad[W], samples[W];
  for (int l = 0; l < W; ++l) {
    quad[l] = quad0 + static_cast<uint32_t>(l);
    samples[l] = sample;
  }
  normals_block(quad, samples, stream, k0, k1, out);
}
#endif

inline void store(const float* src, void* dst, int64_t offset, int64_t count, int dtype) {
  if (dtype == kFloat32) {
    memcpy(static_cast<float*>(dst) + offset, src, sizeof(float) * count);
  } else if (dtype == kFloat16) {
    uint16_t* d = static_cast<uint16_t*>(dst) + offset;
    for (int64_t i = 0; i < count; ++i) d[i] = f32_to_f16(src[i]);
  } else {
    uint16_t* d = static_cast<uint16_t*>(dst) + offset;
    for (int64_t i = 0; i < count; ++i) d[i] = f32_to_bf16(src[i]);
  }
}

}  // namespace

void normal_fill(const NormalFillArgs& a, int64_t quad_begin, int64_t quad_end) {
  alignas(64) uint32_t quad[W];
  alignas(64) uint32_t sample[W];
  alignas(64) float buf[4 * W];
  const int64_t qpi = a.quads_per_item;
  const int64_t numel = a.item_numel;
  const bool whole_quads = numel % 4 == 0;
  const bool direct = whole_quads && a.dtype == kFloat32;
  int64_t item = quad_begin / qpi;
  int64_t q = quad_begin - item * qpi;
  for (int64_t g = quad_begin; g < quad_end; g += W) {
    const int n = quad_end - g < W ? static_cast<int>(quad_end - g) : W;
    const int64_t pos = item * numel + 4 * q;  // first element this block writes
    // Lanes past n get counters too (never stored): the block stays full-width.
    // The common case, the whole block inside one item, passes its first
    // counter only: the general per-lane walk below costs up to a fifth of
    // the block, and its scalar stores stall the vector loads that read them.
    const bool one_item = q + W < qpi;
    const uint32_t q0 = static_cast<uint32_t>(q);
    const uint32_t s0 = a.sample_offset + static_cast<uint32_t>(item);
    if (one_item) {
      q += n;  // stays inside the item: q + n <= q + W < qpi
    } else {
      int64_t it = item, qq = q;
      for (int l = 0; l < W; ++l) {
        quad[l] = static_cast<uint32_t>(qq);
        sample[l] = a.sample_offset + static_cast<uint32_t>(it);
        if (++qq == qpi) {
          qq = 0;
          ++it;
        }
        if (l + 1 == n) {
          item = it;
          q = qq;
        }
      }
    }
    // The common case writes straight into the output.
    float* const dst = direct && n == W ? static_cast<float*>(a.out) + pos : buf;
    if (one_item) {
      normals_block_uniform(q0, s0, a.stream, a.k0, a.k1, dst);
    } else {
      normals_block(quad, sample, a.stream, a.k0, a.k1, dst);
    }
    if (dst != buf) continue;
    int64_t count = 4 * n;
    if (!whole_quads && !one_item) {  // a one-item block ends before the item's last quad
      // The last quad of each item is partial: squeeze out its unused values.
      count = 0;
      for (int l = 0; l < n; ++l) {
        const int64_t ql = quad[l];
        const int64_t c = (ql == qpi - 1) ? numel - 4 * ql : 4;
        for (int64_t j = 0; j < c; ++j) buf[count + j] = buf[4 * l + j];
        count += c;
      }
    }
    store(buf, a.out, pos, count, a.dtype);
  }
}

void philox(const uint32_t* counters, uint32_t* words, int64_t n, uint32_t k0, uint32_t k1) {
  alignas(64) uint32_t c[4][W], w[4][W];
  for (int64_t i0 = 0; i0 < n; i0 += W) {
    const int m = n - i0 < W ? static_cast<int>(n - i0) : W;
    for (int l = 0; l < W; ++l) {
      for (int j = 0; j < 4; ++j) c[j][l] = l < m ? counters[4 * (i0 + l) + j] : 0u;
    }
    philox_lanes<W>(c[0], c[1], c[2], c[3], k0, k1, w[0], w[1], w[2], w[3]);
    for (int l = 0; l < m; ++l) {
      for (int j = 0; j < 4; ++j) words[4 * (i0 + l) + j] = w[j][l];
    }
  }
}

}  // namespace genfast::cpu::GENFAST_CPU_ISA
