// [NOTE] q2_K weights x q8_256 activations with SDOT (driver: gguf_driver.h), on the file's
// blocks (GgufPanelBlock). Decode of a k-block (256 k, 16 rows), per 4 rows: their 64 qs bytes
// transposed by 32-bit zips (4 x 8 ZIP1/ZIP2), then per register USHL + AND 3: the 2-bit q (0..3) as
// int8 into the decoded k-block; the 16 scale bytes (scale | min << 4) of 4 rows by one more
// transpose, d and dmin by lane loads.
//   block = a.d * (d * sum_j sc_j isum_j - dmin * sum_j m_j bsums[j])      (sub-blocks of 16, exact int32)
// Instructions: LD1, ZIP1/ZIP2, USHL, AND, SDOT (by element), MUL/MLA (.4S), FCVTL, SCVTF, FMLA/FMLS.
// decode (M = 1): 0.33 B/weight; per 16 weights (one register) a quarter of a 16-byte load, half a
// zip, USHL + AND and one store to the decoded k-block (4 KiB, L1), then one reload and one SDOT per
// row; per sub-block of 4 rows 4 scale operations (USHL + AND for scale and min), and per row,
// sub-block and 4 rows one MUL/MLA for the scale and one MLA for the min.
#pragma once
#include "kernels/neon/gguf_driver.h"

namespace kt {
namespace {

struct Q2_K : gguf_dot::KFile {
  using Block = BlockQ2_K;

  static void prepare(const BlockQ2_K* b, gguf_dot::KBlock& D) {
    const uint32x4_t m15 = vdupq_n_u32(15);
    for (int q = 0; q < 4; ++q) {
      const BlockQ2_K* b4 = b + 4 * q;
      gguf_dot::crumbs_transposed(b4, offsetof(BlockQ2_K, qs), q, D);
      uint8x16_t s[4];  // s[e] lane c: scales[4e .. 4e+3] of row 4q + c
      gguf_dot::load_transpose4(b4, offsetof(BlockQ2_K, scales), s);
      for (int j = 0; j < 16; ++j) {
        const uint32x4_t S = vreinterpretq_u32_u8(s[j / 4]);
        D.sc[j][q] = vreinterpretq_s32_u32(vandq_u32(gguf_dot::shr32(S, 8 * (j % 4)), m15));
        D.m[j][q] = vreinterpretq_s32_u32(vandq_u32(gguf_dot::shr32(S, 8 * (j % 4) + 4), m15));
      }
      D.d[q] = gguf_dot::gather_half(b4, offsetof(BlockQ2_K, d));
      D.dmin[q] = gguf_dot::gather_half(b4, offsetof(BlockQ2_K, dmin));
    }
  }
  static float32x4_t accumulate(const gguf_dot::KBlock& D, int q, int32x4_t i1, const ActQ8x256& a, float32x4_t y) {
    int32x4_t i2 = vdupq_n_s32(0);  // sum_j m_j bsums[j]
    for (int j = 0; j < 16; ++j) i2 = vmlaq_n_s32(i2, D.m[j][q], a.bsums[j]);
    y = vfmaq_f32(y, vcvtq_f32_s32(i1), vmulq_n_f32(D.d[q], a.d));
    return vfmsq_f32(y, vcvtq_f32_s32(i2), vmulq_n_f32(D.dmin[q], a.d));
  }
};

}  // namespace
}  // namespace kt
