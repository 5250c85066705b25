// [NOTE] iq4_nl weights x q8_32 activations with SDOT (driver: gguf_driver.h), on the file's
// blocks (GgufPanelBlock). Decode as q4_0's (per 4 rows their nibble bytes transposed by 32-bit
// zips, AND 0x0f or USHR 4), then one TBL through kIq4Values per register: the signed levels
// -127..113 are SDOT's int8 operand.
//   block = d * a.d * isum      (isum exact in int32)
// Instructions: LD1, ZIP1/ZIP2, AND/USHR, TBL, SDOT (by element), FCVTL, SCVTF, FMLA.
// decode (M = 1): 0.5625 B/weight; per 128 weights (4 rows x 32 k) 4 loads, 8 zips, 8 AND/USHR,
// 8 TBL and 8 stores to the decoded k-block; then per 16 weights one reload and one SDOT per row.
#pragma once
#include "kernels/neon/gguf_driver.h"

namespace kt {
namespace {

struct Iq4Nl : gguf_dot::Legacy</*kOff=*/0, /*kMin=*/false> {
  using Block = BlockIq4Nl;
  static void prepare(const BlockIq4Nl* b, gguf_dot::LBlock& D) {
    gguf_dot::nibbles_transposed(b, offsetof(BlockIq4Nl, qs), D);
    gguf_dot::lookup(D, vld1q_s8(kIq4Values));
    for (int q = 0; q < 4; ++q) D.d[q] = gguf_dot::gather_half(b + 4 * q, offsetof(BlockIq4Nl, d));
  }
};

}  // namespace
}  // namespace kt
