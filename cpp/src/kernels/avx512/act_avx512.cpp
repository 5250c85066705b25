// [NOTE] Activation codec on AVX512 F/BW, 16 values per zmm; the reference's bits
// (cpp/src/formats/activation.cpp) on every input:
//   amax and the NaN/Inf check from the largest |x| bit pattern: for non-negative floats the
//     integer order of the bits is the numeric order, and a row is finite iff that maximum is
//     below 0x7f800000 (+Inf; the NaNs lie above it).
//   bf16: round to nearest even on the bits, (u + 0x7fff + bit 16 of u) >> 16; a NaN keeps its
//     high half with the quiet bit set.
//   q8: round_half_even(x * inv) (the reference's magic-number rounding) is the default-mode
//     vcvtps2dq of the same product: |x * inv| <= 127 (plus an ulp), far inside both ranges.
//   widen: bf16 is the high half; vcvtph2ps converts every finite f16, subnormals included,
//     exactly (a signalling NaN comes back quiet: a NaN either way, and rows with NaN are refused).
//   q8_32 / q8_256 (the GGUF kernels' blocks): the q8 rule on each block's own amax, its sums of q
//     by reductions of the 16 lanes (q8_256's bsums are exactly one zmm of q each).
// Masked loads cover the tail and the padding K..Kp: they read zeros, which quantize to 0.
#include <immintrin.h>

#include <cstring>

#include "kernels/kernel_decls.h"
#include "kt/gguf_blocks.h"

namespace kt {
namespace {

inline __mmask16 lanes_below(int n) { return n >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n > 0 ? n : 0)) - 1); }

inline __m512i round_bf16_bits(__m512i u) {
  const __m512i rounded = _mm512_srli_epi32(
      _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)),
                       _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1))),
      16);
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                                _mm512_set1_epi32(0x7f800000));
  return _mm512_mask_blend_epi32(nan, rounded, _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40)));
}

// q = round_half_even(x * inv), or of x / s where 127 / amax overflows (as the reference)
inline __m512i quantize16(__m512 x, __m512 inv, __m512 s, bool divide) {
  return _mm512_cvtps_epi32(divide ? _mm512_div_ps(x, s) : _mm512_mul_ps(x, inv));
}

// The GGUF kernels' blocks (q8_32, q8_256) of a row of K values, the values past K zero: per block
// the q8 rule on its own amax (as quantize_act_block), and its sums of q per 16 k: q8_256's
// bsums, the two halves of q8_32's sum.
inline void q8_block_16(const float* x, int n, int8_t* q, float* d, int16_t* sums16, int nvec) {
  __m512 v[16];
  __m512i amax_bits = _mm512_setzero_si512();
  for (int i = 0; i < nvec; ++i) {
    v[i] = _mm512_maskz_loadu_ps(lanes_below(n - 16 * i), x + 16 * i);
    amax_bits = _mm512_max_epu32(amax_bits, _mm512_and_si512(_mm512_castps_si512(v[i]), _mm512_set1_epi32(0x7fffffff)));
  }
  const uint32_t amax_u = _mm512_reduce_max_epu32(amax_bits);
  float amax;
  __builtin_memcpy(&amax, &amax_u, 4);
  const Q8Scale qs = q8_scale(amax);
  *d = qs.s;
  const __m512 vinv = _mm512_set1_ps(qs.inv), vs = _mm512_set1_ps(qs.s);
  for (int i = 0; i < nvec; ++i) {
    const __m512i qi = quantize16(v[i], vinv, vs, qs.divide);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 16 * i), _mm512_cvtepi32_epi8(qi));
    sums16[i] = int16_t(_mm512_reduce_add_epi32(qi));
  }
}

