// The genfast operator library: every schema, plus build/CPU introspection.
// Kernels register beside their op family (noise.cpp, noise_cuda.cpp, ...).
//
// Ops that write into an argument (`Tensor(a!)`) are declared with
// `def_inplace`, which also gives them autograd's in-place handling (below):
// every later op with out= or in-place semantics goes through it.
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/SmallVector.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/library.h>

#include <string>
#include <vector>

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

// Names of the ops declared with def_inplace, in declaration order. Filled by
// the TORCH_LIBRARY block below before the IMPL blocks after it run (static
// initialisers of one file run in order).
std::vector<std::string>& inplace_ops() {
  static std::vector<std::string> names;
  return names;
}

// Declares an op whose schema writes into an argument. Kernels registered
// only for CPU / CUDA would write behind autograd's back: the version counter
// would not move, so a buffer saved for backward could be refilled and
// backward() would silently return a wrong gradient, and inference tensors
// could be written outside inference mode. See the IMPL blocks below.
void def_inplace(torch::Library& m, const char* schema) {
  const std::string s(schema);
  inplace_ops().push_back(s.substr(0, s.find('(')));
  m.def(schema);
}

}  // namespace

TORCH_LIBRARY(genfast, m) {
  // noise: shared/reference/noise-stream.md
  // SymInt: a sampler's step index can be the stream without a recompile per step.
  def_inplace(m, "noise_normal(Tensor(a!) out, SymInt seed, SymInt stream, SymInt sample_offset) -> ()");
  m.def("noise_philox(Tensor counter, SymInt seed) -> Tensor");
  // training: genfast/ops/training.py (add_noise, diffusion_loss, vae). Schedule
  // kind 0 vp / 1 sigma / 2 flow; prediction 0 epsilon / 1 v / 2 sample / 3 flow;
  // weighting 0 none / 1 min-SNR / 2 EDM; reduction 0 none / 1 mean / 2 sum.
  m.def("training_add_noise(Tensor x0, Tensor noise, Tensor timesteps, Tensor table, int kind, "
        "int prediction) -> (Tensor, Tensor)");
  // training_add_noise_seeded -> (x_t, noise, target); for prediction 0 (epsilon) the target
  // IS the noise, so target comes back empty (shape [0]) instead of as a third written copy
  // (outputs of an op may not alias; genfast.add_noise returns (x_t, noise, noise)).
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
  // reparameterize returns (z, d) with d = exp(logvar/2) eps, kept for the
  // backward (then one elementwise pass: no second run of Philox, no exp).
  m.def("training_reparameterize(Tensor mu, Tensor logvar, SymInt seed, SymInt stream, "
        "SymInt sample_offset) -> (Tensor, Tensor)");
  m.def("training_reparameterize_backward(Tensor grad, Tensor logvar, Tensor scaled_eps) -> Tensor");
  // z alone (genfast.vae.reparameterize's op): its autograd keeps the backward's
  // input private (bindings/training_autograd.cpp).
  m.def("training_reparameterize_sample(Tensor mu, Tensor logvar, SymInt seed, SymInt stream, "
        "SymInt sample_offset) -> Tensor");
  // vae: genfast/ops/vae.py (reparameterize_kl). (z, kl, d) with d = exp(logvar/2) eps
  // for the one-pass backward, which gives both input gradients at once.
  m.def("vae_reparameterize_kl(Tensor mu, Tensor logvar, SymInt seed, SymInt stream, "
        "SymInt sample_offset, int reduction) -> (Tensor, Tensor, Tensor)");
  m.def("vae_reparameterize_kl_backward(Tensor? grad_z, Tensor? grad_kl, Tensor mu, "
        "Tensor logvar, Tensor d, int reduction) -> (Tensor, Tensor)");
  // flows: shared/reference/flows.md (rational-quadratic spline, affine / additive
  // coupling). Each backward is its own fused op; autograd is registered in
  // genfast/ops/flows.py.
  m.def("rq_spline(Tensor inputs, Tensor unnormalized_widths, Tensor unnormalized_heights, "
        "Tensor unnormalized_derivatives, bool inverse, bool linear_tails, float left, "
        "float right, float bottom, float top, float min_bin_width, float min_bin_height, "
        "float min_derivative) -> (Tensor, Tensor)");
  m.def("rq_spline_backward(Tensor grad_outputs, Tensor grad_logabsdet, Tensor inputs, "
        "Tensor unnormalized_widths, Tensor unnormalized_heights, "
        "Tensor unnormalized_derivatives, bool inverse, bool linear_tails, float left, "
        "float right, float bottom, float top, float min_bin_width, float min_bin_height, "
        "float min_derivative) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("affine_coupling(Tensor inputs, Tensor shift, Tensor unconstrained_scale, "
        "int activation, float clamp, bool inverse) -> (Tensor, Tensor)");
  m.def("affine_coupling_backward(Tensor grad_outputs, Tensor grad_logabsdet, Tensor inputs, "
        "Tensor shift, Tensor unconstrained_scale, int activation, float clamp, bool inverse) "
        "-> (Tensor, Tensor, Tensor)");
  // steps: genfast/ops/steps.py (single-step samplers with CFG / thresholding fused).
  // Codes and flags: csrc/include/genfast/steps.h. The step index is `index` (a
  // 0-d integer tensor on the device, read in-kernel) when given, else `step`.
  m.def("steps_step(Tensor sample, Tensor model_output, Tensor? uncond, Tensor? guidance, "
        "Tensor? noise, Tensor plan, Tensor? index, SymInt step, int sampler, int prediction, "
        "int variance, int flags, float[] params, SymInt seed, SymInt stream, "
        "SymInt sample_offset) -> (Tensor, Tensor)");
  // multistep: genfast/ops/multistep.py (dpmpp, unipc, heun, dpm_2, lms); math in
  // csrc/include/genfast/multistep.h. `state` (the sampler's history) is
  // read and updated in place; stage_plan is the plan's STAGE_COLUMNS table.
  def_inplace(m, "multistep_step(Tensor sample, Tensor model_output, Tensor? uncond, "
              "Tensor? guidance, Tensor? noise, Tensor(a!) state, Tensor plan, Tensor stage_plan, "
              "Tensor? index, SymInt step, int sampler, int stage, int prediction, int flags, "
              "float[] params, SymInt seed, SymInt stream, SymInt sample_offset) -> (Tensor, Tensor)");
  // introspection
  m.def("_cpu_isa(str request) -> str", &cpu_isa);
  m.def("_build_torch_version() -> str", &build_torch_version);
}

// In-place semantics for every def_inplace op, as ATen's own out= ops have
// them. (torch's autogradNotImplemented*Fallback kernels only look at returned
// aliases, and ours return nothing so that torch.compile can functionalize
// them.)
namespace {

template <typename Fn>
void for_each_tensor_arg(const c10::OperatorHandle& op, const torch::jit::Stack* stack,
                         bool written_only, const Fn& fn) {
  const auto& args = op.schema().arguments();
  const size_t start = stack->size() - args.size();
  for (size_t i = 0; i < args.size(); ++i) {
    const auto* alias = args[i].alias_info();
    const bool written = alias != nullptr && alias->isWrite();
    if (written_only && !written) continue;
    const c10::IValue& v = (*stack)[start + i];
    if (v.isTensor()) {
      fn(args[i].name(), v.toTensor(), written);
    } else if (v.isTensorList()) {
      for (const at::Tensor& t : v.toTensorVector()) fn(args[i].name(), t, written);
    }
  }
}

// ADInplaceOrView's part: refuse to write an inference tensor outside
// inference mode (before the kernel runs, so nothing is written), run the
// kernel, then bump the version counter of every written tensor, so that a
// tensor autograd saved for backward and refilled since is detected.
void write_and_bump(const c10::OperatorHandle& op, c10::DispatchKeySet ks,
                    torch::jit::Stack* stack) {
  c10::SmallVector<at::Tensor, 2> written;
  for_each_tensor_arg(op, stack, true, [&](const std::string& name, const at::Tensor& t, bool) {
    if (!t.defined()) return;
    TORCH_CHECK(!t.is_inference() || c10::InferenceMode::is_enabled(), op.schema().name(),
                ": argument '", name, "' is an inference tensor and cannot be written outside "
                "torch.inference_mode() (clone it first)");
    written.push_back(t);
  });
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    op.redispatchBoxed(ks & c10::after_ADInplaceOrView_keyset, stack);
  }
  for (const at::Tensor& t : written) torch::autograd::impl::bump_version(t);
}

void inplace_or_view_kernel(const c10::OperatorHandle& op, c10::DispatchKeySet ks,
                            torch::jit::Stack* stack) {
  write_and_bump(op, ks, stack);
}

// Autograd: these ops have no derivative, and a written tensor that requires
// grad would lose its history; refuse, as torch.randn(out=...) does. Under
// torch.no_grad() nothing is recorded, so anything goes. It then does the
// ADInplaceOrView part itself: one dispatcher hop less on every call (the
// ADInplaceOrView kernel still runs where Autograd is skipped).
void autograd_kernel(const c10::OperatorHandle& op, c10::DispatchKeySet ks,
                     torch::jit::Stack* stack) {
  if (c10::GradMode::is_enabled()) {
    for_each_tensor_arg(op, stack, false, [&](const std::string& name, const at::Tensor& t,
                                              bool written) {
      TORCH_CHECK(!t.defined() || !t.requires_grad(), op.schema().name(), ": argument '", name,
                  "' requires grad, but this op ", written ? "writes into it and " : "",
                  "does not support autograd; pass a tensor that does not require grad "
                  "(e.g. .detach()) or call it under torch.no_grad()");
    });
  }
  write_and_bump(op, ks, stack);
}

}  // namespace

TORCH_LIBRARY_IMPL(genfast, ADInplaceOrView, m) {
  for (const auto& name : inplace_ops()) {
    m.impl(name.c_str(), torch::CppFunction::makeFromBoxedFunction<&inplace_or_view_kernel>());
  }
}

TORCH_LIBRARY_IMPL(genfast, Autograd, m) {
  for (const auto& name : inplace_ops()) {
    m.impl(name.c_str(), torch::CppFunction::makeFromBoxedFunction<&autograd_kernel>());
  }
}
