// The GGUF (ggml) block types as a GGUF file stores them, and the activation blocks their kernels
// read. A GGUF row of K weights is K / kK blocks laid end to end; the packed kernel layout of a
// GGUF format (GgufPanelBlock) only interleaves whole blocks of kPanelN rows, so every byte here is
// the file's byte. Scales are IEEE fp16 bits (subnormals are values: decode them exactly).
// Layouts after ggml's ggml-common.h (the format's specification); bits per weight in each comment.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kt/format_blocks.h"

namespace kt {

constexpr int kQK = 256;  // weights of a K-quant super-block

// ---- 32-weight blocks ------------------------------------------------------------------------

// q4_0, 4.5 bits: w[j] = d * ((qs[j] & 15) - 8), w[j + 16] = d * ((qs[j] >> 4) - 8), j < 16.
struct BlockQ4_0 {
  static constexpr int kK = 32;
  uint16_t d;
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ4_0) == 18, "q4_0 block: fp16 d + 16 bytes of nibbles");

// q4_1, 5 bits: w[j] = d * (qs[j] & 15) + m, w[j + 16] = d * (qs[j] >> 4) + m.
struct BlockQ4_1 {
  static constexpr int kK = 32;
  uint16_t d, m;
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ4_1) == 20, "q4_1 block: fp16 d, m + 16 bytes of nibbles");

// q5_0, 5.5 bits: 5-bit q = low nibble | bit of qh (little-endian uint32 h: bit j for w[j], bit
// j + 16 for w[j + 16]) << 4;  w = d * (q - 16).
struct BlockQ5_0 {
  static constexpr int kK = 32;
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ5_0) == 22, "q5_0 block: fp16 d + 4 bytes of high bits + 16 bytes of nibbles");

// q5_1, 6 bits: q as q5_0;  w = d * q + m.
struct BlockQ5_1 {
  static constexpr int kK = 32;
  uint16_t d, m;
  uint8_t qh[4];
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ5_1) == 24, "q5_1 block: fp16 d, m + 4 bytes of high bits + 16 bytes of nibbles");

// q8_0, 8.5 bits: w[j] = d * qs[j].
struct BlockQ8_0 {
  static constexpr int kK = 32;
  static constexpr size_t kWordsFrom = 2;  // the word-interleaved layout's words begin at qs
  uint16_t d;
  int8_t qs[32];
};
static_assert(sizeof(BlockQ8_0) == 34, "q8_0 block: fp16 d + 32 int8");
static_assert(BlockQ8_0::kWordsFrom == offsetof(BlockQ8_0, qs), "q8_0's words are its qs");

// iq4_nl, 4.5 bits: as q4_0, but the nibble indexes kIq4Values:  w = d * kIq4Values[nibble].
struct BlockIq4Nl {
  static constexpr int kK = 32;
  uint16_t d;
  uint8_t qs[16];
};
static_assert(sizeof(BlockIq4Nl) == 18, "iq4_nl block: fp16 d + 16 bytes of nibbles");

// The 16 non-uniform levels of iq4_nl and iq4_xs.
static constexpr int8_t kIq4Values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

// mxfp4 (OCP MX FP4, ggml block_mxfp4; gpt-oss's experts), 4.25 bits: a shared ue8m0 exponent e
// and 32 e2m1 values, nibbles as q4_0's. e2m1 doubled is an integer, kMxfp4Values[nibble], so
//   w = 2^(e - 128) * kMxfp4Values[nibble]        (2^(e - 127) * the e2m1 value {0, 0.5, ..., 6})
struct BlockMxfp4 {
  static constexpr int kK = 32;
  static constexpr size_t kWordsFrom = 1;  // the word-interleaved layout's words begin at qs
  uint8_t e;
  uint8_t qs[16];
};
static_assert(sizeof(BlockMxfp4) == 17, "mxfp4 block: ue8m0 exponent + 16 bytes of nibbles");
static_assert(BlockMxfp4::kWordsFrom == offsetof(BlockMxfp4, qs), "mxfp4's words are its qs");

