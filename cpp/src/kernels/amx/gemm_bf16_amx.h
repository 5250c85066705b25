// [NOTE] bf16 weights x bf16 activations on AMX tiles (driver: amx_moe_driver.h): tdpbf16ps
// accumulates in the fp32 C tiles over all of K, and the epilogue only reads them out.
// Not bit-identical to the AVX512-BF16 kernel: per the SDM, tdpbf16ps adds a pair's two products
// to the accumulator one after the other (element 0, then 1), each as an FMA rounded to nearest
// even with DAZ on its inputs and FTZ on its result (what kernels/amx_emu models), while
// vdpbf16ps orders a pair otherwise and keeps denormals. The products of two bf16 are exact in
// fp32, so the two differ by the rounding of a K-term fp32 sum in another order, and by denormal
// inputs or results flushed to zero (|x| < 2^-126: nothing a layer's activations or weights
// reach). Measured on the emulator against the avx512_bf16 kernel on this Zen 5 host: h differs
// by at most 1e-7 to 9e-7 of max|h| for K = 96 to 2048, far inside the bf16 format's tolerance
// (tests/conftest.py TOLERANCES: 1e-3 of max|out|).
//
// The packed panel (formats/bf16.cpp) already is the B-tile layout: 16 steps of 64 bytes, one
// k pair per step, are one 16 x 64 B tile covering 32 k of 16 channels (dword [s][c] = the bf16
// pair c:k, c:k+1 of k = 2s):
//
//   panel   | step 0: c0 k0 k1 | c1 k0 k1 | ... | c15 k0 k1 |   <- B tile row 0  --+
//           | ...                                           |                      | K step 0 (k 0..31)
//           | step 15: c0 k30 k31 | ...                     |   <- B tile row 15 --+
//           | step 16 ... (K step 1: k 32..63) ...          |
//
//   A tile: 16 token rows x 64 bytes (bf16 of k 32s..32s+31)      C tile: 16 rows x 16 fp32
//
// A panel whose Kp is not a multiple of 32 is copied with its last step zero-padded to 16 rows.
#pragma once
#include "kernels/amx/amx_moe_driver.h"

namespace kt::amx {
namespace {

struct Bf16Amx {
  static constexpr int a_colsb = 64, b_rows = 16;
  static constexpr size_t b_step_bytes = 1024;
  static constexpr bool per_step = false;

  static int steps(int Kp) { return (Kp + 31) / 32; }
  static size_t act_bytes(int Kp) { return size_t(Kp) * 2; }

  template <class Tiles, int C, int A, int B>
  static void tdp() { Tiles::template dpbf16ps<C, A, B>(); }

  static const uint8_t* b_tiles(const uint8_t* panel, int Kp, uint8_t* buf) {
    if (Kp % 32 == 0) return panel;
    const size_t n = size_t(Kp) * 2 * kPanelN;
    std::memcpy(buf, panel, n);
    std::memset(buf + n, 0, b_step_bytes * steps(Kp) - n);
    return buf;
  }

  // the C tile's dwords are the fp32 sums
  static __m512 finish(const int32_t* c, const uint8_t*, int, const ActView&, int) {
    return _mm512_castsi512_ps(_mm512_loadu_si512(c));
  }
};

}  // namespace
}  // namespace kt::amx
