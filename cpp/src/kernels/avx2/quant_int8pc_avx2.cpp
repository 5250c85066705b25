// [NOTE] int8_pc quantizer on AVX2, 8 k per ymm; bit-identical to int8pc_quantize_ref
// (cpp/src/formats/int8_pc.cpp) on every input, by the same steps as quant_int8pc_avx512.cpp:
// amax with vmaxps(|x|, acc) (a NaN x keeps acc, as std::max(amax, |x|) does), s and inv in scalar
// code, clamp with vmaxps(-127, t) / vminps(127, t), vcvtps2dq (round to nearest even). A NaN
// converts to 0x80000000; the reference stores its low byte, 0, so the int32 lanes are narrowed by
// keeping their low bytes (the saturating packs alone would give -128). The K % 8 tail is scalar.
#include <immintrin.h>

#include "kernels/kernel_decls.h"

namespace kt {
namespace {

inline __m256 abs_ps(__m256 x) { return _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff))); }

// low byte of int32(round(clamp(x * inv, -127, 127)))
inline __m256i quantize8(__m256 x, __m256 inv) {
  __m256 t = _mm256_mul_ps(x, inv);
  t = _mm256_min_ps(_mm256_set1_ps(127.f), _mm256_max_ps(_mm256_set1_ps(-127.f), t));
  return _mm256_and_si256(_mm256_cvtps_epi32(t), _mm256_set1_epi32(0xff));
}

}  // namespace

void quantize_int8pc_8k__avx2(const float* w, int N, int K, int8_t* q, float* scale) {
  const int K32 = K / 32 * 32, K8 = K / 8 * 8;
  for (int n = 0; n < N; ++n) {
    const float* row = w + size_t(n) * K;
    int8_t* qr = q + size_t(n) * K;
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    int k = 0;
    for (; k < K32; k += 32)
      for (int j = 0; j < 4; ++j) acc[j] = _mm256_max_ps(abs_ps(_mm256_loadu_ps(row + k + 8 * j)), acc[j]);
    for (; k < K8; k += 8) acc[0] = _mm256_max_ps(abs_ps(_mm256_loadu_ps(row + k)), acc[0]);
    __m256 m8 = _mm256_max_ps(_mm256_max_ps(acc[0], acc[1]), _mm256_max_ps(acc[2], acc[3]));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m8), _mm256_extractf128_ps(m8, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
    float amax = _mm_cvtss_f32(m4);
    for (; k < K; ++k) {  // std::max(amax, |x|): a NaN x keeps amax
      const float a = __builtin_fabsf(row[k]);
      amax = amax < a ? a : amax;
    }
    const float s = amax / 127.f, inv = s > 0.f ? 1.f / s : 0.f;
    scale[n] = s;
    const __m256 iv = _mm256_set1_ps(inv);
    for (k = 0; k < K32; k += 32) {
      // int32 -> int16 -> int8 with unsigned packs of the low bytes (0..255): no saturation;
      // the in-lane packs interleave the 128-bit halves, the permute puts the dwords in order
      const __m256i a = _mm256_packus_epi32(quantize8(_mm256_loadu_ps(row + k), iv),
                                            quantize8(_mm256_loadu_ps(row + k + 8), iv));
      const __m256i b = _mm256_packus_epi32(quantize8(_mm256_loadu_ps(row + k + 16), iv),
                                            quantize8(_mm256_loadu_ps(row + k + 24), iv));
      const __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(a, b), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(qr + k), bytes);
    }
    for (; k < K; ++k) {
      float t = row[k] * inv;
      t = t < -127.f ? -127.f : 127.f < t ? 127.f : t;  // std::clamp: a NaN stays NaN
      qr[k] = t == t ? int8_t(_mm_cvtss_si32(_mm_set_ss(t))) : int8_t(0);
    }
  }
}

}  // namespace kt
