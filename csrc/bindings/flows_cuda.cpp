// CUDA kernels of the flows family: argument checks, dtype handling, device
// guard, stream. Same contract as the CPU bindings (flows.cpp).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "bindings/flows_args.h"
#include "cuda/flows.cuh"

namespace genfast::bindings {
namespace {

cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

cuda::RqLaunch rq_launch(int64_t n, int64_t K, bool inverse, bool linear_tails, double left,
                         double right, double bottom, double top, double min_w, double min_h,
                         double min_d) {
  cuda::RqLaunch a{};
  a.n = n;
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

std::tuple<at::Tensor, at::Tensor> rq_spline_cuda(
    const at::Tensor& inputs, const at::Tensor& uw, const at::Tensor& uh, const at::Tensor& ud,
    bool inverse, bool linear_tails, double left, double right, double bottom, double top,
    double min_w, double min_h, double min_d) {
  TORCH_CHECK(inputs.is_cuda(), "genfast rq_spline (CUDA): inputs must be a CUDA tensor");
  const int64_t K =
      check_rq(inputs, uw, uh, ud, linear_tails, left, right, bottom, top, min_w, min_h, min_d);
  const c10::cuda::CUDAGuard guard(inputs.device());
  const auto ct = flows_compute_type(inputs.scalar_type());
  const at::Tensor x = flows_prep(inputs, ct), w = flows_prep(uw, ct), h = flows_prep(uh, ct),
                   d = flows_prep(ud, ct);
  at::Tensor out = at::empty(inputs.sizes(), x.options());
  at::Tensor lad = at::empty(inputs.sizes(), x.options());
  cuda::RqLaunch a = rq_launch(x.numel(), K, inverse, linear_tails, left, right, bottom, top,
                               min_w, min_h, min_d);
  a.in = x.data_ptr();
  a.uw = w.data_ptr();
  a.uh = h.data_ptr();
  a.ud = d.data_ptr();
  a.out = out.data_ptr();
  a.lad = lad.data_ptr();
  C10_CUDA_CHECK(cuda::launch_rq_spline(a, ct == at::kDouble, current_stream()));
  return {out.to(inputs.scalar_type()), lad.to(inputs.scalar_type())};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rq_spline_backward_cuda(
    const at::Tensor& g_out, const at::Tensor& g_lad, const at::Tensor& inputs,
    const at::Tensor& uw, const at::Tensor& uh, const at::Tensor& ud, bool inverse,
    bool linear_tails, double left, double right, double bottom, double top, double min_w,
    double min_h, double min_d) {
  TORCH_CHECK(inputs.is_cuda(), "genfast rq_spline_backward (CUDA): inputs must be a CUDA tensor");
  const int64_t K =
      check_rq(inputs, uw, uh, ud, linear_tails, left, right, bottom, top, min_w, min_h, min_d);
  TORCH_CHECK(g_out.sizes() == inputs.sizes() && g_lad.sizes() == inputs.sizes(),
              "genfast rq_spline_backward: gradients must have the shape of inputs");
  const c10::cuda::CUDAGuard guard(inputs.device());
  const auto ct = flows_compute_type(inputs.scalar_type());
  const at::Tensor x = flows_prep(inputs, ct), w = flows_prep(uw, ct), h = flows_prep(uh, ct),
                   d = flows_prep(ud, ct), go = flows_prep(g_out, ct), gl = flows_prep(g_lad, ct);
  at::Tensor gx = at::empty(inputs.sizes(), x.options());
  at::Tensor gw = at::empty(uw.sizes(), x.options());
  at::Tensor gh = at::empty(uh.sizes(), x.options());
  at::Tensor gd = at::empty(ud.sizes(), x.options());
  cuda::RqLaunch a = rq_launch(x.numel(), K, inverse, linear_tails, left, right, bottom, top,
                               min_w, min_h, min_d);
  a.in = x.data_ptr();
  a.uw = w.data_ptr();
  a.uh = h.data_ptr();
  a.ud = d.data_ptr();
  a.g_out = go.data_ptr();
  a.g_lad = gl.data_ptr();
  a.g_in = gx.data_ptr();
  a.g_uw = gw.data_ptr();
  a.g_uh = gh.data_ptr();
  a.g_ud = gd.data_ptr();
  C10_CUDA_CHECK(cuda::launch_rq_spline_backward(a, ct == at::kDouble, current_stream()));
  const auto t = inputs.scalar_type();
  return {gx.to(t), gw.to(t), gh.to(t), gd.to(t)};
}

std::tuple<at::Tensor, at::Tensor> affine_coupling_cuda(const at::Tensor& inputs,
                                                        const at::Tensor& shift,
                                                        const at::Tensor& u, int64_t act,
                                                        double clamp, bool inverse) {
  TORCH_CHECK(inputs.is_cuda(), "genfast affine_coupling (CUDA): inputs must be a CUDA tensor");
  check_affine(inputs, shift, u, act);
  const c10::cuda::CUDAGuard guard(inputs.device());
  const auto ct = flows_compute_type(inputs.scalar_type());
  const at::Tensor x = flows_prep(inputs, ct), s = flows_prep(shift, ct), v = flows_prep(u, ct);
  const int64_t rows = inputs.size(0);
  const int64_t row_len = rows == 0 ? 0 : inputs.numel() / rows;
  const int64_t chunks = std::max<int64_t>(1, (row_len + cuda::kAffineChunk - 1) / cuda::kAffineChunk);
  at::Tensor out = at::empty(inputs.sizes(), x.options());
  at::Tensor part = at::zeros({rows, chunks}, x.options());
  cuda::AffineLaunch a{};
  a.in = x.data_ptr();
  a.shift = s.data_ptr();
  a.u = v.data_ptr();
  a.out = out.data_ptr();
  a.lad_partial = part.data_ptr();
  a.rows = rows;
  a.row_len = row_len;
  a.act = static_cast<int>(act);
  a.clamp = clamp;
  a.inverse = inverse;
  C10_CUDA_CHECK(cuda::launch_affine_coupling(a, ct == at::kDouble, current_stream()));
  const auto t = inputs.scalar_type();
  return {out.to(t), (chunks == 1 ? part.view({rows}) : part.sum(1)).to(t)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> affine_coupling_backward_cuda(
    const at::Tensor& g_out, const at::Tensor& g_lad, const at::Tensor& inputs,
    const at::Tensor& shift, const at::Tensor& u, int64_t act, double clamp, bool inverse) {
  TORCH_CHECK(inputs.is_cuda(), "genfast affine_coupling_backward (CUDA): inputs must be a CUDA tensor");
  check_affine(inputs, shift, u, act);
  TORCH_CHECK(g_out.sizes() == inputs.sizes(), "genfast affine_coupling_backward: grad_outputs "
              "must have the shape of inputs");
  TORCH_CHECK(g_lad.dim() == 1 && g_lad.size(0) == inputs.size(0),
              "genfast affine_coupling_backward: grad_logabsdet must have shape (batch,)");
  const c10::cuda::CUDAGuard guard(inputs.device());
  const auto ct = flows_compute_type(inputs.scalar_type());
  const at::Tensor x = flows_prep(inputs, ct), s = flows_prep(shift, ct), v = flows_prep(u, ct),
                   go = flows_prep(g_out, ct), gl = flows_prep(g_lad, ct);
  at::Tensor gx = at::empty(inputs.sizes(), x.options());
  at::Tensor gs = at::empty(inputs.sizes(), x.options());
  at::Tensor gu = at::empty(inputs.sizes(), x.options());
  cuda::AffineLaunch a{};
  a.in = x.data_ptr();
  a.shift = s.data_ptr();
  a.u = v.data_ptr();
  a.g_out = go.data_ptr();
  a.g_lad = gl.data_ptr();
  a.g_in = gx.data_ptr();
  a.g_shift = gs.data_ptr();
  a.g_u = gu.data_ptr();
  a.rows = inputs.size(0);
  a.row_len = a.rows == 0 ? 0 : inputs.numel() / a.rows;
  a.act = static_cast<int>(act);
  a.clamp = clamp;
  a.inverse = inverse;
  C10_CUDA_CHECK(cuda::launch_affine_coupling_backward(a, ct == at::kDouble, current_stream()));
  const auto t = inputs.scalar_type();
  return {gx.to(t), gs.to(t), gu.to(t)};
}

}  // namespace
}  // namespace genfast::bindings

TORCH_LIBRARY_IMPL(genfast, CUDA, m) {
  m.impl("rq_spline", &genfast::bindings::rq_spline_cuda);
  m.impl("rq_spline_backward", &genfast::bindings::rq_spline_backward_cuda);
  m.impl("affine_coupling", &genfast::bindings::affine_coupling_cuda);
  m.impl("affine_coupling_backward", &genfast::bindings::affine_coupling_backward_cuda);
}
