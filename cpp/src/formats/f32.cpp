// f32 (GGUF type 0): the weights as fp32 values, kept exactly.
//
// Packed panel (kPanelN = 16 channels), one F32Block per k:
//
//   block k:  | c0 | c1 | ... | c15 |   16 x fp32: one zmm
#include <cstring>

#include "format_impl.h"
#include "kernels/kernel_registry.h"
#include "value_format.h"

namespace kt {

void f32_quantize_ref(const float* w, int N, int K, QuantizedMatrix* out) {
  shape_quantized(format_traits(FormatId::f32), N, K, out);
  std::memcpy(out->array<float>(0), w, size_t(N) * K * 4);
}

void f32_dequantize_ref(const QuantizedMatrix& q, float* out) { std::memcpy(out, q.array<float>(0), size_t(q.N) * q.K * 4); }

void f32_pack(const QuantizedMatrix& q, int n0, int n1, int k0, int k1, uint8_t* dst) {
  value_format::pack<F32Block, float>(FormatId::f32, q, n0, n1, k0, k1, dst);
}

void f32_unpack_row(const uint8_t* data, int Kp, int n, int K, float* out) {
  value_format::unpack_row<F32Block, float>(FormatId::f32, data, Kp, n, K, out, [](float v) { return v; });
}

KT_REFERENCE_QUANTIZER_ROW(f32, f32_quantize_ref)

}  // namespace kt
