// [NOTE] q4_0 weights x q8_32 activations with SDOT (driver: gguf_driver.h), on the file's
// blocks (GgufPanelBlock). Decode of a k-block (32 k, 16 rows), per 4 rows: their 16 nibble bytes
// transposed by 32-bit zips (8 ZIP1/ZIP2), then per register AND 0x0f (k < 16) or USHR 4 (k + 16):
// the nibbles 0..15 are the int8 codes, and the -8 goes to the activation sum:
//   block = d * a.d * (isum - 8 a.sum)      (isum exact in int32)
// Instructions: LD1, ZIP1/ZIP2 (.4S, .2D), AND/USHR, SDOT (by element), FCVTL, SCVTF, FMLA.
// decode (M = 1): 0.5625 B/weight; per 128 weights (4 rows x 32 k) 4 loads, 8 zips, 8 AND/USHR and
// 8 stores to the decoded k-block; then per 16 weights one reload and one SDOT per row.
#pragma once
#include "kernels/neon/gguf_driver.h"

namespace kt {
namespace {

struct Q4_0 : gguf_dot::Legacy</*kOff=*/8, /*kMin=*/false> {
  using Block = BlockQ4_0;
  static void prepare(const BlockQ4_0* b, gguf_dot::LBlock& D) {
    gguf_dot::nibbles_transposed(b, offsetof(BlockQ4_0, qs), D);
    for (int q = 0; q < 4; ++q) D.d[q] = gguf_dot::gather_half(b + 4 * q, offsetof(BlockQ4_0, d));
  }
};

}  // namespace
}  // namespace kt
