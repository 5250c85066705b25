// [NOTE] f32 weights (GGUF F32) x fp32 activations with AVX2 + FMA: the 8 channels of a panel half
// at one k are one load, then an FMA per row (kernels/avx2/value_tile.h). Layout in formats/f32.cpp.
#include "kernels/avx2/value_tile.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

struct WidenF32 {
  static constexpr int kBytes = sizeof(F32Block);
  static __m256 load(const uint8_t* p, int h) { return _mm256_loadu_ps(reinterpret_cast<const float*>(p) + 8 * h); }
};

}  // namespace

void gateup_f32_f32_4x16__avx2(const GateUpArgs& a) { avx2::gateup<avx2::ValueTile<WidenF32>>(a); }
void down_f32_f32_4x16__avx2(const DownArgs& a) { avx2::down<avx2::ValueTile<WidenF32>>(a); }

KT_KERNEL_ROW(f32, kAvx2Obj, f32, f32_f32_4x16__avx2)

}  // namespace kt
