// Launchers of the training family's CUDA kernels: raw pointers and a stream,
// no torch (training.cu compiles with nvcc alone). dtype: genfast::DType
// (float32 / float16 / bfloat16); timesteps dtype: 0 int64, 1 int32, 2 float32,
// 3 float64. Codes of kind / prediction / weighting / reduction: training.h.
// Out-of-range timesteps: NaN in every output element of that item.
#pragma once
#include <cuda_runtime.h>
#include <stdint.h>

namespace genfast::cuda {

struct TimestepArgs {
  const void* t;
  int t_dtype;
  const double* table;  // (rows, 4) float64
  int64_t rows;
  int kind;
};

// out1 = a x + b y, out2 = c x + d y (add_noise forward with given noise, wrt = -1),
// or the backward wrt x0 (wrt = 0) / noise (wrt = 1): out1 = k x + k' y.
// y / out2 may be null.
cudaError_t launch_add_noise(const void* x, const void* y, void* out1, void* out2, int dtype,
                             int64_t items, int64_t numel, const TimestepArgs& ts, int prediction,
                             int wrt, cudaStream_t stream);

// Seeded: noise = the stream's normals (genfast.randn bits), then as above;
// target may be null (epsilon: the caller's target is the noise), then it is skipped.
cudaError_t launch_add_noise_seeded(const void* x0, void* x_t, void* noise, void* target,
                                    int dtype, int64_t items, int64_t numel,
                                    const TimestepArgs& ts, int prediction, uint32_t k0,
                                    uint32_t k1, uint32_t noise_stream, uint32_t sample_offset,
                                    cudaStream_t stream);

// Per-item reductions: weighted mean squared error (kl = false) or KL sum
// (kl = true; ts ignored). `partials`: items * chunks doubles of scratch,
// chunks = reduce_chunks(numel). out: float32 (items,) or 0-d.
int64_t reduce_chunks(int64_t numel);
cudaError_t launch_item_reduce(const void* a, const void* b, int dtype, int64_t items,
                               int64_t numel, bool kl, const TimestepArgs* ts, int weighting,
                               int prediction, double gamma, double sigma_data, int reduction,
                               double* partials, float* out, cudaStream_t stream);

// Backward of the reductions: g (float32, (items,) or 0-d) ->
//   loss: out1 = 2 w_i g_i (a - b) / numel (/ items for mean)
//   kl:   out1 = g_i a, out2 = g_i (exp(clamp b) - 1) / 2 inside the clamp
cudaError_t launch_item_reduce_backward(const float* g, const void* a, const void* b, void* out1,
                                        void* out2, int dtype, int64_t items, int64_t numel,
                                        bool kl, const TimestepArgs* ts, int weighting,
                                        int prediction, double gamma, double sigma_data,
                                        int reduction, cudaStream_t stream);

// z = mu + d, d = exp(clamp(lv)/2) eps (eps: the stream's normals); d is
// written to `eps` for the backward.
cudaError_t launch_reparameterize(const void* mu, const void* logvar, void* z, void* eps,
                                  int dtype, int64_t items, int64_t numel, uint32_t k0,
                                  uint32_t k1, uint32_t noise_stream, uint32_t sample_offset,
                                  cudaStream_t stream);
// g_lv = g d / 2 inside the clamp (`eps` holds d).
cudaError_t launch_reparameterize_backward(const void* g, const void* logvar, const void* eps,
                                           void* out, int dtype, int64_t total,
                                           cudaStream_t stream);

}  // namespace genfast::cuda
