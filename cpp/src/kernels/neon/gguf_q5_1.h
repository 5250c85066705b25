// [NOTE] q5_1 weights x q8_32 activations with SDOT (driver: gguf_driver.h), on the file's
// blocks (GgufPanelBlock). Decode as q5_0's (nibbles transposed by 32-bit zips, the fifth bits by
// TBL + CMTST + AND + ORR): q = 0..31 as SDOT's int8 operand.
//   block = d * a.d * isum + m * a.d * a.sum      (isum exact in int32)
// Instructions: LD1, ZIP1/ZIP2, AND/USHR, TBL, CMTST, ORR, SDOT (by element), FCVTL, SCVTF, FMLA.
// decode (M = 1): 0.75 B/weight; per 128 weights (4 rows x 32 k) 4 vector and 4 scalar loads, 8
// zips, 8 AND/USHR, 8 x 4 fifth-bit operations (TBL, CMTST, AND, ORR) and 8 stores to the decoded
// k-block; then per 16 weights one reload and one SDOT per row.
#pragma once
#include "kernels/neon/gguf_driver.h"

namespace kt {
namespace {

struct Q5_1 : gguf_dot::Legacy</*kOff=*/0, /*kMin=*/true> {
  using Block = BlockQ5_1;
  static void prepare(const BlockQ5_1* b, gguf_dot::LBlock& D) {
    gguf_dot::nibbles_transposed(b, offsetof(BlockQ5_1, qs), D);
    gguf_dot::add_fifth_bits(b, offsetof(BlockQ5_1, qh), D);
    for (int q = 0; q < 4; ++q) {
      D.d[q] = gguf_dot::gather_half(b + 4 * q, offsetof(BlockQ5_1, d));
      D.m[q] = gguf_dot::gather_half(b + 4 * q, offsetof(BlockQ5_1, m));
    }
  }
};

}  // namespace
}  // namespace kt
