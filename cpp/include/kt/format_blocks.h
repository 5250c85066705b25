// The packed blocks of each weight format: the kernel layout is these structs, laid end to end.
// A panel of kPanelN output channels holds Kp / Block::kK blocks (Kp = K padded to Block::kK),
// then the format's panel tail, if any. Kernels address a block by sizeof and its fields by
// offsetof, never by literal byte offsets; each static_assert pins the size the packers and the
// kernels agree on. Bits per weight are the block's bits over its kPanelN * kK weights.
#pragma once
#include <cstddef>
#include <cstdint>

namespace kt {

constexpr int kPanelN = 16;  // output channels per packed panel (one zmm of fp32/int32 lanes)

// bf16, 16 bits per weight: one k pair of the panel's channels, bf16 bits.
//   w[c][i] = W[c, 2s + i]
struct Bf16Block {
  static constexpr int kK = 2;
  uint16_t w[kPanelN][kK];
};
static_assert(sizeof(Bf16Block) == 64, "bf16 block: 16 channels x 2 k x 2 bytes");

// int8_pc, 8 bits per weight (plus the panel tail): four k of the panel's channels.
//   q[c][i] = Q[c, 4s + i]
struct Int8PcBlock {
  static constexpr int kK = 4;
  int8_t q[kPanelN][kK];
};
static_assert(sizeof(Int8PcBlock) == 64, "int8_pc block: 16 channels x 4 k");

// int8_pc panel tail, after the panel's blocks: per channel scale and the compensation of the
// q8u activation (q + 128):  sum_k (a + 128) q = sum_k a q + comp,  comp = 128 sum_k q[c, k].
struct Int8PcTail {
  float scale[kPanelN];
  int32_t comp[kPanelN];
};
static_assert(sizeof(Int8PcTail) == 128, "int8_pc tail: 16 fp32 scales + 16 int32 compensations");

// The tail of an int8_pc panel of Kp (a multiple of Int8PcBlock::kK) k.
inline const Int8PcTail* int8pc_tail(const uint8_t* panel, int Kp) {
  return reinterpret_cast<const Int8PcTail*>(panel + size_t(Kp / Int8PcBlock::kK) * sizeof(Int8PcBlock));
}

// int4_g32, 5 bits per weight: one group of 32 k of the panel's channels.
//   q[j][4c + i] = Q[c, 8j + i] | Q[c, 8j + 4 + i] << 4     j = 0..3, c = 0..15, i = 0..3
//   so q[j] & 0xf is the vpdpbusd operand of k = 8j..8j+3 (lane c, bytes i), q[j] >> 4 of 8j+4..8j+7
//   d[c], m[c]: fp16 scale and minimum,  W[c, k] = d[c] * Q[c, k] + m[c]
// int4_g32_zp packs into the same block with m[c] = -z[c], its zero point, as an fp16 integer:
//   W[c, k] = d[c] * Q[c, k] + d[c] * m[c] = d[c] * (Q[c, k] - z[c])    (d m formed in fp32, exact)
struct Int4G32Block {
  static constexpr int kK = 32;
  static constexpr int kSteps = 4;  // 64-byte rows of nibble pairs, 8 k each
  uint8_t q[kSteps][kPanelN * 4];
  uint16_t d[kPanelN];
  uint16_t m[kPanelN];
};
static_assert(sizeof(Int4G32Block) == 320, "int4_g32 block: 4 x 64 bytes of nibbles, 16 fp16 d, 16 fp16 m");
static_assert(offsetof(Int4G32Block, d) == 256 && offsetof(Int4G32Block, m) == 288, "int4_g32 scales follow the nibbles");

// fp8_g128, 8.25 bits per weight: one group of 128 k of the panel's channels, e4m3 bytes, then
// the channels' fp32 scales. Word g (k = 4g..4g+3) is 64 bytes, 16 per group of 4 channels:
//   q[g][16 (c / 4) + 8 (i / 2) + 2 (c % 4) + i % 2] = Q[c, 4g + i]     i = 0..3
//   scale[c]                                              W[c, k] = e4m3(Q[c, k]) * scale[c]
// so that in each 128-bit lane the 8 bytes of k 4g, 4g+1 come first, channel by channel, then the
// 8 of 4g+2, 4g+3: vpunpcklbw / vpunpckhbw of the bytes' bf16 halves give vdpbf16ps's pairs,
// dword c = channel c's (4g, 4g+1), resp. (4g+2, 4g+3). q_byte(c, i) is that offset.
struct Fp8G128Block {
  static constexpr int kK = 128;
  static constexpr int kWords = kK / 4;
  uint8_t q[kWords][kPanelN * 4];
  float scale[kPanelN];
  static constexpr int q_byte(int c, int i) { return 16 * (c / 4) + 8 * (i / 2) + 2 * (c % 4) + i % 2; }
};
static_assert(sizeof(Fp8G128Block) == 2112, "fp8_g128 block: 32 x 64 bytes of e4m3, 16 fp32 scales");
static_assert(offsetof(Fp8G128Block, scale) == 2048, "fp8_g128 scales follow the values");

// f16 (GGUF F16 tensors), 16 bits per weight: one k of the panel's channels, IEEE fp16 bits.
//   w[c] = W[c, s]
struct F16Block {
  static constexpr int kK = 1;
  uint16_t w[kPanelN];
};
static_assert(sizeof(F16Block) == 32, "f16 block: 16 channels x 1 k x 2 bytes");

// f32 (GGUF F32 tensors), 32 bits per weight: one k of the panel's channels.
struct F32Block {
  static constexpr int kK = 1;
  float w[kPanelN];
};
static_assert(sizeof(F32Block) == 64, "f32 block: 16 channels x 1 k x 4 bytes");

}  // namespace kt
