// Per-token activation quantization for the kernels: one scale per row, s = amax / 127,
// q = round_half_even(x / s). The int4 kernels also need the sum of q over each group of 32
// to apply the group minimum: sum_k (d q_w + m) s q_a = s (d sum q_w q_a + m sum q_a).
// The GGUF kernels read blocks instead (q8_32, q8_256: kt/gguf_blocks.h), each with its own scale
// by the same rule; their K is whole blocks (no padding).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kt/gguf_blocks.h"
#include "kt/kernels.h"

namespace kt {

size_t act_row_bytes(ActFormat format, int Kp) {
  switch (format) {
    case ActFormat::f32: return size_t(Kp) * 4;
    case ActFormat::bf16: return size_t(Kp) * 2;
    case ActFormat::q8s:
    case ActFormat::q8u: return size_t(Kp);
    case ActFormat::q8_32: return size_t(Kp / ActQ8x32::kK) * sizeof(ActQ8x32);
    case ActFormat::q8_256: return size_t(Kp / ActQ8x256::kK) * sizeof(ActQ8x256);
  }
  return 0;
}

namespace {

// q = round_half_even(x * inv) (or x / s where inv overflows), the q8s rule on n values.
void quantize_q8(const float* x, int n, const Q8Scale& qs, int8_t* q) {
  if (qs.divide) {
    for (int k = 0; k < n; ++k) q[k] = int8_t(round_half_even(x[k] / qs.s));
  } else {
    for (int k = 0; k < n; ++k) q[k] = int8_t(round_half_even(x[k] * qs.inv));
  }
}

float amax_of(const float* x, int n) {
  float amax = 0.f;
  for (int k = 0; k < n; ++k) amax = std::max(amax, std::fabs(x[k]));
  return amax;
}

}  // namespace

void quantize_act_block(const float* x, ActQ8x32* b) {
  const Q8Scale qs = q8_scale(amax_of(x, ActQ8x32::kK));
  b->d = qs.s;
  quantize_q8(x, ActQ8x32::kK, qs, b->q);
  int32_t sum = 0;
  for (int k = 0; k < ActQ8x32::kK; ++k) sum += b->q[k];
  b->sum = sum;
}

void quantize_act_block(const float* x, ActQ8x256* b) {
  const Q8Scale qs = q8_scale(amax_of(x, ActQ8x256::kK));
  b->d = qs.s;
  quantize_q8(x, ActQ8x256::kK, qs, b->q);
  for (int j = 0; j < 16; ++j) {
    int sum = 0;
    for (int k = 0; k < 16; ++k) sum += b->q[16 * j + k];
    b->bsums[j] = int16_t(sum);
  }
  std::memset(b->pad, 0, sizeof(b->pad));
}

namespace {

// Kp / kK blocks of a row of K values, the values past K zero.
template <class Act>
void quantize_blocks(const float* x, int K, int Kp, Act* b) {
  for (int i = 0; i < Kp / Act::kK; ++i) {
    const int k0 = i * Act::kK;
    if (k0 + Act::kK <= K) {
      quantize_act_block(x + k0, b + i);
    } else {
      float tail[Act::kK] = {};
      if (k0 < K) std::memcpy(tail, x + k0, size_t(K - k0) * 4);
      quantize_act_block(tail, b + i);
    }
  }
}

}  // namespace

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
    case ActFormat::q8_32: quantize_blocks(x, K, Kp, reinterpret_cast<ActQ8x32*>(dst)); return true;
    case ActFormat::q8_256: quantize_blocks(x, K, Kp, reinterpret_cast<ActQ8x256*>(dst)); return true;
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
      quantize_q8(x, K, qs, q);
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
