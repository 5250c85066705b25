// [NOTE] f16 weights (GGUF F16) x fp32 activations with AVX512F: one vcvtph2ps widens the 16
// channels of a k, exactly (fp16 subnormals included), then an FMA per row (kernels/avx512/
// value_tile.h). Layout in formats/f16.cpp.
#include "kernels/avx512/value_tile.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

struct WidenF16 {
  static constexpr int kBytes = sizeof(F16Block);
  static __m512 load(const uint8_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
};

}  // namespace

void gateup_f16_f32_4x16__avx512(const GateUpArgs& a) { avx512::gateup<avx512::ValueTile<WidenF16>>(a); }
void down_f16_f32_4x16__avx512(const DownArgs& a) { avx512::down<avx512::ValueTile<WidenF16>>(a); }

KT_KERNEL_ROW(f16, kAvx512Obj, f32, f16_f32_4x16__avx512)

}  // namespace kt
