// Portability macros shared by host (C++) and device (CUDA) code.
#pragma once

// Every per-element function in csrc/include/genfast is GENFAST_HD: callable from
// the CPU loops and the CUDA kernels alike. On the host it is `static inline`:
// internal linkage matters because the CPU kernels are compiled once per ISA
// (baseline / AVX2 / AVX-512) into one library; with external (COMDAT) linkage
// the linker could keep the AVX-512 copy of a helper and call it from the
// baseline path, which would fault on a CPU without AVX-512.
#if defined(__CUDACC__)
#define GENFAST_HD static __host__ __device__ __forceinline__
#else
#define GENFAST_HD static inline __attribute__((always_inline))
#endif

// sqrt that is correctly rounded on both sides (IEEE): nvcc's default
// -prec-sqrt=true; on the host the kernels build with -fno-math-errno so the
// builtin becomes one vector instruction.
#if defined(__CUDACC__)
#define GENFAST_SQRTF(x) sqrtf(x)
#else
#define GENFAST_SQRTF(x) __builtin_sqrtf(x)
#endif
