// Argument checks and layout shared by the CPU and CUDA multistep bindings.
// The Python wrapper (genfast/ops/multistep.py) gives the friendly errors;
// these guard the raw op torch.ops.genfast.multistep_step against misuse.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>

#include "bindings/steps_args.h"  // steps_dtype_code, check_index_tensor
#include "genfast/multistep.h"

namespace genfast::bindings {

struct MultistepLayout {
  int64_t items;  // N
  int64_t numel;  // elements per item
};

inline MultistepLayout check_multistep(const at::Tensor& sample, const at::Tensor& model_output,
                                       const std::optional<at::Tensor>& uncond,
                                       const std::optional<at::Tensor>& guidance,
                                       const std::optional<at::Tensor>& noise,
                                       const at::Tensor& state, const at::Tensor& plan,
                                       const at::Tensor& stage_plan, int64_t sampler,
                                       int64_t stage, int64_t prediction, int64_t flags,
                                       at::ArrayRef<double> params) {
  namespace st = genfast::steps;
  namespace ms = genfast::multistep;
  steps_dtype_code(sample.scalar_type());
  TORCH_CHECK(sample.dim() >= 2, "genfast multistep: sample needs a batch and a channel "
              "dimension, got shape ", sample.sizes());
  TORCH_CHECK(sampler >= 0 && sampler < ms::kNumSamplers, "genfast multistep: unknown sampler "
              "code ", sampler);
  TORCH_CHECK(stage == 0 || (stage == 1 && (sampler == ms::kHeun || sampler == ms::kDpm2)),
              "genfast multistep: stage ", stage, " does not exist for sampler code ", sampler);
  TORCH_CHECK(prediction >= 0 && prediction <= 3, "genfast multistep: unknown prediction code ",
              prediction);
  TORCH_CHECK((int64_t)params.size() == ms::kNumParams, "genfast multistep: params must have ",
              (int)ms::kNumParams, " values, got ", params.size());
  TORCH_CHECK(plan.scalar_type() == at::kDouble && plan.dim() == 2 &&
                  plan.size(1) == st::kPlanCols && plan.size(0) > 0,
              "genfast multistep: plan must be a float64 (n, ", (int)st::kPlanCols,
              ") sampling-plan table, got ", plan.scalar_type(), " ", plan.sizes());
  TORCH_CHECK(stage_plan.scalar_type() == at::kDouble && stage_plan.dim() == 2 &&
                  stage_plan.size(1) == ms::kStageCols && stage_plan.size(0) == plan.size(0),
              "genfast multistep: stage_plan must be a float64 (", plan.size(0), ", ",
              (int)ms::kStageCols, ") table, got ", stage_plan.scalar_type(), " ",
              stage_plan.sizes());
  TORCH_CHECK(plan.device() == sample.device() && stage_plan.device() == sample.device(),
              "genfast multistep: the plan is on ", plan.device(), " but sample is on ",
              sample.device());
  TORCH_CHECK(model_output.scalar_type() == sample.scalar_type() &&
                  model_output.device() == sample.device(),
              "genfast multistep: model_output is ", model_output.scalar_type(), " on ",
              model_output.device(), " but sample is ", sample.scalar_type(), " on ",
              sample.device());
  MultistepLayout l{sample.size(0), sample.numel() / std::max<int64_t>(sample.size(0), 1)};
  const int64_t mult = (flags & st::kCfgBatched) ? 2 : 1;
  bool same = model_output.dim() == sample.dim() && model_output.size(0) == mult * l.items;
  for (int64_t d = 1; d < sample.dim() && same; ++d) {
    if (model_output.size(d) != sample.size(d)) same = false;
  }
  TORCH_CHECK_VALUE(same, "genfast multistep: model_output has shape ", model_output.sizes(),
                    " but sample has shape ", sample.sizes(),
                    (flags & st::kCfgBatched) ? " (with batched CFG model_output holds 2N items)"
                                              : "");
  if (flags & st::kCfgSeparate) {
    TORCH_CHECK(uncond.has_value(), "genfast multistep: the separate-CFG flag needs uncond");
    TORCH_CHECK_VALUE(uncond->sizes() == model_output.sizes() &&
                          uncond->scalar_type() == model_output.scalar_type() &&
                          uncond->device() == model_output.device(),
                      "genfast multistep: uncond has shape ", uncond->sizes(), " (",
                      uncond->scalar_type(), ") but model_output has shape ",
                      model_output.sizes(), " (", model_output.scalar_type(), ")");
  }
  if (flags & st::kGuidanceTensor) {
    TORCH_CHECK(guidance.has_value() && guidance->dim() == 2 && guidance->size(0) == 2 &&
                    guidance->size(1) == l.items && guidance->device() == sample.device() &&
                    guidance->scalar_type() == at::kFloat,
                "genfast multistep: guidance must be a float32 (2, ", l.items, ") tensor on ",
                sample.device(), " (per-item scale and rescale factor)");
  }
  if (flags & st::kNoiseGiven) {
    TORCH_CHECK(noise.has_value(), "genfast multistep: the given-noise flag needs noise");
    TORCH_CHECK_VALUE(noise->sizes() == sample.sizes() &&
                          noise->scalar_type() == sample.scalar_type() &&
                          noise->device() == sample.device(),
                      "genfast multistep: noise has shape ", noise->sizes(), " (",
                      noise->scalar_type(), ") but sample has shape ", sample.sizes(), " (",
                      sample.scalar_type(), ")");
  }
  std::vector<int64_t> want{ms::state_slots((int)sampler)};
  for (int64_t d = 0; d < sample.dim(); ++d) want.push_back(sample.size(d));
  TORCH_CHECK_VALUE(state.sizes() == at::IntArrayRef(want) &&
                        state.scalar_type() == sample.scalar_type() &&
                        state.device() == sample.device(),
                    "genfast multistep: state has shape ", state.sizes(), " (",
                    state.scalar_type(), " on ", state.device(), "), this sampler needs ",
                    at::IntArrayRef(want), " (", sample.scalar_type(), " on ",
                    sample.device(), ")");
  TORCH_CHECK_VALUE(state.is_contiguous(), "genfast multistep: state must be contiguous (it "
                    "is written in place)");
  return l;
}

}  // namespace genfast::bindings
