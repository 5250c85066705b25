// [NOTE] int8_pc quantizer on AVX512 F/BW/DQ/VL, 16 k per zmm; bit-identical to
// int8pc_quantize_ref (cpp/src/formats/int8_pc.cpp) on every input:
//   amax = max_k |w[k]| over the non-NaN values: std::max(amax, |x|) keeps amax for a NaN x, as
//          vmaxps(|x|, acc) does; the maximum of non-negative non-NaN values does not depend on
//          the order, so four accumulators and any final reduction give the same bits.
//   s = amax / 127, inv = s > 0 ? 1 / s : 0 (scalar, as in the reference)
//   q = int8(round_half_even(std::clamp(w * inv, -127, 127))): clamp as vmaxps(-127, t) then
//          vminps(127, t), which keep a NaN like std::clamp; round to nearest even with vcvtps2dq
//          (the default rounding mode, which the reference's magic-number rounding also follows);
//          a NaN converts to 0x80000000, whose low byte (vpmovdb truncates) is the reference's 0.
// Built with -ffp-contract=off like the other quantizers; there is nothing to contract here.
#include <immintrin.h>

#include "kernels/kernel_decls.h"

namespace kt {
namespace {

inline __m512 abs_ps(__m512 x) { return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x7fffffff))); }

inline __m128i quantize16(__m512 x, __m512 inv) {
  __m512 t = _mm512_mul_ps(x, inv);
  t = _mm512_min_ps(_mm512_set1_ps(127.f), _mm512_max_ps(_mm512_set1_ps(-127.f), t));
  return _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(t));
}

}  // namespace

void quantize_int8pc_16k__avx512(const float* w, int N, int K, int8_t* q, float* scale) {
  const int K64 = K / 64 * 64, K16 = K / 16 * 16;
  const __mmask16 tail = __mmask16((1u << (K - K16)) - 1);
  for (int n = 0; n < N; ++n) {
    const float* row = w + size_t(n) * K;
    int8_t* qr = q + size_t(n) * K;
    // amax over the row; padding lanes load +0, which never exceeds an accumulator (>= +0)
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    int k = 0;
    for (; k < K64; k += 64)
      for (int j = 0; j < 4; ++j) acc[j] = _mm512_max_ps(abs_ps(_mm512_loadu_ps(row + k + 16 * j)), acc[j]);
    for (; k < K16; k += 16) acc[0] = _mm512_max_ps(abs_ps(_mm512_loadu_ps(row + k)), acc[0]);
    if (tail) acc[1] = _mm512_max_ps(abs_ps(_mm512_maskz_loadu_ps(tail, row + k)), acc[1]);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(acc[0], acc[1]), _mm512_max_ps(acc[2], acc[3])));
    const float s = amax / 127.f, inv = s > 0.f ? 1.f / s : 0.f;
    scale[n] = s;
    const __m512 iv = _mm512_set1_ps(inv);
    for (k = 0; k < K16; k += 16)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(qr + k), quantize16(_mm512_loadu_ps(row + k), iv));
    if (tail) _mm_mask_storeu_epi8(qr + k, tail, quantize16(_mm512_maskz_loadu_ps(tail, row + k), iv));
  }
}

}  // namespace kt
