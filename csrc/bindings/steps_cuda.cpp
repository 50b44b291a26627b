// CUDA kernel of genfast::steps_step: checks, device guard, stream, scratch.
// The plan and a tensor step index stay on the device and are read by the
// kernels (no sync: a 50-step loop captures in one CUDA graph); an index past
// the plan gives a NaN step (steps.cuh). The thresholding quantile sorts each
// item's |x0| with at::sort on the same stream (no sync either).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "bindings/steps_args.h"
#include "cuda/steps.cuh"

namespace genfast::bindings {
namespace {

namespace st = genfast::steps;

std::tuple<at::Tensor, at::Tensor> steps_step_cuda(
    const at::Tensor& sample, const at::Tensor& model_output,
    const std::optional<at::Tensor>& uncond, const std::optional<at::Tensor>& guidance,
    const std::optional<at::Tensor>& noise, const at::Tensor& plan,
    const std::optional<at::Tensor>& index, int64_t step, int64_t sampler, int64_t prediction,
    int64_t variance, int64_t flags, at::ArrayRef<double> params, int64_t seed, int64_t stream,
    int64_t sample_offset) {
  TORCH_CHECK(sample.is_cuda(), "genfast steps (CUDA): tensors must be CUDA tensors");
  const StepLayout l = check_step(sample, model_output, uncond, guidance, noise, plan, sampler,
                                  prediction, variance, flags, params);
  const c10::cuda::CUDAGuard guard(sample.device());
  const cudaStream_t cs = c10::cuda::getCurrentCUDAStream().stream();
  at::Tensor idx;
  if (index.has_value()) {
    check_index_tensor(*index, sample);
    idx = (index->scalar_type() == at::kInt || index->scalar_type() == at::kLong)
              ? *index : index->to(at::kLong);
  } else {
    TORCH_CHECK_INDEX(step >= 0 && step < plan.size(0), "genfast steps: step index ", step,
                      " is past the plan (it has ", plan.size(0), " steps)");
  }
  const bool seeded = (flags & st::kNoiseSeeded) != 0;
  const at::Tensor x = sample.contiguous(), mo = model_output.contiguous(), tab = plan.contiguous();
  const bool cfg = (flags & (st::kCfgBatched | st::kCfgSeparate)) != 0;
  at::Tensor un = (flags & st::kCfgSeparate) ? uncond->contiguous() : at::Tensor();
  at::Tensor z = (flags & st::kNoiseGiven) ? noise->contiguous() : at::Tensor();
  at::Tensor g = (flags & st::kGuidanceTensor) ? guidance->to(at::kFloat).contiguous() : at::Tensor();
  at::Tensor prev = at::empty(sample.sizes(), sample.options());
  at::Tensor out2 = (flags & st::kWantX0) ? at::empty(sample.sizes(), sample.options())
                                          : at::empty({0}, sample.options());
  if (sample.numel() == 0) return {prev, out2};
  const int64_t N = l.items, esize = (int64_t)sample.element_size();
  const char* mbase = static_cast<const char*>(mo.data_ptr());

  cuda::StepLaunch a{};
  a.x = x.data_ptr();
  a.c = (flags & st::kCfgBatched) ? mbase + N * l.m_stride * esize : mbase;
  a.u = !cfg ? nullptr : (flags & st::kCfgBatched) ? mbase : un.data_ptr();
  a.v = l.learned ? static_cast<const char*>(a.c) + l.numel * esize : nullptr;
  a.z = z.defined() ? z.data_ptr() : nullptr;
  a.prev = prev.data_ptr();
  a.out2 = (flags & st::kWantX0) ? out2.data_ptr() : nullptr;
  a.dtype = steps_dtype_code(sample.scalar_type());
  a.items = N;
  a.numel = l.numel;
  a.m_stride = l.m_stride;
  a.plan = tab.data_ptr<double>();
  a.rows = tab.size(0);
  a.index = idx.defined() ? idx.data_ptr() : nullptr;
  a.index_is_int32 = idx.defined() && idx.scalar_type() == at::kInt;
  a.step = step;
  a.sampler = (int)sampler;
  a.prediction = (int)prediction;
  a.variance = (int)variance;
  // without a noise source the kernel must not draw: the wrapper raised already
  // for the samplers that need one, so a stray noise flag from the plan is moot
  a.flags = (int)flags;
  std::copy(params.begin(), params.end(), a.params);
  a.guidance = g.defined() ? g.data_ptr<float>() : nullptr;
  const uint64_t sd = static_cast<uint64_t>(seed);
  a.k0 = static_cast<uint32_t>(sd);
  a.k1 = static_cast<uint32_t>(sd >> 32);
  a.stream = static_cast<uint32_t>(stream);
  a.sample_offset = static_cast<uint32_t>(sample_offset);
  TORCH_CHECK_VALUE(seeded || z.defined() || !(sampler == st::kDDPM || sampler == st::kLCM ||
                                                sampler == st::kEulerAncestral),
                    "genfast steps: this sampler draws noise: pass noise= or seed=");

  at::Tensor scratch = at::empty({cuda::kScratchHead + 4 * N}, sample.options().dtype(at::kFloat));
  float* s = scratch.data_ptr<float>();
  C10_CUDA_CHECK(cuda::launch_step_prepare(a, s, cs));
  if ((flags & st::kRescale) && cfg) {
    at::Tensor partials = at::empty({N * cuda::moment_chunks(l.numel) * 4},
                                    sample.options().dtype(at::kDouble));
    C10_CUDA_CHECK(cuda::launch_cfg_moments(a, s, partials.data_ptr<double>(), cs));
  }
  if (flags & st::kThreshold) {
    at::Tensor absx0 = at::empty({N, l.numel}, sample.options().dtype(at::kFloat));
    C10_CUDA_CHECK(cuda::launch_abs_x0(a, s, absx0.data_ptr<float>(), cs));
    const at::Tensor sorted = std::get<0>(absx0.sort(1)).contiguous();
    C10_CUDA_CHECK(cuda::launch_threshold_bounds(a, sorted.data_ptr<float>(), s, cs));
  }
  C10_CUDA_CHECK(cuda::launch_step_apply(a, s, cs));
  return {prev, out2};
}

}  // namespace
}  // namespace genfast::bindings

TORCH_LIBRARY_IMPL(genfast, CUDA, m) {
  m.impl("steps_step", &genfast::bindings::steps_step_cuda);
}
