// int4_g32: asymmetric 4-bit, one fp16 scale d and fp16 minimum m per group of 32 k.
//   w = d[n,g] * q + m[n,g],  q in [0, 15]
// Chosen by measured error (relative error of W x, t(5)-distributed weights, N=256, K=2048):
//   group 32 asym 8.33% (min/max 9.02%), group 64 asym 10.2%, group 128 asym 12.3%,
//   group 32 sym 11.2%. 5.0 bits per weight with the scales.
// Quantizer: for a group, try ranges [min, max] scaled by 1.0, 0.9, 0.8; for each refit (d, m)
// twice by least squares on the rounded q; round d and m to fp16; keep the smallest error.
//
// Packed panel (16 channels, Kp = K rounded up to 32): one Int4G32Block (kt/format_blocks.h) per
// group of 32 k, 320 bytes:
//
//   block row j = 0..3 (k = 8j..8j+7 within the group), 64 bytes:
//     byte [4c + i] = q[c, 8j + i]  |  q[c, 8j + 4 + i] << 4        c = 0..15, i = 0..3
//     so  v & 0xf     is the vpdpbusd operand for k = 8j..8j+3   (lane c, bytes i)
//     and v >> 4 & 0xf the operand for k = 8j+4..8j+7
//   d: 16 x fp16    m: 16 x fp16                                  64 bytes
//
// Padded channels have q = d = m = 0; padded k have q = 0, which adds m * 0 since the activation
// there is zero.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "format_impl.h"
#include "formats/lanes4.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

constexpr int G = Int4G32Block::kK;
static_assert(G == kQ8Group, "the q8s group sums are per int4_g32 group");

struct GroupFit {
  uint16_t d, m;
  float err;
};

// The group loops run on four lanes (formats/lanes4.h: SSE2 on x86-64, the same bits elsewhere):
// the quantizer runs at every load from unquantized tensors.
// A group shorter than 32 is padded with its last value; `valid` masks the padding out of sums.
using namespace lanes4;
struct Group {
  F4 w[G / 4];
  F4 valid[G / 4];  // all-ones bits for real values, zero for padding
};

// q = round_half_even(clamp((w - m) / d, 0, 15)), integers held as floats
void quantize_with(const Group& g, float d, float m, F4* q) {
  const F4 inv = set1(d > 0.f ? 1.f / d : 0.f), mv = set1(m);
  const F4 magic = set1(12582912.0f), hi = set1(15.f);
  for (int i = 0; i < G / 4; ++i) {
    F4 t = mul(sub(g.w[i], mv), inv);
    t = min(max(t, zero()), hi);
    q[i] = sub(add(t, magic), magic);
  }
}

