#!/usr/bin/env bash
# The aarch64 build, checked without ARM hardware: Debian's cross compiler builds the C++ core with
# CMakeLists.txt's source lists and flags (every tier's kernels, kernels/neon and kernels/sve among
# them) into the MoE test driver tests/cpp/moe_check.cpp, and Debian's qemu-user runs it on CPU models
# with and without dotprod, i8mm, bf16 and SVE (vector lengths 128, 256 and 512 bits):
# - every weight format's layer at the generic tier, whose output bits must be those of the same
#   sources built for x86-64 without its tiers (the same weights quantized and run on ARM and on x86
#   agree exactly);
# - each ARM tier forced (KT_KERNEL_ISA) on the first model that has its features, and the sve tier
#   at every vector length (and at 2048 bits, the longest SVE allows): the formats with a kernel row of that tier, against an fp64 layer within
#   the format's bound (the bound the Python tests hold every x86 tier to), and each kernel row of
#   the tier called directly against the scalar reference row over K tails, token counts, row
#   lists, output strides and the gpt-oss activation (tests/cpp/rows_check.cpp);
# - the features each model reports are the ones it has, forcing a tier it lacks is refused, and the
#   machine-limit probe loops of its tiers run.
# Both builds leave floating-point contraction off (-ffp-contract=off): aarch64's baseline has FMA,
# x86-64's has not, and the generic code would otherwise round differently on the two.
#   sudo apt-get install g++-aarch64-linux-gnu qemu-user      # once
#   bash scripts/check_aarch64.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CXX=${CXX_AARCH64:-aarch64-linux-gnu-g++}
QEMU=${QEMU_AARCH64:-qemu-aarch64}
for tool in "$CXX" "$QEMU" cmake ninja; do
  command -v "$tool" >/dev/null || { echo "check_aarch64: $tool not found (apt-get install g++-aarch64-linux-gnu qemu-user; pip install cmake ninja)" >&2; exit 2; }
done
BUILD=build/aarch64
configure() {  # build dir, extra cmake arguments
  local dir=$1; shift
  cmake -S . -B "$dir" -G Ninja -DKT_CHECK_DRIVER=ON -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS=-ffp-contract=off "$@" >/dev/null
  ninja -C "$dir" moe_check rows_check >/dev/null
}
configure "$BUILD" -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-aarch64-linux-gnu.cmake -DCMAKE_CXX_COMPILER="$CXX"
configure "$BUILD/x86-twin" -DKT_ISA_TIERS=OFF
SYSROOT=${AARCH64_SYSROOT:-/usr/aarch64-linux-gnu}  # Debian's aarch64 libc and libstdc++ for qemu
export QEMU_LD_PREFIX=$SYSROOT
run() {  # log file, cpu model, moe_check arguments (KT_KERNEL_ISA from the caller's environment)
  local log=$1 model=$2; shift 2
  if ! "$QEMU" -cpu "$model" "$BUILD/moe_check" "$@" > "$log"; then
    grep -h "FAIL\|moe_check:" "$log" >&2
    echo "check_aarch64: -cpu $model KT_KERNEL_ISA=${KT_KERNEL_ISA:-} failed (log: $log)" >&2
    exit 1
  fi
}

echo "== every format at the generic tier (-cpu max,sve256=on)"
KT_KERNEL_ISA=generic run "$BUILD/generic.log" max,sve256=on
tail -1 "$BUILD/generic.log"
KT_KERNEL_ISA=generic "$BUILD/x86-twin/moe_check" > "$BUILD/x86-twin.log"
digests() { grep -o '^ok *[a-z0-9_A-Z]* *subpools [0-9] M *[0-9]*\|digest [0-9a-f]*' "$1" | paste - -; }
if ! diff <(digests "$BUILD/x86-twin.log") <(digests "$BUILD/generic.log") >&2; then
  echo "check_aarch64: the aarch64 and x86-64 generic builds differ in the cases above" >&2
  exit 1
fi
echo "the aarch64 and x86-64 generic builds: the same output bits in all $(grep -c digest "$BUILD/generic.log") cases"

# CPU model -> the features it must report (qemu's names; "max" has every feature qemu emulates)
declare -A MODELS=(
  [cortex-a53]="asimd"
  [cortex-a76]="asimd asimddp"
  [max,sve=off]="asimd asimddp i8mm bf16"
  [max,sve128=on]="asimd asimddp i8mm bf16 sve sve2"
  [max,sve256=on]="asimd asimddp i8mm bf16 sve sve2"
  [max,sve512=on]="asimd asimddp i8mm bf16 sve sve2"
  [max,sve2048=on,sve-default-vector-length=256]="asimd asimddp i8mm bf16 sve sve2"
)
# (qemu-user starts a process at 512 bits unless told otherwise: its default length is in bytes)
declare -A VL=([max,sve128=on]=128 [max,sve256=on]=256 [max,sve512=on]=512 [max,sve2048=on,sve-default-vector-length=256]=2048)
declare -A PROBES=([cortex-a53]=1 [cortex-a76]=2 [max,sve=off]=5 [max,sve128=on]=9 [max,sve256=on]=9 [max,sve512=on]=9
                   [max,sve2048=on,sve-default-vector-length=256]=9)
