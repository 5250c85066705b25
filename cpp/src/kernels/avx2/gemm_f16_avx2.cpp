// [NOTE] f16 weights (GGUF F16) x fp32 activations with AVX2 + FMA + F16C: one vcvtph2ps widens
// the 8 channels of a panel half at one k, exactly (fp16 subnormals included), then an FMA per row
// (kernels/avx2/value_tile.h). Layout in formats/f16.cpp.
#include "kernels/avx2/value_tile.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

struct WidenF16 {
  static constexpr int kBytes = sizeof(F16Block);
  static __m256 load(const uint8_t* p, int h) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * h)));
  }
};

}  // namespace

void gateup_f16_f32_4x16__avx2(const GateUpArgs& a) { avx2::gateup<avx2::ValueTile<WidenF16>>(a); }
void down_f16_f32_4x16__avx2(const DownArgs& a) { avx2::down<avx2::ValueTile<WidenF16>>(a); }

KT_KERNEL_ROW(f16, kAvx2Obj, f32, f16_f32_4x16__avx2)

}  // namespace kt
