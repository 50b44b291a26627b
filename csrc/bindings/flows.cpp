// CPU kernels of the flows family: argument checks, dtype handling, threads,
// ISA choice. Outputs are new contiguous tensors in the inputs' dtype.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <tuple>

#include "bindings/flows_args.h"
#include "cpu/flows_kernels.h"
#include "cpu/isa.h"
#include "genfast/coupling.h"

namespace genfast::bindings {
namespace {

using RqFn = void (*)(const cpu::RqArgs&, int64_t, int64_t);
using AffineFn = void (*)(const cpu::AffineArgs&, int64_t, int64_t);

struct FlowsKernels {
  RqFn rq[2][2];          // [backward][double]
  AffineFn affine[2][2];  // [backward][double]
};

#define GENFAST_FLOWS_TABLE(ISA)                                                    \
  FlowsKernels{{{cpu::ISA::rq_spline_f32, cpu::ISA::rq_spline_f64},                \
                {cpu::ISA::rq_spline_backward_f32, cpu::ISA::rq_spline_backward_f64}}, \
               {{cpu::ISA::affine_coupling_f32, cpu::ISA::affine_coupling_f64},    \
                {cpu::ISA::affine_coupling_backward_f32,                            \
                 cpu::ISA::affine_coupling_backward_f64}}}

FlowsKernels kernels() {
  switch (cpu::active_isa()) {
#if defined(GENFAST_HAVE_X86_ISAS)
    case cpu::Isa::kAvx512: return GENFAST_FLOWS_TABLE(avx512);
    case cpu::Isa::kAvx2: return GENFAST_FLOWS_TABLE(avx2);
#endif
    default: return GENFAST_FLOWS_TABLE(baseline);
  }
}
#undef GENFAST_FLOWS_TABLE

// Elements per task: a spline element costs ~K exps; aim at ~30 us of work, in
// whole blocks of 16 (the float32 kernel's lanes).
int64_t rq_grain(int64_t K) {
  return (std::max<int64_t>(64, 32768 / (3 * K + 1)) + 15) / 16 * 16;
}

// Work split: every thread takes the next `chunk` items from a shared counter
// until none are left, so a thread whose core is also busy with other work
// takes fewer chunks (a static split waits for the slowest thread). No item's
// result depends on the split.
template <typename F>
void dynamic_for(int64_t n, int64_t chunk, const F& fn) {
  if (n <= 0) return;
  const int64_t tasks = (n + chunk - 1) / chunk;
  const int64_t nt = std::min<int64_t>(at::get_num_threads(), tasks);
  if (nt <= 1 || at::in_parallel_region()) {
    fn(0, n);
    return;
  }
  std::atomic<int64_t> next{0};
  at::parallel_for(0, nt, 1, [&](int64_t, int64_t) {
    for (;;) {
      const int64_t b = next.fetch_add(chunk, std::memory_order_relaxed);
      if (b >= n) break;
      fn(b, std::min(n, b + chunk));
    }
  });
}
// Affine: elements per chunk of a row (rows are split so one huge item still
// uses every thread; the partial log-determinants are summed afterwards).
constexpr int64_t kAffineChunk = 16384;

// An upstream gradient that is one value broadcast over every element (the
// gradient of a plain .sum(), as an expand with all strides 0): the float32
// kernels read that value instead of a materialised copy of it.
bool is_broadcast(const at::Tensor& g, at::ScalarType ct) {
  if (ct != at::kFloat || g.scalar_type() != at::kFloat || g.numel() < 2) return false;
  for (const int64_t st : g.strides())
    if (st != 0) return false;
  return true;
}

// The tensor a kernel reads for g: its one value, or a contiguous copy.
at::Tensor grad_prep(const at::Tensor& g, at::ScalarType ct, bool broadcast) {
  return broadcast ? g.as_strided({1}, {1}) : flows_prep(g, ct);
}

cpu::RqArgs rq_args(int64_t K, bool inverse, bool linear_tails, double left, double right,
                    double bottom, double top, double min_w, double min_h, double min_d) {
  cpu::RqArgs a{};
  a.num_bins = K;
  a.inverse = inverse;
  a.linear_tails = linear_tails;
  a.left = left;
  a.right = right;
  a.bottom = bottom;
  a.top = top;
  a.min_bin_width = min_w;
  a.min_bin_height = min_h;
  a.min_derivative = min_d;
  return a;
}

std::tuple<at::Tensor, at::Tensor> rq_spline_cpu(
    const at::Tensor& inputs, const at::Tensor& uw, const at::Tensor& uh, const at::Tensor& ud,
    bool inverse, bool linear_tails, double left, double right, double bottom, double top,
    double min_w, double min_h, double min_d) {
  TORCH_CHECK(inputs.device().is_cpu(), "genfast rq_spline (CPU): inputs must be on the CPU");
  const int64_t K =
      check_rq(inputs, uw, uh, ud, linear_tails, left, right, bottom, top, min_w, min_h, min_d);
  const auto ct = flows_compute_type(inputs.scalar_type());
  const at::Tensor x = flows_prep(inputs, ct), w = flows_prep(uw, ct), h = flows_prep(uh, ct),
                   d = flows_prep(ud, ct);
  at::Tensor out = at::empty(inputs.sizes(), x.options());
  at::Tensor lad = at::empty(inputs.sizes(), x.options());
  cpu::RqArgs a = rq_args(K, inverse, linear_tails, left, right, bottom, top, min_w, min_h, min_d);
  a.in = x.data_ptr();
  a.uw = w.data_ptr();
  a.uh = h.data_ptr();
  a.ud = d.data_ptr();
  a.out = out.data_ptr();
  a.lad = lad.data_ptr();
  const RqFn fn = kernels().rq[0][ct == at::kDouble];
  dynamic_for(x.numel(), rq_grain(K), [&](int64_t b, int64_t e) { fn(a, b, e); });
  return {out.to(inputs.scalar_type()), lad.to(inputs.scalar_type())};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rq_spline_backward_cpu(
    const at::Tensor& g_out, const at::Tensor& g_lad, const at::Tensor& inputs,
    const at::Tensor& uw, const at::Tensor& uh, const at::Tensor& ud, bool inverse,
    bool linear_tails, double left, double right, double bottom, double top, double min_w,
    double min_h, double min_d) {
  TORCH_CHECK(inputs.device().is_cpu(), "genfast rq_spline_backward (CPU): inputs must be on the CPU");
  const int64_t K =
      check_rq(inputs, uw, uh, ud, linear_tails, left, right, bottom, top, min_w, min_h, min_d);
  TORCH_CHECK(g_out.sizes() == inputs.sizes() && g_lad.sizes() == inputs.sizes(),
              "genfast rq_spline_backward: gradients must have the shape of inputs");
  const auto ct = flows_compute_type(inputs.scalar_type());
  const at::Tensor x = flows_prep(inputs, ct), w = flows_prep(uw, ct), h = flows_prep(uh, ct),
                   d = flows_prep(ud, ct);
  const bool go_b = is_broadcast(g_out, ct), gl_b = is_broadcast(g_lad, ct);
  const at::Tensor go = grad_prep(g_out, ct, go_b), gl = grad_prep(g_lad, ct, gl_b);
  at::Tensor gx = at::empty(inputs.sizes(), x.options());
  at::Tensor gw = at::empty(uw.sizes(), x.options());
  at::Tensor gh = at::empty(uh.sizes(), x.options());
  at::Tensor gd = at::empty(ud.sizes(), x.options());
  cpu::RqArgs a = rq_args(K, inverse, linear_tails, left, right, bottom, top, min_w, min_h, min_d);
  a.in = x.data_ptr();
  a.uw = w.data_ptr();
  a.uh = h.data_ptr();
  a.ud = d.data_ptr();
  a.g_out = go.data_ptr();
  a.g_lad = gl.data_ptr();
  a.g_out_broadcast = go_b;
  a.g_lad_broadcast = gl_b;
  a.g_in = gx.data_ptr();
  a.g_uw = gw.data_ptr();
  a.g_uh = gh.data_ptr();
  a.g_ud = gd.data_ptr();
  const RqFn fn = kernels().rq[1][ct == at::kDouble];
  dynamic_for(x.numel(), rq_grain(K), [&](int64_t b, int64_t e) { fn(a, b, e); });
  const auto t = inputs.scalar_type();
  return {gx.to(t), gw.to(t), gh.to(t), gd.to(t)};
}

struct AffineLayout {
  int64_t rows, row_len, chunk, chunks_per_row;
};

AffineLayout affine_layout(const at::Tensor& inputs) {
  AffineLayout l;
  l.rows = inputs.size(0);
  l.row_len = l.rows == 0 ? 0 : inputs.numel() / l.rows;
  l.chunk = kAffineChunk;
  l.chunks_per_row = std::max<int64_t>(1, (l.row_len + kAffineChunk - 1) / kAffineChunk);
  return l;
}

cpu::AffineArgs affine_args(const AffineLayout& l, int64_t act, double clamp, bool inverse) {
  cpu::AffineArgs a{};
  a.row_len = l.row_len;
  a.chunk = l.chunk;
  a.chunks_per_row = l.chunks_per_row;
  a.act = static_cast<int>(act);
  a.clamp = clamp;
  a.inverse = inverse;
  return a;
}

std::tuple<at::Tensor, at::Tensor> affine_coupling_cpu(const at::Tensor& inputs,
                                                       const at::Tensor& shift,
                                                       const at::Tensor& u, int64_t act,
                                                       double clamp, bool inverse) {
  TORCH_CHECK(inputs.device().is_cpu(), "genfast affine_coupling (CPU): inputs must be on the CPU");
  check_affine(inputs, shift, u, act);
  const auto ct = flows_compute_type(inputs.scalar_type());
  const at::Tensor x = flows_prep(inputs, ct), s = flows_prep(shift, ct), v = flows_prep(u, ct);
  const AffineLayout l = affine_layout(inputs);
  at::Tensor out = at::empty(inputs.sizes(), x.options());
  at::Tensor part = at::empty({l.rows, l.chunks_per_row}, x.options());
  cpu::AffineArgs a = affine_args(l, act, clamp, inverse);
  a.in = x.data_ptr();
  a.shift = s.data_ptr();
  a.u = v.data_ptr();
  a.out = out.data_ptr();
  a.lad_partial = part.data_ptr();
  const AffineFn fn = kernels().affine[0][ct == at::kDouble];
  // tasks taken at a time: about kAffineChunk elements (a task is at most one row)
  const int64_t grain = std::max<int64_t>(1, kAffineChunk / std::max<int64_t>(1, l.row_len));
  dynamic_for(l.rows * l.chunks_per_row, grain, [&](int64_t b, int64_t e) { fn(a, b, e); });
  at::Tensor lad = l.chunks_per_row == 1 ? part.view({l.rows}) : part.sum(1);
  const auto t = inputs.scalar_type();
  return {out.to(t), lad.to(t)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> affine_coupling_backward_cpu(
    const at::Tensor& g_out, const at::Tensor& g_lad, const at::Tensor& inputs,
    const at::Tensor& shift, const at::Tensor& u, int64_t act, double clamp, bool inverse) {
  TORCH_CHECK(inputs.device().is_cpu(), "genfast affine_coupling_backward (CPU): inputs must be on the CPU");
  check_affine(inputs, shift, u, act);
  TORCH_CHECK(g_out.sizes() == inputs.sizes(), "genfast affine_coupling_backward: grad_outputs "
              "must have the shape of inputs");
  TORCH_CHECK(g_lad.dim() == 1 && g_lad.size(0) == inputs.size(0),
              "genfast affine_coupling_backward: grad_logabsdet must have shape (batch,)");
  const auto ct = flows_compute_type(inputs.scalar_type());
  const at::Tensor x = flows_prep(inputs, ct), s = flows_prep(shift, ct), v = flows_prep(u, ct),
                   gl = flows_prep(g_lad, ct);
  // (atan and tanh run on the scalar loops, which read a full g_out)
  const bool go_b = act != kActAtan && act != kActTanh && is_broadcast(g_out, ct);
  const at::Tensor go = grad_prep(g_out, ct, go_b);
  const AffineLayout l = affine_layout(inputs);
  at::Tensor gx = at::empty(inputs.sizes(), x.options());
  at::Tensor gs = at::empty(inputs.sizes(), x.options());
  at::Tensor gu = at::empty(inputs.sizes(), x.options());
  cpu::AffineArgs a = affine_args(l, act, clamp, inverse);
  a.in = x.data_ptr();
  a.shift = s.data_ptr();
  a.u = v.data_ptr();
  a.g_out = go.data_ptr();
  a.g_lad = gl.data_ptr();
  a.g_out_broadcast = go_b;
  a.g_in = gx.data_ptr();
  a.g_shift = gs.data_ptr();
  a.g_u = gu.data_ptr();
  const AffineFn fn = kernels().affine[1][ct == at::kDouble];
  const int64_t grain = std::max<int64_t>(1, kAffineChunk / std::max<int64_t>(1, l.row_len));
  dynamic_for(l.rows * l.chunks_per_row, grain, [&](int64_t b, int64_t e) { fn(a, b, e); });
  const auto t = inputs.scalar_type();
  return {gx.to(t), gs.to(t), gu.to(t)};
}

}  // namespace
}  // namespace genfast::bindings

TORCH_LIBRARY_IMPL(genfast, CPU, m) {
  m.impl("rq_spline", &genfast::bindings::rq_spline_cpu);
  m.impl("rq_spline_backward", &genfast::bindings::rq_spline_backward_cpu);
  m.impl("affine_coupling", &genfast::bindings::affine_coupling_cpu);
  m.impl("affine_coupling_backward", &genfast::bindings::affine_coupling_backward_cpu);
}
