// bf16: experts kept unquantized (16 bits per weight).
//
// Packed panel (kPanelN = 16 channels, Kp = K rounded up to 2), one Bf16Block per k pair:
//
//   block s (k = 2s, 2s+1):  | c0:k  c0:k+1 | c1:k  c1:k+1 | ... | c15:k  c15:k+1 |   16 x 2 bf16
//
// One zmm load is one step: vdpbf16ps takes it as is; the fp32 kernels split it into the even
// (k) and odd (k+1) halves of each 32-bit lane. Padded channels and the padded k are zero.
#include <cstring>

#include "format_impl.h"
#include "kernels/kernel_registry.h"

namespace kt {

void bf16_quantize_ref(const float* w, int N, int K, QuantizedMatrix* out) {
  shape_quantized(format_traits(FormatId::bf16), N, K, out);
  uint16_t* v = out->array<uint16_t>(0);
  for (size_t i = 0; i < size_t(N) * K; ++i) v[i] = f32_to_bf16(w[i]);
}

void bf16_dequantize_ref(const QuantizedMatrix& q, float* out) {
  const uint16_t* v = q.array<uint16_t>(0);
  for (size_t i = 0; i < size_t(q.N) * q.K; ++i) out[i] = bf16_to_f32(v[i]);
}

void bf16_pack(const QuantizedMatrix& q, int n0, int n1, int k0, int k1, uint8_t* dst) {
  const int kp = round_up(k1 - k0, Bf16Block::kK);
  const size_t pb = format_traits(FormatId::bf16).panel_bytes(kp);
  const uint16_t* v = q.array<uint16_t>(0);
  const int panels = (n1 - n0 + kPanelN - 1) / kPanelN;
  std::memset(dst, 0, pb * panels);
  for (int p = 0; p < panels; ++p) {
    Bf16Block* blocks = reinterpret_cast<Bf16Block*>(dst + pb * p);
    for (int c = 0; c < kPanelN; ++c) {
      int n = n0 + p * kPanelN + c;
      if (n >= n1) break;
      for (int k = 0; k < k1 - k0; ++k)
        blocks[k / Bf16Block::kK].w[c][k % Bf16Block::kK] = v[size_t(n) * q.K + k0 + k];
    }
  }
}

void bf16_unpack_row(const uint8_t* data, int Kp, int n, int K, float* out) {
  const Bf16Block* blocks =
      reinterpret_cast<const Bf16Block*>(data + format_traits(FormatId::bf16).panel_bytes(Kp) * size_t(n / kPanelN));
  const int c = n % kPanelN;
  for (int k = 0; k < K; ++k) out[k] = bf16_to_f32(blocks[k / Bf16Block::kK].w[c][k % Bf16Block::kK]);
}

KT_REFERENCE_QUANTIZER_ROW(bf16, bf16_quantize_ref)

}  // namespace kt
