// [NOTE] q5_0 weights x q8_32 activations with SDOT (driver: gguf_driver.h), on the file's
// blocks (GgufPanelBlock). Decode: the nibbles as q4_0's (transposed by 32-bit zips, AND 0x0f or
// USHR 4), and the fifth bits of 4 rows (their 4 qh bytes, one 32-bit lane each): per register a
// TBL picks each k's qh byte, CMTST its bit, AND 16 and ORR put it at bit 4, so q = 0..31 as int8
// and the -16 goes to the activation sum:
//   block = d * a.d * (isum - 16 a.sum)      (isum exact in int32)
// Instructions: LD1, ZIP1/ZIP2, AND/USHR, TBL, CMTST, ORR, SDOT (by element), FCVTL, SCVTF, FMLA.
// decode (M = 1): 0.6875 B/weight; per 128 weights (4 rows x 32 k) 4 vector and 4 scalar loads, 8
// zips, 8 AND/USHR, 8 x 4 fifth-bit operations (TBL, CMTST, AND, ORR) and 8 stores to the decoded
// k-block; then per 16 weights one reload and one SDOT per row.
#pragma once
#include "kernels/neon/gguf_driver.h"

namespace kt {
namespace {

struct Q5_0 : gguf_dot::Legacy</*kOff=*/16, /*kMin=*/false> {
  using Block = BlockQ5_0;
  static void prepare(const BlockQ5_0* b, gguf_dot::LBlock& D) {
    gguf_dot::nibbles_transposed(b, offsetof(BlockQ5_0, qs), D);
    gguf_dot::add_fifth_bits(b, offsetof(BlockQ5_0, qh), D);
    for (int q = 0; q < 4; ++q) D.d[q] = gguf_dot::gather_half(b + 4 * q, offsetof(BlockQ5_0, d));
  }
};

}  // namespace
}  // namespace kt
