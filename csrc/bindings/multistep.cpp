// CPU kernel of genfast::multistep_step: checks, the step's coefficients
// (host, float64, from csrc/include/genfast/multistep.h and the plan rows),
// threads, ISA choice. On the CPU the plan and a tensor step index are host
// memory: reading them is no device sync; an index past the plan, or stage 1
// of a one-stage step, is an error.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "bindings/multistep_args.h"
#include "cpu/isa.h"
#include "cpu/multistep_kernels.h"

namespace genfast::bindings {
namespace {

namespace st = genfast::steps;
namespace ms = genfast::multistep;

using ApplyFn = decltype(&cpu::baseline::multistep_apply);

ApplyFn apply_kernel() {
  switch (cpu::active_isa()) {
#if defined(GENFAST_HAVE_X86_ISAS)
    case cpu::Isa::kAvx512: return cpu::avx512::multistep_apply;
    case cpu::Isa::kAvx2: return cpu::avx2::multistep_apply;
#endif
    default: return cpu::baseline::multistep_apply;
  }
}

constexpr int64_t kTask = 4096;  // elements per task (a multiple of 8: noise quads, lanes)
// Below this many elements the step runs on the calling thread: waking the
// pool costs more than a second core saves (a 1x4x64x64 latent takes a few
// microseconds), and a busy machine may not hand the second thread out at all.
constexpr int64_t kSerialElems = 32768;
// The same for a step that draws its noise in the kernel (the SDE samplers):
// the normals cost ~2 ns an element on one core, so a second core pays for
// the wake-up much sooner.
constexpr int64_t kSerialNoiseElems = 8192;
constexpr int64_t kSmallItems = 16;
// A step that moves more than this streams its float32 outputs past the
// caches (non-temporal stores): half of a 32 MB last-level cache, which the
// inputs it reads keep then, while the write-allocate reads of the outputs
// (a fifth to a third of the traffic) are saved; the next reader of an
// output is a step later, past a model evaluation that has evicted it
// anyway. Below, the outputs stay cached for whoever reads them next.
constexpr int64_t kStreamBytes = int64_t{16} << 20;  // per-item guidance on the stack up to this batch

int64_t read_index(const at::Tensor& index) {
  switch (index.scalar_type()) {
    case at::kLong: return *index.data_ptr<int64_t>();
    case at::kInt: return *index.data_ptr<int32_t>();
    default: return index.to(at::kLong).item<int64_t>();  // CPU: no device sync
  }
}

std::tuple<at::Tensor, at::Tensor> multistep_step_cpu(
    const at::Tensor& sample, const at::Tensor& model_output,
    const std::optional<at::Tensor>& uncond, const std::optional<at::Tensor>& guidance,
    const std::optional<at::Tensor>& noise, const at::Tensor& state, const at::Tensor& plan,
    const at::Tensor& stage_plan, const std::optional<at::Tensor>& index, int64_t step,
    int64_t sampler, int64_t stage, int64_t prediction, int64_t flags,
    at::ArrayRef<double> params, int64_t seed, int64_t stream, int64_t sample_offset) {
  const MultistepLayout l = check_multistep(sample, model_output, uncond, guidance, noise, state,
                                            plan, stage_plan, sampler, stage, prediction, flags,
                                            params);
  int64_t i = step;
  if (index.has_value()) {
    check_index_tensor(*index, sample);
    i = read_index(*index);
  }
  const int64_t rows = plan.size(0);
  TORCH_CHECK_INDEX(i >= 0 && i < rows, "genfast multistep: step index ", i,
                    " is past the plan (it has ", rows, " steps: 0..", rows - 1, ")");
  const at::Tensor tab = plan.is_contiguous() ? plan : plan.contiguous();
  const at::Tensor stab = stage_plan.is_contiguous() ? stage_plan : stage_plan.contiguous();
  const double* row = tab.data_ptr<double>() + i * st::kPlanCols;
  const double* srow = stab.data_ptr<double>() + i * ms::kStageCols;
  TORCH_CHECK_VALUE(stage == 0 || srow[ms::kSStages] == 2.0, "genfast multistep: step ", i,
                    " has one model evaluation (it ends at sigma 0): stage 1 does not exist");
  const ms::Coefs k = ms::step_coefs((int)sampler, (int)stage, (int)prediction, row, srow);
  const bool seeded = (flags & st::kNoiseSeeded) != 0;
  const bool draws = k.az != 0.0 && (seeded || (flags & st::kNoiseGiven));
  TORCH_CHECK_VALUE(k.az == 0.0 || seeded || (flags & st::kNoiseGiven),
                    "genfast multistep: this step draws noise: pass noise= or seed=");

  const at::Tensor x = sample.contiguous(), mo = model_output.contiguous();
  at::Tensor un, z;
  const bool cfg = (flags & (st::kCfgBatched | st::kCfgSeparate)) != 0;
  if (flags & st::kCfgSeparate) un = uncond->contiguous();
  if (draws && !seeded) z = noise->contiguous();
  at::Tensor prev = at::empty(sample.sizes(), sample.options());
  at::Tensor x0 = (flags & st::kWantX0) ? at::empty(sample.sizes(), sample.options())
                                        : at::empty({0}, sample.options());
  const int64_t N = l.items;
  if (sample.numel() == 0) return {prev, x0};

  const int64_t esize = (int64_t)sample.element_size();
  const char* mbase = static_cast<const char*>(mo.data_ptr());
  cpu::MultistepArgs a{};
  a.x = x.data_ptr();
  a.c = (flags & st::kCfgBatched) ? mbase + N * l.numel * esize : mbase;
  a.u = !cfg ? nullptr : (flags & st::kCfgBatched) ? mbase : un.data_ptr();
  a.z = z.defined() ? z.data_ptr() : nullptr;
  a.prev = prev.data_ptr();
  a.x0 = (flags & st::kWantX0) ? x0.data_ptr() : nullptr;
  a.state = state.data_ptr();
  a.slot_stride = N * l.numel;
  const bool multi = ms::has_ring((int)sampler);
  for (int j = 0; j < 3; ++j) {
    const bool used = multi && (k.ah[j] != 0.0 || (k.write_p && k.ch[j] != 0.0));
    a.h_slot[j] = used ? ms::ring_slot(i, j + 1) : -1;
  }
  a.d_slot = k.write_d ? ms::ring_slot(i, 0) : -1;
  a.write_dx = k.write_dx;
  a.p_slot = sampler == ms::kUnipc ? 3 : (multi ? -1 : 0);
  a.read_p = k.read_p && (k.ap != 0.0 || (k.write_p && k.cp != 0.0));
  a.write_p = k.write_p;
  a.dtype = steps_dtype_code(sample.scalar_type());
  a.numel = l.numel;
  a.k = ms::to_float(k);
  a.seeded = seeded;
  a.noise = draws;
  {
    int streams = 2 + (cfg ? 1 : 0) + (a.read_p ? 1 : 0) + (a.z != nullptr ? 1 : 0) + 1 +
                  (a.d_slot >= 0 ? 1 : 0) + (a.write_p ? 1 : 0) + (a.x0 != nullptr ? 1 : 0);
    for (int j = 0; j < 3; ++j) streams += a.h_slot[j] >= 0 ? 1 : 0;
    const auto aligned = [](const void* p) { return (reinterpret_cast<uintptr_t>(p) & 31) == 0; };
    // stage 0 of heun / dpm_2 hands its sample and P to the stage-1 call
    // right after one model evaluation: those stay cached
    const bool two_stage = sampler == ms::kHeun || sampler == ms::kDpm2;
    a.stream_stores = !(two_stage && stage == 0) &&
                      sample.scalar_type() == at::kFloat && l.numel % 8 == 0 &&
                      streams * N * l.numel * esize >= kStreamBytes && aligned(a.prev) &&
                      (a.x0 == nullptr || aligned(a.x0)) && aligned(a.state);
  }

  float g_small[kSmallItems], r_small[kSmallItems];
  std::vector<float> g_big, r_big;
  float* g = g_small;
  float* r = r_small;
  if (N > kSmallItems) {
    g_big.resize(N);
    r_big.resize(N);
    g = g_big.data();
    r = r_big.data();
  }
  std::fill(g, g + N, (float)params[ms::kGuidanceScale]);
  std::fill(r, r + N, 1.0f);
  if (flags & st::kGuidanceTensor) {
    const at::Tensor gt = guidance->contiguous();
    const float* gp = gt.data_ptr<float>();
    std::copy(gp, gp + N, g);
    std::copy(gp + N, gp + 2 * N, r);
  }
  a.g = g;
  a.r = r;
  constexpr int64_t k32 = int64_t{1} << 32;
  const uint64_t sd = static_cast<uint64_t>(seed);
  const cpu::StreamArgs s{(l.numel + 3) / 4, static_cast<uint32_t>(sd),
                          static_cast<uint32_t>(sd >> 32),
                          static_cast<uint32_t>(((stream + i) % k32 + k32) % k32),
                          static_cast<uint32_t>(sample_offset)};
  const ApplyFn f = apply_kernel();
  const int64_t per = (l.numel + kTask - 1) / kTask;
  const auto run = [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) {
      const int64_t item = j / per, t = j - item * per;
      const int64_t e0 = t * kTask;
      f(a, s, item, e0, std::min(e0 + kTask, l.numel));
    }
  };
  const int64_t tasks = N * per;
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), tasks);
  if (N * l.numel < (draws && seeded ? kSerialNoiseElems : kSerialElems) || threads < 2) {
    run(0, tasks);
  } else {
    // Tasks claimed one at a time, not split in fixed halves: on a busy
    // machine a thread that gets its core late finds the work done by the
    // others instead of holding the whole step up by a scheduler slice.
    std::atomic<int64_t> next{0};
    at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
      for (int64_t j = next.fetch_add(1); j < tasks; j = next.fetch_add(1)) run(j, j + 1);
    });
  }
  return {prev, x0};
}

}  // namespace
}  // namespace genfast::bindings

TORCH_LIBRARY_IMPL(genfast, CPU, m) {
  m.impl("multistep_step", &genfast::bindings::multistep_step_cpu);
}