float squared_error(const Group& g, float d, float m, const F4* q) {
  const F4 dv = set1(d), mv = set1(m);
  F4 acc = zero();
  for (int i = 0; i < G / 4; ++i) {
    F4 e = bit_and(sub(add(mul(dv, q[i]), mv), g.w[i]), g.valid[i]);
    acc = add(acc, mul(e, e));
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
    g.w[i] = load(v);
    g.valid[i] = load_bits(bits);
  }
  F4 q[G / 4];
  GroupFit best{0, f32_to_f16(lo), 0.f};
  quantize_with(g, 0.f, f16_to_f32(best.m), q);
  best.err = squared_error(g, 0.f, f16_to_f32(best.m), q);
  if (hi == lo) return best;
  const float n = float(len);
  F4 swv = zero();
  for (int i = 0; i < G / 4; ++i) swv = add(swv, bit_and(g.w[i], g.valid[i]));
  const float sw = hsum(swv);
  for (float shrink : {1.0f, 0.9f, 0.8f}) {
    float m = lo * shrink, d = (hi - lo) * shrink / 15.f;
    for (int it = 0; it < 2; ++it) {
      quantize_with(g, d, m, q);
      // least squares for w ~ d q + m over the real values
      F4 sq = zero(), sqq = zero(), sqw = zero();
      for (int i = 0; i < G / 4; ++i) {
        F4 qi = bit_and(q[i], g.valid[i]);
        sq = add(sq, qi);
        sqq = add(sqq, mul(qi, qi));
        sqw = add(sqw, mul(qi, g.w[i]));
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

void int4g32_quantize_ref(const float* w, int N, int K, QuantizedMatrix* out) {
  const int groups = (K + G - 1) / G;
  shape_quantized(format_traits(FormatId::int4_g32), N, K, out);
  uint8_t* values = out->array<uint8_t>(kInt4G32Values);
  uint16_t* scale = out->array<uint16_t>(kInt4G32Scale);
  uint16_t* min = out->array<uint16_t>(kInt4G32Min);
  for (int n = 0; n < N; ++n) {
    for (int g = 0; g < groups; ++g) {
      const float* wg = w + size_t(n) * K + g * G;
      int len = std::min(G, K - g * G);
      GroupFit f = fit_group(wg, len);
      scale[size_t(n) * groups + g] = f.d;
      min[size_t(n) * groups + g] = f.m;
      float q[G];
      const float d = f16_to_f32(f.d), m = f16_to_f32(f.m), inv = d > 0.f ? 1.f / d : 0.f;
      for (int i = 0; i < len; ++i)
        q[i] = round_half_even(std::clamp((wg[i] - m) * inv, 0.f, 15.f));
      for (int i = 0; i < len; ++i) values[size_t(n) * K + g * G + i] = uint8_t(q[i]);
    }
  }
}

void int4g32_dequantize_ref(const QuantizedMatrix& q, float* out) {
  const int groups = (q.K + G - 1) / G;
  const uint8_t* values = q.array<uint8_t>(kInt4G32Values);
  const uint16_t* scale = q.array<uint16_t>(kInt4G32Scale);
  const uint16_t* min = q.array<uint16_t>(kInt4G32Min);
  for (int n = 0; n < q.N; ++n)
    for (int k = 0; k < q.K; ++k) {
      size_t gi = size_t(n) * groups + k / G;
      out[size_t(n) * q.K + k] = f16_to_f32(scale[gi]) * values[size_t(n) * q.K + k] + f16_to_f32(min[gi]);
    }
}

// int4_g32_zp (formats/int4_g32_zp.cpp) packs into the same blocks, its field m holding -z as an
// fp16 integer, from which kernels form the minimum d * m in fp32; values and d are placed alike.
template <bool kZeroPoint>
void int4g32_pack_blocks(const QuantizedMatrix& q, int n0, int n1, int k0, int k1, uint8_t* dst) {
  const int kp = round_up(k1 - k0, G);
  const int groups_src = (q.K + G - 1) / G;
  const size_t pb = format_traits(kZeroPoint ? FormatId::int4_g32_zp : FormatId::int4_g32).panel_bytes(kp);
  const uint8_t* values = q.array<uint8_t>(kInt4G32Values);
  const uint16_t* scale = q.array<uint16_t>(kInt4G32Scale);
  const int panels = (n1 - n0 + kPanelN - 1) / kPanelN;
  std::memset(dst, 0, pb * panels);
  for (int p = 0; p < panels; ++p) {
    Int4G32Block* blocks = reinterpret_cast<Int4G32Block*>(dst + pb * p);
    for (int g = 0; g < kp / G; ++g) {
      Int4G32Block& blk = blocks[g];
      for (int c = 0; c < kPanelN; ++c) {
        int n = n0 + p * kPanelN + c;
        if (n >= n1) break;
        int kg0 = k0 + g * G;  // first source k of this group
        const size_t gi = size_t(n) * groups_src + kg0 / G;
        blk.d[c] = scale[gi];
        if constexpr (kZeroPoint)
          blk.m[c] = f32_to_f16(-float(q.array<uint8_t>(kInt4G32ZpZero)[gi]));
        else
          blk.m[c] = q.array<uint16_t>(kInt4G32Min)[gi];
        for (int kk = 0; kk < G && kg0 + kk < k1; ++kk) {
          uint8_t v = values[size_t(n) * q.K + kg0 + kk];
          int j = kk / 8, r = kk % 8;
          uint8_t& byte = blk.q[j][c * 4 + (r & 3)];
          byte |= r < 4 ? v : uint8_t(v << 4);
        }
      }
    }
  }
}

void int4g32_pack(const QuantizedMatrix& q, int n0, int n1, int k0, int k1, uint8_t* dst) {
  int4g32_pack_blocks<false>(q, n0, n1, k0, k1, dst);
}
void int4g32zp_pack(const QuantizedMatrix& q, int n0, int n1, int k0, int k1, uint8_t* dst) {
  int4g32_pack_blocks<true>(q, n0, n1, k0, k1, dst);
}

// w = d * q + m, or for int4_g32_zp d * q + d * m (= d * (q - z), exact in fp32: both products
// are multiples of d's last bit and at most 15 d)
template <bool kZeroPoint>
void int4g32_unpack_blocks(const uint8_t* data, int Kp, int n, int K, float* out) {
  const FormatTraits& f = format_traits(kZeroPoint ? FormatId::int4_g32_zp : FormatId::int4_g32);
  const Int4G32Block* blocks = reinterpret_cast<const Int4G32Block*>(data + f.panel_bytes(Kp) * size_t(n / kPanelN));
  const int c = n % kPanelN;
  for (int g = 0; g * G < K; ++g) {
    const Int4G32Block& blk = blocks[g];
    const float d = f16_to_f32(blk.d[c]);
    const float m = kZeroPoint ? d * f16_to_f32(blk.m[c]) : f16_to_f32(blk.m[c]);
    for (int kk = 0; kk < G && g * G + kk < K; ++kk) {
      const int j = kk / 8, r = kk % 8;
      const uint8_t byte = blk.q[j][c * 4 + (r & 3)];
      const uint8_t q = r < 4 ? byte & 0xf : byte >> 4;
      out[g * G + kk] = d * q + m;
    }
  }
}

void int4g32_unpack_row(const uint8_t* data, int Kp, int n, int K, float* out) {
  int4g32_unpack_blocks<false>(data, Kp, n, K, out);
}
void int4g32zp_unpack_row(const uint8_t* data, int Kp, int n, int K, float* out) {
  int4g32_unpack_blocks<true>(data, Kp, n, K, out);
}

KT_REFERENCE_QUANTIZER_ROW(int4_g32, int4g32_quantize_ref)

}  // namespace kt
