// [NOTE] int4_g32 quantizer on AVX512 F/BW/DQ/VL: 16 groups per zmm, each lane running the
// reference's algorithm (kernels/quant_int4g32_lanes.h says how that stays bit-identical).
// This file supplies the 16-lane policy: zmm arithmetic with __mmask16 lane masks, the 16 x 32
// transpose of a block of groups, the fp16 store and the final q of one group.
#include <immintrin.h>

#include "kernels/kernel_decls.h"
#include "kernels/quant_int4g32_lanes.h"

namespace kt {
namespace {

struct Lanes16 {
  static constexpr int L = 16;
  static constexpr int kIntAcc = 4;  // accumulator chains for the exact sums of q and q^2
  using F = __m512;
  using M = __mmask16;
  static F zero() { return _mm512_setzero_ps(); }
  static F set1(float x) { return _mm512_set1_ps(x); }
  static F load(const float* p) { return _mm512_load_ps(p); }
  static void store(float* p, F v) { _mm512_store_ps(p, v); }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F div(F a, F b) { return _mm512_div_ps(a, b); }
  static F fmadd(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static F min(F a, F b) { return _mm512_min_ps(a, b); }  // a < b ? a : b
  static F max(F a, F b) { return _mm512_max_ps(a, b); }  // a > b ? a : b
  static F round(F a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static M lt(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  static M le(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_LE_OQ); }
  static M gt(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
  static M eq(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ); }
  static M mand(M a, M b) { return M(a & b); }
  static M mnot(M a) { return M(~a); }
  static bool any(M a) { return a != 0; }
  static F select(M m, F a, F b) { return _mm512_mask_blend_ps(m, b, a); }  // m ? a : b
  static F keep(M m, F a) { return _mm512_maskz_mov_ps(m, a); }            // m ? a : +0
  static M below(const int32_t* len, int i) {                              // i < len[l]
    return _mm512_cmpgt_epi32_mask(_mm512_load_si512(len), _mm512_set1_epi32(i));
  }
  static __m256i to_f16(F x) { return _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static F f16_round(F x) { return _mm512_cvtph_ps(to_f16(x)); }
  // fp16 bits of x; NaN -> sign | 0x7e00 as f32_to_f16 (vcvtps2ph would keep payload bits)
  static void store_f16(uint16_t* dst, F x) {
    const __m256i sign = _mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_castps_si512(x), 16));
    const __m256i nan_bits = _mm256_or_si256(_mm256_and_si256(sign, _mm256_set1_epi16(short(0x8000))),
                                             _mm256_set1_epi16(0x7e00));
    const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), _mm256_mask_mov_epi16(to_f16(x), nan, nan_bits));
  }

  // 16 x 16 transpose in registers: r[k] lane c  ->  r[c] lane k
  static void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 8; ++i) {
      t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
      t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // u[4i + c], 128-bit block b: column 4b + c of rows 4i .. 4i+3
    for (int i = 0; i < 4; ++i) {
      r[4 * i + 0] = _mm512_shuffle_ps(t[4 * i + 0], t[4 * i + 2], 0x44);
      r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i + 0], t[4 * i + 2], 0xee);
      r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
      r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xee);
    }
    // column 4b + c = blocks b of u[c], u[4 + c], u[8 + c], u[12 + c]
    for (int c = 0; c < 4; ++c) {
      t[c] = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x88);
      t[4 + c] = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xdd);
      t[8 + c] = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x88);
      t[12 + c] = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xdd);
    }
    for (int c = 0; c < 4; ++c) {
      r[c] = _mm512_shuffle_f32x4(t[c], t[8 + c], 0x88);
      r[8 + c] = _mm512_shuffle_f32x4(t[c], t[8 + c], 0xdd);
      r[4 + c] = _mm512_shuffle_f32x4(t[4 + c], t[12 + c], 0x88);
      r[12 + c] = _mm512_shuffle_f32x4(t[4 + c], t[12 + c], 0xdd);
    }
  }
  // src[l]: lane l's 32 values  ->  wt[i][l] = src[l][i]
  static void transpose(const float* const* src, float* wt) {
    for (int h = 0; h < 2; ++h) {
      __m512 r[16];
      for (int l = 0; l < 16; ++l) r[l] = _mm512_loadu_ps(src[l] + 16 * h);
      transpose16(r);
      for (int c = 0; c < 16; ++c) _mm512_store_ps(wt + (16 * h + c) * 16, r[c]);
    }
  }
  // q[i] = uint8(round_half_even(std::clamp((w[i] - m) * inv, 0, 15))), i < 32; a NaN gives 0
  static void quantize_group(const float* w, float m, float inv, uint8_t* q) {
    const __m512 mv = _mm512_set1_ps(m), iv = _mm512_set1_ps(inv);
    for (int h = 0; h < 2; ++h) {
      __m512 t = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(w + 16 * h), mv), iv);
      t = _mm512_min_ps(_mm512_set1_ps(15.f), _mm512_max_ps(_mm512_setzero_ps(), t));  // clamp keeps NaN
      t = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 16 * h), _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(t)));
    }
  }
};

}  // namespace

void quantize_int4g32_16g__avx512(const float* w, int N, int K, uint8_t* q, uint16_t* d, uint16_t* m) {
  quantize_int4g32_lanes<Lanes16>(w, N, K, q, d, m);
}

}  // namespace kt
