// int4_g32_zp: asymmetric 4-bit with an integer zero point, one fp16 scale d and one uint8 zero
// point z per group of 32 k:
//   w = d[n,g] * (q - z[n,g]),  q in [0, 15]; z in 0..15 from the quantizer and releases, but for
//   AutoGPTQ's v1 layout, which stores z - 1 in 4 bits and so reaches 16
// The format of asymmetric int4 releases (GPTQ, compressed-tensors: kt_kernel/checkpoint/
// int4_release.py), which store exactly these: d * z needs up to 15 significant bits, more than
// int4_g32's fp16 minimum holds, while every d * (q - z) is an fp32 value. 5.0 bits per weight.
//
// Packed panels are int4_g32's (formats/int4_g32.cpp, Int4G32Block) with the block's field m
// holding -z as an fp16 integer: the kernels form the group minimum d * m in fp32 (exact) and then
// run int4_g32's arithmetic, acc += d * sum_k q_w q_a + (d m) * sum_k q_a.
//
// Quantizer (tests and quantize(); releases arrive quantized): round to nearest with the range
// widened to hold 0, as GPTQ's own rounding step does: d = fp16((hi - lo) / 15) for the group's
// [min(lo, 0), max(hi, 0)] scaled by 1.0, 0.9 or 0.8, z = clamp(round(-lo / d), 0, 15),
// q = clamp(round(w / d) + z, 0, 15), then d refit by least squares on those q - z; the smallest
// squared error of the six wins.
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "format_impl.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

constexpr int G = Int4G32Block::kK;

struct ZeroPointFit {
  uint16_t d;
  uint8_t z;
};

float group_error(const float* w, int len, float d, int z, uint8_t* q) {
  const float inv = d > 0.f ? 1.f / d : 0.f;
  float err = 0.f;
  for (int i = 0; i < len; ++i) {
    const float t = round_half_even(w[i] * inv) + float(z);
    q[i] = uint8_t(std::clamp(t, 0.f, 15.f));
    const float e = d * float(int(q[i]) - z) - w[i];
    err += e * e;
  }
  return err;
}

ZeroPointFit fit_group(const float* w, int len) {
  float lo = 0.f, hi = 0.f;
  for (int i = 0; i < len; ++i) lo = std::min(lo, w[i]), hi = std::max(hi, w[i]);
  ZeroPointFit best{0, 0};
  if (hi == lo) return best;  // all zero
  uint8_t q[G];
  float best_err = INFINITY;
  for (float shrink : {1.0f, 0.9f, 0.8f}) {
    const uint16_t dh = f32_to_f16((hi - lo) * shrink / 15.f);
    const float d = f16_to_f32(dh);
    if (!(d > 0.f)) continue;
    const int z = int(std::clamp(round_half_even(-lo * shrink / d), 0.f, 15.f));
    float err = group_error(w, len, d, z, q);
    if (err < best_err) best_err = err, best = {dh, uint8_t(z)};
    // then d refit by least squares on the rounded q - z, z kept
    float swu = 0.f, suu = 0.f;
    for (int i = 0; i < len; ++i) {
      const float u = float(int(q[i]) - z);
      swu += w[i] * u;
      suu += u * u;
    }
    if (!(suu > 0.f)) continue;
    const uint16_t rh = f32_to_f16(swu / suu);
    if (!(f16_to_f32(rh) > 0.f)) continue;
    err = group_error(w, len, f16_to_f32(rh), z, q);
    if (err < best_err) best_err = err, best = {rh, uint8_t(z)};
  }
  return best;
}

}  // namespace

void int4g32zp_quantize_ref(const float* w, int N, int K, QuantizedMatrix* out) {
  const int groups = (K + G - 1) / G;
  shape_quantized(format_traits(FormatId::int4_g32_zp), N, K, out);
  uint8_t* values = out->array<uint8_t>(kInt4G32Values);
  uint16_t* scale = out->array<uint16_t>(kInt4G32Scale);
  uint8_t* zero = out->array<uint8_t>(kInt4G32ZpZero);
  for (int n = 0; n < N; ++n)
    for (int g = 0; g < groups; ++g) {
      const float* wg = w + size_t(n) * K + g * G;
      const int len = std::min(G, K - g * G);
      const ZeroPointFit f = fit_group(wg, len);
      scale[size_t(n) * groups + g] = f.d;
      zero[size_t(n) * groups + g] = f.z;
      group_error(wg, len, f16_to_f32(f.d), f.z, values + size_t(n) * K + g * G);
    }
}

void int4g32zp_dequantize_ref(const QuantizedMatrix& q, float* out) {
  const int groups = (q.K + G - 1) / G;
  const uint8_t* values = q.array<uint8_t>(kInt4G32Values);
  const uint16_t* scale = q.array<uint16_t>(kInt4G32Scale);
  const uint8_t* zero = q.array<uint8_t>(kInt4G32ZpZero);
  for (int n = 0; n < q.N; ++n)
    for (int k = 0; k < q.K; ++k) {
      const size_t gi = size_t(n) * groups + k / G;
      out[size_t(n) * q.K + k] = f16_to_f32(scale[gi]) * float(int(values[size_t(n) * q.K + k]) - int(zero[gi]));
    }
}

// Stored arrays (a release's) must hold finite scales. Any zero point is exact (d (q - z) with
// |q - z| <= 255 has at most 19 significant bits); the values are nibbles (file_bits 4).
void int4g32zp_check(const QuantizedMatrix& q) {
  const int groups = (q.K + G - 1) / G;
  const uint16_t* scale = q.array<uint16_t>(kInt4G32Scale);
  for (size_t i = 0; i < size_t(q.N) * groups; ++i)
    if (!std::isfinite(f16_to_f32(scale[i])))
      throw std::invalid_argument("group_scale[" + std::to_string(i / groups) + ", " + std::to_string(i % groups) +
                                  "] is not finite");
}

KT_REFERENCE_QUANTIZER_ROW(int4_g32_zp, int4g32zp_quantize_ref)

}  // namespace kt
