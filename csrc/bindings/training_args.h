// Argument checks and layout shared by the CPU and CUDA training bindings.
// The Python wrapper (genfast/ops/training.py) gives the friendly errors; these
// checks guard the raw ops (torch.ops.genfast.training_*) against misuse.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <tuple>

namespace genfast::bindings {

// genfast::DType codes, plus 3 for float64 (the gradcheck path of the CPU kernels).
inline int training_dtype_code(at::ScalarType t, bool allow_double) {
  switch (t) {
    case at::kFloat: return 0;
    case at::kHalf: return 1;
    case at::kBFloat16: return 2;
    case at::kDouble:
      if (allow_double) return 3;
      [[fallthrough]];
    default:
      TORCH_CHECK(false, "genfast training: tensors must be float32, float16 or bfloat16",
                  allow_double ? " (or float64)" : "", ", got ", t);
  }
}

// Items along the leading dimension (0-d and 1-d tensors are one item, as in
// the noise stream) and elements per item.
struct ItemLayout {
  int64_t items, numel;
};

inline ItemLayout item_layout(const at::Tensor& x) {
  ItemLayout l{x.dim() <= 1 ? 1 : x.size(0), 1};
  for (int64_t d = x.dim() <= 1 ? 0 : 1; d < x.dim(); ++d) l.numel *= x.size(d);
  return l;
}

inline void check_same(const char* op, const at::Tensor& a, const char* an, const at::Tensor& b,
                       const char* bn) {
  TORCH_CHECK(a.sizes() == b.sizes(), "genfast ", op, ": ", bn, " has shape ", b.sizes(),
              " but ", an, " has shape ", a.sizes());
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), "genfast ", op, ": ", bn, " is ",
              b.scalar_type(), " but ", an, " is ", a.scalar_type());
  TORCH_CHECK(a.device() == b.device(), "genfast ", op, ": ", bn, " is on ", b.device(),
              " but ", an, " is on ", a.device());
}

inline void check_timesteps(const char* op, const at::Tensor& x, const at::Tensor& t,
                            const at::Tensor& table, int64_t kind) {
  TORCH_CHECK(kind >= 0 && kind <= 2, "genfast ", op, ": unknown schedule kind ", kind);
  TORCH_CHECK(x.dim() >= 1 && t.dim() == 1 && t.size(0) == x.size(0), "genfast ", op,
              ": timesteps must have shape (", (x.dim() >= 1 ? x.size(0) : 0),
              ",) (one per item), got ", t.sizes());
  TORCH_CHECK(t.device() == x.device(), "genfast ", op, ": timesteps is on ", t.device(),
              " but the data is on ", x.device());
  const bool integral = t.scalar_type() == at::kLong || t.scalar_type() == at::kInt;
  const bool floating = t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble;
  TORCH_CHECK(kind == 0 ? integral : floating, "genfast ", op, ": timesteps must be ",
              kind == 0 ? "int64 or int32 (table indices)" : "float32 or float64",
              " for this schedule, got ", t.scalar_type());
  TORCH_CHECK(table.scalar_type() == at::kDouble && table.dim() == 2 && table.size(1) == 4,
              "genfast ", op, ": table must be float64 of shape (T, 4), got ",
              table.scalar_type(), " ", table.sizes());
  TORCH_CHECK(kind != 0 || table.size(0) > 0, "genfast ", op, ": empty schedule table");
  TORCH_CHECK(table.device() == x.device(), "genfast ", op, ": table is on ", table.device(),
              " but the data is on ", x.device());
}

inline int64_t timestep_dtype_code(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kLong: return 0;
    case at::kInt: return 1;
    case at::kFloat: return 2;
    default: return 3;  // double
  }
}

// One leading dimension of at least one item: output of a per-item reduction.
inline at::Tensor reduced_output(const at::Tensor& like, int64_t items, int64_t reduction) {
  const auto dtype = like.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const auto opts = like.options().dtype(dtype);
  return reduction == 0 ? at::empty({items}, opts) : at::empty({}, opts);
}

inline void check_reduction(const char* op, int64_t reduction) {
  TORCH_CHECK(reduction >= 0 && reduction <= 2, "genfast ", op, ": unknown reduction code ",
              reduction);
}

// Fused CPU forwards of the training autograd (bindings/training_autograd.cpp,
// defined in bindings/training.cpp): the value and, in the same pass, the
// gradient for an upstream grad of one; reparameterize's (z, dz/dlogvar).
std::tuple<at::Tensor, at::Tensor> diffusion_loss_with_grad_cpu(
    const at::Tensor& pred, const at::Tensor& target, const at::Tensor& timesteps,
    const at::Tensor& table, int64_t kind, int64_t weighting, int64_t prediction, double gamma,
    double sigma_data, int64_t reduction);
std::tuple<at::Tensor, at::Tensor, at::Tensor> kl_with_grad_cpu(const at::Tensor& mu,
                                                                const at::Tensor& logvar,
                                                                int64_t reduction);
std::tuple<at::Tensor, at::Tensor> reparameterize_with_grad_cpu(const at::Tensor& mu,
                                                                const at::Tensor& logvar,
                                                                int64_t seed, int64_t stream,
                                                                int64_t sample_offset);

}  // namespace genfast::bindings
