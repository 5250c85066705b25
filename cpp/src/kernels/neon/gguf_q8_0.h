// [NOTE] q8_0 weights x q8_32 activations with SDOT (driver: gguf_driver.h). Weights
// word-interleaved at load (formats/gguf_word_layout.h): a k-block (32 k, the 16 rows' blocks) is 8
// words of qs, then the 16 fp16 d. Word g of channels 4q..4q+3 (16 bytes at 64 g + 16 q) is already
// SDOT's operand, the int8 q themselves: no decode at all.
//   block = d * a.d * isum      (isum exact in int32; the reference's fp32 product)
// Instructions: LD1 (16 B), SDOT (by element), FCVTL (d), SCVTF + FMLA per block and 4 channels.
// decode (M = 1): 1.0625 B/weight; per 16 weights one 16-byte load and one SDOT, nothing else.
// prefill: rows in blocks of 8, each weight register feeding 8 SDOT (reloaded per row block).
#pragma once
#include "formats/gguf_word_layout.h"
#include "kernels/neon/gguf_driver.h"

namespace kt {
namespace {

struct Q8_0 {
  using Block = BlockQ8_0;
  using Act = ActQ8x32;
  static constexpr int kSub = 32;
  struct Decoded {
    float32x4_t d[4];
  };

  static void prepare(const BlockQ8_0* b, Decoded& D) {
    const gguf_dot::Words<BlockQ8_0> w(b);
    for (int q = 0; q < 4; ++q) D.d[q] = w.tail_half(q);
  }
  static void weights(const BlockQ8_0* b, const Decoded&, int, int h, int q, int8x16_t (&x)[4]) {
    const gguf_dot::Words<BlockQ8_0> w(b);
    for (int L = 0; L < 4; ++L) x[L] = vreinterpretq_s8_u8(w.u8(4 * h + L, q));
  }
  static float32x4_t accumulate(const Decoded& D, int q, int32x4_t i1, const ActQ8x32& a, float32x4_t y) {
    return vfmaq_f32(y, vcvtq_f32_s32(i1), vmulq_n_f32(D.d[q], a.d));
  }
};

}  // namespace
}  // namespace kt
