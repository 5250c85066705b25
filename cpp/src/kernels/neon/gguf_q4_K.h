// [NOTE] q4_K weights x q8_256 activations with SDOT (driver: gguf_driver.h). Weights
// word-interleaved at load (formats/gguf_word_layout.h). qs word i of 4 rows (16 bytes at 64 i +
// 16 q) holds 4 consecutive k of each row in its low nibbles and the 4 at k + 32 in its high ones,
// so a register decodes by one AND 0x0f or one USHR 4 into SDOT's operand (nibbles 0..15 as int8).
// The 6-bit scales and mins of the 16 rows from their first 4 words, once per k-block.
//   block = a.d * (d * sum_j sc_j isum_j - dmin * sum_j m_j (bsums[2j] + bsums[2j+1]))
// (I1 = sum_j sc_j isum_j and I2 = sum_j m_j bsums exact in int32; the fp32 part one FMLA each.)
// Instructions: LD1, AND/USHR, SDOT (by element), MUL/MLA (.4S), FCVTL, SCVTF, FMLA/FMLS.
// decode (M = 1): 0.5625 B/weight; per 16 weights one 16-byte load, one AND or USHR and one SDOT
// (each qs register is loaded twice, for its low and its high nibbles, from L1 the second time).
#pragma once
#include "formats/gguf_word_layout.h"
#include "kernels/neon/gguf_driver.h"

namespace kt {
namespace {

struct Q4_K {
  using Block = BlockQ4_K;
  using Act = ActQ8x256;
  using Decoded = gguf_dot::KScales;
  static constexpr int kSub = 32;

  static void prepare(const BlockQ4_K* b, Decoded& D) { gguf_dot::q4K_scales(gguf_dot::Words<BlockQ4_K>(b), D); }
  // sub-block j = chunk j / 2 of 64 k, its low nibbles (j even) or high ones; k = 32 j + 16 h + 4 L
  // is in qs word 8 (j / 2) + 4 h + L
  static void weights(const BlockQ4_K* b, const Decoded&, int j, int h, int q, int8x16_t (&x)[4]) {
    const gguf_dot::Words<BlockQ4_K> w(b);
    for (int L = 0; L < 4; ++L) {
      const uint8x16_t P = w.u8(offsetof(BlockQ4_K, qs) / 4 + 8 * (j / 2) + 4 * h + L, q);
      x[L] = vreinterpretq_s8_u8(j % 2 ? vshrq_n_u8(P, 4) : vandq_u8(P, vdupq_n_u8(0x0f)));
    }
  }
  static int32x4_t scale(const Decoded& D, int j, int q) { return D.sc[j][q]; }
  static float32x4_t accumulate(const Decoded& D, int q, int32x4_t i1, const ActQ8x256& a, float32x4_t y) {
    return gguf_dot::q4K_accumulate(D, q, i1, a, y);
  }
};

}  // namespace
}  // namespace kt
