// Torch-free CPU kernels of the flows family, one copy per ISA level. Tensors
// arrive contiguous, as float or double (the bindings convert float16 and
// bfloat16 to float32 and back).
#pragma once
#include <stdint.h>

namespace genfast::cpu {

// Rational-quadratic spline over n elements: in (n), uw and uh (n, K), ud
// (n, K - 1) with linear tails or (n, K + 1) bounded. Forward fills out, lad;
// backward reads g_out, g_lad and fills g_in, g_uw, g_uh, g_ud.
struct RqArgs {
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
  int64_t num_bins;
  bool g_out_broadcast, g_lad_broadcast;  // one value for every element (float32 only)
  bool inverse;
  bool linear_tails;
  double left, right, bottom, top;
  double min_bin_width, min_bin_height, min_derivative;
};

// Affine / additive coupling over rows of row_len elements (one row = one
// item). Work is split into tasks = rows * chunks_per_row; task t covers
// elements [c * chunk, min((c + 1) * chunk, row_len)) of row t / chunks_per_row
// and writes its part of the row's log-determinant to lad_partial[t].
struct AffineArgs {
  const void* in;
  const void* shift;
  const void* u;
  void* out;
  void* lad_partial;
  const void* g_out;
  const void* g_lad;  // one per row
  void* g_in;
  void* g_shift;
  void* g_u;
  int64_t row_len;
  int64_t chunk;
  int64_t chunks_per_row;
  int act;  // genfast::AffineAct
  double clamp;
  bool inverse;
  bool g_out_broadcast;  // g_out is one value for every element (float32 only)
};

// Kernels for one ISA level; each covers elements (spline) or tasks (affine)
// [begin, end), so any split over threads gives the same result.
#define GENFAST_DECLARE_FLOWS_KERNELS(ISA)                                        \
  namespace ISA {                                                                 \
  void rq_spline_f32(const RqArgs& a, int64_t begin, int64_t end);                \
  void rq_spline_f64(const RqArgs& a, int64_t begin, int64_t end);                \
  void rq_spline_backward_f32(const RqArgs& a, int64_t begin, int64_t end);       \
  void rq_spline_backward_f64(const RqArgs& a, int64_t begin, int64_t end);       \
  void affine_coupling_f32(const AffineArgs& a, int64_t begin, int64_t end);      \
  void affine_coupling_f64(const AffineArgs& a, int64_t begin, int64_t end);      \
  void affine_coupling_backward_f32(const AffineArgs& a, int64_t begin, int64_t end); \
  void affine_coupling_backward_f64(const AffineArgs& a, int64_t begin, int64_t end); \
  }

GENFAST_DECLARE_FLOWS_KERNELS(baseline)
#if defined(GENFAST_HAVE_X86_ISAS)
GENFAST_DECLARE_FLOWS_KERNELS(avx2)
GENFAST_DECLARE_FLOWS_KERNELS(avx512)
#endif

}  // namespace genfast::cpu
