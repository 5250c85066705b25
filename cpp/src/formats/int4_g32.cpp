// int4_g32: asymmetric 4-bit, one fp16 scale d and fp16 minimum m per group of 32 k.
//   w = d[n,g] * q + m[n,g],  q in [0, 15]
// Chosen by measured error (relative error of W x, t(5)-distributed weights, N=256, K=2048):
//   group 32 asym 8.33% (min/max 9.02%), group 64 asym 10.2%, group 128 asym 12.3%,
//   group 32 sym 11.2%. 5.0 bits per weight with the scales.
// Quantizer: for a group, try ranges [min, max] scaled by 1.0, 0.9, 0.8; for each refit (d, m)
// twice by least squares on the rounded q; round d and m to fp16; keep the smallest error.
//
// Packed panel (16 channels, Kp = K rounded up to 32), per group of 32 k:
//
//   block j = 0..3 (k = 8j..8j+7 within the group), 64 bytes:
//     byte [4c + i] = q[c, 8j + i]  |  q[c, 8j + 4 + i] << 4        c = 0..15, i = 0..3
//     so  v & 0xf     is the vpdpbusd operand for k = 8j..8j+3   (lane c, bytes i)
//     and v >> 4 & 0xf the operand for k = 8j+4..8j+7
//   d: 16 x fp16    m: 16 x fp16                                  64 bytes
//
// 320 bytes per group-panel. Padded channels have q = d = m = 0; padded k have q = 0, which adds
// m * 0 since the activation there is zero.
#include <algorithm>
#include <cmath>
#include <cstring>

#include <emmintrin.h>

#include "format_impl.h"

namespace kt {
namespace {

constexpr int G = 32;

struct GroupFit {
  uint16_t d, m;
  float err;
};

// The group loops use SSE2, which every x86-64 CPU has: the quantizer runs at every load from
// unquantized tensors, and the compiler does not vectorize the clamps and fp sums by itself.
// A group shorter than 32 is padded with its last value; `valid` masks the padding out of sums.
struct Group {
  __m128 w[G / 4];
  __m128 valid[G / 4];  // all-ones bits for real values, zero for padding
};

float hsum(__m128 v) {
  __m128 s = _mm_add_ps(v, _mm_movehl_ps(v, v));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
}

// q = round_half_even(clamp((w - m) / d, 0, 15)), integers held as floats
void quantize_with(const Group& g, float d, float m, __m128* q) {
  const __m128 inv = _mm_set1_ps(d > 0.f ? 1.f / d : 0.f), mv = _mm_set1_ps(m);
  const __m128 magic = _mm_set1_ps(12582912.0f), hi = _mm_set1_ps(15.f);
  for (int i = 0; i < G / 4; ++i) {
    __m128 t = _mm_mul_ps(_mm_sub_ps(g.w[i], mv), inv);
    t = _mm_min_ps(_mm_max_ps(t, _mm_setzero_ps()), hi);
    q[i] = _mm_sub_ps(_mm_add_ps(t, magic), magic);
  }
}

float squared_error(const Group& g, float d, float m, const __m128* q) {
  const __m128 dv = _mm_set1_ps(d), mv = _mm_set1_ps(m);
  __m128 acc = _mm_setzero_ps();
  for (int i = 0; i < G / 4; ++i) {
    __m128 e = _mm_and_ps(_mm_sub_ps(_mm_add_ps(_mm_mul_ps(dv, q[i]), mv), g.w[i]), g.valid[i]);
    acc = _mm_add_ps(acc, _mm_mul_ps(e, e));
  }
  return hsum(acc);
}

GroupFit fit_group(const float* src, int len) {
  Group g;
  float lo = src[0], hi = src[0];
  for (int i = 1; i < len; ++i) lo = std::min(lo, src[i]), hi = std::max(hi, src[i]);
  for (int i = 0; i < G / 4; ++i) {
    float v[4];
    uint32_t bits[4];
    for (int j = 0; j < 4; ++j) {
      int k = 4 * i + j;
      v[j] = src[k < len ? k : len - 1];
      bits[j] = k < len ? ~0u : 0u;
    }
    g.w[i] = _mm_loadu_ps(v);
    g.valid[i] = _mm_castsi128_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bits)));
  }
  __m128 q[G / 4];
  GroupFit best{0, f32_to_f16(lo), 0.f};
  quantize_with(g, 0.f, f16_to_f32(best.m), q);
  best.err = squared_error(g, 0.f, f16_to_f32(best.m), q);
  if (hi == lo) return best;
  const float n = float(len);
  __m128 swv = _mm_setzero_ps();
  for (int i = 0; i < G / 4; ++i) swv = _mm_add_ps(swv, _mm_and_ps(g.w[i], g.valid[i]));
  const float sw = hsum(swv);
  for (float shrink : {1.0f, 0.9f, 0.8f}) {
    float m = lo * shrink, d = (hi - lo) * shrink / 15.f;
    for (int it = 0; it < 2; ++it) {
      quantize_with(g, d, m, q);
      // least squares for w ~ d q + m over the real values
      __m128 sq = _mm_setzero_ps(), sqq = _mm_setzero_ps(), sqw = _mm_setzero_ps();
      for (int i = 0; i < G / 4; ++i) {
        __m128 qi = _mm_and_ps(q[i], g.valid[i]);
        sq = _mm_add_ps(sq, qi);
        sqq = _mm_add_ps(sqq, _mm_mul_ps(qi, qi));
        sqw = _mm_add_ps(sqw, _mm_mul_ps(qi, g.w[i]));
      }
      const float s_q = hsum(sq), s_qq = hsum(sqq), s_qw = hsum(sqw);
      float det = n * s_qq - s_q * s_q;
      if (det <= 0.f) break;
      float nd = (n * s_qw - s_q * sw) / det;
      if (!(nd > 0.f)) break;
      d = nd;
      m = (sw - nd * s_q) / n;
    }
    uint16_t dh = f32_to_f16(d), mh = f32_to_f16(m);
    quantize_with(g, f16_to_f32(dh), f16_to_f32(mh), q);
    float err = squared_error(g, f16_to_f32(dh), f16_to_f32(mh), q);
    if (err < best.err) best = {dh, mh, err};
  }
  return best;
}

}  // namespace

