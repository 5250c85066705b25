// q4_K: 256 weights in 8 sub-blocks of 32, 4-bit q, a 6-bit scale and a 6-bit min per sub-block
// against the fp16 super-block scales d and dmin (4.5 bits per weight). BlockQ4_K, 144 bytes:
//
//   d, dmin     fp16
//   scales[12]  8 pairs (sc_j, m_j) of 6 bits (q4K_scale_min in kt/gguf_blocks.h):
//                 byte  0..3   sc_0..3  | high 2 bits of sc_4..7 << 6
//                 byte  4..7   m_0..3   | high 2 bits of m_4..7  << 6
//                 byte  8..11  low 4 bits of sc_4..7 | low 4 bits of m_4..7 << 4
//   qs[128]     four chunks of 32 bytes, 64 weights each; in chunk c, byte l holds
//                 q[64c + l] (low nibble, sub-block 2c)  |  q[64c + 32 + l] << 4 (high nibble, sub-block 2c + 1)
//
//   w[k] = d * sc_j * q[k] - dmin * m_j      j = k / 32   (ggml: d1 * q - m1, d1 = d * sc, m1 = dmin * m)
#include "formats/gguf_format.h"
#include "formats/kquant_fit.h"

namespace kt {
namespace {

int q4K_q(const BlockQ4_K& b, int k) { return (b.qs[32 * (k / 64) + k % 32] >> 4 * (k % 64 / 32)) & 15; }

}  // namespace

void dequantize_block(const BlockQ4_K& b, float* out) {
  const float d = f16_to_f32(b.d), dmin = f16_to_f32(b.dmin);
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    q4K_scale_min(j, b.scales, &sc, &m);
    const float d1 = d * float(sc), m1 = dmin * float(m);
    for (int k = 32 * j; k < 32 * j + 32; ++k) out[k] = d1 * float(q4K_q(b, k)) - m1;
  }
}

void quantize_block(const float* x, BlockQ4_K* b) {
  kquant::ScaleMin f[8];
  float smax = 0.f, mmax = 0.f;
  for (int j = 0; j < 8; ++j) {
    f[j] = kquant::fit_scale_min(x + 32 * j, 32, /*nmax=*/15, /*nstep=*/20);
    smax = std::max(smax, f[j].s), mmax = std::max(mmax, f[j].m);
  }
  uint16_t dc[8], mc[8];
  const int nd = kquant::super_scale_candidates(smax, 63.f, dc), nm = kquant::super_scale_candidates(mmax, 63.f, mc);
  kquant::encode_best(x, dc, nd, mc, nm, b, [&](uint16_t d16, uint16_t dmin16, BlockQ4_K* o) {
    o->d = d16, o->dmin = dmin16;
    uint8_t q[kQK];
    std::fill(o->scales, o->scales + 12, uint8_t(0));
    for (int j = 0; j < 8; ++j) {
      const auto r = kquant::encode_scale_min(x + 32 * j, 32, /*nmax=*/15, f[j], f16_to_f32(d16), f16_to_f32(dmin16),
                                              /*imax=*/63, q + 32 * j);
      kquant::q4K_set_scale_min(j, r.sc, r.m, o->scales);
    }
    std::fill(o->qs, o->qs + 128, uint8_t(0));
    for (int k = 0; k < kQK; ++k) o->qs[32 * (k / 64) + k % 32] |= uint8_t(q[k] << 4 * (k % 64 / 32));
  });
}

// sum_k w[k] * a.d * a.q[k] = d a.d sum_j sc_j (sum_{k in j} q[k] a.q[k])
//                            - dmin a.d sum_j m_j (bsums[2j] + bsums[2j + 1])
float dot_block(const BlockQ4_K& b, const ActQ8x256& a) {
  int32_t isum = 0, msum = 0;
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    q4K_scale_min(j, b.scales, &sc, &m);
    int32_t s = 0;
    for (int k = 32 * j; k < 32 * j + 32; ++k) s += q4K_q(b, k) * a.q[k];
    isum += sc * s;
    msum += m * (a.bsums[2 * j] + a.bsums[2 * j + 1]);
  }
  const float d = f16_to_f32(b.d) * a.d, dmin = f16_to_f32(b.dmin) * a.d;
  return d * float(isum) - dmin * float(msum);
}

KT_GGUF_FORMAT(q4_K, BlockQ4_K)
KT_GGUF_WORD_LAYOUT(q4_K, BlockQ4_K)

}  // namespace kt
