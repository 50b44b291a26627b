// CPU kernels of the noise family: argument checks, threads, ISA choice.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "bindings/noise_args.h"
#include "cpu/isa.h"
#include "cpu/noise_kernels.h"

namespace genfast::bindings {
namespace {

struct NoiseKernels {
  void (*normal_fill)(const cpu::NormalFillArgs&, int64_t, int64_t);
  void (*philox)(const uint32_t*, uint32_t*, int64_t, uint32_t, uint32_t);
};

// The kernels of the active ISA level (csrc/cpu/isa.h).
NoiseKernels kernels() {
  switch (cpu::active_isa()) {
#if defined(GENFAST_HAVE_X86_ISAS)
    case cpu::Isa::kAvx512: return {cpu::avx512::normal_fill, cpu::avx512::philox};
    case cpu::Isa::kAvx2: return {cpu::avx2::normal_fill, cpu::avx2::philox};
#endif
    default: return {cpu::baseline::normal_fill, cpu::baseline::philox};
  }
}

// ~16K normals per task: below that a second thread costs more than it saves.
constexpr int64_t kQuadGrain = 4096;

void fill_contiguous(at::Tensor& out, const NoiseLayout& l) {
  cpu::NormalFillArgs args{out.data_ptr(), dtype_code(out.scalar_type()), l.item_numel,
                           l.quads_per_item, l.k0, l.k1, l.stream, l.sample_offset};
  const auto fill = kernels().normal_fill;
  at::parallel_for(0, l.items * l.quads_per_item, kQuadGrain,
                   [&](int64_t begin, int64_t end) { fill(args, begin, end); });
}

void noise_normal_cpu(at::Tensor out, int64_t seed, int64_t stream, int64_t sample_offset) {
  TORCH_CHECK(out.device().is_cpu(), "genfast noise_normal (CPU): out must be on the CPU");
  dtype_code(out.scalar_type());
  const NoiseLayout l = noise_layout(out, seed, stream, sample_offset);
  if (out.numel() == 0) return;
  fill_in_logical_order(out, [&](at::Tensor& t) { fill_contiguous(t, l); });
}

at::Tensor noise_philox_cpu(const at::Tensor& counter, int64_t seed) {
  check_counter(counter);
  TORCH_CHECK(counter.device().is_cpu(), "genfast noise_philox (CPU): counter must be on the CPU");
  const at::Tensor c = counter.contiguous();
  at::Tensor words = at::empty_like(c);
  const int64_t n = c.numel() / 4;
  const uint64_t s = static_cast<uint64_t>(seed);
  const auto philox = kernels().philox;
  const auto* src = reinterpret_cast<const uint32_t*>(c.data_ptr<int32_t>());
  auto* dst = reinterpret_cast<uint32_t*>(words.data_ptr<int32_t>());
  at::parallel_for(0, n, kQuadGrain, [&](int64_t begin, int64_t end) {
    philox(src + 4 * begin, dst + 4 * begin, end - begin, static_cast<uint32_t>(s),
           static_cast<uint32_t>(s >> 32));
  });
  return words;
}

}  // namespace
}  // namespace genfast::bindings

TORCH_LIBRARY_IMPL(genfast, CPU, m) {
  m.impl("noise_normal", &genfast::bindings::noise_normal_cpu);
  m.impl("noise_philox", &genfast::bindings::noise_philox_cpu);
}
