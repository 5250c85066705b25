// iq4_xs: 256 weights in 8 sub-blocks of 32, a 4-bit index into the 16 non-uniform levels kIq4Values
// (kt/gguf_blocks.h, -127..113), a 6-bit signed scale per sub-block against the fp16 super-block
// scale d (4.25 bits per weight). BlockIq4Xs, 136 bytes:
//
//   d           fp16 (may be negative: the quantizer maps the largest scale to ls = -32)
//   scales_h    uint16: bits 2j, 2j + 1 are the high 2 bits of u_j = ls_j + 32
//   scales_l[4] byte i: low 4 bits of u_{2i} (low nibble), of u_{2i + 1} (high nibble)
//   qs[128]     16 bytes per sub-block j: byte l holds the index of weight 32j + l (low nibble)
//               and of weight 32j + 16 + l (high nibble)
//
//   w[k] = d * ls_j * kIq4Values[idx[k]]      j = k / 32   (ggml: dl * v, dl = d * (u - 32))
#include "formats/gguf_format.h"
#include "formats/kquant_fit.h"

namespace kt {
namespace {

int iq4xs_scale(const BlockIq4Xs& b, int j) {
  return (((b.scales_l[j / 2] >> 4 * (j % 2)) & 15) | ((b.scales_h >> 2 * j) & 3) << 4) - 32;
}

int iq4xs_value(const BlockIq4Xs& b, int k) {
  const int j = k / 32, l = k % 16;
  return kIq4Values[(b.qs[16 * j + l] >> 4 * (k % 32 / 16)) & 15];
}

}  // namespace

void dequantize_block(const BlockIq4Xs& b, float* out) {
  const float d = f16_to_f32(b.d);
  for (int j = 0; j < 8; ++j) {
    const float dl = d * float(iq4xs_scale(b, j));
    for (int k = 32 * j; k < 32 * j + 32; ++k) out[k] = dl * float(iq4xs_value(b, k));
  }
}

void quantize_block(const float* x, BlockIq4Xs* b) {
  const kquant::Levels L{kIq4Values, /*lo=*/0, /*n=*/16};
  float s[8];
  for (int j = 0; j < 8; ++j) s[j] = kquant::fit_scale_sym(x + 32 * j, 32, L, /*nstep=*/6);
  uint16_t dc[8];
  const uint16_t no_min = 0;
  const int nd = kquant::super_scale_candidates(kquant::signed_max(s, 8), -32.f, dc);
  kquant::encode_best(x, dc, nd, &no_min, 1, b, [&](uint16_t d16, uint16_t, BlockIq4Xs* o) {
    o->d = d16;
    uint8_t idx[kQK];
    uint16_t scales_h = 0;
    std::fill(o->scales_l, o->scales_l + 4, uint8_t(0));
    for (int j = 0; j < 8; ++j) {
      const int u = kquant::encode_scale(x + 32 * j, 32, L, s[j], f16_to_f32(d16), -32, 31, idx + 32 * j) + 32;
      o->scales_l[j / 2] |= uint8_t((u & 15) << 4 * (j % 2));
      scales_h |= uint16_t((u >> 4) << 2 * j);
    }
    o->scales_h = scales_h;
    std::fill(o->qs, o->qs + 128, uint8_t(0));
    for (int k = 0; k < kQK; ++k) o->qs[16 * (k / 32) + k % 16] |= uint8_t(idx[k] << 4 * (k % 32 / 16));
  });
}

// sum_k w[k] * a.d * a.q[k] = d a.d sum_j ls_j (sum_{k in j} kIq4Values[idx[k]] a.q[k])
float dot_block(const BlockIq4Xs& b, const ActQ8x256& a) {
  int32_t isum = 0;
  for (int j = 0; j < 8; ++j) {
    int32_t s = 0;
    for (int k = 32 * j; k < 32 * j + 32; ++k) s += iq4xs_value(b, k) * a.q[k];
    isum += iq4xs_scale(b, j) * s;
  }
  return f16_to_f32(b.d) * a.d * float(isum);
}

KT_GGUF_FORMAT(iq4_xs, BlockIq4Xs)
KT_GGUF_WORD_LAYOUT(iq4_xs, BlockIq4Xs)

}  // namespace kt
