// Argument checks and layout shared by the CPU and CUDA step bindings. The
// Python wrapper (genfast/ops/steps.py) gives the friendly errors; these guard
// the raw op torch.ops.genfast.steps_step against misuse.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>

#include "genfast/steps.h"

namespace genfast::bindings {

struct StepLayout {
  int64_t items;     // N: items of the sample
  int64_t numel;     // elements per item of the sample
  int64_t m_stride;  // elements per item of the model output (2 numel: learned variance)
  bool learned;
};

inline int steps_dtype_code(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return 0;
    case at::kHalf: return 1;
    case at::kBFloat16: return 2;
    default:
      TORCH_CHECK_TYPE(false, "genfast steps: sample must be float32, float16 or bfloat16, got ", t);
  }
}

// Shapes: model_output is the sample's shape (2N items with batched CFG; 2C
// channels with learned variance); uncond like model_output; noise like the sample.
inline StepLayout check_step(const at::Tensor& sample, const at::Tensor& model_output,
                             const std::optional<at::Tensor>& uncond,
                             const std::optional<at::Tensor>& guidance,
                             const std::optional<at::Tensor>& noise, const at::Tensor& plan,
                             int64_t sampler, int64_t prediction, int64_t variance, int64_t flags,
                             at::ArrayRef<double> params) {
  namespace st = genfast::steps;
  steps_dtype_code(sample.scalar_type());
  TORCH_CHECK(sample.dim() >= 2, "genfast steps: sample needs a batch and a channel dimension, "
              "got shape ", sample.sizes());
  TORCH_CHECK(sampler >= 0 && sampler <= 5, "genfast steps: unknown sampler code ", sampler);
  TORCH_CHECK(prediction >= 0 && prediction <= 3, "genfast steps: unknown prediction code ",
              prediction);
  TORCH_CHECK(variance >= 0 && variance <= 3, "genfast steps: unknown variance code ", variance);
  TORCH_CHECK((int64_t)params.size() == st::kNumParams, "genfast steps: params must have ",
              (int)st::kNumParams, " values, got ", params.size());
  TORCH_CHECK(plan.scalar_type() == at::kDouble && plan.dim() == 2 &&
                  plan.size(1) == st::kPlanCols && plan.size(0) > 0,
              "genfast steps: plan must be a float64 (n, ", (int)st::kPlanCols,
              ") sampling-plan table, got ", plan.scalar_type(), " ", plan.sizes());
  TORCH_CHECK(plan.device() == sample.device(), "genfast steps: plan is on ", plan.device(),
              " but sample is on ", sample.device());
  TORCH_CHECK(model_output.scalar_type() == sample.scalar_type() &&
                  model_output.device() == sample.device(),
              "genfast steps: model_output is ", model_output.scalar_type(), " on ",
              model_output.device(), " but sample is ", sample.scalar_type(), " on ",
              sample.device());
  StepLayout l{sample.size(0), sample.numel() / std::max<int64_t>(sample.size(0), 1), 0, false};
  const int64_t mult = (flags & st::kCfgBatched) ? 2 : 1;
  bool same = model_output.dim() == sample.dim() && model_output.size(0) == mult * l.items;
  bool doubled = same;
  for (int64_t d = 1; d < sample.dim() && same; ++d) {
    if (model_output.size(d) != sample.size(d)) same = false;
    if (model_output.size(d) != (d == 1 ? 2 : 1) * sample.size(d)) doubled = false;
  }
  l.learned = !same && doubled && sampler == st::kDDPM && variance == st::kLearnedRange;
  TORCH_CHECK_VALUE(same || l.learned, "genfast steps: model_output has shape ",
                    model_output.sizes(), " but sample has shape ", sample.sizes(),
                    (flags & st::kCfgBatched) ? " (with batched CFG model_output holds 2N items)"
                                              : "");
  TORCH_CHECK_VALUE(!(sampler == st::kDDPM && variance == st::kLearnedRange) || l.learned,
                    "genfast steps: variance_type learned_range needs model_output with twice "
                    "the sample's channels");
  l.m_stride = l.learned ? 2 * l.numel : l.numel;
  if (flags & st::kCfgSeparate) {
    TORCH_CHECK(uncond.has_value(), "genfast steps: the separate-CFG flag needs uncond");
    TORCH_CHECK_VALUE(uncond->sizes() == model_output.sizes() &&
                          uncond->scalar_type() == model_output.scalar_type() &&
                          uncond->device() == model_output.device(),
                      "genfast steps: uncond has shape ", uncond->sizes(), " (",
                      uncond->scalar_type(), ") but model_output has shape ",
                      model_output.sizes(), " (", model_output.scalar_type(), ")");
  }
  if (flags & st::kGuidanceTensor) {
    TORCH_CHECK(guidance.has_value() && guidance->dim() == 1 && guidance->size(0) == l.items &&
                    guidance->device() == sample.device() && guidance->is_floating_point(),
                "genfast steps: guidance_scale must be a float tensor of shape (", l.items,
                ",) on ", sample.device());
  }
  if (flags & st::kNoiseGiven) {
    TORCH_CHECK(noise.has_value(), "genfast steps: the given-noise flag needs noise");
    TORCH_CHECK_VALUE(noise->sizes() == sample.sizes() &&
                          noise->scalar_type() == sample.scalar_type() &&
                          noise->device() == sample.device(),
                      "genfast steps: noise has shape ", noise->sizes(), " (",
                      noise->scalar_type(), ") but sample has shape ", sample.sizes(), " (",
                      sample.scalar_type(), ")");
  }
  return l;
}

inline void check_index_tensor(const at::Tensor& index, const at::Tensor& sample) {
  TORCH_CHECK(index.dim() == 0 && !index.is_floating_point() && !index.is_complex() &&
                  index.scalar_type() != at::kBool,
              "genfast steps: a tensor step index must be a 0-d integer tensor, got ",
              index.scalar_type(), " of shape ", index.sizes());
  TORCH_CHECK(index.device() == sample.device(), "genfast steps: the step index is on ",
              index.device(), " but sample is on ", sample.device());
}

}  // namespace genfast::bindings
