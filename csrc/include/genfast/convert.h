// float32 -> float16 / bfloat16 with round-to-nearest-even, branch-free so the
// CPU store loops vectorise and CUDA gets the same bits as the CPU.
#pragma once
#include <stdint.h>

#include "genfast/macros.h"
#include "genfast/noise.h"  // f32_bits / bits_f32

namespace genfast {

// Element type codes shared by the launchers and the bindings (no torch here).
enum DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

GENFAST_HD uint16_t f32_to_bf16(float f) {
  const uint32_t u = f32_bits(f);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const bool nan = (u & 0x7fffffffu) > 0x7f800000u;
  return (uint16_t)(nan ? ((u >> 16) | 0x40u) : rounded);
}

// IEEE binary16. Normal range: re-bias the exponent and round the 13 dropped
// mantissa bits to even. Subnormal range: let an FP add against 2^-1 do the
// rounding (the FPU rounds to even), then read the bits. Overflow -> inf.
GENFAST_HD uint16_t f32_to_f16(float f) {
  const uint32_t u = f32_bits(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t a = u & 0x7fffffffu;
  // normal: exponent 127 -> 15 is -112 << 23; the +0xfff (+odd) rounds to even
  const uint32_t normal = (a + 0xc8000fffu + ((a >> 13) & 1u)) >> 13;
  const float sub_f = bits_f32(a) + 0.5f;  // 0.5 = 2^-1: ulp there is 2^-24
  const uint32_t sub = f32_bits(sub_f) - 0x3f000000u;
  uint32_t h = a < 0x38800000u ? sub : normal;  // below 2^-14 is subnormal
  h = a >= 0x477ff000u ? 0x7c00u : h;           // rounds past 65504 -> inf
  h = a > 0x7f800000u ? 0x7e00u : h;            // NaN
  return (uint16_t)(h | sign);
}

}  // namespace genfast
