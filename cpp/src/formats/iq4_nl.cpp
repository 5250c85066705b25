// iq4_nl: GGUF's non-linear 4-bit block, 32 weights, 4.5 bits per weight (ggml block_iq4_nl).
//
//   BlockIq4Nl, 18 bytes:
//     | d: fp16 | qs[0] qs[1] ... qs[15] |
//       byte j of qs:  low nibble = i[j],  high nibble = i[j + 16]           j = 0..15
//   w[k] = d * kIq4Values[i[k]],  kIq4Values = -127 -104 -83 -65 -49 -35 -22 -10 1 13 25 38 53 69 89 113
//
// Quantizer (ours: the gguf package has none; its error is measured): for candidate scales that put
// the weight of largest |w| near an end level (1 / d = (v0 + t) / max, v0 = -127 or 113,
// t = -7..7), each weight takes the nearest level v and d is refit by least squares,
// d = sum v w / sum v v; the candidate of least squared error wins, is refined by two rounds of
// (nearest levels, refit), and d is rounded to fp16 before the final choice of nearest levels.
// Dot with a q8_32 block: sum_k kIq4Values[i[k]] * a.q[k] in int32, then d * a.d * that.
#include <cmath>

#include "gguf_block32.h"
#include "gguf_format.h"

namespace kt {
namespace {

// The midpoints of neighbouring levels (exact in fp32): the index of the level nearest t is the
// number of midpoints below t (a tie goes to the lower level). Counted without branches: which
// side of a midpoint a weight falls on is data, a branch on it mispredicted half the time.
constexpr auto kMid = [] {
  struct { float v[15]; } m{};
  for (int j = 0; j < 15; ++j) m.v[j] = 0.5f * float(kIq4Values[j] + kIq4Values[j + 1]);
  return m;
}();

// Nearest levels of x * inv into idx; returns the least-squares d for them and its fit
// (sum v w)^2 / sum v v (larger is better: the squared error is sum w w minus it).
float assign_and_fit(const float* x, float inv, uint8_t* idx, float* fit) {
  float t[32];
  int8_t level[32];
  for (int k = 0; k < 32; ++k) t[k] = x[k] * inv, level[k] = 0;
  for (int j = 0; j < 15; ++j)  // level: the number of midpoints below t (k innermost: vectorized)
    for (int k = 0; k < 32; ++k) level[k] += t[k] > kMid.v[j];
  float sumqx = 0.f, sumq2 = 0.f;
  for (int k = 0; k < 32; ++k) {
    idx[k] = uint8_t(level[k]);
    const float v = kIq4Values[level[k]];
    sumqx += v * x[k];
    sumq2 += v * v;
  }
  *fit = sumq2 > 0.f ? sumqx * sumqx / sumq2 : 0.f;
  return sumq2 > 0.f ? sumqx / sumq2 : 0.f;
}

}  // namespace

void dequantize_block(const BlockIq4Nl& b, float* out) {
  const float d = f16_to_f32(b.d);
  for (int k = 0; k < 32; ++k) out[k] = d * float(kIq4Values[block32::nibble(b.qs, k)]);
}

void quantize_block(const float* x, BlockIq4Nl* b) {
  const float max = block32::signed_absmax(x);
  uint8_t idx[32];
  if (max == 0.f) {
    b->d = 0;
    for (int k = 0; k < 32; ++k) idx[k] = 8;  // level 1, times d = 0
    block32::pack_nibbles(idx, b->qs);
    return;
  }
  float best_d = 0.f, best_fit = -1.f, fit;
  for (const int v0 : {int(kIq4Values[0]), int(kIq4Values[15])})
    for (int t = -7; t <= 7; ++t) {
      const float d = assign_and_fit(x, float(v0 + t) / max, idx, &fit);
      if (fit > best_fit) best_d = d, best_fit = fit;
    }
  for (int round = 0; round < 2 && best_d != 0.f; ++round) {
    const float d = assign_and_fit(x, 1.f / best_d, idx, &fit);
    if (fit <= best_fit) break;
    best_d = d, best_fit = fit;
  }
  b->d = f32_to_f16(best_d);
  const float d16 = f16_to_f32(b->d);
  assign_and_fit(x, d16 != 0.f ? 1.f / d16 : 0.f, idx, &fit);
  block32::pack_nibbles(idx, b->qs);
}

float dot_block(const BlockIq4Nl& b, const ActQ8x32& a) {
  int32_t sumi = 0;
  for (int k = 0; k < 32; ++k) sumi += kIq4Values[block32::nibble(b.qs, k)] * a.q[k];
  return f16_to_f32(b.d) * a.d * float(sumi);
}

KT_GGUF_FORMAT(iq4_nl, BlockIq4Nl)

}  // namespace kt
