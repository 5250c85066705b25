// [NOTE] Activation codec on AVX2 (+F16C), 8 values per ymm; the reference's bits
// (cpp/src/formats/activation.cpp) on every input, by the same arguments as act_avx512.cpp:
// amax and the NaN/Inf check from the largest |x| bit pattern, bf16 rounding on the bits, q8 by
// the default-mode vcvtps2dq of x * inv. Without masked loads, the whole 32-k blocks below K
// are vectorized and the rest of the row (at most 31 values, then the padding) takes the
// reference's scalar steps; the GGUF kernels' blocks (q8_32, q8_256) quantize the block that holds
// K from a copy padded with zeros.
#include <immintrin.h>

#include "kernels/kernel_decls.h"
#include "kt/gguf_blocks.h"

namespace kt {
namespace {

inline __m256i round_bf16_bits(__m256i u) {
  const __m256i rounded = _mm256_srli_epi32(
      _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)),
                       _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1))),
      16);
  // |u| > +Inf as signed integers: both sides are below 2^31
  const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)), _mm256_set1_epi32(0x7f800000));
  return _mm256_blendv_epi8(rounded, _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40)), nan);
}

// 16 int32 values in [0, 65535] (two ymm) to 16 uint16 in order
inline __m256i pack16(__m256i a, __m256i b) { return _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), 0xd8); }

// 32 int32 values in [-128, 255] (four ymm) to 32 bytes in order, low byte of each
inline __m256i pack32_bytes(__m256i a, __m256i b, __m256i c, __m256i d) {
  const __m256i lo = _mm256_set1_epi32(0xff);
  const __m256i ab = _mm256_packus_epi32(_mm256_and_si256(a, lo), _mm256_and_si256(b, lo));
  const __m256i cd = _mm256_packus_epi32(_mm256_and_si256(c, lo), _mm256_and_si256(d, lo));
  return _mm256_permutevar8x32_epi32(_mm256_packus_epi16(ab, cd), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// the largest of the 8 unsigned lanes
inline uint32_t hmax_epu32(__m256i t) {
  __m128i h = _mm_max_epu32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
  h = _mm_max_epu32(h, _mm_shuffle_epi32(h, 0x4e));
  h = _mm_max_epu32(h, _mm_shuffle_epi32(h, 0xb1));
  return uint32_t(_mm_cvtsi128_si32(h));
}

inline int32_t hsum_epi32(__m256i t) {
  __m128i h = _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
  h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4e));
  h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xb1));
  return _mm_cvtsi128_si32(h);
}

// One of the GGUF kernels' blocks (q8_32, q8_256) from kK values: the q8 rule on the block's own
// amax (as quantize_act_block), and its sums of q per 16 k (q8_256's bsums; q8_32's two halves).
template <int kK>
void q8_block_8(const float* x, int8_t* q, float* d, int16_t* sums16) {
  __m256i amax_bits = _mm256_setzero_si256();
  for (int k = 0; k < kK; k += 8)
    amax_bits = _mm256_max_epu32(amax_bits, _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + k)),
                                                              _mm256_set1_epi32(0x7fffffff)));
  const uint32_t amax_u = hmax_epu32(amax_bits);
  float amax;
  __builtin_memcpy(&amax, &amax_u, 4);
  const Q8Scale qs = q8_scale(amax);
  *d = qs.s;
  const __m256 vinv = _mm256_set1_ps(qs.inv), vs = _mm256_set1_ps(qs.s);
  for (int k = 0; k < kK; k += 32) {
    __m256i qv[4];
    for (int j = 0; j < 4; ++j) {
      const __m256 v = _mm256_loadu_ps(x + k + 8 * j);
      qv[j] = _mm256_cvtps_epi32(qs.divide ? _mm256_div_ps(v, vs) : _mm256_mul_ps(v, vinv));
    }
    sums16[k / 16] = int16_t(hsum_epi32(_mm256_add_epi32(qv[0], qv[1])));
    sums16[k / 16 + 1] = int16_t(hsum_epi32(_mm256_add_epi32(qv[2], qv[3])));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + k), pack32_bytes(qv[0], qv[1], qv[2], qv[3]));
  }
}

// The row's blocks; the block holding K (and any past it) from a copy padded with zeros.
template <class Act, class Fill>
void q8_blocks(const float* x, int K, int Kp, Act* b, Fill fill) {
  for (int i = 0; i < Kp / Act::kK; ++i) {
    const int k0 = i * Act::kK;
    if (k0 + Act::kK <= K) {
      fill(x + k0, b[i]);
    } else {
      float tail[Act::kK] = {};
      if (k0 < K) __builtin_memcpy(tail, x + k0, size_t(K - k0) * 4);
      fill(tail, b[i]);
    }
  }
}

