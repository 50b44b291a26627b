// normal_fill for the seeded add_noise loop, with software prefetch of the
// tensors it streams.
//
// That loop alternates between generating a sub-block's normals (ALU only:
// no loads, stores into lines it just wrote) and a short pass that streams
// x0 in and x_t / target out. The hardware prefetcher sees no accesses during
// the first phase, so every streaming pass starts on cold lines and the core
// waits on them: measured on Zen 3, the seeded add_noise cost its normals
// plus its streaming pass, with no overlap. Here the normals are generated in
// pieces of kPieceQuads quads, and before each piece the matching piece of
// the *next* sub-block is prefetched in every stream, so the lines arrive
// while normals are computed. One burst per sub-block measured no gain (the
// miss queue overflows); pieces spread the requests out. add_noise at
// 16x4x128x128, v_prediction, 2 threads: 6-9% faster (interleaved A/B of
// two builds). reparameterize / reparameterize_kl measured no gain: their
// streaming pass has an exp per element, and the prefetch instructions
// stalled on a full miss queue there. Bits unchanged: prefetches only.
//
// In this ISA level's namespace, as storage.h (see there why).
#pragma once
#include <stdint.h>

#include "noise_kernels.h"

#ifndef GENFAST_CPU_ISA
#error "GENFAST_CPU_ISA must name the ISA level this file is compiled for"
#endif

namespace genfast::cpu::GENFAST_CPU_ISA {
namespace {

constexpr int64_t kPieceQuads = 64;  // one normal_fill block: 256 normals, 1 KB of float32

// The streams to prefetch: base pointers (element 0 of the tensor; null
// entries are skipped), whether each is written, bytes per element.
struct AheadStreams {
  const void* p[4];
  bool write[4];
  int64_t size;
};

// Element index of the first normal of global quad g (noise.h numbering).
inline int64_t quad_first_element(int64_t g, int64_t qpi, int64_t numel) {
  const int64_t item = g / qpi;
  return item * numel + 4 * (g - item * qpi);
}

// normal_fill(f, q0, q1) in pieces, prefetching quads [q + span, ...) of each
// stream before piece q, span = q1 - q0, never past quad `limit`.
inline void normal_fill_ahead(const NormalFillArgs& f, int64_t q0, int64_t q1, int64_t limit,
                              const AheadStreams& ahead) {
  const int64_t qpi = f.quads_per_item, numel = f.item_numel, span = q1 - q0;
  for (int64_t p0 = q0; p0 < q1; p0 += kPieceQuads) {
    const int64_t p1 = p0 + kPieceQuads < q1 ? p0 + kPieceQuads : q1;
    const int64_t a0 = p0 + span < limit ? p0 + span : limit;
    const int64_t a1 = p1 + span < limit ? p1 + span : limit;
    if (a1 > a0) {
      const int64_t b0 = quad_first_element(a0, qpi, numel) * ahead.size;
      const int64_t b1 = quad_first_element(a1, qpi, numel) * ahead.size;
      for (int s = 0; s < 4; ++s) {
        if (ahead.p[s] == nullptr) continue;
        const char* c = static_cast<const char*>(ahead.p[s]);
        for (int64_t b = b0; b < b1; b += 64) {
          if (ahead.write[s]) {
            __builtin_prefetch(c + b, 1, 3);
          } else {
            __builtin_prefetch(c + b, 0, 3);
          }
        }
      }
    }
    normal_fill(f, p0, p1);
  }
}

}  // namespace
}  // namespace genfast::cpu::GENFAST_CPU_ISA