void quantize_q8_blocks(ActFormat format, const float* x, int K, int Kp, uint8_t* dst) {
  if (format == ActFormat::q8_256) {
    ActQ8x256* b = reinterpret_cast<ActQ8x256*>(dst);
    for (int i = 0; i < Kp / ActQ8x256::kK; ++i, ++b) {
      q8_block_16(x + i * ActQ8x256::kK, K - i * ActQ8x256::kK, b->q, &b->d, b->bsums, 16);
      std::memset(b->pad, 0, sizeof(b->pad));
    }
  } else {
    ActQ8x32* b = reinterpret_cast<ActQ8x32*>(dst);
    for (int i = 0; i < Kp / ActQ8x32::kK; ++i, ++b) {
      int16_t halves[2];
      q8_block_16(x + i * ActQ8x32::kK, K - i * ActQ8x32::kK, b->q, &b->d, halves, 2);
      b->sum = halves[0] + halves[1];
    }
  }
}

}  // namespace

bool quantize_act_16__avx512(ActFormat format, const float* x, int K, int Kp, uint8_t* dst, float* scale,
                             int32_t* gsum) {
  __m512i amax_bits = _mm512_setzero_si512();
  for (int k = 0; k < K; k += 16)
    amax_bits = _mm512_max_epu32(amax_bits, _mm512_and_si512(_mm512_maskz_loadu_epi32(lanes_below(K - k), x + k),
                                                              _mm512_set1_epi32(0x7fffffff)));
  const uint32_t amax_u = _mm512_reduce_max_epu32(amax_bits);
  if (amax_u >= 0x7f800000u) return false;
  float amax;
  __builtin_memcpy(&amax, &amax_u, 4);
  switch (format) {
    case ActFormat::f32:
      return quantize_act_row(format, x, K, Kp, dst, scale, gsum);  // a copy and zeros
    case ActFormat::q8_32:
    case ActFormat::q8_256:
      quantize_q8_blocks(format, x, K, Kp, dst);
      return true;
    case ActFormat::bf16: {
      uint16_t* o = reinterpret_cast<uint16_t*>(dst);
      for (int k = 0; k < Kp; k += 16) {
        const __m512i u = _mm512_maskz_loadu_epi32(lanes_below(K - k), x + k);
        _mm256_mask_storeu_epi16(o + k, lanes_below(Kp - k), _mm512_cvtepi32_epi16(round_bf16_bits(u)));
      }
      return true;
    }
    case ActFormat::q8s:
    case ActFormat::q8u: {
      const Q8Scale qs = q8_scale(amax);
      *scale = qs.s;
      const bool divide = qs.divide;
      const __m512 vinv = _mm512_set1_ps(qs.inv), vs = _mm512_set1_ps(qs.s);
      const __m512i bias = _mm512_set1_epi32(format == ActFormat::q8u ? 128 : 0);
      // 32 k per step: one q8s group sum
      for (int k = 0; k < Kp; k += 32) {
        const __m512i q0 = quantize16(_mm512_maskz_loadu_ps(lanes_below(K - k), x + k), vinv, vs, divide);
        const __m512i q1 = quantize16(_mm512_maskz_loadu_ps(lanes_below(K - k - 16), x + k + 16), vinv, vs, divide);
        _mm_mask_storeu_epi8(dst + k, lanes_below(Kp - k), _mm512_cvtepi32_epi8(_mm512_add_epi32(q0, bias)));
        _mm_mask_storeu_epi8(dst + k + 16, lanes_below(Kp - k - 16), _mm512_cvtepi32_epi8(_mm512_add_epi32(q1, bias)));
        if (format == ActFormat::q8s && k + 32 <= Kp) gsum[k / 32] = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
      }
      return true;
    }
  }
  return false;
}

void widen_16__avx512(DType dtype, const uint16_t* x, int n, float* out) {
  for (int i = 0; i < n; i += 16) {
    const __mmask16 m = lanes_below(n - i);
    const __m256i h = _mm256_maskz_loadu_epi16(m, x + i);
    const __m512 f = dtype == DType::bf16 ? _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))
                                          : _mm512_cvtph_ps(h);
    _mm512_mask_storeu_ps(out + i, m, f);
  }
}

void round_bf16_16__avx512(const float* x, int n, uint16_t* out) {
  for (int i = 0; i < n; i += 16) {
    const __mmask16 m = lanes_below(n - i);
    _mm256_mask_storeu_epi16(out + i, m, _mm512_cvtepi32_epi16(round_bf16_bits(_mm512_maskz_loadu_epi32(m, x + i))));
  }
}

}  // namespace kt
