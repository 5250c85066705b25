// [NOTE] f32 weights (GGUF F32) x fp32 activations with AVX512F: the 16 channels of a k are one
// load, then an FMA per row (kernels/avx512/value_tile.h). Layout in formats/f32.cpp.
#include "kernels/avx512/value_tile.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

struct WidenF32 {
  static constexpr int kBytes = sizeof(F32Block);
  static __m512 load(const uint8_t* p) { return _mm512_loadu_ps(reinterpret_cast<const float*>(p)); }
};

}  // namespace

void gateup_f32_f32_4x16__avx512(const GateUpArgs& a) { avx512::gateup<avx512::ValueTile<WidenF32>>(a); }
void down_f32_f32_4x16__avx512(const DownArgs& a) { avx512::down<avx512::ValueTile<WidenF32>>(a); }

KT_KERNEL_ROW(f32, kAvx512Obj, f32, f32_f32_4x16__avx512)

}  // namespace kt
