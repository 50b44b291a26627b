#include "isa.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace genfast::cpu {

namespace {
constexpr const char* kNames[] = {"baseline", "avx2", "avx512"};

// Start from the best level, or from GENFAST_CPU_ISA when it names a usable one
// (lets a user pin the portable path, and tests compare the paths).
Isa initial_isa() {
  const char* env = std::getenv("GENFAST_CPU_ISA");
  Isa isa;
  if (env != nullptr && isa_from_name(env, &isa) && isa_supported(isa)) return isa;
  return best_isa();
}

std::atomic<int>& active() {
  static std::atomic<int> value{static_cast<int>(initial_isa())};
  return value;
}
}  // namespace

const char* isa_name(Isa isa) { return kNames[static_cast<int>(isa)]; }

bool isa_from_name(const char* name, Isa* out) {
  for (int i = 0; i < 3; ++i) {
    if (std::strcmp(name, kNames[i]) == 0) {
      *out = static_cast<Isa>(i);
      return true;
    }
  }
  return false;
}

bool isa_compiled(Isa isa) {
#if defined(GENFAST_HAVE_X86_ISAS)
  (void)isa;
  return true;
#else
  return isa == Isa::kBaseline;
#endif
}

bool isa_supported(Isa isa) {
  if (!isa_compiled(isa)) return false;
#if defined(GENFAST_HAVE_X86_ISAS)
  switch (isa) {
    case Isa::kBaseline:
      return true;
    case Isa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             __builtin_cpu_supports("f16c");
    case Isa::kAvx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
             isa_supported(Isa::kAvx2);
  }
#endif
  return isa == Isa::kBaseline;
}

Isa best_isa() {
  for (int i = 2; i > 0; --i) {
    if (isa_supported(static_cast<Isa>(i))) return static_cast<Isa>(i);
  }
  return Isa::kBaseline;
}

Isa active_isa() { return static_cast<Isa>(active().load(std::memory_order_relaxed)); }

bool set_active_isa(Isa isa) {
  if (!isa_supported(isa)) return false;
  active().store(static_cast<int>(isa), std::memory_order_relaxed);
  return true;
}

}  // namespace genfast::cpu
