// Argument checks and tensor preparation shared by the CPU and CUDA flows
// bindings. The Python wrappers (genfast/ops/flows.py) check first with
// friendlier messages; these keep a direct torch.ops call from ever reading
// out of bounds.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <string>

#include "genfast/coupling.h"

namespace genfast::bindings {

// float16 / bfloat16 are computed in float32; float64 stays float64.
inline at::ScalarType flows_compute_type(at::ScalarType t) {
  TORCH_CHECK(t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16,
              "genfast flows: tensors must be float32, float64, float16 or bfloat16, got ", t);
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

inline at::Tensor flows_prep(const at::Tensor& t, at::ScalarType ct) {
  return t.to(ct).contiguous();
}

inline void check_same(const at::Tensor& ref, const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), "genfast flows: ", name, " has dtype ",
              t.scalar_type(), " but inputs has ", ref.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), "genfast flows: ", name, " is on ", t.device(),
              " but inputs is on ", ref.device());
}

inline void check_params(const at::Tensor& inputs, const at::Tensor& p, int64_t last,
                         const char* name) {
  check_same(inputs, p, name);
  TORCH_CHECK(p.dim() == inputs.dim() + 1 && p.size(-1) == last &&
                  p.sizes().slice(0, inputs.dim()) == inputs.sizes(),
              "genfast rq_spline: ", name, " must have shape inputs.shape + (", last,
              ",), got ", p.sizes(), " for inputs ", inputs.sizes());
}

// Returns K.
inline int64_t check_rq(const at::Tensor& inputs, const at::Tensor& uw, const at::Tensor& uh,
                        const at::Tensor& ud, bool linear_tails, double left, double right,
                        double bottom, double top, double min_w, double min_h, double min_d) {
  flows_compute_type(inputs.scalar_type());
  TORCH_CHECK(uw.dim() >= 1, "genfast rq_spline: unnormalized_widths must have a bins dimension");
  const int64_t K = uw.size(-1);
  TORCH_CHECK(K >= 1, "genfast rq_spline: need at least one bin, got ", K);
  check_params(inputs, uw, K, "unnormalized_widths");
  check_params(inputs, uh, K, "unnormalized_heights");
  check_params(inputs, ud, linear_tails ? K - 1 : K + 1, "unnormalized_derivatives");
  TORCH_CHECK(left < right && bottom < top, "genfast rq_spline: need left < right and "
              "bottom < top, got [", left, ", ", right, "] x [", bottom, ", ", top, "]");
  TORCH_CHECK(min_w > 0 && min_w * K <= 1.0, "genfast rq_spline: min_bin_width must be in "
              "(0, 1/num_bins], got ", min_w, " with ", K, " bins");
  TORCH_CHECK(min_h > 0 && min_h * K <= 1.0, "genfast rq_spline: min_bin_height must be in "
              "(0, 1/num_bins], got ", min_h, " with ", K, " bins");
  TORCH_CHECK(min_d > 0 && (!linear_tails || min_d < 1.0), "genfast rq_spline: "
              "min_derivative must be > 0 (and < 1 with linear tails), got ", min_d);
  return K;
}

inline void check_affine(const at::Tensor& inputs, const at::Tensor& shift, const at::Tensor& u,
                         int64_t act) {
  flows_compute_type(inputs.scalar_type());
  TORCH_CHECK(inputs.dim() >= 1, "genfast affine_coupling: inputs needs a batch dimension");
  check_same(inputs, shift, "shift");
  check_same(inputs, u, "unconstrained_scale");
  TORCH_CHECK(shift.sizes() == inputs.sizes(), "genfast affine_coupling: shift has shape ",
              shift.sizes(), " but inputs has ", inputs.sizes());
  TORCH_CHECK(u.sizes() == inputs.sizes(), "genfast affine_coupling: unconstrained_scale has "
              "shape ", u.sizes(), " but inputs has ", inputs.sizes());
  TORCH_CHECK(act >= 0 && act < kNumAffineActs, "genfast affine_coupling: unknown activation ",
              act);
}

}  // namespace genfast::bindings
