// q2_K: 256 weights in 16 sub-blocks of 16, 2-bit q, a 4-bit scale and a 4-bit min per sub-block
// against the fp16 super-block scales d and dmin (2.625 bits per weight). BlockQ2_K, 84 bytes:
//
//   scales[16]  byte j: sub-block j,  low nibble sc_j, high nibble m_j
//   qs[64]      two halves of 32 bytes, 128 weights each; in half h, weight 128h + 32s + l
//               (s = 0..3, l = 0..31) is (qs[32h + l] >> 2s) & 3:
//                 qs[32h + l] = q[128h + l] | q[128h + 32 + l] << 2 | q[128h + 64 + l] << 4 | q[128h + 96 + l] << 6
//   d, dmin     fp16
//
//   w[k] = d * sc_j * q[k] - dmin * m_j      j = k / 16   (ggml: dl * q - ml, dl = d * sc, ml = dmin * m)
#include "formats/gguf_format.h"
#include "formats/kquant_fit.h"

namespace kt {

void dequantize_block(const BlockQ2_K& b, float* out) {
  const float d = f16_to_f32(b.d), dmin = f16_to_f32(b.dmin);
  for (int k = 0; k < kQK; ++k) {
    const int j = k / 16, h = k / 128, s = k % 128 / 32, l = k % 32;
    const float dl = d * float(b.scales[j] & 15), ml = dmin * float(b.scales[j] >> 4);
    out[k] = dl * float((b.qs[32 * h + l] >> 2 * s) & 3) - ml;
  }
}

void quantize_block(const float* x, BlockQ2_K* b) {
  kquant::ScaleMin f[16];
  float smax = 0.f, mmax = 0.f;
  for (int j = 0; j < 16; ++j) {
    f[j] = kquant::fit_scale_min(x + 16 * j, 16, /*nmax=*/3, /*nstep=*/15);
    smax = std::max(smax, f[j].s), mmax = std::max(mmax, f[j].m);
  }
  uint16_t dc[8], mc[8];
  const int nd = kquant::super_scale_candidates(smax, 15.f, dc), nm = kquant::super_scale_candidates(mmax, 15.f, mc);
  kquant::encode_best(x, dc, nd, mc, nm, b, [&](uint16_t d16, uint16_t dmin16, BlockQ2_K* o) {
    o->d = d16, o->dmin = dmin16;
    uint8_t q[kQK];
    for (int j = 0; j < 16; ++j) {
      const auto r = kquant::encode_scale_min(x + 16 * j, 16, /*nmax=*/3, f[j], f16_to_f32(d16), f16_to_f32(dmin16),
                                              /*imax=*/15, q + 16 * j);
      o->scales[j] = uint8_t(r.sc | r.m << 4);
    }
    std::fill(o->qs, o->qs + 64, uint8_t(0));
    for (int k = 0; k < kQK; ++k) o->qs[32 * (k / 128) + k % 32] |= uint8_t(q[k] << 2 * (k % 128 / 32));
  });
}

// sum_k w[k] * a.d * a.q[k] = d a.d sum_j sc_j (sum_{k in j} q[k] a.q[k]) - dmin a.d sum_j m_j bsums[j]
float dot_block(const BlockQ2_K& b, const ActQ8x256& a) {
  int32_t isum = 0, msum = 0;
  for (int j = 0; j < 16; ++j) {
    int32_t s = 0;
    for (int k = 16 * j; k < 16 * j + 16; ++k) {
      const int h = k / 128, sh = k % 128 / 32, l = k % 32;
      s += ((b.qs[32 * h + l] >> 2 * sh) & 3) * a.q[k];
    }
    isum += (b.scales[j] & 15) * s;
    msum += (b.scales[j] >> 4) * a.bsums[j];
  }
  const float dall = f16_to_f32(b.d) * a.d, dmin = f16_to_f32(b.dmin) * a.d;
  return dall * float(isum) - dmin * float(msum);
}

KT_GGUF_FORMAT(q2_K, BlockQ2_K)

}  // namespace kt
