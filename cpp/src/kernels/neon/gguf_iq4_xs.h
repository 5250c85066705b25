// [NOTE] iq4_xs weights x q8_256 activations with SDOT (driver: gguf_driver.h). Weights
// word-interleaved at load (formats/gguf_word_layout.h). Each register of 4 rows' qs words holds 4
// consecutive k of each row in its low nibbles and the 4 at k + 16 in its high ones: AND 0x0f or
// USHR 4, then one TBL through kIq4Values gives the signed levels (-127..113) as SDOT's operand.
// The 6-bit scales ls = u - 32 and d from the first 2 words, once per k-block.
//   block = a.d * d * sum_j ls_j isum_j      (exact int32)
// Instructions: LD1, AND/USHR, TBL, SDOT (by element), MUL/MLA (.4S), FCVTL, SCVTF, FMLA.
// decode (M = 1): 0.53 B/weight; per 16 weights one load, 2 operations (AND or USHR, TBL), one SDOT.
#pragma once
#include "formats/gguf_word_layout.h"
#include "kernels/neon/gguf_driver.h"

namespace kt {
namespace {

struct Iq4Xs {
  using Block = BlockIq4Xs;
  using Act = ActQ8x256;
  static constexpr int kSub = 32;
  struct Decoded {
    int8x16_t levels;  // kIq4Values
    int32x4_t sc[8][4];
    float32x4_t d[4];
  };

  // word 0: d | scales_h << 16, word 1: scales_l[0..3]
  static void prepare(const BlockIq4Xs* b, Decoded& D) {
    const gguf_dot::Words<BlockIq4Xs> w(b);
    const uint32x4_t m15 = vdupq_n_u32(15), m3 = vdupq_n_u32(3);
    D.levels = vld1q_s8(kIq4Values);
    for (int q = 0; q < 4; ++q) {
      const uint32x4_t w0 = w.u32(0, q), w1 = w.u32(1, q);
      for (int j = 0; j < 8; ++j) {
        const uint32x4_t lo = vandq_u32(gguf_dot::shr32(w1, 8 * (j / 2) + 4 * (j % 2)), m15);
        const uint32x4_t hi = vandq_u32(gguf_dot::shr32(w0, 16 + 2 * j), m3);
        D.sc[j][q] = vsubq_s32(vreinterpretq_s32_u32(vorrq_u32(lo, vshlq_n_u32(hi, 4))), vdupq_n_s32(32));
      }
      D.d[q] = gguf_dot::half4(vmovn_u32(w0));
    }
  }
  // k = 32 j + 16 h + 4 L: qs word 4 j + L, low nibbles (h = 0) or high ones
  static void weights(const BlockIq4Xs* b, const Decoded& D, int j, int h, int q, int8x16_t (&x)[4]) {
    const gguf_dot::Words<BlockIq4Xs> w(b);
    for (int L = 0; L < 4; ++L) {
      const uint8x16_t P = w.u8(offsetof(BlockIq4Xs, qs) / 4 + 4 * j + L, q);
      x[L] = vqtbl1q_s8(D.levels, h ? vshrq_n_u8(P, 4) : vandq_u8(P, vdupq_n_u8(0x0f)));
    }
  }
  static int32x4_t scale(const Decoded& D, int j, int q) { return D.sc[j][q]; }
  static float32x4_t accumulate(const Decoded& D, int q, int32x4_t i1, const ActQ8x256& a, float32x4_t y) {
    return vfmaq_f32(y, vcvtq_f32_s32(i1), vmulq_n_f32(D.d[q], a.d));
  }
};

}  // namespace
}  // namespace kt
