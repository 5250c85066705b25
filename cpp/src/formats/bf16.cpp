// bf16: experts kept unquantized (16 bits per weight).
//
// Packed panel (kPanelN = 16 channels, Kp = K rounded up to 2), one 64-byte row per k pair:
//
//   step s (k = 2s, 2s+1):  | c0:k  c0:k+1 | c1:k  c1:k+1 | ... | c15:k  c15:k+1 |   16 x 2 bf16
//
// One zmm load is one step: vdpbf16ps takes it as is; the fp32 kernels split it into the even
// (k) and odd (k+1) halves of each 32-bit lane. Padded channels and the padded k are zero.
#include <cstring>

#include "format_impl.h"

namespace kt {

void bf16_quantize_ref(const float* w, int N, int K, QuantizedMatrix* out) {
  out->format = FormatId::bf16;
  out->N = N;
  out->K = K;
  out->values.resize(size_t(N) * K * 2);
  uint16_t* v = reinterpret_cast<uint16_t*>(out->values.data());
  for (size_t i = 0; i < size_t(N) * K; ++i) v[i] = f32_to_bf16(w[i]);
}

void bf16_dequantize_ref(const QuantizedMatrix& q, float* out) {
  const uint16_t* v = reinterpret_cast<const uint16_t*>(q.values.data());
  for (size_t i = 0; i < size_t(q.N) * q.K; ++i) out[i] = bf16_to_f32(v[i]);
}

size_t bf16_panel_bytes(int k_padded) { return size_t(k_padded) * kPanelN * 2; }

void bf16_pack(const QuantizedMatrix& q, int n0, int n1, int k0, int k1, uint8_t* dst) {
  const int kp = round_up(k1 - k0, 2);
  const size_t pb = bf16_panel_bytes(kp);
  const uint16_t* v = reinterpret_cast<const uint16_t*>(q.values.data());
  const int panels = (n1 - n0 + kPanelN - 1) / kPanelN;
  std::memset(dst, 0, pb * panels);
  for (int p = 0; p < panels; ++p) {
    uint16_t* panel = reinterpret_cast<uint16_t*>(dst + pb * p);
    for (int c = 0; c < kPanelN; ++c) {
      int n = n0 + p * kPanelN + c;
      if (n >= n1) break;
      for (int k = 0; k < k1 - k0; ++k)
        panel[(k / 2) * (kPanelN * 2) + c * 2 + (k & 1)] = v[size_t(n) * q.K + k0 + k];
    }
  }
}

void bf16_unpack_row(const uint8_t* data, int Kp, int n, int K, float* out) {
  const uint16_t* panel = reinterpret_cast<const uint16_t*>(data + bf16_panel_bytes(Kp) * size_t(n / kPanelN));
  const int c = n % kPanelN;
  for (int k = 0; k < K; ++k) out[k] = bf16_to_f32(panel[(k / 2) * (kPanelN * 2) + c * 2 + (k & 1)]);
}

}  // namespace kt
