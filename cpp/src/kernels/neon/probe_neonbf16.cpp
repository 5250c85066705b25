// [NOTE] Machine-limit probe loops for the neon_bf16 tier (driven by cpp/src/probe/probe.cpp), each
// over 16 independent accumulators:
//   bf16_bfdot_q__neonbf16:  bfdot v.4s, v.8h, v.8h: 4 lanes x 2 bf16 products = 8 MACs = 16 flops.
//   bf16_bfmmla_q__neonbf16: bfmmla v.4s, v.8h, v.8h: a 2x4 by 4x2 bf16 product into 2x2 fp32 =
//                            16 MACs = 32 flops.
#include <arm_neon.h>

#include "probe/probe.h"
#include "probe/probe_asm.h"

namespace kt::probe {
namespace {

template <bool kMmla>
uint64_t bf16_loop(int64_t iters) {
  KT_PROBE_DECL16(float32x4_t, vdupq_n_f32(1.0f));
  const bfloat16x8_t a = vreinterpretq_bf16_u16(vdupq_n_u16(0x3400)), b = a;  // 2^-23: sums stay finite
  for (int64_t i = 0; i < iters; ++i) {
    if constexpr (kMmla) {
      asm volatile(KT_PROBE_ARM8("bfmmla", ".4s", ".8h", ".8h") : KT_PROBE_OUT8("+w", KT_PROBE_LO8) : [a] "w"(a), [b] "w"(b));
      asm volatile(KT_PROBE_ARM8("bfmmla", ".4s", ".8h", ".8h") : KT_PROBE_OUT8("+w", KT_PROBE_HI8) : [a] "w"(a), [b] "w"(b));
    } else {
      asm volatile(KT_PROBE_ARM8("bfdot", ".4s", ".8h", ".8h") : KT_PROBE_OUT8("+w", KT_PROBE_LO8) : [a] "w"(a), [b] "w"(b));
      asm volatile(KT_PROBE_ARM8("bfdot", ".4s", ".8h", ".8h") : KT_PROBE_OUT8("+w", KT_PROBE_HI8) : [a] "w"(a), [b] "w"(b));
    }
  }
  const float32x4_t s = KT_PROBE_FOLD16(vaddq_f32);
  return vgetq_lane_u64(vreinterpretq_u64_f32(s), 0);
}

}  // namespace

uint64_t bf16_bfdot_q__neonbf16(int64_t iters) { return bf16_loop<false>(iters); }
uint64_t bf16_bfmmla_q__neonbf16(int64_t iters) { return bf16_loop<true>(iters); }

}  // namespace kt::probe
