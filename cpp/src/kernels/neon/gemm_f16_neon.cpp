// [NOTE] f16 weights (GGUF F16) x fp32 activations with baseline ARMv8-A NEON (neon_driver.h's
// ValueTile). A packed block is one k of 16 channels (formats/f16.cpp); FCVTL widens 4 channels
// exactly (fp16 subnormals included), and each widened register feeds one FMLA by lane per row.
//   y[c] = sum_k w[c,k] x[k]   (fp32, k in order, as the reference; FMLA rounds once per k)
// decode: 2 B/weight; per 4 weights one FCVTL and one FMLA (per row).
// prefill: rows in blocks of 2 for gate + up and of 4 for down (16 accumulators), so each
// widened weight register feeds 2 (4) FMLA.
#include "kernels/kernel_registry.h"
#include "kernels/neon/neon_driver.h"

namespace kt {
namespace {

struct WidenF16 {
  static constexpr int kK = F16Block::kK;
  static constexpr size_t kBytes = sizeof(F16Block);
  static float32x4_t load(const uint8_t* block, int, int q) {
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(reinterpret_cast<const uint16_t*>(block) + 4 * q)));
  }
};

}  // namespace

void gateup_f16_f32_2x16__neon(const GateUpArgs& a) { neon::gateup<neon::ValueTile<WidenF16>>(a); }
void down_f16_f32_2x16__neon(const DownArgs& a) { neon::down<neon::ValueTile<WidenF16>>(a); }

KT_KERNEL_ROW(f16, kNeonObj, f32, f16_f32_2x16__neon)

}  // namespace kt
