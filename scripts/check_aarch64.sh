#!/usr/bin/env bash
# The aarch64 build, checked without ARM hardware: Debian's cross compiler builds the C++ core
# (every ISA-free source: the engine, the formats, the MoE operator, the generic tier's kernels)
# with the MoE test driver tests/cpp/moe_check.cpp, and Debian's qemu-user runs it on
# CPU models with and without dotprod, i8mm, bf16 and SVE (vector lengths 128, 256 and 512 bits):
# the driver checks every weight format's layer against an fp64 layer, this script checks that the
# features each model reports are the ones it has, and that the aarch64 build's outputs are bit for
# bit those of the same sources built for x86-64 without its tiers.
#   sudo apt-get install g++-aarch64-linux-gnu qemu-user      # once
#   bash scripts/check_aarch64.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CXX=${CXX_AARCH64:-aarch64-linux-gnu-g++}
QEMU=${QEMU_AARCH64:-qemu-aarch64}
for tool in "$CXX" "$QEMU"; do
  command -v "$tool" >/dev/null || { echo "check_aarch64: $tool not found (apt-get install g++-aarch64-linux-gnu qemu-user)" >&2; exit 2; }
done
BUILD=build/aarch64
mkdir -p "$BUILD"
SOURCES=$(ls cpp/src/cpu/*.cpp cpp/src/runtime/*.cpp cpp/src/formats/*.cpp cpp/src/moe/*.cpp cpp/src/probe/*.cpp \
  cpp/src/kernels/*.cpp cpp/src/kernels/ref/*.cpp cpp/src/kernels/amx_emu/tile_emu.cpp)
# the flags CMakeLists.txt gives the same sources (int4_g32.cpp's -ffp-contract=off included)
"$CXX" -std=c++20 -O2 -Wall -Wextra -Wno-unused-parameter -fno-math-errno -ffp-contract=off -Icpp/include -Icpp/src -Icpp \
  $SOURCES tests/cpp/moe_check.cpp -o "$BUILD/moe_check" -pthread -ldl
SYSROOT=${AARCH64_SYSROOT:-/usr/aarch64-linux-gnu}  # Debian's aarch64 libc and libstdc++ for qemu
export QEMU_LD_PREFIX=$SYSROOT
# CPU model -> the features it must report (qemu's names; "max" has every feature qemu emulates)
declare -A MODELS=(
  [cortex-a53]="asimd"
  [cortex-a76]="asimd asimddp"
  [max,sve=off]="asimd asimddp i8mm bf16"
  [max,sve128=on]="asimd asimddp i8mm bf16 sve sve2"
  [max,sve256=on]="asimd asimddp i8mm bf16 sve sve2"
  [max,sve512=on]="asimd asimddp i8mm bf16 sve sve2"
)
declare -A VL=([max,sve128=on]=128 [max,sve256=on]=256 [max,sve512=on]=512)
order=(cortex-a53 cortex-a76 "max,sve=off" "max,sve128=on" "max,sve256=on" "max,sve512=on")
# every weight format's layer on the richest model (the generic tier's code is the same on all),
# the features on each
echo "== qemu-aarch64 -cpu max,sve256=on: every format"
if ! "$QEMU" -cpu max,sve256=on "$BUILD/moe_check" > "$BUILD/moe_check.log"; then
  grep FAIL "$BUILD/moe_check.log" >&2
  exit 1
fi
tail -1 "$BUILD/moe_check.log"
# the same sources and flags built for this x86-64 host without its tiers (KT_X86_TIERS=0: the
# generic kernels and reference quantizers only) must give the same output bits in every case: the
# same weights quantized and run on ARM and on x86 agree exactly
g++ -std=c++20 -O2 -Wall -Wextra -Wno-unused-parameter -fno-math-errno -ffp-contract=off -DKT_X86_TIERS=0 \
  -Icpp/include -Icpp/src -Icpp $SOURCES tests/cpp/moe_check.cpp -o "$BUILD/moe_check_x86" -pthread -ldl
KT_KERNEL_ISA=generic "$BUILD/moe_check_x86" > "$BUILD/moe_check_x86.log"
digests() { grep -o '^ok *[a-z0-9_A-Z]* *subpools [0-9] M *[0-9]*\|digest [0-9a-f]*' "$1" | paste - -; }
if ! diff <(digests "$BUILD/moe_check_x86.log") <(digests "$BUILD/moe_check.log") >&2; then
  echo "check_aarch64: the aarch64 and x86-64 generic builds differ in the cases above" >&2
  exit 1
fi
echo "the aarch64 and x86-64 generic builds: the same output bits in all $(grep -c digest "$BUILD/moe_check.log") cases"
for model in "${order[@]}"; do
  head=$("$QEMU" -cpu "$model" "$BUILD/moe_check" --features)
  echo "-cpu $model: $head"
  got=$(echo "$head" | sed -n 's/.*flags: *\(.*\), sve_vector_bits.*/\1/p')
  [ "$got" = "${MODELS[$model]}" ] || { echo "check_aarch64: -cpu $model reported '$got', expected '${MODELS[$model]}'" >&2; exit 1; }
  bits=$(echo "$head" | sed -n 's/.*sve_vector_bits \([0-9]*\).*/\1/p')
  [ "$bits" = "${VL[$model]:-0}" ] || { echo "check_aarch64: -cpu $model reported SVE $bits bits, expected ${VL[$model]:-0}" >&2; exit 1; }
done
echo "check_aarch64: ok"
