// [NOTE] Machine-limit probe loop for the neon_dotprod tier (driven by cpp/src/probe/probe.cpp):
//   int8_sdot_q__dotprod: c_j = sdot(c_j, s8, s8) (sdot v.4s, v.16b, v.16b) over 16 independent
//   accumulators; one instruction = 16 int8 multiply-adds = 32 ops.
#include <arm_neon.h>

#include "probe/probe.h"
#include "probe/probe_asm.h"

namespace kt::probe {

uint64_t int8_sdot_q__dotprod(int64_t iters) {
  KT_PROBE_DECL16(int32x4_t, vdupq_n_s32(1));
  const int8x16_t a = vdupq_n_s8(3), b = vdupq_n_s8(-2);
  for (int64_t i = 0; i < iters; ++i) {
    asm volatile(KT_PROBE_ARM8("sdot", ".4s", ".16b", ".16b") : KT_PROBE_OUT8("+w", KT_PROBE_LO8) : [a] "w"(a), [b] "w"(b));
    asm volatile(KT_PROBE_ARM8("sdot", ".4s", ".16b", ".16b") : KT_PROBE_OUT8("+w", KT_PROBE_HI8) : [a] "w"(a), [b] "w"(b));
  }
  const int32x4_t s = KT_PROBE_FOLD16(veorq_s32);
  return uint32_t(vgetq_lane_s32(s, 0));
}

}  // namespace kt::probe
