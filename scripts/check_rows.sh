#!/usr/bin/env bash
# Every kernel row of each tier this CPU runs against its format's generic row, natively:
# tests/cpp/rows_check (K tails, token counts, row lists, strides, untouched padding, every GluParams
# kind with NaN and inf, non-finite activations), which check_aarch64.sh runs under qemu for the ARM
# tiers. The Python tests reach the kernels only through whole layers, whose inputs and biases
# are checked finite first; this driver calls the rows directly. About 3 minutes (the build).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=build/rows-native
PYTHON=${PYTHON:-python3}
cmake -S . -B "$BUILD" -G Ninja -DKT_CHECK_DRIVER=ON -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" --target rows_check >/dev/null
# amx left out: its tile rows have not run under this driver on an AMX host yet (tests/test_moe_amx.py
# checks them there, and under the tile emulator everywhere)
tiers=$("$PYTHON" -c "import kt_kernel; print(' '.join(t for t in kt_kernel.cpu_info()['tiers'] if t not in ('generic', 'amx')))")
[ -n "$tiers" ] || { echo "check_rows: this CPU runs no tier above generic" >&2; exit 0; }
for tier in $tiers; do
  KT_KERNEL_ISA=$tier "$BUILD/rows_check" > "$BUILD/$tier.log" 2>&1 || { cat "$BUILD/$tier.log" >&2; echo "check_rows: tier $tier failed" >&2; exit 1; }
  echo "$tier: $(tail -1 "$BUILD/$tier.log")"
done
