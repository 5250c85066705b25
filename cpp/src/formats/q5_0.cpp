// q5_0: GGUF's symmetric 5-bit block, 32 weights, 5.5 bits per weight (ggml block_q5_0).
//
//   BlockQ5_0, 22 bytes:
//     | d: fp16 | qh[0..3] | qs[0] qs[1] ... qs[15] |
//       qh, read as a little-endian uint32 h:  bit k = bit 4 of q[k]            k = 0..31
//       byte j of qs:  low nibble = q[j] & 15,  high nibble = q[j + 16] & 15   j = 0..15
//   w[k] = d * (q[k] - 16),  q in [0, 31]
//
// Quantizer (as gguf.quants / ggml's quantize_row_q5_0_ref): the weight of largest |w| (the first
// such), max, maps to q = 0: d = max / -16; q = clamp(trunc(w * (1 / d) + 16.5), 0, 31) with the
// fp32 d, then d stored as fp16. Bit for bit gguf.quants.quantize's blocks.
// Dot with a q8_32 block: sum_k (q[k] - 16) * a.q[k] in int32, then d * a.d * that.
#include <algorithm>
#include <cmath>

#include "gguf_block32.h"
#include "gguf_format.h"

namespace kt {

void dequantize_block(const BlockQ5_0& b, float* out) {
  const float d = f16_to_f32(b.d);
  const uint32_t h = block32::high_bits(b.qh);
  for (int k = 0; k < 32; ++k) out[k] = float(block32::q5(b.qs, h, k) - 16) * d;
}

void quantize_block(const float* x, BlockQ5_0* b) {
  const float d = block32::signed_absmax(x) / -16.f;
  const float inv = d != 0.f ? 1.f / d : 0.f;
  uint8_t q[32];
  for (int k = 0; k < 32; ++k) q[k] = uint8_t(std::clamp(std::trunc(x[k] * inv + 16.5f), 0.f, 31.f));
  b->d = f32_to_f16(d);
  block32::pack_high_bits(q, b->qh);
  block32::pack_nibbles(q, b->qs);
}

float dot_block(const BlockQ5_0& b, const ActQ8x32& a) {
  const uint32_t h = block32::high_bits(b.qh);
  int32_t sumi = 0;
  for (int k = 0; k < 32; ++k) sumi += (block32::q5(b.qs, h, k) - 16) * a.q[k];
  return f16_to_f32(b.d) * a.d * float(sumi);
}

KT_GGUF_FORMAT(q5_0, BlockQ5_0)

}  // namespace kt
