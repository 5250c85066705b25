// Per-token activation quantization for the kernels: one scale per row, s = amax / 127,
// q = round_half_even(x / s). The int4 kernels also need the sum of q over each group of 32
// to apply the group minimum: sum_k (d q_w + m) s q_a = s (d sum q_w q_a + m sum q_a).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kt/kernels.h"

namespace kt {

size_t act_row_bytes(ActFormat format, int Kp) {
  switch (format) {
    case ActFormat::f32: return size_t(Kp) * 4;
    case ActFormat::bf16: return size_t(Kp) * 2;
    case ActFormat::q8s:
    case ActFormat::q8u: return size_t(Kp);
  }
  return 0;
}

bool quantize_act_row(ActFormat format, const float* x, int K, int Kp, uint8_t* dst, float* scale,
                      int32_t* gsum) {
  float amax = 0.f;
  bool finite = true;
  for (int k = 0; k < K; ++k) {
    finite &= std::isfinite(x[k]);
    amax = std::max(amax, std::fabs(x[k]));
  }
  if (!finite) return false;
  switch (format) {
    case ActFormat::f32: {
      float* o = reinterpret_cast<float*>(dst);
      std::memcpy(o, x, size_t(K) * 4);
      std::fill(o + K, o + Kp, 0.f);
      return true;
    }
    case ActFormat::bf16: {
      uint16_t* o = reinterpret_cast<uint16_t*>(dst);
      for (int k = 0; k < K; ++k) o[k] = f32_to_bf16(x[k]);
      std::fill(o + K, o + Kp, uint16_t(0));
      return true;
    }
    case ActFormat::q8s:
    case ActFormat::q8u: {
      const Q8Scale qs = q8_scale(amax);
      *scale = qs.s;
      int8_t* q = reinterpret_cast<int8_t*>(dst);
      if (qs.divide) {
        for (int k = 0; k < K; ++k) q[k] = int8_t(round_half_even(x[k] / qs.s));
      } else {
        for (int k = 0; k < K; ++k) q[k] = int8_t(round_half_even(x[k] * qs.inv));
      }
      std::fill(q + K, q + Kp, int8_t(0));
      if (format == ActFormat::q8s) {
        for (int g = 0; g < Kp / kQ8Group; ++g) {
          int32_t sum = 0;
          for (int k = 0; k < kQ8Group; ++k) sum += q[g * kQ8Group + k];
          gsum[g] = sum;
        }
      } else {
        for (int k = 0; k < Kp; ++k) dst[k] = uint8_t(q[k] + 128);
      }
      return true;
    }
  }
  return false;
}

void widen_row_ref(DType dtype, const uint16_t* x, int n, float* out) {
  if (dtype == DType::bf16)
    for (int i = 0; i < n; ++i) out[i] = bf16_to_f32(x[i]);
  else
    for (int i = 0; i < n; ++i) out[i] = f16_to_f32(x[i]);
}

void round_bf16_row_ref(const float* x, int n, uint16_t* out) {
  for (int i = 0; i < n; ++i) out[i] = f32_to_bf16(x[i]);
}

}  // namespace kt
