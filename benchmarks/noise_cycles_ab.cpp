// Cycles per normal of the CPU noise kernel, two builds side by side in one
// process: normal_fill of namespace `a` (a baseline revision's noise.cpp)
// and of `b` (the working tree's), called alternately on the same arguments,
// single thread, so machine noise hits both alike. Build and run with
// benchmarks/noise_cycles.sh. Prints per-call minima and the median of the
// per-pair ratios b / a (below 1: b is faster).
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <algorithm>
#include <vector>

#include "noise_kernels.h"

namespace genfast::cpu {
namespace a { void normal_fill(const NormalFillArgs&, int64_t, int64_t); }
namespace b { void normal_fill(const NormalFillArgs&, int64_t, int64_t); }
}  // namespace genfast::cpu

using namespace genfast::cpu;

static double now() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

int main(int argc, char** argv) {
  const int reps = argc > 1 ? atoi(argv[1]) : 2000;
  const int64_t elems = argc > 2 ? atol(argv[2]) : 16384;  // per call (16K: L2-resident)
  const double ghz = argc > 3 ? atof(argv[3]) : 2.45;      // to turn seconds into cycles
  const int64_t numel = 4 * 128 * 128;                     // one SDXL latent item
  std::vector<float> out(((elems + numel - 1) / numel) * numel);
  std::vector<double> ta, tb, r;
  for (int i = 0; i < reps; ++i) {
    const NormalFillArgs f{out.data(), 0, numel, numel / 4, 0x12345678u, 0x9abcdefu, 7u,
                           static_cast<uint32_t>(i)};
    double s = now();
    a::normal_fill(f, 0, elems / 4);
    const double t1 = now() - s;
    s = now();
    b::normal_fill(f, 0, elems / 4);
    const double t2 = now() - s;
    ta.push_back(t1);
    tb.push_back(t2);
    r.push_back(t2 / t1);
  }
  std::sort(ta.begin(), ta.end());
  std::sort(tb.begin(), tb.end());
  std::sort(r.begin(), r.end());
  const double k = ghz * 1e9 / elems;
  printf("%ld normals per call, %d pairs: a min %.2f p25 %.2f | b min %.2f p25 %.2f "
         "cycles/normal at %.2f GHz | b/a: min %.3f, median of pair ratios %.3f\n",
         static_cast<long>(elems), reps, ta[0] * k, ta[reps / 4] * k, tb[0] * k, tb[reps / 4] * k,
         ghz, tb[0] / ta[0], r[reps / 2]);
}
