// Philox4x32-10, the counter-based generator behind every genfast noise value.
//
// Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy as 1, 2, 3",
// SC'11 (the Random123 library). Same constants and round structure as
// cuRAND's Philox and Triton's tl.philox. Spec: shared/reference/noise-stream.md.
#pragma once
#include <stdint.h>

#include "genfast/macros.h"

namespace genfast {

struct U32x4 {
  uint32_t x, y, z, w;
};

constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;  // golden ratio
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;  // sqrt(3) - 1

// One round: two 32x32->64 multiplies, the high halves xored with the other
// two words and the key.
GENFAST_HD U32x4 philox_round(U32x4 c, uint32_t k0, uint32_t k1) {
  const uint64_t p0 = (uint64_t)kPhiloxM0 * c.x;
  const uint64_t p1 = (uint64_t)kPhiloxM1 * c.z;
  U32x4 r;
  r.x = (uint32_t)(p1 >> 32) ^ c.y ^ k0;
  r.y = (uint32_t)p1;
  r.z = (uint32_t)(p0 >> 32) ^ c.w ^ k1;
  r.w = (uint32_t)p0;
  return r;
}

// Ten rounds; the key is bumped by the Weyl constants between rounds. Written
// out flat: a loop here would keep the CPU vectoriser from if-converting the
// caller's lane loop.
GENFAST_HD U32x4 philox4x32_10(U32x4 c, uint32_t k0, uint32_t k1) {
  c = philox_round(c, k0, k1);
  c = philox_round(c, k0 + 1u * kPhiloxW0, k1 + 1u * kPhiloxW1);
  c = philox_round(c, k0 + 2u * kPhiloxW0, k1 + 2u * kPhiloxW1);
  c = philox_round(c, k0 + 3u * kPhiloxW0, k1 + 3u * kPhiloxW1);
  c = philox_round(c, k0 + 4u * kPhiloxW0, k1 + 4u * kPhiloxW1);
  c = philox_round(c, k0 + 5u * kPhiloxW0, k1 + 5u * kPhiloxW1);
  c = philox_round(c, k0 + 6u * kPhiloxW0, k1 + 6u * kPhiloxW1);
  c = philox_round(c, k0 + 7u * kPhiloxW0, k1 + 7u * kPhiloxW1);
  c = philox_round(c, k0 + 8u * kPhiloxW0, k1 + 8u * kPhiloxW1);
  return philox_round(c, k0 + 9u * kPhiloxW0, k1 + 9u * kPhiloxW1);
}

}  // namespace genfast
