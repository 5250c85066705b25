// [NOTE] bf16 weights x fp32 activations with baseline ARMv8-A NEON (neon_driver.h's ValueTile).
// A packed block is k and k+1 of 16 channels (formats/bf16.cpp); a 16-byte load holds 4 channels'
// pairs as 32-bit lanes, whose low bf16 (k) becomes fp32 by SHL #16 and whose high one (k+1) by
// masking the low half (AND). Each widened register then feeds one FMLA by lane per row.
//   y[c] = sum_k w[c,k] x[k]   (fp32, k in order, as the reference; FMLA rounds once per k)
// decode: 2 B/weight; per 4 weights one SHL or AND and one FMLA (per row).
// prefill: rows in blocks of 2 for gate + up and of 4 for down (16 accumulators), so each
// widened weight register feeds 2 (4) FMLA.
#include "kernels/kernel_registry.h"
#include "kernels/neon/neon_driver.h"

namespace kt {
namespace {

struct WidenBf16 {
  static constexpr int kK = Bf16Block::kK;
  static constexpr size_t kBytes = sizeof(Bf16Block);
  static float32x4_t load(const uint8_t* block, int i, int q) {
    const uint32x4_t pairs = vld1q_u32(reinterpret_cast<const uint32_t*>(block) + 4 * q);
    return vreinterpretq_f32_u32(i == 0 ? vshlq_n_u32(pairs, 16) : vandq_u32(pairs, vdupq_n_u32(0xffff0000u)));
  }
};

}  // namespace

void gateup_bf16_f32_2x16__neon(const GateUpArgs& a) { neon::gateup<neon::ValueTile<WidenBf16>>(a); }
void down_bf16_f32_2x16__neon(const DownArgs& a) { neon::down<neon::ValueTile<WidenBf16>>(a); }

KT_KERNEL_ROW(bf16, kNeonObj, f32, bf16_f32_2x16__neon)

}  // namespace kt
