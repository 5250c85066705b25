// [NOTE] Machine-limit probe loop for the neon_i8mm tier (driven by cpp/src/probe/probe.cpp):
//   int8_smmla_q__i8mm: c_j = smmla(c_j, s8, s8) (smmla v.4s, v.16b, v.16b: a 2x8 by 8x2 int8
//   product into 2x2 int32) over 16 independent accumulators; 32 multiply-adds = 64 ops each.
#include <arm_neon.h>

#include "probe/probe.h"
#include "probe/probe_asm.h"

namespace kt::probe {

uint64_t int8_smmla_q__i8mm(int64_t iters) {
  KT_PROBE_DECL16(int32x4_t, vdupq_n_s32(1));
  const int8x16_t a = vdupq_n_s8(3), b = vdupq_n_s8(-2);
  for (int64_t i = 0; i < iters; ++i) {
    asm volatile(KT_PROBE_ARM8("smmla", ".4s", ".16b", ".16b") : KT_PROBE_OUT8("+w", KT_PROBE_LO8) : [a] "w"(a), [b] "w"(b));
    asm volatile(KT_PROBE_ARM8("smmla", ".4s", ".16b", ".16b") : KT_PROBE_OUT8("+w", KT_PROBE_HI8) : [a] "w"(a), [b] "w"(b));
  }
  const int32x4_t s = KT_PROBE_FOLD16(veorq_s32);
  return uint32_t(vgetq_lane_s32(s, 0));
}

}  // namespace kt::probe
