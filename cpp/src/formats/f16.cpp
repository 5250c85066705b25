// f16 (GGUF type 1): the weights as IEEE fp16 values.
//
// Packed panel (kPanelN = 16 channels), one F16Block per k:
//
//   block k:  | c0 | c1 | ... | c15 |   16 x fp16 bits: one vcvtph2ps gives the 16 channels' weights
#include "format_impl.h"
#include "kernels/kernel_registry.h"
#include "value_format.h"

namespace kt {

void f16_quantize_ref(const float* w, int N, int K, QuantizedMatrix* out) {
  shape_quantized(format_traits(FormatId::f16), N, K, out);
  uint16_t* v = out->array<uint16_t>(0);
  for (size_t i = 0; i < size_t(N) * K; ++i) v[i] = f32_to_f16(w[i]);
}

void f16_dequantize_ref(const QuantizedMatrix& q, float* out) {
  const uint16_t* v = q.array<uint16_t>(0);
  for (size_t i = 0; i < size_t(q.N) * q.K; ++i) out[i] = f16_to_f32(v[i]);
}

void f16_pack(const QuantizedMatrix& q, int n0, int n1, int k0, int k1, uint8_t* dst) {
  value_format::pack<F16Block, uint16_t>(FormatId::f16, q, n0, n1, k0, k1, dst);
}

void f16_unpack_row(const uint8_t* data, int Kp, int n, int K, float* out) {
  value_format::unpack_row<F16Block, uint16_t>(FormatId::f16, data, Kp, n, K, out, f16_to_f32);
}

KT_REFERENCE_QUANTIZER_ROW(f16, f16_quantize_ref)

}  // namespace kt
