// [NOTE] f32 weights (GGUF F32) x fp32 activations with baseline ARMv8-A NEON (neon_driver.h's
// ValueTile). A packed block is one k of 16 channels (formats/f32.cpp): four loads, and each
// register feeds one FMLA by lane per row.
//   y[c] = sum_k w[c,k] x[k]   (fp32, k in order, as the reference; FMLA rounds once per k)
// decode: 4 B/weight; one FMLA per 4 weights (per row).
// prefill: rows in blocks of 2 for gate + up and of 4 for down (16 accumulators), so each
// weight register feeds 2 (4) FMLA.
#include "kernels/kernel_registry.h"
#include "kernels/neon/neon_driver.h"

namespace kt {
namespace {

struct LoadF32 {
  static constexpr int kK = F32Block::kK;
  static constexpr size_t kBytes = sizeof(F32Block);
  static float32x4_t load(const uint8_t* block, int, int q) { return vld1q_f32(reinterpret_cast<const float*>(block) + 4 * q); }
};

}  // namespace

void gateup_f32_f32_2x16__neon(const GateUpArgs& a) { neon::gateup<neon::ValueTile<LoadF32>>(a); }
void down_f32_f32_2x16__neon(const DownArgs& a) { neon::down<neon::ValueTile<LoadF32>>(a); }

KT_KERNEL_ROW(f32, kNeonObj, f32, f32_f32_2x16__neon)

}  // namespace kt
