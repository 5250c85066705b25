// [NOTE] Machine-limit probe loops for the avx512 tier (driven by cpp/src/probe/probe.cpp).
//   read_sum__avx512:         xor-folds a buffer with 64-byte loads, 8 independent accumulators.
//   fma_f32_zmm__avx512:      c_j = c_j + x * y (vfmadd231ps zmm) over 16 independent accumulators:
//                             16 MACs = 32 flops per instruction.
//   int8_maddubs_zmm__avx512: c_j += pmaddubsw(c_j as u8, s8) (+ vpaddw) over 16 chains: 64 MACs =
//                             128 ops per vpmaddubsw: the pmaddubsw family's own peak.
// The loop bodies are asm (cpp/src/probe/probe_asm.h), so the instruction mix is exactly this.
#include <immintrin.h>

#include "probe/probe.h"
#include "probe/probe_asm.h"

namespace kt::probe {

uint64_t read_sum__avx512(const void* p, size_t bytes) {
  const __m512i* v = static_cast<const __m512i*>(p);
  const size_t n = bytes / sizeof(__m512i);
  __m512i a[8];
  for (int j = 0; j < 8; ++j) a[j] = _mm512_setzero_si512();
  for (size_t i = 0; i + 8 <= n; i += 8) {
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) a[j] = _mm512_xor_si512(a[j], _mm512_load_si512(v + i + j));
  }
  for (int j = 1; j < 8; ++j) a[0] = _mm512_xor_si512(a[0], a[j]);
  alignas(64) uint64_t lanes[8];
  _mm512_store_si512(lanes, a[0]);
  return lanes[0];
}

uint64_t fma_f32_zmm__avx512(int64_t iters) {
  KT_PROBE_DECL16(__m512, _mm512_set1_ps(1.0f));
  const __m512 x = _mm512_set1_ps(1e-7f), y = _mm512_set1_ps(1e-7f);
  for (int64_t i = 0; i < iters; ++i) {
    asm volatile(KT_PROBE_ACC8("vfmadd231ps") : KT_PROBE_OUT8("+v", KT_PROBE_LO8) : [a] "v"(x), [b] "v"(y));
    asm volatile(KT_PROBE_ACC8("vfmadd231ps") : KT_PROBE_OUT8("+v", KT_PROBE_HI8) : [a] "v"(x), [b] "v"(y));
  }
  __m512 s = KT_PROBE_FOLD16(_mm512_add_ps);
  alignas(64) uint64_t lanes[8];
  _mm512_store_si512(lanes, _mm512_castps_si512(s));
  return lanes[0];
}

uint64_t int8_maddubs_zmm__avx512(int64_t iters) {
  KT_PROBE_DECL16(__m512i, _mm512_set1_epi8(3));
  const __m512i s8 = _mm512_set1_epi8(-2);
  __m512i t;
  for (int64_t i = 0; i < iters; ++i) {
    asm volatile(KT_PROBE_MADD8 : KT_PROBE_OUT8("+v", KT_PROBE_LO8), [t] "=&v"(t) : [b] "v"(s8));
    asm volatile(KT_PROBE_MADD8 : KT_PROBE_OUT8("+v", KT_PROBE_HI8), [t] "=&v"(t) : [b] "v"(s8));
  }
  __m512i s = KT_PROBE_FOLD16(_mm512_xor_si512);
  alignas(64) uint64_t lanes[8];
  _mm512_store_si512(lanes, s);
  return lanes[0];
}

}  // namespace kt::probe
