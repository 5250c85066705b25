// [NOTE] q3_K weights x q8_256 activations with SDOT (driver: gguf_driver.h), on the file's
// blocks (GgufPanelBlock). Decode of a k-block (256 k, 16 rows), per 4 rows: the 2-bit values as
// q2_K's (64 qs bytes transposed by 32-bit zips, USHL + AND 3), the high bit from the 32 hmask
// bytes (transposed alike) shifted to bit 2 and merged by BSL: u = q + 4 in 0..7 as int8, its -4 on
// the activation sums. The 12 scale bytes of 4 rows (copied to 16, transposed) give the 6-bit
// scales sc = u - 32; d by lane loads.
//   block = a.d * d * (sum_j sc_j isum_j - 4 sum_j sc_j bsums[j])      (sub-blocks of 16, exact int32)
// Instructions: LD1, ZIP1/ZIP2, USHL, AND, BSL, SDOT (by element), MUL/MLA (.4S), FCVTL, SCVTF, FMLA.
// decode (M = 1): 0.43 B/weight; per 16 weights (one register) 0.375 of a 16-byte load, 0.75 of a
// zip, 4 bit operations (USHL + AND, USHL + BSL) and one store to the decoded k-block (4 KiB, L1),
// then one reload and one SDOT per row.
#pragma once
#include "kernels/neon/gguf_driver.h"

namespace kt {
namespace {

struct Q3_K : gguf_dot::KFile {
  using Block = BlockQ3_K;

  static void prepare(const BlockQ3_K* b, gguf_dot::KBlock& D) {
    const uint8x16_t m4 = vdupq_n_u8(4);
    const uint32x4_t m15 = vdupq_n_u32(15), m3 = vdupq_n_u32(3);
    for (int q = 0; q < 4; ++q) {
      const BlockQ3_K* b4 = b + 4 * q;
      gguf_dot::crumbs_transposed(b4, offsetof(BlockQ3_K, qs), q, D);
      // the high bit of k = 16 j + 4 L: bit j / 2 of hmask byte 16 (j % 2) + 4 L, at bit 2
      uint8x16_t hm[2][4];
      for (int i = 0; i < 2; ++i) gguf_dot::load_transpose4(b4, offsetof(BlockQ3_K, hmask) + 16 * i, hm[i]);
      for (int j = 0; j < 16; ++j)
        for (int L = 0; L < 4; ++L) {
          int8x16_t& v = D.q[4 * j + L][q];
          v = vreinterpretq_s8_u8(vbslq_u8(m4, gguf_dot::shl8(hm[j % 2][L], 2 - j / 2), vreinterpretq_u8_s8(v)));
        }
      // the 12 scale bytes (the block's last 16 bytes would run 2 past it): lo_j = nibble j / 8 of
      // byte j % 8, hi_j = bits 2 (j / 4) of byte 8 + j % 4
      uint8_t sb[4][16] = {};
      for (int c = 0; c < 4; ++c) std::memcpy(sb[c], b4[c].scales, sizeof(b4[c].scales));
      uint8x16_t s[4];
      gguf_dot::load_transpose4(sb[0], sizeof(sb[0]), s);
      for (int j = 0; j < 16; ++j) {
        const uint32x4_t lo = vandq_u32(gguf_dot::shr32(vreinterpretq_u32_u8(s[j % 8 / 4]), 8 * (j % 4) + 4 * (j / 8)), m15);
        const uint32x4_t hi = vandq_u32(gguf_dot::shr32(vreinterpretq_u32_u8(s[2]), 8 * (j % 4) + 2 * (j / 4)), m3);
        D.sc[j][q] = vsubq_s32(vreinterpretq_s32_u32(vorrq_u32(lo, vshlq_n_u32(hi, 4))), vdupq_n_s32(32));
      }
      D.d[q] = gguf_dot::gather_half(b4, offsetof(BlockQ3_K, d));
    }
  }
  static float32x4_t accumulate(const gguf_dot::KBlock& D, int q, int32x4_t i1, const ActQ8x256& a, float32x4_t y) {
    int32x4_t i2 = vdupq_n_s32(0);  // sum_j sc_j bsums[j]: the u - 4 offset
    for (int j = 0; j < 16; ++j) i2 = vmlaq_n_s32(i2, D.sc[j][q], a.bsums[j]);
    return vfmaq_f32(y, vcvtq_f32_s32(vsubq_s32(i1, vshlq_n_s32(i2, 2))), vmulq_n_f32(D.d[q], a.d));
  }
};

}  // namespace
}  // namespace kt
