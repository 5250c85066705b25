// [NOTE] Machine-limit probe loops for the avx2 tier (driven by cpp/src/probe/probe.cpp).
//   read_sum__avx2:         xor-folds a buffer with 32-byte loads, 8 independent accumulators.
//   fma_f32_ymm__avx2:      c_j = c_j + x * y (vfmadd231ps ymm) over 12 independent accumulators:
//                           8 MACs = 16 flops per instruction.
//   int8_maddubs_ymm__avx2: c_j += pmaddubsw(c_j as u8, s8) (+ vpaddw, int16 wrapping) over 12
//                           chains: 32 u8 x s8 MACs = 64 ops per vpmaddubsw. The pmaddubsw family's
//                           own peak; kernels that also widen with vpmaddwd may reach less.
// The loop bodies are asm (cpp/src/probe/probe_asm.h), so the instruction mix is exactly this.
#include <immintrin.h>

#include "probe/probe.h"
#include "probe/probe_asm.h"

namespace kt::probe {

uint64_t read_sum__avx2(const void* p, size_t bytes) {
  const __m256i* v = static_cast<const __m256i*>(p);
  const size_t n = bytes / sizeof(__m256i);
  __m256i a[8];
  for (int j = 0; j < 8; ++j) a[j] = _mm256_setzero_si256();
  for (size_t i = 0; i + 8 <= n; i += 8) {
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) a[j] = _mm256_xor_si256(a[j], _mm256_load_si256(v + i + j));
  }
  for (int j = 1; j < 8; ++j) a[0] = _mm256_xor_si256(a[0], a[j]);
  return uint64_t(_mm256_extract_epi64(a[0], 0)) ^ uint64_t(_mm256_extract_epi64(a[0], 3));
}

uint64_t fma_f32_ymm__avx2(int64_t iters) {
  KT_PROBE_DECL12(__m256, _mm256_set1_ps(1.0f));
  const __m256 x = _mm256_set1_ps(1e-7f), y = _mm256_set1_ps(1e-7f);
  for (int64_t i = 0; i < iters; ++i)
    asm volatile(KT_PROBE_ACC12("vfmadd231ps") : KT_PROBE_OUT12("+x") : [a] "x"(x), [b] "x"(y));
  __m256 s = KT_PROBE_FOLD12(_mm256_add_ps);
  return uint64_t(_mm256_extract_epi32(_mm256_castps_si256(s), 0));
}

uint64_t int8_maddubs_ymm__avx2(int64_t iters) {
  KT_PROBE_DECL12(__m256i, _mm256_set1_epi8(3));
  const __m256i s8 = _mm256_set1_epi8(-2);
  __m256i t;
  for (int64_t i = 0; i < iters; ++i)
    asm volatile(KT_PROBE_MADD12 : KT_PROBE_OUT12("+x"), [t] "=&x"(t) : [b] "x"(s8));
  __m256i s = KT_PROBE_FOLD12(_mm256_xor_si256);
  return uint64_t(_mm256_extract_epi64(s, 0));
}

}  // namespace kt::probe
