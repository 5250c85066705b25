// [NOTE] q6_K weights x q8_256 activations with SDOT (driver: gguf_driver.h). Weights
// word-interleaved at load (formats/gguf_word_layout.h). Each register of 4 rows' ql words gives 4
// consecutive k of each row: its low nibbles with 2 high bits of a qh word inserted above them by
// SLI (or its high nibbles inserted below the qh bits by SRI), then AND 0x3f: u = q + 32 in 0..63,
// a non-negative int8 whose -32 goes to the activation sums. The 16 int8 scales of the 16 rows from
// 4 words and d from the layout's tail, once per k-block.
//   block = a.d * d * (sum_j sc_j isum_j - 32 sum_j sc_j bsums[j])      (sub-blocks of 16, exact int32)
// Instructions: LD1, SLI/SRI, USHL (qh to its bits), AND, SDOT (by element), MUL/MLA (.4S), SCVTF, FMLA.
// decode (M = 1): 0.82 B/weight; per 16 weights 2 loads (ql, qh), 2 to 3 bit operations, one SDOT
// (each register is loaded twice, once per nibble or qh bit pair in use, from L1 after the first).
#pragma once
#include "formats/gguf_word_layout.h"
#include "kernels/neon/gguf_driver.h"

namespace kt {
namespace {

struct Q6_K {
  using Block = BlockQ6_K;
  using Act = ActQ8x256;
  static constexpr int kSub = 16;
  struct Decoded {
    int32x4_t sc[16][4];
    float32x4_t d[4];
  };

  static void prepare(const BlockQ6_K* b, Decoded& D) {
    const gguf_dot::Words<BlockQ6_K> w(b);
    for (int q = 0; q < 4; ++q) {
      for (int j = 0; j < 16; ++j) {  // byte j % 4 of scales word j / 4, sign-extended
        const int32x4_t S = vreinterpretq_s32_u32(w.u32(offsetof(BlockQ6_K, scales) / 4 + j / 4, q));
        D.sc[j][q] = vshrq_n_s32(vshlq_s32(S, vdupq_n_s32(24 - 8 * (j % 4))), 24);
      }
      D.d[q] = w.tail_half(q);  // d: the block's last 2 bytes, the layout's tail
    }
  }
  // k = 16 j + 4 L = 128 hh + 32 s + l: ql byte 64 hh + 32 (s & 1) + l (low nibble if s < 2), high
  // bits 2s, 2s+1 of qh byte 32 hh + l (kt/gguf_blocks.h)
  static void weights(const BlockQ6_K* b, const Decoded&, int j, int, int q, int8x16_t (&x)[4]) {
    const gguf_dot::Words<BlockQ6_K> w(b);
    const int hh = j / 8, s = j % 8 / 2, l = 16 * (j % 2);
    const uint8x16_t m63 = vdupq_n_u8(63);
    for (int L = 0; L < 4; ++L) {
      const uint8x16_t P = w.u8(offsetof(BlockQ6_K, ql) / 4 + 16 * hh + 8 * (s & 1) + l / 4 + L, q);
      const uint8x16_t Q = w.u8(offsetof(BlockQ6_K, qh) / 4 + 8 * hh + l / 4 + L, q);
      const uint8x16_t u = s < 2 ? vsliq_n_u8(P, gguf_dot::shl8(Q, -2 * s), 4)   // qh bits 2s.. above the low nibble
                                 : vsriq_n_u8(gguf_dot::shl8(Q, 4 - 2 * s), P, 4);  // the high nibble below them
      x[L] = vreinterpretq_s8_u8(vandq_u8(u, m63));
    }
  }
  static int32x4_t scale(const Decoded& D, int j, int q) { return D.sc[j][q]; }
  static float32x4_t accumulate(const Decoded& D, int q, int32x4_t i1, const ActQ8x256& a, float32x4_t y) {
    int32x4_t i2 = vdupq_n_s32(0);  // sum_j sc_j bsums[j]: the u - 32 offset
    for (int j = 0; j < 16; ++j) i2 = vmlaq_n_s32(i2, D.sc[j][q], a.bsums[j]);
    return vfmaq_f32(y, vcvtq_f32_s32(vsubq_s32(i1, vshlq_n_s32(i2, 5))), vmulq_n_f32(D.d[q], a.d));
  }
};

}  // namespace
}  // namespace kt
