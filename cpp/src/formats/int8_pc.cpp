// int8_pc: symmetric int8, one fp32 scale per output channel.  w = scale[n] * q,  q in [-127, 127]
// (-128 is never produced, so |q| fits the sign trick of the pmaddubsw kernels without overflow).
//
// Packed panel (16 channels, Kp = K rounded up to 4):
//
//   step s (k = 4s..4s+3):  | c0: q q q q | c1: q q q q | ... | c15: q q q q |   64 bytes
//   ... Kp/4 steps ...
//   scale:   16 x fp32                        per channel
//   comp:    16 x int32 = 128 * sum_k q[c,k]  compensation for the q8u activation (q + 128):
//            sum_k (a+128) q = sum_k a q + comp
#include <algorithm>
#include <cmath>
#include <cstring>

#include "format_impl.h"

namespace kt {

void int8pc_shape(int N, int K, QuantizedMatrix* out) {
  out->format = FormatId::int8_pc;
  out->N = N;
  out->K = K;
  out->values.resize(size_t(N) * K);
  out->scale.resize(N);
}

void int8pc_quantize_ref(const float* w, int N, int K, QuantizedMatrix* out) {
  int8pc_shape(N, K, out);
  for (int n = 0; n < N; ++n) {
    const float* row = w + size_t(n) * K;
    float amax = 0.f;
    for (int k = 0; k < K; ++k) amax = std::max(amax, std::fabs(row[k]));
    float s = amax / 127.f;
    float inv = s > 0.f ? 1.f / s : 0.f;
    out->scale[n] = s;
    int8_t* q = reinterpret_cast<int8_t*>(out->values.data()) + size_t(n) * K;
    for (int k = 0; k < K; ++k)
      q[k] = int8_t(round_half_even(std::clamp(row[k] * inv, -127.f, 127.f)));
  }
}

void int8pc_dequantize_ref(const QuantizedMatrix& q, float* out) {
  const int8_t* v = reinterpret_cast<const int8_t*>(q.values.data());
  for (int n = 0; n < q.N; ++n)
    for (int k = 0; k < q.K; ++k) out[size_t(n) * q.K + k] = q.scale[n] * v[size_t(n) * q.K + k];
}

size_t int8pc_panel_bytes(int k_padded) { return size_t(k_padded) * kPanelN + kPanelN * 8; }

void int8pc_pack(const QuantizedMatrix& q, int n0, int n1, int k0, int k1, uint8_t* dst) {
  const int kp = round_up(k1 - k0, 4);
  const size_t pb = int8pc_panel_bytes(kp);
  const int8_t* v = reinterpret_cast<const int8_t*>(q.values.data());
  const int panels = (n1 - n0 + kPanelN - 1) / kPanelN;
  std::memset(dst, 0, pb * panels);
  for (int p = 0; p < panels; ++p) {
    int8_t* panel = reinterpret_cast<int8_t*>(dst + pb * p);
    float scale[kPanelN] = {};
    int32_t comp[kPanelN] = {};
    for (int c = 0; c < kPanelN; ++c) {
      int n = n0 + p * kPanelN + c;
      if (n >= n1) break;
      scale[c] = q.scale[n];
      for (int k = 0; k < k1 - k0; ++k) {
        int8_t x = v[size_t(n) * q.K + k0 + k];
        panel[(k / 4) * (kPanelN * 4) + c * 4 + (k & 3)] = x;
        comp[c] += 128 * x;
      }
    }
    std::memcpy(panel + size_t(kp) * kPanelN, scale, sizeof(scale));
    std::memcpy(panel + size_t(kp) * kPanelN + sizeof(scale), comp, sizeof(comp));
  }
}

void int8pc_unpack_row(const uint8_t* data, int Kp, int n, int K, float* out) {
  const int8_t* panel = reinterpret_cast<const int8_t*>(data + int8pc_panel_bytes(Kp) * size_t(n / kPanelN));
  const int c = n % kPanelN;
  float scale;
  std::memcpy(&scale, panel + size_t(Kp) * kPanelN + c * sizeof(float), sizeof(float));
  for (int k = 0; k < K; ++k) out[k] = scale * panel[(k / 4) * (kPanelN * 4) + c * 4 + (k & 3)];  // w = scale * q
}

}  // namespace kt
