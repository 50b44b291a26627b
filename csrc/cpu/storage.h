// Storage types of the CPU loops: fp16 / bf16 as 16-bit wrappers with
// load (to float32) and store (round to nearest even) overloads, and the
// dtype code -> storage type dispatch. The CPU twin of csrc/cuda/storage.cuh,
// included by every kernel file that reads or writes half types.
//
// Everything sits in this ISA level's namespace (an anonymous one inside
// genfast::cpu::GENFAST_CPU_ISA): the kernel files are compiled once per ISA
// level and linked together, so a shared inline function would let the linker
// pick one level's code for all of them.
#pragma once
#include <stdint.h>

#include "genfast/convert.h"
#include "genfast/training.h"  // f16_to_f32 / bf16_to_f32

#ifndef GENFAST_CPU_ISA
#error "GENFAST_CPU_ISA must name the ISA level this file is compiled for"
#endif

namespace genfast::cpu::GENFAST_CPU_ISA {
namespace {

struct F16 {
  uint16_t bits;
};
struct BF16 {
  uint16_t bits;
};

inline float load(const float* p, int64_t i) { return p[i]; }
inline double load(const double* p, int64_t i) { return p[i]; }
inline float load(const F16* p, int64_t i) { return training::f16_to_f32(p[i].bits); }
inline float load(const BF16* p, int64_t i) { return training::bf16_to_f32(p[i].bits); }
inline void store(float* p, int64_t i, float v) { p[i] = v; }
inline void store(double* p, int64_t i, double v) { p[i] = v; }
inline void store(F16* p, int64_t i, float v) { p[i].bits = f32_to_f16(v); }
inline void store(BF16* p, int64_t i, float v) { p[i].bits = f32_to_bf16(v); }

// Storage type -> compute type: float for fp32 / fp16 / bf16, double for fp64.
template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };

// Calls f with a null pointer of `dtype`'s storage type. A code past the three
// DType values is float64 for the families that have float64 kernels
// (F64 = true: training's gradcheck path), float32 otherwise.
template <bool F64 = false, typename F>
inline void dispatch(int dtype, const F& f) {
  switch (dtype) {
    case kFloat32: f(static_cast<float*>(nullptr)); break;
    case kFloat16: f(static_cast<F16*>(nullptr)); break;
    case kBFloat16: f(static_cast<BF16*>(nullptr)); break;
    default:
      if constexpr (F64) {
        f(static_cast<double*>(nullptr));
      } else {
        f(static_cast<float*>(nullptr));
      }
      break;
  }
}

}  // namespace
}  // namespace genfast::cpu::GENFAST_CPU_ISA
