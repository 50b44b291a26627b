// CPU kernel of genfast::steps_step: checks, the step's coefficients (host,
// float64, from csrc/include/genfast/steps.h and the plan row), the per-item
// passes (guidance_rescale moments, dynamic-thresholding quantile), threads,
// ISA choice. On the CPU the plan and a tensor step index are host memory:
// reading them is no device sync, and an index past the plan is an error.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/SmallVector.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "bindings/steps_args.h"
#include "cpu/isa.h"
#include "cpu/steps_kernels.h"

namespace genfast::bindings {
namespace {

namespace st = genfast::steps;

struct StepsKernels {
  decltype(&cpu::baseline::step_apply) step_apply;
  decltype(&cpu::baseline::cfg_moments) cfg_moments;
  decltype(&cpu::baseline::abs_x0) abs_x0;
};

#define GENFAST_STEPS_TABLE(ISA) \
  StepsKernels { cpu::ISA::step_apply, cpu::ISA::cfg_moments, cpu::ISA::abs_x0 }

StepsKernels kernels() {
  switch (cpu::active_isa()) {
#if defined(GENFAST_HAVE_X86_ISAS)
    case cpu::Isa::kAvx512: return GENFAST_STEPS_TABLE(avx512);
    case cpu::Isa::kAvx2: return GENFAST_STEPS_TABLE(avx2);
#endif
    default: return GENFAST_STEPS_TABLE(baseline);
  }
}

constexpr int64_t kTask = 4096;     // elements per task (a multiple of 4: noise quads)
// Below this many elements the step runs on the calling thread: waking the
// pool costs more than a second core saves (one 1x4x64x64 latent takes a few
// microseconds), and a busy machine may not hand the second thread out at all.
constexpr int64_t kSerialElems = 32768;
// The same for a step that draws its noise in the kernel: the normals cost
// ~2 ns an element on one core (16K: ~35 us), so a second core pays for
// the wake-up much sooner.
constexpr int64_t kSerialNoiseElems = 8192;

int64_t read_index(const at::Tensor& index) {
  switch (index.scalar_type()) {
    case at::kLong: return *index.data_ptr<int64_t>();
    case at::kInt: return *index.data_ptr<int32_t>();
    default: return index.to(at::kLong).item<int64_t>();  // CPU: no device sync
  }
}

// Runs body(item, e0, e1) over every item's elements in tasks of kTask.
template <typename Body>
void for_tasks(int64_t items, int64_t numel, const Body& body,
               int64_t serial_elems = kSerialElems) {
  const int64_t per = (numel + kTask - 1) / kTask;
  const auto run = [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) {
      const int64_t item = j / per, t = j - item * per;
      const int64_t e0 = t * kTask;
      body(item, e0, std::min(e0 + kTask, numel));
    }
  };
  if (items * numel < serial_elems) {
    run(0, items * per);
  } else {
    at::parallel_for(0, items * per, 1, run);
  }
}

std::tuple<at::Tensor, at::Tensor> steps_step_cpu(
    const at::Tensor& sample, const at::Tensor& model_output,
    const std::optional<at::Tensor>& uncond, const std::optional<at::Tensor>& guidance,
    const std::optional<at::Tensor>& noise, const at::Tensor& plan,
    const std::optional<at::Tensor>& index, int64_t step, int64_t sampler, int64_t prediction,
    int64_t variance, int64_t flags, at::ArrayRef<double> params, int64_t seed, int64_t stream,
    int64_t sample_offset) {
  const StepLayout l = check_step(sample, model_output, uncond, guidance, noise, plan, sampler,
                                  prediction, variance, flags, params);
  const int dt = steps_dtype_code(sample.scalar_type());
  int64_t i = step;
  if (index.has_value()) {
    check_index_tensor(*index, sample);
    i = read_index(*index);
  }
  const int64_t rows = plan.size(0);
  TORCH_CHECK_INDEX(i >= 0 && i < rows, "genfast steps: step index ", i,
                    " is past the plan (it has ", rows, " steps: 0..", rows - 1, ")");
  const at::Tensor tab = plan.is_contiguous() ? plan : plan.contiguous();
  const double* row = tab.const_data_ptr<double>() + i * st::kPlanCols;
  const st::Coefs k = st::step_coefs((int)sampler, (int)prediction, (int)variance, (int)flags,
                                     row, rows, params.data());
  const bool seeded = (flags & st::kNoiseSeeded) != 0;
  TORCH_CHECK_VALUE(!k.noise || seeded || (flags & st::kNoiseGiven),
                    "genfast steps: this step draws noise: pass noise= or seed=");

  const at::Tensor x = sample.contiguous(), mo = model_output.contiguous();
  at::Tensor un, z;
  const bool cfg = (flags & (st::kCfgBatched | st::kCfgSeparate)) != 0;
  if (flags & st::kCfgSeparate) un = uncond->contiguous();
  if (k.noise && !seeded) z = noise->contiguous();
  at::Tensor prev = at::empty(sample.sizes(), sample.options());
  at::Tensor out2 = (flags & st::kWantX0) ? at::empty(sample.sizes(), sample.options())
                                          : at::empty({0}, sample.options());
  const int64_t N = l.items;
  if (sample.numel() == 0) return {prev, out2};

  const int64_t esize = (int64_t)sample.element_size();
  const char* mbase = static_cast<const char*>(mo.data_ptr());
  cpu::StepArgs a{};
  a.x = x.data_ptr();
  a.c = (flags & st::kCfgBatched) ? mbase + N * l.m_stride * esize : mbase;
  a.u = !cfg ? nullptr : (flags & st::kCfgBatched) ? mbase : un.data_ptr();
  a.v = l.learned ? static_cast<const char*>(a.c) + l.numel * esize : nullptr;
  a.z = z.defined() ? z.data_ptr() : nullptr;
  a.prev = prev.data_ptr();
  a.out2 = (flags & st::kWantX0) ? out2.data_ptr() : nullptr;
  a.dtype = dt;
  a.numel = l.numel;
  a.m_stride = l.m_stride;
  a.k = st::to_float(k);
  a.learned = k.learned;
  a.seeded = seeded;
  a.noise = k.noise;

  // per-item scalars; on the stack for the usual few items
  c10::SmallVector<float, 32> g(N, (float)params[st::kGuidanceScale]), r(N, 1.0f);
  c10::SmallVector<float, 32> lim(N, std::numeric_limits<float>::infinity()), inv(N, 1.0f);
  if (flags & st::kGuidanceTensor) {
    const at::Tensor gt = guidance->to(at::kFloat).contiguous();
    std::copy(gt.data_ptr<float>(), gt.data_ptr<float>() + N, g.begin());
  }
  a.g = g.data();
  a.r = r.data();
  a.lim = lim.data();
  a.inv = inv.data();
  const StepsKernels f = kernels();

  if ((flags & st::kRescale) && cfg) {  // pass 1: per-item moments of cond and guided output
    const int64_t per = (l.numel + kTask - 1) / kTask;
    std::vector<double> parts(N * per * 4);
    for_tasks(N, l.numel, [&](int64_t item, int64_t e0, int64_t e1) {
      f.cfg_moments(a, item, e0, e1, parts.data() + 4 * (item * per + e0 / kTask));
    });
    for (int64_t b = 0; b < N; ++b) {
      double s[4] = {0, 0, 0, 0};
      for (int64_t t = 0; t < per; ++t) {
        for (int j = 0; j < 4; ++j) s[j] += parts[4 * (b * per + t) + j];
      }
      r[b] = (float)st::rescale_factor(params[st::kGuidanceRescale], s[0], s[1], s[2], s[3],
                                       (double)l.numel);
    }
  }
  if (flags & st::kThreshold) {  // pass 2: per-item quantile of |x0|
    const double pos = params[st::kThresholdRatio] * (double)(l.numel - 1);
    const int64_t lo = (int64_t)std::floor(pos);
    const int64_t hi = std::min(lo + 1, l.numel - 1);
    at::parallel_for(0, N, 1, [&](int64_t b0, int64_t b1) {
      std::vector<float> buf(l.numel);
      for (int64_t b = b0; b < b1; ++b) {
        f.abs_x0(a, b, buf.data());
        std::nth_element(buf.begin(), buf.begin() + lo, buf.end());
        const float q_lo = buf[lo];
        const float q_hi = hi > lo ? *std::min_element(buf.begin() + lo + 1, buf.end()) : q_lo;
        const double s = st::threshold_bound(q_lo, q_hi, pos - (double)lo,
                                             params[st::kSampleMax]);
        lim[b] = (float)s;
        inv[b] = (float)(1.0 / s);
      }
    });
  } else if (flags & st::kClip) {
    std::fill(lim.begin(), lim.end(), (float)params[st::kClipRange]);
  }

  constexpr int64_t k32 = int64_t{1} << 32;
  const uint64_t sd = static_cast<uint64_t>(seed);
  const cpu::StreamArgs s{(l.numel + 3) / 4, static_cast<uint32_t>(sd),
                          static_cast<uint32_t>(sd >> 32),
                          static_cast<uint32_t>(((stream + i) % k32 + k32) % k32),
                          static_cast<uint32_t>(sample_offset)};
  for_tasks(
      N, l.numel, [&](int64_t item, int64_t e0, int64_t e1) { f.step_apply(a, s, item, e0, e1); },
      k.noise && seeded ? kSerialNoiseElems : kSerialElems);
  return {prev, out2};
}

}  // namespace
}  // namespace genfast::bindings

TORCH_LIBRARY_IMPL(genfast, CPU, m) {
  m.impl("steps_step", &genfast::bindings::steps_step_cpu);
}
