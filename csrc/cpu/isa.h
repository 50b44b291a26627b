// CPU instruction-set levels the kernels are built for, and run-time choice
// among them. Each kernel file under csrc/cpu is compiled once per level into
// namespace genfast::cpu::<level>; the bindings call through `active_isa()`.
#pragma once

namespace genfast::cpu {

enum class Isa : int { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };

const char* isa_name(Isa isa);
bool isa_from_name(const char* name, Isa* out);
bool isa_compiled(Isa isa);   // this build has kernels for it
bool isa_supported(Isa isa);  // ... and this CPU can run them
Isa best_isa();
Isa active_isa();
// Returns false (and changes nothing) when `isa` is not compiled or supported.
bool set_active_isa(Isa isa);

}  // namespace genfast::cpu
