// Eager entry points: genfast._C, a Python module over the same library.
//
// A registered op called from Python (torch.ops.genfast.x.default(...)) goes
// through the boxed path: every argument is converted to an IValue against the
// schema, pushed on a stack, and unboxed again for the kernel. For the step
// ops (16 to 18 arguments, a float list among them) that costs 7-12 us per
// call on the 2-core CI machine, as much as the whole kernel for one Stable
// Diffusion latent. The functions here take typed arguments through pybind11
// and call the same op through its typed dispatcher handle, so dispatch
// (CPU / CUDA kernels, the in-place Autograd kernels of def_inplace ops,
// Python modes on tensor subclasses) is unchanged; only the boxing is gone.
//
// Python uses them on the eager fast paths only (genfast/ops/steps.py,
// genfast/ops/multistep.py: plain tensors, no torch function mode, not
// tracing); torch.compile and everything else see the registered op.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/utils/pybind.h>

#include <string.h>

#include <optional>
#include <tuple>
#include <vector>

namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;
using Pair = std::tuple<Tensor, Tensor>;

// The schemas' SymInt arguments are passed as SymInt: the dispatcher unpacks
// them for kernels registered with int64_t (all of ours).
using StepsSig = Pair(const Tensor&, const Tensor&, const OptTensor&, const OptTensor&,
                      const OptTensor&, const Tensor&, const OptTensor&, c10::SymInt, int64_t,
                      int64_t, int64_t, int64_t, at::ArrayRef<double>, c10::SymInt, c10::SymInt,
                      c10::SymInt);
using MultistepSig = Pair(const Tensor&, const Tensor&, const OptTensor&, const OptTensor&,
                          const OptTensor&, const Tensor&, const Tensor&, const Tensor&,
                          const OptTensor&, c10::SymInt, int64_t, int64_t, int64_t, int64_t,
                          at::ArrayRef<double>, c10::SymInt, c10::SymInt, c10::SymInt);

template <typename Sig>
const c10::TypedOperatorHandle<Sig>& handle(const char* name) {
  // one lookup per op and process (the registration outlives every call)
  return *new c10::TypedOperatorHandle<Sig>(
      c10::Dispatcher::singleton().findSchemaOrThrow(name, "").template typed<Sig>());
}

Pair steps_step(const Tensor& sample, const Tensor& model_output, const OptTensor& uncond,
                const OptTensor& guidance, const OptTensor& noise, const Tensor& plan,
                const OptTensor& index, int64_t step, int64_t sampler, int64_t prediction,
                int64_t variance, int64_t flags, const std::vector<double>& params,
                int64_t seed, int64_t stream, int64_t sample_offset) {
  static const auto& op = handle<StepsSig>("genfast::steps_step");
  return op.call(sample, model_output, uncond, guidance, noise, plan, index, c10::SymInt(step),
                 sampler, prediction, variance, flags, params, c10::SymInt(seed),
                 c10::SymInt(stream), c10::SymInt(sample_offset));
}

Pair multistep_step(const Tensor& sample, const Tensor& model_output, const OptTensor& uncond,
                    const OptTensor& guidance, const OptTensor& noise, const Tensor& state,
                    const Tensor& plan, const Tensor& stage_plan, const OptTensor& index,
                    int64_t step, int64_t sampler, int64_t stage, int64_t prediction,
                    int64_t flags, const std::vector<double>& params, int64_t seed,
                    int64_t stream, int64_t sample_offset) {
  static const auto& op = handle<MultistepSig>("genfast::multistep_step");
  return op.call(sample, model_output, uncond, guidance, noise, state, plan, stage_plan, index,
                 c10::SymInt(step), sampler, stage, prediction, flags, params,
                 c10::SymInt(seed), c10::SymInt(stream), c10::SymInt(sample_offset));
}

// A sampling loop's step with everything but the step index, the model
// output and the sample bound once: what genfast.sample calls per model
// evaluation. Four arguments to convert instead of eighteen (the float list
// among them) saves ~2 us a step; the op, its dispatch and its checks are
// the same as multistep_step's / steps_step's.
struct MultistepLoop {
  Tensor state, plan, stage_plan;
  int64_t sampler, prediction, flags;
  std::vector<double> params;
  int64_t seed, stream, sample_offset;

  Tensor operator()(int64_t step, int64_t stage, const Tensor& model_output,
                    const Tensor& sample) const {
    static const auto& op = handle<MultistepSig>("genfast::multistep_step");
    return std::get<0>(op.call(sample, model_output, std::nullopt, std::nullopt, std::nullopt,
                               state, plan, stage_plan, std::nullopt, c10::SymInt(step), sampler,
                               stage, prediction, flags, params, c10::SymInt(seed),
                               c10::SymInt(stream), c10::SymInt(sample_offset)));
  }
};

struct StepsLoop {
  Tensor plan;
  int64_t sampler, prediction, flags;
  std::vector<double> params;
  int64_t seed, stream, sample_offset;

  Tensor operator()(int64_t step, int64_t /*stage*/, const Tensor& model_output,
                    const Tensor& sample) const {
    static const auto& op = handle<StepsSig>("genfast::steps_step");
    return std::get<0>(op.call(sample, model_output, std::nullopt, std::nullopt, std::nullopt,
                               plan, std::nullopt, c10::SymInt(step), sampler, prediction, 0,
                               flags, params, c10::SymInt(seed), c10::SymInt(stream),
                               c10::SymInt(sample_offset)));
  }
};

// Zero a small contiguous CPU tensor on the calling thread. torch.zeros
// fills anything over 32K elements in a parallel region; for the history
// buffer of one latent (3 x 16K floats) that region costs more than the
// memset, and on a loaded machine it waits for the second thread's time
// slice (milliseconds). Large buffers keep torch.zeros (genfast/ops/multistep.py).
void zero_serial(const Tensor& t) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous(),
              "zero_serial: t must be a contiguous CPU tensor");
  if (t.numel() > 0) memset(t.data_ptr(), 0, t.nbytes());
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "genfast's eager entry points (see csrc/bindings/eager.cpp); the ops themselves "
            "are torch.ops.genfast.*";
  // The GIL is released around the kernels, as torch.ops calls do.
  m.def("steps_step", &steps_step, pybind11::call_guard<pybind11::gil_scoped_release>());
  m.def("multistep_step", &multistep_step,
        pybind11::call_guard<pybind11::gil_scoped_release>());
  m.def("zero_serial", &zero_serial);
  namespace py = pybind11;
  py::class_<MultistepLoop>(m, "MultistepLoop")
      .def(py::init<Tensor, Tensor, Tensor, int64_t, int64_t, int64_t, std::vector<double>,
                    int64_t, int64_t, int64_t>(),
           py::arg("state"), py::arg("plan"), py::arg("stage_plan"), py::arg("sampler"),
           py::arg("prediction"), py::arg("flags"), py::arg("params"), py::arg("seed"),
           py::arg("stream"), py::arg("sample_offset"))
      .def("__call__", &MultistepLoop::operator(), py::call_guard<py::gil_scoped_release>());
  py::class_<StepsLoop>(m, "StepsLoop")
      .def(py::init<Tensor, int64_t, int64_t, int64_t, std::vector<double>, int64_t, int64_t,
                    int64_t>(),
           py::arg("plan"), py::arg("sampler"), py::arg("prediction"), py::arg("flags"),
           py::arg("params"), py::arg("seed"), py::arg("stream"), py::arg("sample_offset"))
      .def("__call__", &StepsLoop::operator(), py::call_guard<py::gil_scoped_release>());
}
