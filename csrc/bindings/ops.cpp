// The genfast operator library: every schema, plus build/CPU introspection.
// Kernels register beside their op family (noise.cpp, noise_cuda.cpp, ...).
#include <torch/library.h>

#include <string>

#include "cpu/isa.h"

namespace {

// "" -> active level; "?best" / "?supported" -> queries; a level name -> make it
// active (tests compare the levels; users can pin the portable one).
std::string cpu_isa(std::string request) {
  using namespace genfast::cpu;
  if (request == "?best") return isa_name(best_isa());
  if (request == "?supported") {
    std::string out;
    for (int i = 0; i < 3; ++i) {
      if (isa_supported(static_cast<Isa>(i))) {
        out += (out.empty() ? "" : ",") + std::string(isa_name(static_cast<Isa>(i)));
      }
    }
    return out;
  }
  if (!request.empty()) {
    Isa isa;
    TORCH_CHECK(isa_from_name(request.c_str(), &isa),
                "genfast: unknown CPU ISA level '", request, "' (baseline, avx2, avx512)");
    TORCH_CHECK(set_active_isa(isa), "genfast: CPU ISA level '", request,
                "' is not supported by this CPU or build");
  }
  return isa_name(active_isa());
}

std::string build_torch_version() { return GENFAST_TORCH_VERSION; }

}  // namespace

TORCH_LIBRARY(genfast, m) {
  // noise: shared/reference/noise-stream.md
  // SymInt: a sampler's step index can be the stream without a recompile per step.
  m.def("noise_normal(Tensor(a!) out, SymInt seed, SymInt stream, SymInt sample_offset) -> ()");
  m.def("noise_philox(Tensor counter, SymInt seed) -> Tensor");
  // training: genfast/ops/training.py (add_noise, diffusion_loss, vae). Schedule
  // kind 0 vp / 1 sigma / 2 flow; prediction 0 epsilon / 1 v / 2 sample / 3 flow;
  // weighting 0 none / 1 min-SNR / 2 EDM; reduction 0 none / 1 mean / 2 sum.
  m.def("training_add_noise(Tensor x0, Tensor noise, Tensor timesteps, Tensor table, int kind, "
        "int prediction) -> (Tensor, Tensor)");
  m.def("training_add_noise_seeded(Tensor x0, Tensor timesteps, Tensor table, int kind, "
        "int prediction, SymInt seed, SymInt stream, SymInt sample_offset) -> (Tensor, Tensor, Tensor)");
  m.def("training_add_noise_backward(Tensor? grad_x_t, Tensor? grad_target, Tensor timesteps, "
        "Tensor table, int kind, int prediction, int wrt) -> Tensor");
  m.def("training_diffusion_loss(Tensor pred, Tensor target, Tensor timesteps, Tensor table, "
        "int kind, int weighting, int prediction, float gamma, float sigma_data, int reduction) -> Tensor");
  m.def("training_diffusion_loss_backward(Tensor grad, Tensor pred, Tensor target, Tensor timesteps, "
        "Tensor table, int kind, int weighting, int prediction, float gamma, float sigma_data, "
        "int reduction) -> Tensor");
  m.def("training_kl_divergence(Tensor mu, Tensor logvar, int reduction) -> Tensor");
  m.def("training_kl_divergence_backward(Tensor grad, Tensor mu, Tensor logvar, int reduction) "
        "-> (Tensor, Tensor)");
  // reparameterize returns (z, eps): eps is kept for the backward, which is then
  // one elementwise pass instead of a second run of Philox.
  m.def("training_reparameterize(Tensor mu, Tensor logvar, SymInt seed, SymInt stream, "
        "SymInt sample_offset) -> (Tensor, Tensor)");
  m.def("training_reparameterize_backward(Tensor grad, Tensor logvar, Tensor eps) -> Tensor");
  // steps: genfast/ops/steps.py (single-step samplers with CFG / thresholding fused).
  // Codes and flags: csrc/include/genfast/steps.h. The step index is `index` (a
  // 0-d integer tensor on the device, read in-kernel) when given, else `step`.
  m.def("steps_step(Tensor sample, Tensor model_output, Tensor? uncond, Tensor? guidance, "
        "Tensor? noise, Tensor plan, Tensor? index, SymInt step, int sampler, int prediction, "
        "int variance, int flags, float[] params, SymInt seed, SymInt stream, "
        "SymInt sample_offset) -> (Tensor, Tensor)");
  // introspection
  m.def("_cpu_isa(str request) -> str", &cpu_isa);
  m.def("_build_torch_version() -> str", &build_torch_version);
}
