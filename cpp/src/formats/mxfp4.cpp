// mxfp4: OCP MX FP4 blocks, 32 e2m1 values with one ue8m0 exponent, 4.25 bits per weight: gpt-oss's
// released experts (method MXFP4 reads them from the HF safetensors) and ggml's block_mxfp4
// (GGUF type 39, method LLAMAFILE).
//
//   BlockMxfp4, 17 bytes:
//     | e: ue8m0 | qs[0] qs[1] ... qs[15] |
//       byte j of qs:  low nibble = i[j],  high nibble = i[j + 16]           j = 0..15
//   w[k] = 2^(e - 128) * kMxfp4Values[i[k]],  kMxfp4Values = 0 1 2 3 4 6 8 12 0 -1 -2 -3 -4 -6 -8 -12
//
// (gpt-oss stores the same nibbles in another order, element 2j low and 2j + 1 high; its reader
// reorders them into these blocks.) e = 255 is the ue8m0 NaN: refused at load (mxfp4_check).
// Quantizer (ours): of the two exponents that put the block's largest |w| between the levels 8
// and 12 or 4 and 6 (e = floor(log2 amax) + 125 or + 126), the one of least squared error with
// every weight at its nearest level.
// Dot with a q8_32 block: sum_k kMxfp4Values[i[k]] * a.q[k] in int32, then 2^(e-128) * a.d * that.
#include <cmath>
#include <stdexcept>
#include <string>

#include "format_impl.h"
#include "gguf_block32.h"
#include "gguf_format.h"

namespace kt {
namespace {

// 2^(e - 128) as fp32, exactly (e 0 and 1 give the subnormals 2^-128 and 2^-127).
float e8m0_half(uint8_t e) { return std::ldexp(1.f, int(e) - 128); }

// The nearest level of |t| (|t| in units of 2^(e-128)): the count of midpoints of 0 1 2 3 4 6 8 12
// below it (a tie goes to the lower level), then the sign bit where the level is not zero.
uint8_t nearest_level(float t) {
  constexpr float kMid[7] = {0.5f, 1.5f, 2.5f, 3.5f, 5.f, 7.f, 10.f};
  const float a = std::fabs(t);
  int i = 0;
  for (const float m : kMid) i += a > m;
  return uint8_t(i != 0 && t < 0.f ? i + 8 : i);
}

// Squared error of block x with exponent e, its levels into idx.
float fit(const float* x, int e, uint8_t* idx) {
  const float d = e8m0_half(uint8_t(e)), inv = 1.f / d;
  float err = 0.f;
  for (int k = 0; k < 32; ++k) {
    idx[k] = nearest_level(x[k] * inv);
    const float r = x[k] - d * float(kMxfp4Values[idx[k]]);
    err += r * r;
  }
  return err;
}

}  // namespace

void dequantize_block(const BlockMxfp4& b, float* out) {
  const float d = e8m0_half(b.e);
  for (int k = 0; k < 32; ++k) out[k] = d * float(kMxfp4Values[block32::nibble(b.qs, k)]);
}

void quantize_block(const float* x, BlockMxfp4* b) {
  float amax = 0.f;
  for (int k = 0; k < 32; ++k) amax = std::fmax(amax, std::fabs(x[k]));
  uint8_t idx[32] = {}, best_idx[32] = {};
  int best_e = 0;
  if (amax > 0.f) {
    int ex;
    std::frexp(amax, &ex);  // amax = m 2^ex, m in [0.5, 1): floor(log2 amax) = ex - 1
    float best_err = INFINITY;
    for (int e = ex + 124; e <= ex + 125; ++e) {
      const int ec = e < 0 ? 0 : e > 254 ? 254 : e;
      const float err = fit(x, ec, idx);
      if (err < best_err) {
        best_err = err, best_e = ec;
        for (int k = 0; k < 32; ++k) best_idx[k] = idx[k];
      }
    }
  }
  b->e = uint8_t(best_e);
  block32::pack_nibbles(best_idx, b->qs);
}

float dot_block(const BlockMxfp4& b, const ActQ8x32& a) {
  int32_t sumi = 0;
  for (int k = 0; k < 32; ++k) sumi += kMxfp4Values[block32::nibble(b.qs, k)] * a.q[k];
  return e8m0_half(b.e) * a.d * float(sumi);
}

void mxfp4_check(const QuantizedMatrix& q) {
  const BlockMxfp4* blocks = q.array<BlockMxfp4>(0);
  const int row_blocks = q.K / BlockMxfp4::kK;
  for (size_t i = 0; i < size_t(q.N) * row_blocks; ++i)
    if (blocks[i].e == 0xff)
      throw std::invalid_argument("block [" + std::to_string(i / row_blocks) + ", " + std::to_string(i % row_blocks) +
                                  "] (channel, block of 32 k) has the ue8m0 NaN exponent 0xff");
}

KT_GGUF_FORMAT(mxfp4, BlockMxfp4)
KT_GGUF_WORD_LAYOUT(mxfp4, BlockMxfp4)

}  // namespace kt
