// [NOTE] int4_g32 quantizer on AVX2 + FMA + F16C: 8 groups per ymm, each lane running the
// reference's algorithm (kernels/quant_int4g32_lanes.h says how that stays bit-identical).
// This file supplies the 8-lane policy: ymm arithmetic with all-ones lanes as masks, the 8 x 32
// transpose of a block of groups, the fp16 store and the final q of one group.
#include <immintrin.h>

#include "kernels/kernel_decls.h"
#include "kernels/quant_int4g32_lanes.h"

namespace kt {
namespace {

struct Lanes8 {
  static constexpr int L = 8;
  static constexpr int kIntAcc = 2;  // accumulator chains for the exact sums of q and q^2
  using F = __m256;
  using M = __m256;  // all-ones bits in the lanes where the condition holds
  static F zero() { return _mm256_setzero_ps(); }
  static F set1(float x) { return _mm256_set1_ps(x); }
  static F load(const float* p) { return _mm256_load_ps(p); }
  static void store(float* p, F v) { _mm256_store_ps(p, v); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F div(F a, F b) { return _mm256_div_ps(a, b); }
  static F fmadd(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static F min(F a, F b) { return _mm256_min_ps(a, b); }  // a < b ? a : b
  static F max(F a, F b) { return _mm256_max_ps(a, b); }  // a > b ? a : b
  static F round(F a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static M lt(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
  static M le(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_LE_OQ); }
  static M gt(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
  static M eq(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_EQ_OQ); }
  static M mand(M a, M b) { return _mm256_and_ps(a, b); }
  static M mnot(M a) { return _mm256_xor_ps(a, _mm256_castsi256_ps(_mm256_set1_epi32(-1))); }
  static bool any(M a) { return _mm256_movemask_ps(a) != 0; }
  static F select(M m, F a, F b) { return _mm256_blendv_ps(b, a, m); }  // m ? a : b
  static F keep(M m, F a) { return _mm256_and_ps(m, a); }               // m ? a : +0
  static M below(const int32_t* len, int i) {                           // i < len[l]
    const __m256i n = _mm256_load_si256(reinterpret_cast<const __m256i*>(len));
    return _mm256_castsi256_ps(_mm256_cmpgt_epi32(n, _mm256_set1_epi32(i)));
  }
  static __m128i to_f16(F x) { return _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static F f16_round(F x) { return _mm256_cvtph_ps(to_f16(x)); }
  // fp16 bits of x; NaN -> sign | 0x7e00 as f32_to_f16 (vcvtps2ph would keep payload bits)
  static void store_f16(uint16_t* dst, F x) {
    const __m256i xi = _mm256_castps_si256(x);
    const __m256i fix = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(xi, 16), _mm256_set1_epi32(0x8000)),
                                        _mm256_set1_epi32(0x7e00));
    const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
    const __m128i fix16 = _mm_packus_epi32(_mm256_castsi256_si128(fix), _mm256_extracti128_si256(fix, 1));
    const __m128i nan16 = _mm_packs_epi32(_mm256_castsi256_si128(nan), _mm256_extracti128_si256(nan, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm_blendv_epi8(to_f16(x), fix16, nan16));
  }

  // 8 x 8 transpose in registers: r[k] lane c  ->  r[c] lane k
  static void transpose8(__m256 r[8]) {
    __m256 t[8];
    for (int i = 0; i < 4; ++i) {
      t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
      t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // u[4i + c], 128-bit half b: column 4b + c of rows 4i .. 4i+3
    for (int i = 0; i < 2; ++i) {
      r[4 * i + 0] = _mm256_shuffle_ps(t[4 * i + 0], t[4 * i + 2], 0x44);
      r[4 * i + 1] = _mm256_shuffle_ps(t[4 * i + 0], t[4 * i + 2], 0xee);
      r[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
      r[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xee);
    }
    for (int c = 0; c < 4; ++c) {
      t[c] = _mm256_permute2f128_ps(r[c], r[4 + c], 0x20);
      t[4 + c] = _mm256_permute2f128_ps(r[c], r[4 + c], 0x31);
    }
    for (int c = 0; c < 8; ++c) r[c] = t[c];
  }
  // src[l]: lane l's 32 values  ->  wt[i][l] = src[l][i]
  static void transpose(const float* const* src, float* wt) {
    for (int h = 0; h < 4; ++h) {
      __m256 r[8];
      for (int l = 0; l < 8; ++l) r[l] = _mm256_loadu_ps(src[l] + 8 * h);
      transpose8(r);
      for (int c = 0; c < 8; ++c) _mm256_store_ps(wt + (8 * h + c) * 8, r[c]);
    }
  }
  // q[i] = uint8(round_half_even(std::clamp((w[i] - m) * inv, 0, 15))), i < 32; a NaN gives 0
  static void quantize_group(const float* w, float m, float inv, uint8_t* q) {
    const __m256 mv = _mm256_set1_ps(m), iv = _mm256_set1_ps(inv);
    __m256i v[4];
    for (int h = 0; h < 4; ++h) {
      __m256 t = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(w + 8 * h), mv), iv);
      t = _mm256_min_ps(_mm256_set1_ps(15.f), _mm256_max_ps(_mm256_setzero_ps(), t));  // clamp keeps NaN
      t = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      v[h] = _mm256_cvttps_epi32(t);  // NaN -> 0x80000000, which the packs below saturate to 0
    }
    // int32 lanes 0..15 -> bytes; the in-lane packs interleave the 128-bit halves, permute fixes it
    const __m256i w16a = _mm256_packs_epi32(v[0], v[1]), w16b = _mm256_packs_epi32(v[2], v[3]);
    const __m256i b = _mm256_packus_epi16(w16a, w16b);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q),
                        _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
  }
};

}  // namespace

void quantize_int4g32_8g__avx2(const float* w, int N, int K, uint8_t* q, uint16_t* d, uint16_t* m) {
  quantize_int4g32_lanes<Lanes8>(w, N, K, q, d, m);
}

}  // namespace kt
