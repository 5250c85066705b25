// [NOTE] mxfp4 weights x q8_32 activations with SDOT (driver: gguf_driver.h). Weights
// word-interleaved at load (formats/gguf_word_layout.h): a k-block (32 k, the 16 rows' blocks) is 4
// words of qs, word g lane c = row c's indexes of k = 4g .. 4g+3 (low nibbles) and 16 + 4g .. (high),
// then the 16 exponent bytes. Decode: per register AND 0x0f or USHR 4, then one TBL through
// kMxfp4Values (the e2m1 values doubled, -12..12) gives SDOT's int8 operand.
//   block = 2^(e - 128) * a.d * isum      (isum exact in int32; 2^(e - 128) exact in fp32)
// Instructions: LD1, AND/USHR, TBL, SDOT (by element), USHLL, SHL, CMEQ, BSL, FMUL, SCVTF, FMLA.
// decode (M = 1): 0.53 B/weight; per 16 weights one load, 2 operations (AND or USHR, TBL), one SDOT
// (each qs register is loaded twice, for its low and its high nibbles, from L1 the second time).
#pragma once
#include "formats/gguf_word_layout.h"
#include "kernels/neon/gguf_driver.h"

namespace kt {
namespace {

struct Mxfp4 {
  using Block = BlockMxfp4;
  using Act = ActQ8x32;
  static constexpr int kSub = 32;
  struct Decoded {
    int8x16_t levels;  // kMxfp4Values
    float32x4_t d[4];  // 2^(e - 128)
  };

  // 2^(e - 128) of 4 rows: the fp32 bits e << 23 are 2^(e - 127) for e >= 1 (0x00400000 = 2^-127
  // for e = 0), halved exactly
  static void prepare(const BlockMxfp4* b, Decoded& D) {
    const gguf_dot::Words<BlockMxfp4> w(b);
    D.levels = vld1q_s8(kMxfp4Values);
    for (int q = 0; q < 4; ++q) {
      uint8_t e8[8] = {};
      std::memcpy(e8, w.p + 64 * w.kWords + 4 * q, 4);
      const uint32x4_t e = vmovl_u16(vget_low_u16(vmovl_u8(vld1_u8(e8))));
      const uint32x4_t bits = vbslq_u32(vceqzq_u32(e), vdupq_n_u32(0x00400000), vshlq_n_u32(e, 23));
      D.d[q] = vmulq_n_f32(vreinterpretq_f32_u32(bits), 0.5f);
    }
  }
  // k = 16 h + 4 L: qs word L, low nibbles (h = 0) or high ones
  static void weights(const BlockMxfp4* b, const Decoded& D, int, int h, int q, int8x16_t (&x)[4]) {
    const gguf_dot::Words<BlockMxfp4> w(b);
    for (int L = 0; L < 4; ++L) {
      const uint8x16_t P = w.u8(L, q);
      x[L] = vqtbl1q_s8(D.levels, h ? vshrq_n_u8(P, 4) : vandq_u8(P, vdupq_n_u8(0x0f)));
    }
  }
  static float32x4_t accumulate(const Decoded& D, int q, int32x4_t i1, const ActQ8x32& a, float32x4_t y) {
    return vfmaq_f32(y, vcvtq_f32_s32(i1), vmulq_n_f32(D.d[q], a.d));
  }
};

}  // namespace
}  // namespace kt