void quantize_q8_blocks(ActFormat format, const float* x, int K, int Kp, uint8_t* dst) {
  if (format == ActFormat::q8_256) {
    q8_blocks(x, K, Kp, reinterpret_cast<ActQ8x256*>(dst), [](const float* v, ActQ8x256& b) {
      q8_block_8<ActQ8x256::kK>(v, b.q, &b.d, b.bsums);
      __builtin_memset(b.pad, 0, sizeof(b.pad));
    });
  } else {
    q8_blocks(x, K, Kp, reinterpret_cast<ActQ8x32*>(dst), [](const float* v, ActQ8x32& b) {
      int16_t halves[2];
      q8_block_8<ActQ8x32::kK>(v, b.q, &b.d, halves);
      b.sum = halves[0] + halves[1];
    });
  }
}

}  // namespace

bool quantize_act_8__avx2(ActFormat format, const float* x, int K, int Kp, uint8_t* dst, float* scale,
                          int32_t* gsum) {
  const int K32 = K / 32 * 32;
  __m256i amax_bits = _mm256_setzero_si256();
  const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff);
  for (int k = 0; k < K32; k += 8)
    amax_bits = _mm256_max_epu32(amax_bits, _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + k)), abs_mask));
  uint32_t amax_u = hmax_epu32(amax_bits);
  for (int k = K32; k < K; ++k) {
    uint32_t v;
    __builtin_memcpy(&v, x + k, 4);
    v &= 0x7fffffffu;
    amax_u = v > amax_u ? v : amax_u;
  }
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
      for (int k = 0; k < K32; k += 16) {
        const __m256i a = round_bf16_bits(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + k)));
        const __m256i b = round_bf16_bits(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + k + 8)));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + k), pack16(a, b));
      }
      for (int k = K32; k < K; ++k) o[k] = f32_to_bf16(x[k]);
      for (int k = K; k < Kp; ++k) o[k] = 0;
      return true;
    }
    case ActFormat::q8s:
    case ActFormat::q8u: {
      const Q8Scale qs = q8_scale(amax);
      *scale = qs.s;
      const bool divide = qs.divide;
      const __m256 vinv = _mm256_set1_ps(qs.inv), vs = _mm256_set1_ps(qs.s);
      const int bias = format == ActFormat::q8u ? 128 : 0;
      const __m256i vbias = _mm256_set1_epi32(bias);
      for (int k = 0; k < K32; k += 32) {
        __m256i q[4];
        for (int j = 0; j < 4; ++j) {
          const __m256 v = _mm256_loadu_ps(x + k + 8 * j);
          q[j] = _mm256_cvtps_epi32(divide ? _mm256_div_ps(v, vs) : _mm256_mul_ps(v, vinv));
        }
        if (format == ActFormat::q8s) {
          gsum[k / 32] = hsum_epi32(_mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3])));
        }
        for (int j = 0; j < 4; ++j) q[j] = _mm256_add_epi32(q[j], vbias);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + k), pack32_bytes(q[0], q[1], q[2], q[3]));
      }
      // the rest of the row and the padding, as the reference
      int8_t* q8 = reinterpret_cast<int8_t*>(dst);
      for (int k = K32; k < Kp; ++k) {
        const float v = k < K ? x[k] : 0.f;
        q8[k] = int8_t(round_half_even(divide ? v / qs.s : v * qs.inv));
      }
      if (format == ActFormat::q8s) {
        for (int g = K32 / 32; g < Kp / 32; ++g) {
          int32_t sum = 0;
          for (int k = 0; k < 32; ++k) sum += q8[g * 32 + k];
          gsum[g] = sum;
        }
      } else {
        for (int k = K32; k < Kp; ++k) dst[k] = uint8_t(q8[k] + 128);
      }
      return true;
    }
  }
  return false;
}

void widen_8__avx2(DType dtype, const uint16_t* x, int n, float* out) {
  const int n8 = n / 8 * 8;
  for (int i = 0; i < n8; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i));
    const __m256 f = dtype == DType::bf16 ? _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
                                          : _mm256_cvtph_ps(h);
    _mm256_storeu_ps(out + i, f);
  }
  widen_row_ref(dtype, x + n8, n - n8, out + n8);
}

void round_bf16_8__avx2(const float* x, int n, uint16_t* out) {
  const int n16 = n / 16 * 16;
  for (int i = 0; i < n16; i += 16) {
    const __m256i a = round_bf16_bits(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i)));
    const __m256i b = round_bf16_bits(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i + 8)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), pack16(a, b));
  }
  round_bf16_row_ref(x + n16, n - n16, out + n16);
}

}  // namespace kt
