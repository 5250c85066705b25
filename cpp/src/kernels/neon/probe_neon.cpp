// [NOTE] Machine-limit probe loops for the neon tier (driven by cpp/src/probe/probe.cpp).
//   read_sum__neon:    xor-folds a buffer with 128-bit loads (ldp q pairs), 8 independent accumulators.
//   fma_f32_q__neon:   c_j = c_j + a * b (fmla v.4s) over 16 independent accumulators: 4 MACs =
//                      8 flops per instruction.
// The loop bodies are asm (cpp/src/probe/probe_asm.h), so the instruction mix is exactly this.
#include <arm_neon.h>

#include "probe/probe.h"
#include "probe/probe_asm.h"

namespace kt::probe {

uint64_t read_sum__neon(const void* p, size_t bytes) {
  const uint8_t* v = static_cast<const uint8_t*>(p);
  uint8x16_t a[8];
  for (int j = 0; j < 8; ++j) a[j] = vdupq_n_u8(0);
  for (size_t i = 0; i + 128 <= bytes; i += 128) {
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) a[j] = veorq_u8(a[j], vld1q_u8(v + i + 16 * j));
  }
  for (int j = 1; j < 8; ++j) a[0] = veorq_u8(a[0], a[j]);
  return vgetq_lane_u64(vreinterpretq_u64_u8(a[0]), 0) ^ vgetq_lane_u64(vreinterpretq_u64_u8(a[0]), 1);
}

uint64_t fma_f32_q__neon(int64_t iters) {
  KT_PROBE_DECL16(float32x4_t, vdupq_n_f32(1.0f));
  const float32x4_t x = vdupq_n_f32(1e-7f), y = vdupq_n_f32(1e-7f);
  for (int64_t i = 0; i < iters; ++i) {
    asm volatile(KT_PROBE_ARM8("fmla", ".4s", ".4s", ".4s") : KT_PROBE_OUT8("+w", KT_PROBE_LO8) : [a] "w"(x), [b] "w"(y));
    asm volatile(KT_PROBE_ARM8("fmla", ".4s", ".4s", ".4s") : KT_PROBE_OUT8("+w", KT_PROBE_HI8) : [a] "w"(x), [b] "w"(y));
  }
  const float32x4_t s = KT_PROBE_FOLD16(vaddq_f32);
  return vgetq_lane_u64(vreinterpretq_u64_f32(s), 0);
}

}  // namespace kt::probe
