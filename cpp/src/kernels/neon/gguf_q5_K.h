// [NOTE] q5_K weights x q8_256 activations with SDOT (driver: gguf_driver.h). Weights
// word-interleaved at load (formats/gguf_word_layout.h). q4_K's decode (a qs register's low nibbles
// by AND 0x0f, high ones by USHR 4) plus the fifth bits: bit j (sub-block j) of the qh register of
// the same 4 k shifted to bit 4 and merged by one BSL: q in 0..31 as int8. Scales and mins as q4_K's.
//   block = a.d * (d * sum_j sc_j isum_j - dmin * sum_j m_j (bsums[2j] + bsums[2j+1]))
// Instructions: LD1, AND/USHR, USHL, BSL, SDOT (by element), MUL/MLA (.4S), FCVTL, SCVTF, FMLA/FMLS.
// decode (M = 1): 0.6875 B/weight; per 16 weights 2 loads (qs, qh), 3 bit operations, one SDOT
// (qs registers loaded twice and qh registers 8 times per k-block, from L1 after the first).
#pragma once
#include "formats/gguf_word_layout.h"
#include "kernels/neon/gguf_driver.h"

namespace kt {
namespace {

struct Q5_K {
  using Block = BlockQ5_K;
  using Act = ActQ8x256;
  using Decoded = gguf_dot::KScales;
  static constexpr int kSub = 32;

  static void prepare(const BlockQ5_K* b, Decoded& D) { gguf_dot::q4K_scales(gguf_dot::Words<BlockQ5_K>(b), D); }
  // k = 32 j + 16 h + 4 L: nibbles as q4_K's (qs word 8 (j / 2) + 4 h + L), fifth bit j of qh byte
  // k % 32 (qh word 4 h + L)
  static void weights(const BlockQ5_K* b, const Decoded&, int j, int h, int q, int8x16_t (&x)[4]) {
    const gguf_dot::Words<BlockQ5_K> w(b);
    const uint8x16_t m16 = vdupq_n_u8(16);
    for (int L = 0; L < 4; ++L) {
      const uint8x16_t P = w.u8(offsetof(BlockQ5_K, qs) / 4 + 8 * (j / 2) + 4 * h + L, q);
      const uint8x16_t Q = w.u8(offsetof(BlockQ5_K, qh) / 4 + 4 * h + L, q);
      const uint8x16_t nib = j % 2 ? vshrq_n_u8(P, 4) : vandq_u8(P, vdupq_n_u8(0x0f));
      x[L] = vreinterpretq_s8_u8(vbslq_u8(m16, gguf_dot::shl8(Q, 4 - j), nib));
    }
  }
  static int32x4_t scale(const Decoded& D, int j, int q) { return D.sc[j][q]; }
  static float32x4_t accumulate(const Decoded& D, int q, int32x4_t i1, const ActQ8x256& a, float32x4_t y) {
    return gguf_dot::q4K_accumulate(D, q, i1, a, y);
  }
};

}  // namespace
}  // namespace kt