void int4g32_shape(int N, int K, QuantizedMatrix* out) {
  const int groups = (K + G - 1) / G;
  out->format = FormatId::int4_g32;
  out->N = N;
  out->K = K;
  out->values.resize(size_t(N) * K);
  out->group_scale.resize(size_t(N) * groups);
  out->group_min.resize(size_t(N) * groups);
}

void int4g32_quantize_ref(const float* w, int N, int K, QuantizedMatrix* out) {
  const int groups = (K + G - 1) / G;
  int4g32_shape(N, K, out);
  for (int n = 0; n < N; ++n) {
    for (int g = 0; g < groups; ++g) {
      const float* wg = w + size_t(n) * K + g * G;
      int len = std::min(G, K - g * G);
      GroupFit f = fit_group(wg, len);
      out->group_scale[size_t(n) * groups + g] = f.d;
      out->group_min[size_t(n) * groups + g] = f.m;
      float q[G];
      const float d = f16_to_f32(f.d), m = f16_to_f32(f.m), inv = d > 0.f ? 1.f / d : 0.f;
      for (int i = 0; i < len; ++i)
        q[i] = round_half_even(std::clamp((wg[i] - m) * inv, 0.f, 15.f));
      for (int i = 0; i < len; ++i) out->values[size_t(n) * K + g * G + i] = uint8_t(q[i]);
    }
  }
}

void int4g32_dequantize_ref(const QuantizedMatrix& q, float* out) {
  const int groups = (q.K + G - 1) / G;
  for (int n = 0; n < q.N; ++n)
    for (int k = 0; k < q.K; ++k) {
      size_t gi = size_t(n) * groups + k / G;
      out[size_t(n) * q.K + k] =
          f16_to_f32(q.group_scale[gi]) * q.values[size_t(n) * q.K + k] + f16_to_f32(q.group_min[gi]);
    }
}

size_t int4g32_panel_bytes(int k_padded) { return size_t(k_padded / G) * (4 * 64 + 64); }

void int4g32_pack(const QuantizedMatrix& q, int n0, int n1, int k0, int k1, uint8_t* dst) {
  const int kp = round_up(k1 - k0, G);
  const int groups_src = (q.K + G - 1) / G;
  const size_t pb = int4g32_panel_bytes(kp);
  const int panels = (n1 - n0 + kPanelN - 1) / kPanelN;
  std::memset(dst, 0, pb * panels);
  for (int p = 0; p < panels; ++p) {
    uint8_t* panel = dst + pb * p;
    for (int g = 0; g < kp / G; ++g) {
      uint8_t* blk = panel + size_t(g) * 320;
      uint16_t* dm = reinterpret_cast<uint16_t*>(blk + 256);
      for (int c = 0; c < kPanelN; ++c) {
        int n = n0 + p * kPanelN + c;
        if (n >= n1) break;
        int kg0 = k0 + g * G;  // first source k of this group
        dm[c] = q.group_scale[size_t(n) * groups_src + kg0 / G];
        dm[kPanelN + c] = q.group_min[size_t(n) * groups_src + kg0 / G];
        for (int kk = 0; kk < G && kg0 + kk < k1; ++kk) {
          uint8_t v = q.values[size_t(n) * q.K + kg0 + kk];
          int j = kk / 8, r = kk % 8;
          uint8_t& byte = blk[j * 64 + c * 4 + (r & 3)];
          byte |= r < 4 ? v : uint8_t(v << 4);
        }
      }
    }
  }
}

void int4g32_unpack_row(const uint8_t* data, int Kp, int n, int K, float* out) {
  const uint8_t* panel = data + int4g32_panel_bytes(Kp) * size_t(n / kPanelN);
  const int c = n % kPanelN;
  for (int g = 0; g * G < K; ++g) {
    const uint8_t* blk = panel + size_t(g) * 320;
    uint16_t dm[2];
    std::memcpy(&dm[0], blk + 256 + c * 2, 2);
    std::memcpy(&dm[1], blk + 256 + (kPanelN + c) * 2, 2);
    const float d = f16_to_f32(dm[0]), m = f16_to_f32(dm[1]);
    for (int kk = 0; kk < G && g * G + kk < K; ++kk) {
      const int j = kk / 8, r = kk % 8;
      const uint8_t byte = blk[j * 64 + c * 4 + (r & 3)];
      const uint8_t q = r < 4 ? byte & 0xf : byte >> 4;
      out[g * G + kk] = d * q + m;  // w = d * q + m
    }
  }
}

}  // namespace kt
