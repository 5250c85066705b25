// fp8_g128: FP8 e4m3 weights with one fp32 scale per channel and group of 128 k, the form of the
// block-scaled FP8 releases (DeepSeek-V3/R1, Kimi-K2, Qwen3-*-FP8: `weight_block_size` [128, 128],
// `weight_scale_inv` per block). A 128 x 128 block's scale is every one of its channels' scale
// for those 128 k, so the releases load without rounding anything (kt_kernel/checkpoint/fp8.py).
//   W[n, k] = e4m3(Q[n, k]) * S[n, k / 128]
// e4m3 (OCP FP8, torch.float8_e4m3fn): sign, 4 exponent bits (bias 7), 3 mantissa bits; exponent
// 0 holds the subnormals m * 2^-9; 0x7f and 0xff are NaN, there is no infinity; largest 448.
// Quantizer (for float weights given to method FP8): S = amax / 448 per group, Q = e4m3 of W / S,
// rounded to nearest even (amax maps to 448 exactly; nothing saturates beyond it).
//
// Packed panel (16 channels, Kp = K rounded up to 128): one Fp8G128Block (kt/format_blocks.h) per
// group, 2112 bytes:
//
//   word g = 0..31 (k = 4g..4g+3 of the group), 64 bytes, 4 lanes of 16 for channels 4L..4L+3:
//     | c0:k c0:k+1 c1:k c1:k+1 c2:k c2:k+1 c3:k c3:k+1 | c0:k+2 c0:k+3 ... c3:k+3 |   (k = 4g)
//   scale: 16 x fp32                                        64 bytes
//
// Padded channels have Q = S = 0; padded k have Q = 0.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "format_impl.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

constexpr int G = Fp8G128Block::kK;

float decode(uint8_t b) {
  const int e = (b >> 3) & 15, m = b & 7;
  if (e == 15 && m == 7) return std::nanf("");
  const float v = e == 0 ? std::ldexp(float(m), -9) : std::ldexp(float(8 + m), e - 10);
  return b & 0x80 ? -v : v;
}

struct E4m3Table {
  float v[256];
  E4m3Table() {
    for (int b = 0; b < 256; ++b) v[b] = decode(uint8_t(b));
  }
};

}  // namespace

const float* e4m3_values() {
  static const E4m3Table table;
  return table.v;
}

uint8_t f32_to_e4m3(float v) {
  const uint8_t sign = std::signbit(v) ? 0x80 : 0;
  const float a = std::fmin(std::fabs(v), 448.f);
  if (a < 0.015625f) return sign | uint8_t(round_half_even(a * 512.f));  // subnormals; 8 is 2^-6, code 0x08
  uint32_t u;
  std::memcpy(&u, &a, 4);
  u += 0x7ffffu + ((u >> 20) & 1u);  // to 3 mantissa bits, nearest even (may carry into the exponent)
  return sign | uint8_t(((int(u >> 23) - 127 + 7) << 3) | ((u >> 20) & 7u));
}

void fp8g128_quantize_ref(const float* w, int N, int K, QuantizedMatrix* out) {
  shape_quantized(format_traits(FormatId::fp8_g128), N, K, out);
  uint8_t* q = out->array<uint8_t>(kFp8G128Values);
  float* scale = out->array<float>(kFp8G128Scale);
  const int groups = (K + G - 1) / G;
  for (int n = 0; n < N; ++n)
    for (int g = 0; g < groups; ++g) {
      const int k0 = g * G, k1 = std::min(K, k0 + G);
      const float* row = w + size_t(n) * K;
      float amax = 0.f;
      for (int k = k0; k < k1; ++k) amax = std::fmax(amax, std::fabs(row[k]));
      const float s = amax / 448.f;
      scale[size_t(n) * groups + g] = s;
      for (int k = k0; k < k1; ++k) q[size_t(n) * K + k] = s > 0.f ? f32_to_e4m3(row[k] / s) : 0;
    }
}

void fp8g128_dequantize_ref(const QuantizedMatrix& q, float* out) {
  const uint8_t* values = q.array<uint8_t>(kFp8G128Values);
  const float* scale = q.array<float>(kFp8G128Scale);
  const float* e4m3 = e4m3_values();
  const int groups = (q.K + G - 1) / G;
  for (int n = 0; n < q.N; ++n)
    for (int k = 0; k < q.K; ++k)
      out[size_t(n) * q.K + k] = e4m3[values[size_t(n) * q.K + k]] * scale[size_t(n) * groups + k / G];
}

void fp8g128_check(const QuantizedMatrix& q) {
  const uint8_t* values = q.array<uint8_t>(kFp8G128Values);
  const float* scale = q.array<float>(kFp8G128Scale);
  const int groups = (q.K + G - 1) / G;
  for (size_t i = 0; i < size_t(q.N) * q.K; ++i)
    if ((values[i] & 0x7f) == 0x7f)
      throw std::invalid_argument("weight [" + std::to_string(i / q.K) + ", " + std::to_string(i % q.K) +
                                  "] is an e4m3 NaN (byte 0x" + (values[i] & 0x80 ? "ff" : "7f") + ")");
  for (size_t i = 0; i < size_t(q.N) * groups; ++i)
    if (!std::isfinite(scale[i]))
      throw std::invalid_argument("scale [" + std::to_string(i / groups) + ", " + std::to_string(i % groups) +
                                  "] (channel, group of 128 k) is " + std::to_string(scale[i]));
}

void fp8g128_pack(const QuantizedMatrix& q, int n0, int n1, int k0, int k1, uint8_t* dst) {
  const int kp = round_up(k1 - k0, G);
  const int groups_src = (q.K + G - 1) / G;
  const size_t pb = format_traits(FormatId::fp8_g128).panel_bytes(kp);
  const uint8_t* values = q.array<uint8_t>(kFp8G128Values);
  const float* scale = q.array<float>(kFp8G128Scale);
  const int panels = (n1 - n0 + kPanelN - 1) / kPanelN;
  std::memset(dst, 0, pb * panels);
  for (int p = 0; p < panels; ++p) {
    Fp8G128Block* blocks = reinterpret_cast<Fp8G128Block*>(dst + pb * p);
    for (int g = 0; g < kp / G; ++g)
      for (int c = 0; c < kPanelN && n0 + p * kPanelN + c < n1; ++c) {
        const int n = n0 + p * kPanelN + c, kg0 = k0 + g * G;  // first source k of this group
        blocks[g].scale[c] = scale[size_t(n) * groups_src + kg0 / G];
        for (int kk = 0; kk < G && kg0 + kk < k1; ++kk)
          blocks[g].q[kk / 4][Fp8G128Block::q_byte(c, kk % 4)] = values[size_t(n) * q.K + kg0 + kk];
      }
  }
}

void fp8g128_unpack_row(const uint8_t* data, int Kp, int n, int K, float* out) {
  const Fp8G128Block* blocks =
      reinterpret_cast<const Fp8G128Block*>(data + format_traits(FormatId::fp8_g128).panel_bytes(Kp) * size_t(n / kPanelN));
  const int c = n % kPanelN;
  const float* e4m3 = e4m3_values();
  for (int k = 0; k < K; ++k) out[k] = e4m3[blocks[k / G].q[k % G / 4][Fp8G128Block::q_byte(c, k % 4)]] * blocks[k / G].scale[c];
}

KT_REFERENCE_QUANTIZER_ROW(fp8_g128, fp8g128_quantize_ref)

}  // namespace kt
