// q6_K: 256 weights in 16 sub-blocks of 16, 6-bit q stored as u = q + 32 (q in -32..31), an int8
// scale per sub-block against the fp16 super-block scale d (6.5625 bits per weight). BlockQ6_K, 210 bytes:
//
//   ql[128]     the low 4 bits: two halves of 64 bytes, 128 weights each; in half h, weight
//               128h + 32s + l (s = 0..3, l = 0..31) is
//                 s = 0: ql[64h + l] & 15      s = 1: ql[64h + 32 + l] & 15
//                 s = 2: ql[64h + l] >> 4      s = 3: ql[64h + 32 + l] >> 4
//   qh[64]      the high 2 bits: in half h, weight 128h + 32s + l is (qh[32h + l] >> 2s) & 3
//   scales[16]  int8 sc_j
//   d           fp16 (may be negative: the quantizer maps the largest scale to sc = -128)
//
//   w[k] = d * sc_j * (u[k] - 32)      j = k / 16   (ggml: d * sc * q, left to right)
#include "formats/gguf_format.h"
#include "formats/kquant_fit.h"

namespace kt {
namespace {

int q6K_u(const BlockQ6_K& b, int k) {  // 0..63
  const int h = k / 128, s = k % 128 / 32, l = k % 32;
  return ((b.ql[64 * h + 32 * (s & 1) + l] >> 4 * (s >> 1)) & 15) | ((b.qh[32 * h + l] >> 2 * s) & 3) << 4;
}

}  // namespace

void dequantize_block(const BlockQ6_K& b, float* out) {
  const float d = f16_to_f32(b.d);
  for (int j = 0; j < 16; ++j) {
    const float dl = d * float(b.scales[j]);
    for (int k = 16 * j; k < 16 * j + 16; ++k) out[k] = dl * float(q6K_u(b, k) - 32);
  }
}

void quantize_block(const float* x, BlockQ6_K* b) {
  const kquant::Levels L{nullptr, /*lo=*/-32, /*n=*/64};  // level index u = q + 32
  float s[16];
  for (int j = 0; j < 16; ++j) s[j] = kquant::fit_scale_sym(x + 16 * j, 16, L, /*nstep=*/10);
  uint16_t dc[8];
  const uint16_t no_min = 0;
  const int nd = kquant::super_scale_candidates(kquant::signed_max(s, 16), -128.f, dc);
  kquant::encode_best(x, dc, nd, &no_min, 1, b, [&](uint16_t d16, uint16_t, BlockQ6_K* o) {
    o->d = d16;
    uint8_t u[kQK];
    for (int j = 0; j < 16; ++j)
      o->scales[j] = int8_t(kquant::encode_scale(x + 16 * j, 16, L, s[j], f16_to_f32(d16), -128, 127, u + 16 * j));
    std::fill(o->ql, o->ql + 128, uint8_t(0));
    std::fill(o->qh, o->qh + 64, uint8_t(0));
    for (int k = 0; k < kQK; ++k) {
      const int h = k / 128, sh = k % 128 / 32, l = k % 32;
      o->ql[64 * h + 32 * (sh & 1) + l] |= uint8_t((u[k] & 15) << 4 * (sh >> 1));
      o->qh[32 * h + l] |= uint8_t((u[k] >> 4) << 2 * sh);
    }
  });
}

// sum_k w[k] * a.d * a.q[k] = d a.d sum_j sc_j (sum_{k in j} u[k] a.q[k] - 32 bsums[j])
float dot_block(const BlockQ6_K& b, const ActQ8x256& a) {
  int32_t isum = 0;
  for (int j = 0; j < 16; ++j) {
    int32_t s = 0;
    for (int k = 16 * j; k < 16 * j + 16; ++k) s += q6K_u(b, k) * a.q[k];
    isum += b.scales[j] * (s - 32 * a.bsums[j]);
  }
  return f16_to_f32(b.d) * a.d * float(isum);
}

KT_GGUF_FORMAT(q6_K, BlockQ6_K)
KT_GGUF_WORD_LAYOUT(q6_K, BlockQ6_K)

}  // namespace kt