// The e2m1 values times 2: sign bit 3, then 0, 0.5, 1, 1.5, 2, 3, 4, 6.
static constexpr int8_t kMxfp4Values[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

// ---- 256-weight super-blocks (K-quants, iq4_xs) ------------------------------------------------

// q2_K, 2.625 bits: 16 sub-blocks of 16. scales[j]: low nibble scale, high nibble min (4 bits each);
// w = d * (scales[j] & 15) * q - dmin * (scales[j] >> 4), q the 2-bit value. qs holds, per 128
// weights (32 bytes), four 2-bit planes: weight 32 s + l of that half is (qs[l] >> 2s) & 3.
struct BlockQ2_K {
  static constexpr int kK = kQK;
  uint8_t scales[16];
  uint8_t qs[64];
  uint16_t d, dmin;
};
static_assert(sizeof(BlockQ2_K) == 84, "q2_K block: 16 scale/min bytes + 64 bytes of crumbs + fp16 d, dmin");

// q3_K, 3.4375 bits: 16 sub-blocks of 16, 6-bit signed scales (12 bytes, value - 32), q = low 2 bits
// (qs, as q2_K) + high bit (hmask: bit 1 << (weight / 32) of byte weight % 32; a clear bit subtracts 4);
// w = d * scale * q, q in -4..3.
struct BlockQ3_K {
  static constexpr int kK = kQK;
  uint8_t hmask[32];
  uint8_t qs[64];
  uint8_t scales[12];
  uint16_t d;
};
static_assert(sizeof(BlockQ3_K) == 110, "q3_K block: 32 bytes of high bits + 64 bytes of crumbs + 12 scale bytes + fp16 d");

// q4_K, 4.5 bits: 8 sub-blocks of 32 with 6-bit scale and min (12 bytes, see q4K_scale_min);
// w = d * sc * q - dmin * m, q the nibble: per 64 weights (32 bytes) low nibbles then high nibbles.
struct BlockQ4_K {
  static constexpr int kK = kQK;
  uint16_t d, dmin;
  uint8_t scales[12];
  uint8_t qs[128];
};
static_assert(sizeof(BlockQ4_K) == 144, "q4_K block: fp16 d, dmin + 12 scale bytes + 128 bytes of nibbles");

// q5_K, 5.5 bits: q4_K plus a fifth bit per weight in qh (bit 1 << (weight / 32) of byte weight % 32).
struct BlockQ5_K {
  static constexpr int kK = kQK;
  uint16_t d, dmin;
  uint8_t scales[12];
  uint8_t qh[32];
  uint8_t qs[128];
};
static_assert(sizeof(BlockQ5_K) == 176, "q5_K block: fp16 d, dmin + 12 scale bytes + 32 bytes of high bits + 128 of nibbles");

// q6_K, 6.5625 bits: 16 sub-blocks of 16 with int8 scales; q = 4 low bits (ql) + 2 high bits (qh),
// w = d * scales[j] * (q - 32).
struct BlockQ6_K {
  static constexpr int kK = kQK;
  uint8_t ql[128];
  uint8_t qh[64];
  int8_t scales[16];
  uint16_t d;
};
static_assert(sizeof(BlockQ6_K) == 210, "q6_K block: 128 bytes of nibbles + 64 of crumbs + 16 int8 scales + fp16 d");

// iq4_xs, 4.25 bits: 8 sub-blocks of 32, 6-bit scale ls (low 4 bits in scales_l, high 2 in scales_h),
// w = d * (ls - 32) * kIq4Values[nibble]; nibbles per sub-block as q4_0's (low: first 16, high: last 16).
struct BlockIq4Xs {
  static constexpr int kK = kQK;
  uint16_t d;
  uint16_t scales_h;
  uint8_t scales_l[4];
  uint8_t qs[128];
};
static_assert(sizeof(BlockIq4Xs) == 136, "iq4_xs block: fp16 d + 2 + 4 scale bytes + 128 bytes of nibbles");

// The 6-bit scale and min of sub-block j of q4_K / q5_K (12 bytes hold 8 pairs).
static inline void q4K_scale_min(int j, const uint8_t* s, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4);
    *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// ---- packed kernel layout --------------------------------------------------------------------

// A GGUF format's packed block: block s of the panel's kPanelN rows, row c at b[c], as in the file.
//   panel = | b[0..15] of k-block 0 | b[0..15] of k-block 1 | ... |   (Kp / kK entries)
template <class Block>
struct GgufPanelBlock {
  static constexpr int kK = Block::kK;
  Block b[kPanelN];
};

// ---- activation blocks -----------------------------------------------------------------------

// q8_32 (legacy 32-weight types): per 32 k, q = round_half_even(x * inv) with d = amax / 127
// (q8_scale), and sum = sum of q (for the min of q4_1 / q5_1). A row is Kp / 32 blocks.
struct ActQ8x32 {
  static constexpr int kK = 32;
  int8_t q[32];
  float d;
  int32_t sum;
};
static_assert(sizeof(ActQ8x32) == 40, "q8_32 block: 32 int8 + fp32 d + int32 sum");

// q8_256 (K-quants, iq4_xs): per 256 k, q and d as q8_32's; bsums[j] = sum of q[16 j .. 16 j + 15].
// Padded to 320 bytes so that q starts every block 64-byte aligned.
struct ActQ8x256 {
  static constexpr int kK = kQK;
  int8_t q[kQK];
  int16_t bsums[16];
  float d;
  uint8_t pad[28];
};
static_assert(sizeof(ActQ8x256) == 320, "q8_256 block: 256 int8 + 16 int16 sums + fp32 d, padded to 320");

}  // namespace kt