declare -A BEST=([cortex-a53]=neon [cortex-a76]=neon_dotprod [max,sve=off]=neon_bf16
                 [max,sve128=on]=sve [max,sve256=on]=sve [max,sve512=on]=sve [max,sve2048=on,sve-default-vector-length=256]=sve)
order=(cortex-a53 cortex-a76 "max,sve=off" "max,sve128=on" "max,sve256=on" "max,sve512=on"
       "max,sve2048=on,sve-default-vector-length=256")
tiers=(neon neon_dotprod neon_i8mm neon_bf16 sve)
declare -A checked=()
for model in "${order[@]}"; do
  head=$("$QEMU" -cpu "$model" "$BUILD/moe_check" --features)
  echo "== -cpu $model: $head"
  got=$(echo "$head" | sed -n 's/.*flags: *\(.*\), sve_vector_bits.*/\1/p')
  [ "$got" = "${MODELS[$model]}" ] || { echo "check_aarch64: -cpu $model reported '$got', expected '${MODELS[$model]}'" >&2; exit 1; }
  bits=$(echo "$head" | sed -n 's/.*sve_vector_bits \([0-9]*\).*/\1/p')
  [ "$bits" = "${VL[$model]:-0}" ] || { echo "check_aarch64: -cpu $model reported SVE $bits bits, expected ${VL[$model]:-0}" >&2; exit 1; }
  tier=$(echo "$head" | sed -n 's/.*, tier \([a-z0-9_]*\),.*/\1/p')
  [ "$tier" = "${BEST[$model]}" ] || { echo "check_aarch64: -cpu $model chose tier '$tier', expected '${BEST[$model]}'" >&2; exit 1; }
  # the machine-limit probes of its tiers run (under qemu their rates mean nothing)
  ran=$(QEMU_LD_PREFIX=$SYSROOT "$QEMU" -cpu "$model" "$BUILD/moe_check" --probes | sed -n 's/^moe_check: \([0-9]*\) probe families ran/\1/p')
  [ "$ran" = "${PROBES[$model]}" ] || { echo "check_aarch64: -cpu $model ran '$ran' probe families, expected ${PROBES[$model]}" >&2; exit 1; }
  above=0
  for t in "${tiers[@]}"; do
    if [ "$above" = 1 ]; then  # a tier above the model's best: forcing it must be refused
      if out=$(KT_KERNEL_ISA=$t "$QEMU" -cpu "$model" "$BUILD/moe_check" --features); then
        echo "check_aarch64: -cpu $model accepted KT_KERNEL_ISA=$t, above its best tier $tier" >&2; exit 1
      fi
      echo "$out" | grep -q "supports at most '$tier'" || { echo "check_aarch64: refusal of $t on $model: $out" >&2; exit 1; }
      continue
    fi
    [ "$t" = "$tier" ] && above=1
    # each tier on the first model that has it; the sve tier at every vector length
    [ -n "${checked[$t]:-}" ] && [ "$t" != sve ] && continue
    checked[$t]=1
    log="$BUILD/${t}_${model//[,=-]/_}.log"
    KT_KERNEL_ISA=$t run "$log" "$model" --own-rows
    [ "$(grep -c digest "$log")" -gt 0 ] || { echo "check_aarch64: tier $t ran no kernel row of its own" >&2; exit 1; }
    rows_log="$BUILD/rows_${t}_${model//[,=-]/_}.log"
    if ! KT_KERNEL_ISA=$t "$QEMU" -cpu "$model" "$BUILD/rows_check" > "$rows_log"; then
      grep -h "FAIL\|rows_check:" "$rows_log" >&2
      echo "check_aarch64: rows_check -cpu $model KT_KERNEL_ISA=$t failed (log: $rows_log)" >&2
      exit 1
    fi
    echo "   $t rows: $(tail -1 "$rows_log")"
    echo "   $t: $(grep -c digest "$log") cases, rows: $(grep -o '[a-zA-Z0-9_]*__[a-z0-9_]*\( / [a-zA-Z0-9_]*__[a-z0-9_]*\)\?$' "$log" | sort -u | tr '\n' ' ')"
  done
done
echo "check_aarch64: ok"
