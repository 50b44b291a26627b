// Launchers of the flows family's CUDA kernels: raw pointers and a stream, no
// torch, so this header and flows.cu compile with nvcc alone. Tensors are
// contiguous float (is_double false) or double; the bindings convert float16
// and bfloat16 to float32 and back.
#pragma once
#include <cuda_runtime.h>
#include <stdint.h>

namespace genfast::cuda {

// Rational-quadratic spline over n elements (csrc/include/genfast/spline.h);
// the fields mirror genfast::cpu::RqArgs.
struct RqLaunch {
  const void* in;
  const void* uw;
  const void* uh;
  const void* ud;
  void* out;
  void* lad;
  const void* g_out;
  const void* g_lad;
  void* g_in;
  void* g_uw;
  void* g_uh;
  void* g_ud;
  int64_t n;
  int64_t num_bins;
  bool inverse;
  bool linear_tails;
  double left, right, bottom, top;
  double min_bin_width, min_bin_height, min_derivative;
};

cudaError_t launch_rq_spline(const RqLaunch& a, bool is_double, cudaStream_t stream);
cudaError_t launch_rq_spline_backward(const RqLaunch& a, bool is_double, cudaStream_t stream);

// Affine / additive coupling over rows of row_len elements
// (csrc/include/genfast/coupling.h). The forward writes one partial
// log-determinant per (row, chunk) to lad_partial[row * chunks + chunk]; the
// bindings sum them (deterministic, no atomics).
struct AffineLaunch {
  const void* in;
  const void* shift;
  const void* u;
  void* out;
  void* lad_partial;
  const void* g_out;
  const void* g_lad;
  void* g_in;
  void* g_shift;
  void* g_u;
  int64_t rows;
  int64_t row_len;
  int act;
  double clamp;
  bool inverse;
};

// Elements of a row each block of the forward covers (one partial each).
constexpr int64_t kAffineChunk = 4096;

cudaError_t launch_affine_coupling(const AffineLaunch& a, bool is_double, cudaStream_t stream);
cudaError_t launch_affine_coupling_backward(const AffineLaunch& a, bool is_double,
                                            cudaStream_t stream);

}  // namespace genfast::cuda
