// CUDA kernel of genfast::multistep_step: checks, device guard, stream. The
// plan, the stage table and a tensor step index stay on the device and are
// read by the kernel (no sync: a 50-step loop captures in one CUDA graph).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "bindings/multistep_args.h"
#include "cuda/multistep.cuh"

namespace genfast::bindings {
namespace {

namespace st = genfast::steps;
namespace ms = genfast::multistep;

std::tuple<at::Tensor, at::Tensor> multistep_step_cuda(
    const at::Tensor& sample, const at::Tensor& model_output,
    const std::optional<at::Tensor>& uncond, const std::optional<at::Tensor>& guidance,
    const std::optional<at::Tensor>& noise, const at::Tensor& state, const at::Tensor& plan,
    const at::Tensor& stage_plan, const std::optional<at::Tensor>& index, int64_t step,
    int64_t sampler, int64_t stage, int64_t prediction, int64_t flags,
    at::ArrayRef<double> params, int64_t seed, int64_t stream, int64_t sample_offset) {
  TORCH_CHECK(sample.is_cuda(), "genfast multistep (CUDA): tensors must be CUDA tensors");
  const MultistepLayout l = check_multistep(sample, model_output, uncond, guidance, noise, state,
                                            plan, stage_plan, sampler, stage, prediction, flags,
                                            params);
  const c10::cuda::CUDAGuard guard(sample.device());
  const cudaStream_t cs = c10::cuda::getCurrentCUDAStream().stream();
  at::Tensor idx;
  if (index.has_value()) {
    check_index_tensor(*index, sample);
    idx = (index->scalar_type() == at::kInt || index->scalar_type() == at::kLong)
              ? *index : index->to(at::kLong);
  } else {
    TORCH_CHECK_INDEX(step >= 0 && step < plan.size(0), "genfast multistep: step index ", step,
                      " is past the plan (it has ", plan.size(0), " steps)");
  }
  const at::Tensor x = sample.contiguous(), mo = model_output.contiguous();
  const at::Tensor tab = plan.contiguous(), stab = stage_plan.contiguous();
  const bool cfg = (flags & (st::kCfgBatched | st::kCfgSeparate)) != 0;
  at::Tensor un = (flags & st::kCfgSeparate) ? uncond->contiguous() : at::Tensor();
  at::Tensor z = (flags & st::kNoiseGiven) ? noise->contiguous() : at::Tensor();
  at::Tensor g = (flags & st::kGuidanceTensor) ? guidance->contiguous() : at::Tensor();
  at::Tensor prev = at::empty(sample.sizes(), sample.options());
  at::Tensor x0 = (flags & st::kWantX0) ? at::empty(sample.sizes(), sample.options())
                                        : at::empty({0}, sample.options());
  if (sample.numel() == 0) return {prev, x0};
  const int64_t N = l.items, esize = (int64_t)sample.element_size();
  const char* mbase = static_cast<const char*>(mo.data_ptr());

  cuda::MultistepLaunch a{};
  a.x = x.data_ptr();
  a.c = (flags & st::kCfgBatched) ? mbase + N * l.numel * esize : mbase;
  a.u = !cfg ? nullptr : (flags & st::kCfgBatched) ? mbase : un.data_ptr();
  a.z = z.defined() ? z.data_ptr() : nullptr;
  a.prev = prev.data_ptr();
  a.x0 = (flags & st::kWantX0) ? x0.data_ptr() : nullptr;
  a.state = state.data_ptr();
  a.dtype = steps_dtype_code(sample.scalar_type());
  a.items = N;
  a.numel = l.numel;
  a.plan = tab.data_ptr<double>();
  a.stage_plan = stab.data_ptr<double>();
  a.rows = tab.size(0);
  a.index = idx.defined() ? idx.data_ptr() : nullptr;
  a.index_is_int32 = idx.defined() && idx.scalar_type() == at::kInt;
  a.step = step;
  a.sampler = (int)sampler;
  a.stage = (int)stage;
  a.prediction = (int)prediction;
  a.noise_given = z.defined() ? 1 : 0;
  a.noise_seeded = (flags & st::kNoiseSeeded) ? 1 : 0;
  a.guidance_scale = (float)params[ms::kGuidanceScale];
  a.guidance = g.defined() ? g.data_ptr<float>() : nullptr;
  const uint64_t sd = static_cast<uint64_t>(seed);
  a.k0 = static_cast<uint32_t>(sd);
  a.k1 = static_cast<uint32_t>(sd >> 32);
  a.stream = static_cast<uint32_t>(stream);
  a.sample_offset = static_cast<uint32_t>(sample_offset);
  C10_CUDA_CHECK(cuda::launch_multistep(a, cs));
  return {prev, x0};
}

}  // namespace
}  // namespace genfast::bindings

TORCH_LIBRARY_IMPL(genfast, CUDA, m) {
  m.impl("multistep_step", &genfast::bindings::multistep_step_cuda);
}
