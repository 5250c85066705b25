// int8_pc: symmetric int8, one fp32 scale per output channel.  w = scale[n] * q,  q in [-127, 127]
// (-128 is never produced, so |q| fits the sign trick of the pmaddubsw kernels without overflow).
//
// Packed panel (16 channels, Kp = K rounded up to 4), Int8PcBlock and Int8PcTail:
//
//   block s (k = 4s..4s+3):  | c0: q q q q | c1: q q q q | ... | c15: q q q q |   64 bytes
//   ... Kp/4 blocks ...
//   tail   scale:   16 x fp32                        per channel
//          comp:    16 x int32 = 128 * sum_k q[c,k]  compensation for the q8u activation (q + 128):
//                   sum_k (a+128) q = sum_k a q + comp
#include <algorithm>
#include <cmath>
#include <cstring>

#include "format_impl.h"
#include "kernels/kernel_registry.h"

namespace kt {

void int8pc_quantize_ref(const float* w, int N, int K, QuantizedMatrix* out) {
  shape_quantized(format_traits(FormatId::int8_pc), N, K, out);
  float* scale = out->array<float>(kInt8PcScale);
  for (int n = 0; n < N; ++n) {
    const float* row = w + size_t(n) * K;
    float amax = 0.f;
    for (int k = 0; k < K; ++k) amax = std::max(amax, std::fabs(row[k]));
    float s = amax / 127.f;
    float inv = s > 0.f ? 1.f / s : 0.f;
    scale[n] = s;
    int8_t* q = out->array<int8_t>(kInt8PcValues) + size_t(n) * K;
    for (int k = 0; k < K; ++k)
      q[k] = int8_t(round_half_even(std::clamp(row[k] * inv, -127.f, 127.f)));
  }
}

void int8pc_dequantize_ref(const QuantizedMatrix& q, float* out) {
  const int8_t* v = q.array<int8_t>(kInt8PcValues);
  const float* scale = q.array<float>(kInt8PcScale);
  for (int n = 0; n < q.N; ++n)
    for (int k = 0; k < q.K; ++k) out[size_t(n) * q.K + k] = scale[n] * v[size_t(n) * q.K + k];
}

void int8pc_pack(const QuantizedMatrix& q, int n0, int n1, int k0, int k1, uint8_t* dst) {
  const int kp = round_up(k1 - k0, Int8PcBlock::kK);
  const size_t pb = format_traits(FormatId::int8_pc).panel_bytes(kp);
  const int8_t* v = q.array<int8_t>(kInt8PcValues);
  const float* scales = q.array<float>(kInt8PcScale);
  const int panels = (n1 - n0 + kPanelN - 1) / kPanelN;
  std::memset(dst, 0, pb * panels);
  for (int p = 0; p < panels; ++p) {
    Int8PcBlock* blocks = reinterpret_cast<Int8PcBlock*>(dst + pb * p);
    Int8PcTail* tail = reinterpret_cast<Int8PcTail*>(blocks + kp / Int8PcBlock::kK);
    for (int c = 0; c < kPanelN; ++c) {
      int n = n0 + p * kPanelN + c;
      if (n >= n1) break;
      tail->scale[c] = scales[n];
      for (int k = 0; k < k1 - k0; ++k) {
        int8_t x = v[size_t(n) * q.K + k0 + k];
        blocks[k / Int8PcBlock::kK].q[c][k % Int8PcBlock::kK] = x;
        tail->comp[c] += 128 * x;
      }
    }
  }
}

void int8pc_unpack_row(const uint8_t* data, int Kp, int n, int K, float* out) {
  const uint8_t* panel = data + format_traits(FormatId::int8_pc).panel_bytes(Kp) * size_t(n / kPanelN);
  const Int8PcBlock* blocks = reinterpret_cast<const Int8PcBlock*>(panel);
  const int c = n % kPanelN;
  const float scale = int8pc_tail(panel, Kp)->scale[c];
  for (int k = 0; k < K; ++k) out[k] = scale * blocks[k / Int8PcBlock::kK].q[c][k % Int8PcBlock::kK];  // w = scale * q
}

KT_REFERENCE_QUANTIZER_ROW(int8_pc, int8pc_quantize_ref)

}  // namespace kt
