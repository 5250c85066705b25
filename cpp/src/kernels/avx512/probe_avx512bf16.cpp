// [NOTE] Machine-limit probe loop for the avx512_bf16 tier (driven by cpp/src/probe/probe.cpp):
//   bf16_dpbf16ps_zmm__avx512bf16: c_j = vdpbf16ps(c_j, a, b) over 16 independent accumulators;
//   one instruction = 32 bf16 pairs multiplied and added into 16 fp32 lanes = 64 flops.
//   a = b = bf16(~1e-3): the sums stay finite and normal. The loop body is asm
//   (cpp/src/probe/probe_asm.h), so the instruction mix is exactly this.
#include <immintrin.h>

#include "probe/probe.h"
#include "probe/probe_asm.h"

namespace kt::probe {

uint64_t bf16_dpbf16ps_zmm__avx512bf16(int64_t iters) {
  KT_PROBE_DECL16(__m512, _mm512_set1_ps(1.0f));
  const __m512i a = _mm512_set1_epi16(0x3a83), b = _mm512_set1_epi16(0x3a83);  // bf16 ~1e-3
  for (int64_t i = 0; i < iters; ++i) {
    asm volatile(KT_PROBE_ACC8("vdpbf16ps") : KT_PROBE_OUT8("+v", KT_PROBE_LO8) : [a] "v"(a), [b] "v"(b));
    asm volatile(KT_PROBE_ACC8("vdpbf16ps") : KT_PROBE_OUT8("+v", KT_PROBE_HI8) : [a] "v"(a), [b] "v"(b));
  }
  __m512 s = KT_PROBE_FOLD16(_mm512_add_ps);
  alignas(64) uint64_t lanes[8];
  _mm512_store_si512(lanes, _mm512_castps_si512(s));
  return lanes[0];
}

}  // namespace kt::probe
