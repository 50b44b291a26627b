// Argument checks shared by the CPU and CUDA vae bindings (the Python wrapper,
// genfast/ops/vae.py, gives the friendly errors; these guard the raw ops).
#pragma once
#include <ATen/ATen.h>

#include <optional>

#include "bindings/training_args.h"

namespace genfast::bindings {

// Items of the KL (dim 0; a 0-d tensor is one item), as the training family's.
inline ItemLayout kl_layout(const at::Tensor& x) {
  if (x.dim() == 0) return {1, 1};
  return {x.size(0), x.size(0) == 0 ? 0 : x.numel() / x.size(0)};
}

// grad_z like mu; grad_kl a float tensor with one value per item ("none") or one.
inline void check_vae_backward(const std::optional<at::Tensor>& grad_z,
                               const std::optional<at::Tensor>& grad_kl, const at::Tensor& mu,
                               const at::Tensor& logvar, const at::Tensor& d, int64_t reduction) {
  const char* op = "vae_reparameterize_kl_backward";
  check_same(op, mu, "mu", logvar, "logvar");
  check_same(op, mu, "mu", d, "d");
  check_reduction(op, reduction);
  if (grad_z.has_value()) check_same(op, mu, "mu", *grad_z, "grad_z");
  if (grad_kl.has_value()) {
    const at::Tensor& g = *grad_kl;
    const int64_t want = reduction == 0 ? kl_layout(mu).items : 1;
    TORCH_CHECK(g.numel() == want, "genfast ", op, ": grad_kl has ", g.numel(),
                " elements, expected ", want, reduction == 0 ? " (one per item)" : "");
    TORCH_CHECK(at::isFloatingType(g.scalar_type()), "genfast ", op,
                ": grad_kl must be a floating tensor, got ", g.scalar_type());
    TORCH_CHECK(g.device() == mu.device(), "genfast ", op, ": grad_kl is on ", g.device(),
                " but mu is on ", mu.device());
  }
}

// One value for every element: what z.sum() hands back (all strides 0).
inline bool expanded_scalar(const at::Tensor& g) {
  bool scalar = g.numel() > 0;
  for (int64_t i = 0; i < g.dim() && scalar; ++i) scalar = g.stride(i) == 0 || g.size(i) == 1;
  return scalar;
}

}  // namespace genfast::bindings
