// [NOTE] Machine-limit probe loop for the avx512_vnni tier (driven by cpp/src/probe/probe.cpp):
//   int8_dpbusd_zmm__avx512vnni: c_j = vpdpbusd(c_j, u8, s8) over 16 independent accumulators;
//   one instruction = 64 u8 x s8 multiply-adds = 128 ops. The loop body is asm
//   (cpp/src/probe/probe_asm.h), so the instruction mix is exactly this.
#include <immintrin.h>

#include "probe/probe.h"
#include "probe/probe_asm.h"

namespace kt::probe {

uint64_t int8_dpbusd_zmm__avx512vnni(int64_t iters) {
  KT_PROBE_DECL16(__m512i, _mm512_set1_epi32(1));
  const __m512i u = _mm512_set1_epi8(3), s8 = _mm512_set1_epi8(-2);
  for (int64_t i = 0; i < iters; ++i) {
    asm volatile(KT_PROBE_ACC8("vpdpbusd") : KT_PROBE_OUT8("+v", KT_PROBE_LO8) : [a] "v"(u), [b] "v"(s8));
    asm volatile(KT_PROBE_ACC8("vpdpbusd") : KT_PROBE_OUT8("+v", KT_PROBE_HI8) : [a] "v"(u), [b] "v"(s8));
  }
  __m512i s = KT_PROBE_FOLD16(_mm512_xor_si512);
  alignas(64) uint64_t lanes[8];
  _mm512_store_si512(lanes, s);
  return lanes[0];
}

}  // namespace kt::probe
