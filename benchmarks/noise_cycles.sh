#!/usr/bin/env bash
# Cycles per normal of the CPU noise kernel (csrc/cpu/noise.cpp), a baseline
# revision against the working tree, interleaved in one process (see
# benchmarks/noise_cycles_ab.cpp). Compiled with the flags of the CMake ISA
# build; torch-free.
#   benchmarks/noise_cycles.sh [REV=HEAD~1] [ISA=avx2] [reps] [normals per call]
set -euo pipefail
rev=${1:-HEAD~1}
isa=${2:-avx2}
root=$(git rev-parse --show-toplevel)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/base"
for f in noise.cpp noise_kernels.h philox_simd.h; do
  git -C "$root" show "$rev:csrc/cpu/$f" > "$tmp/base/$f"
done
case $isa in
  avx2) flags="-mavx2 -mfma -mf16c" ;;
  avx512) flags="-mavx2 -mfma -mf16c -mavx512f -mavx512dq -mavx512bw -mavx512vl -mprefer-vector-width=512" ;;
  baseline) flags="" ;;
  *) echo "ISA must be baseline, avx2 or avx512" >&2; exit 2 ;;
esac
cxx=${CXX:-g++}
common="-O3 -std=c++20 -fno-math-errno -fno-trapping-math -ffp-contract=off $flags"
# CMakeLists.txt builds noise.cpp with GCC's pre-allocation scheduler on
if $cxx --version 2>/dev/null | grep -qi "gcc\|g++\|free software"; then
  common="$common -fschedule-insns -fsched-pressure"
fi
# rev's header tree: noise.h / philox.h may differ between the two revisions too
mkdir -p "$tmp/inc"
git -C "$root" archive "$rev" csrc/include | tar -x -C "$tmp/inc"
$cxx $common -DGENFAST_CPU_ISA=a -I "$tmp/inc/csrc/include" -I "$tmp/base" -c "$tmp/base/noise.cpp" -o "$tmp/a.o"
$cxx $common -DGENFAST_CPU_ISA=b -I "$root/csrc/include" -I "$root/csrc/cpu" -c "$root/csrc/cpu/noise.cpp" -o "$tmp/b.o"
$cxx $common -I "$root/csrc/cpu" "$root/benchmarks/noise_cycles_ab.cpp" "$tmp/a.o" "$tmp/b.o" -o "$tmp/ab"
"$tmp/ab" "${3:-2000}" "${4:-16384}"
