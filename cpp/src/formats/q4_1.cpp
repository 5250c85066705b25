// q4_1: GGUF's asymmetric 4-bit block, 32 weights, 5 bits per weight (ggml block_q4_1).
//
//   BlockQ4_1, 20 bytes:
//     | d: fp16 | m: fp16 | qs[0] qs[1] ... qs[15] |
//       byte j of qs:  low nibble = q[j],  high nibble = q[j + 16]           j = 0..15
//   w[k] = d * q[k] + m,  q in [0, 15]
//
// Quantizer (as gguf.quants / ggml's quantize_row_q4_1_ref): m = min w, d = (max w - min w) / 15;
// q = clamp(trunc((w - m) * (1 / d) + 0.5), 0, 15) with the fp32 d and m, then both stored as fp16.
// Bit for bit gguf.quants.quantize's blocks.
// Dot with a q8_32 block: sum_k q[k] * a.q[k] in int32, then d * a.d * that, plus m * a.d * a.sum
// (the min times the activation's sum: sum_k m * a.d * a.q[k]).
#include <algorithm>
#include <cmath>

#include "gguf_block32.h"
#include "gguf_format.h"

namespace kt {

void dequantize_block(const BlockQ4_1& b, float* out) {
  const float d = f16_to_f32(b.d), m = f16_to_f32(b.m);
  for (int k = 0; k < 32; ++k) out[k] = float(block32::nibble(b.qs, k)) * d + m;
}

void quantize_block(const float* x, BlockQ4_1* b) {
  const auto [min, max] = std::minmax_element(x, x + 32);
  const float d = (*max - *min) / 15.f;
  const float inv = d != 0.f ? 1.f / d : 0.f;
  uint8_t q[32];
  for (int k = 0; k < 32; ++k) q[k] = uint8_t(std::clamp(std::trunc((x[k] - *min) * inv + 0.5f), 0.f, 15.f));
  b->d = f32_to_f16(d);
  b->m = f32_to_f16(*min);
  block32::pack_nibbles(q, b->qs);
}

float dot_block(const BlockQ4_1& b, const ActQ8x32& a) {
  int32_t sumi = 0;
  for (int k = 0; k < 32; ++k) sumi += block32::nibble(b.qs, k) * a.q[k];
  return f16_to_f32(b.d) * a.d * float(sumi) + f16_to_f32(b.m) * a.d * float(a.sum);
}

KT_GGUF_FORMAT(q4_1, BlockQ4_1)

}  // namespace kt
