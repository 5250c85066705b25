// q8_0 (GGUF type 8): 32 weights per block, one fp16 scale.  w[j] = d * qs[j]
//
//   | d: fp16 | qs[0] qs[1] ... qs[31]: int8 |   34 bytes, 8.5 bits per weight
//
// The kernels read q8_32 activations: sum_j w[j] a[j] = d * a.d * sum_j qs[j] a.q[j].
#include <algorithm>
#include <cmath>

#include "gguf_format.h"

namespace kt {

void dequantize_block(const BlockQ8_0& b, float* out) {
  const float d = f16_to_f32(b.d);
  for (int j = 0; j < BlockQ8_0::kK; ++j) out[j] = d * float(b.qs[j]);
}

// d = amax / 127 rounded to fp16; q = round_half_even(x / d), clamped (d's rounding may push an
// extreme value past 127).
void quantize_block(const float* x, BlockQ8_0* b) {
  float amax = 0.f;
  for (int j = 0; j < BlockQ8_0::kK; ++j) amax = std::max(amax, std::fabs(x[j]));
  b->d = f32_to_f16(amax / 127.f);
  const float d = f16_to_f32(b->d);
  const float inv = d > 0.f ? 1.f / d : 0.f;
  for (int j = 0; j < BlockQ8_0::kK; ++j) b->qs[j] = int8_t(round_half_even(std::clamp(x[j] * inv, -127.f, 127.f)));
}

float dot_block(const BlockQ8_0& b, const ActQ8x32& a) {
  int32_t sum = 0;
  for (int j = 0; j < BlockQ8_0::kK; ++j) sum += int32_t(b.qs[j]) * a.q[j];
  return f16_to_f32(b.d) * a.d * float(sum);
}

KT_GGUF_FORMAT(q8_0, BlockQ8_0)
KT_GGUF_WORD_LAYOUT(q8_0, BlockQ8_0)

}  // namespace kt
