// q3_K: 256 weights in 16 sub-blocks of 16, 3-bit signed q in -4..3, a 6-bit signed scale per
// sub-block against the fp16 super-block scale d (3.4375 bits per weight). BlockQ3_K, 110 bytes:
//
//   hmask[32]   the third bit: weight k is bit k / 32 of hmask[k % 32]; a clear bit subtracts 4
//   qs[64]      the low 2 bits, as q2_K's: in half h, weight 128h + 32s + l is (qs[32h + l] >> 2s) & 3
//   scales[12]  16 six-bit values u_j = sc_j + 32:
//                 low 4 bits   j < 8: scales[j] & 15        j >= 8: scales[j - 8] >> 4
//                 high 2 bits  (scales[8 + j % 4] >> 2 (j / 4)) & 3
//   d           fp16 (may be negative: the quantizer maps the largest scale to sc = -32)
//
//   q[k] = low2(k) - (hbit(k) ? 0 : 4),   w[k] = d * sc_j * q[k]     j = k / 16   (ggml: dl * q, dl = d * sc)
#include "formats/gguf_format.h"
#include "formats/kquant_fit.h"

namespace kt {
namespace {

int q3K_scale(const uint8_t* s, int j) {
  const int lo = j < 8 ? s[j] & 15 : s[j - 8] >> 4, hi = (s[8 + j % 4] >> 2 * (j / 4)) & 3;
  return (lo | hi << 4) - 32;
}

int q3K_q(const BlockQ3_K& b, int k) {
  const int h = k / 128, s = k % 128 / 32, l = k % 32;
  return ((b.qs[32 * h + l] >> 2 * s) & 3) - ((b.hmask[l] >> (k / 32)) & 1 ? 0 : 4);
}

}  // namespace

void dequantize_block(const BlockQ3_K& b, float* out) {
  const float d = f16_to_f32(b.d);
  for (int j = 0; j < 16; ++j) {
    const float dl = d * float(q3K_scale(b.scales, j));
    for (int k = 16 * j; k < 16 * j + 16; ++k) out[k] = dl * float(q3K_q(b, k));
  }
}

void quantize_block(const float* x, BlockQ3_K* b) {
  const kquant::Levels L{nullptr, /*lo=*/-4, /*n=*/8};  // level index u = q + 4
  float s[16];
  for (int j = 0; j < 16; ++j) s[j] = kquant::fit_scale_sym(x + 16 * j, 16, L, /*nstep=*/10);
  uint16_t dc[8];
  const uint16_t no_min = 0;
  const int nd = kquant::super_scale_candidates(kquant::signed_max(s, 16), -32.f, dc);
  kquant::encode_best(x, dc, nd, &no_min, 1, b, [&](uint16_t d16, uint16_t, BlockQ3_K* o) {
    o->d = d16;
    uint8_t u[kQK];
    std::fill(o->scales, o->scales + 12, uint8_t(0));
    for (int j = 0; j < 16; ++j) {
      const int us = kquant::encode_scale(x + 16 * j, 16, L, s[j], f16_to_f32(d16), -32, 31, u + 16 * j) + 32;
      o->scales[j % 8] |= uint8_t((us & 15) << 4 * (j / 8));
      o->scales[8 + j % 4] |= uint8_t((us >> 4) << 2 * (j / 4));
    }
    std::fill(o->hmask, o->hmask + 32, uint8_t(0));
    std::fill(o->qs, o->qs + 64, uint8_t(0));
    for (int k = 0; k < kQK; ++k) {
      o->qs[32 * (k / 128) + k % 32] |= uint8_t((u[k] & 3) << 2 * (k % 128 / 32));
      o->hmask[k % 32] |= uint8_t((u[k] >> 2) << (k / 32));
    }
  });
}

// sum_k w[k] * a.d * a.q[k] = d a.d sum_j sc_j (sum_{k in j} q[k] a.q[k]), q with its -4 applied
// (the offset depends on each weight's hmask bit, not on the sub-block: bsums cannot carry it).
float dot_block(const BlockQ3_K& b, const ActQ8x256& a) {
  int32_t isum = 0;
  for (int j = 0; j < 16; ++j) {
    int32_t s = 0;
    for (int k = 16 * j; k < 16 * j + 16; ++k) s += q3K_q(b, k) * a.q[k];
    isum += q3K_scale(b.scales, j) * s;
  }
  return f16_to_f32(b.d) * a.d * float(isum);
}

KT_GGUF_FORMAT(q3_K, BlockQ3_K)

}  // namespace kt
