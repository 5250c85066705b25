// q4_0: GGUF's symmetric 4-bit block, 32 weights, 4.5 bits per weight (ggml block_q4_0).
//
//   BlockQ4_0, 18 bytes:
//     | d: fp16 | qs[0] qs[1] ... qs[15] |
//       byte j of qs:  low nibble = q[j],  high nibble = q[j + 16]           j = 0..15
//   w[k] = d * (q[k] - 8),  q in [0, 15]
//
// Quantizer (as gguf.quants / ggml's quantize_row_q4_0_ref): the weight of largest |w| (the first
// such), max, maps to q = 0: d = max / -8; q = clamp(trunc(w * (1 / d) + 8.5), 0, 15) with the fp32
// d (not its fp16 rounding), then d stored as fp16. Bit for bit gguf.quants.quantize's blocks.
// Dot with a q8_32 block: sum_k (q[k] - 8) * a.q[k] in int32, then d * a.d * that.
#include <algorithm>
#include <cmath>

#include "gguf_block32.h"
#include "gguf_format.h"

namespace kt {

void dequantize_block(const BlockQ4_0& b, float* out) {
  const float d = f16_to_f32(b.d);
  for (int k = 0; k < 32; ++k) out[k] = float(block32::nibble(b.qs, k) - 8) * d;
}

void quantize_block(const float* x, BlockQ4_0* b) {
  const float d = block32::signed_absmax(x) / -8.f;
  const float inv = d != 0.f ? 1.f / d : 0.f;
  uint8_t q[32];
  for (int k = 0; k < 32; ++k) q[k] = uint8_t(std::clamp(std::trunc(x[k] * inv + 8.5f), 0.f, 15.f));
  b->d = f32_to_f16(d);
  block32::pack_nibbles(q, b->qs);
}

float dot_block(const BlockQ4_0& b, const ActQ8x32& a) {
  int32_t sumi = 0;
  for (int k = 0; k < 32; ++k) sumi += (block32::nibble(b.qs, k) - 8) * a.q[k];
  return f16_to_f32(b.d) * a.d * float(sumi);
}

KT_GGUF_FORMAT(q4_0, BlockQ4_0)

}  // namespace kt
