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
  // introspection
  m.def("_cpu_isa(str request) -> str", &cpu_isa);
  m.def("_build_torch_version() -> str", &build_torch_version);
}
