// [NOTE] The NEON driver of the GGUF block types (kernels/neon/gguf_<type>.h), after
// gguf_driver_avx512vnni.h, built twice: at neon_dotprod with SDOT (gemm_gguf_dotprod.cpp), and at
// neon, for ARMv8.0 cores without dotprod (Cortex-A72, Graviton 1), with a stand-in of the same
// exact int32 result from baseline instructions (gemm_gguf_neon.cpp; dot_lane below). SDOT multiplies
// signed by signed, so the weights are decoded to their int8 values (or a non-negative int8 code
// whose offset goes to the activation sums, where that is cheaper) and no unsigned offset is needed.
//
// SDOT's layout: one 16-byte register = 4 channels x 4 k, lane c = channel 4q + c at k .. k+3:
//
//   w(g, q)  | ch 4q: k 4g..4g+3 | ch 4q+1: 4g..4g+3 | ch 4q+2 | ch 4q+3 |     (kK / 4 x 4 registers)
//   row r:   isum_j[q] += SDOT(w(g, q), x_r[16 k], lane g % 4)   (vdotq_laneq_s32, g in sub-block j)
//
// A row's 16 activations of 4 g are one register, and SDOT by lane multiplies each w(g, q) by its
// group's 4 bytes, so no broadcasts. The word-interleaved layout (formats/gguf_word_layout.h: word
// g of the 16 rows at byte 64 g + 4 c) IS this layout: w(g, q) is one load at 64 g + 16 q, and
// q8_0, q4_K, q5_K, q6_K, iq4_xs and mxfp4 read it with no transposes, only their bit unpacking
// per register. The other types read the file's blocks (GgufPanelBlock) and transpose 4 rows' bytes
// by 32-bit zips (4 x 4 words per 8 ZIP1/ZIP2) into a decoded k-block.
//
// For each (panel, k-block) the type's prepare() runs once (the scales of the 16 rows, and for the
// file-layout types the transposed values), then every activation row of the call runs against it,
// the rows in blocks of at most kMR (8, K-quants 6; kernels/row_blocks.h). The word-layout types
// decode each register again per row block (one to four operations against the MR SDOT it feeds),
// with no store and reload: at decode (M = 1) the weights go from their load through the bit
// unpacking straight into SDOT. A row block takes the quads of channels in passes of QB (4 quads
// for 1 row, 2 for 2, else 1): at least 4 independent SDOT chains where the 32 v-registers allow
// (MR QB int32 sums, as many per-sub-block sums, MR activations, 4 weights). The rows' fp32 sums
// (16 channels each) live in a per-thread buffer across the k-blocks.
// Left to do: timing on an ARM core (none here; qemu checks only the results): kMR, the passes,
// the prefetch distance (neon_driver.h's) and the decoded k-block of the file-layout types at
// M = 1 (a store and reload per register) are unmeasured.
//
// A Format F gives:
//   Block, Act (ActQ8x32 or ActQ8x256), kSub (k per integer scale: 16 or 32), Decoded
//   prepare(const Block* b, Decoded& D)                  b: the k-block (16 rows)
//   weights(b, D, j, h, q, int8x16_t (&w)[4])            w[L] = w(g, q), k = kSub j + 16 h + 4 L
//   scale(D, j, q)                                       int32 scale of sub-block j (kK / kSub > 1)
//   accumulate(D, q, i1, a, y)                           y + the block's fp32 products of 4 channels
//                                                        from I1 = sum_j scale_j isum_j (exact int32)
// Everything here has internal linkage (see neon_driver.h).
#pragma once
#include <arm_neon.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kernels/neon/neon_driver.h"
#include "kernels/row_blocks.h"
#include "kt/gguf_blocks.h"
#include "kt/kernels.h"
#include "runtime/thread_scratch.h"

namespace kt::gguf_dot {
namespace {

// ---- decoding helpers ------------------------------------------------------------------------

// acc += w . x's 4 bytes at lane L, per int32 lane: SDOT by element, or without dotprod its
// stand-in: x's word L in every lane (DUP), the 16 int16 products (SMULL, SMULL2; exact: |q| <= 128),
// their pairs (SADDLP) and the pairs' pairs (ADDP) as int32: the same exact sums, 6 instructions
// against SDOT's one (the DUP is shared by the 4 quads of a pass).
template <int L>
[[gnu::always_inline]] inline int32x4_t dot_lane(int32x4_t acc, int8x16_t w, int8x16_t x) {
#if defined(__ARM_FEATURE_DOTPROD)
  return vdotq_laneq_s32(acc, w, x, L);
#else
  const int8x16_t xl = vreinterpretq_s8_s32(vdupq_laneq_s32(vreinterpretq_s32_s8(x), L));
  const int16x8_t lo = vmull_s8(vget_low_s8(w), vget_low_s8(xl)), hi = vmull_high_s8(w, xl);
  return vaddq_s32(acc, vpaddq_s32(vpaddlq_s16(lo), vpaddlq_s16(hi)));
#endif
}

// 4 fp16 bit patterns as fp32 (exact, subnormals included)
inline float32x4_t half4(uint16x4_t h) { return vcvt_f32_f16(vreinterpret_f16_u16(h)); }

// Shifts by a count known after unrolling (the _n_ intrinsics want an immediate at every -O level).
inline uint32x4_t shr32(uint32x4_t v, int n) { return vshlq_u32(v, vdupq_n_s32(-n)); }
inline uint8x16_t shl8(uint8x16_t v, int n) { return vshlq_u8(v, vdupq_n_s8(int8_t(n))); }  // n < 0: right

// A word-interleaved k-block (formats/gguf_word_layout.h).
template <class Block>
struct Words {
  static constexpr size_t kWords = sizeof(Block) / 4;
  const uint8_t* p;
  explicit Words(const Block* b) : p(reinterpret_cast<const uint8_t*>(b)) {}
  // word g of channels 4q .. 4q+3 (lane c: bytes 4g .. 4g+3 of row 4q + c)
  uint8x16_t u8(int g, int q) const { return vld1q_u8(p + 64 * g + 16 * q); }
  uint32x4_t u32(int g, int q) const { return vreinterpretq_u32_u8(u8(g, q)); }
  // the 2-byte tails of channels 4q .. 4q+3 (q8_0's and q6_K's fp16 d) as fp32
  float32x4_t tail_half(int q) const {
    static_assert(sizeof(Block) % 4 == 2, "a tail of one fp16");
    uint16_t h[4];
    std::memcpy(h, p + 64 * kWords + 8 * q, 8);
    return half4(vld1_u16(h));
  }
};

// The fp16 at byte `off` of blocks b[0..3], as fp32
template <class Block>
inline float32x4_t gather_half(const Block* b, size_t off) {
  uint16_t h[4];
  for (int c = 0; c < 4; ++c) std::memcpy(h + c, reinterpret_cast<const uint8_t*>(b + c) + off, 2);
  return half4(vld1_u16(h));
}

// 16 bytes of 4 rows (row c at p + c * stride) transposed by 32-bit words: t[e] lane c = bytes
// 4e .. 4e + 3 of row c.
inline void load_transpose4(const uint8_t* p, size_t stride, uint8x16_t (&t)[4]) {
  uint32x4_t r[4];
  for (int c = 0; c < 4; ++c) r[c] = vreinterpretq_u32_u8(vld1q_u8(p + stride * c));
  const uint32x4_t a0 = vzip1q_u32(r[0], r[1]), a1 = vzip2q_u32(r[0], r[1]);  // r0w0 r1w0 r0w1 r1w1 | w2, w3
  const uint32x4_t b0 = vzip1q_u32(r[2], r[3]), b1 = vzip2q_u32(r[2], r[3]);
  auto lo = [](uint32x4_t x, uint32x4_t y) { return vreinterpretq_u8_u64(vzip1q_u64(vreinterpretq_u64_u32(x), vreinterpretq_u64_u32(y))); };
  auto hi = [](uint32x4_t x, uint32x4_t y) { return vreinterpretq_u8_u64(vzip2q_u64(vreinterpretq_u64_u32(x), vreinterpretq_u64_u32(y))); };
  t[0] = lo(a0, b0);
  t[1] = hi(a0, b0);
  t[2] = lo(a1, b1);
  t[3] = hi(a1, b1);
}

// The 16 bytes at byte `off` of blocks b[0..3], transposed (load_transpose4). off + 16 <= sizeof(Block).
template <class Block>
inline void load_transpose4(const Block* b, size_t off, uint8x16_t (&t)[4]) {
  load_transpose4(reinterpret_cast<const uint8_t*>(b) + off, sizeof(Block), t);
}

// ---- 32-weight blocks: the decoded k-block of the file-layout types ------------------------------

struct LBlock {
  int8x16_t q[8][4];  // q[g][quad]: w(g, quad)
  float32x4_t d[4];   // fp32 scale per quad of channels
  float32x4_t m[4];   // fp32 min (q4_1, q5_1)
};

// The 16 nibble bytes at byte `off` of the 16 blocks (low nibble: k < 16, high: k + 16), transposed
// into D.q as the nibbles 0..15.
template <class Block>
inline void nibbles_transposed(const Block* b, size_t off, LBlock& D) {
  const uint8x16_t m4 = vdupq_n_u8(0x0f);
  for (int q = 0; q < 4; ++q) {
    uint8x16_t t[4];
    load_transpose4(b + 4 * q, off, t);
    for (int e = 0; e < 4; ++e) {
      D.q[e][q] = vreinterpretq_s8_u8(vandq_u8(t[e], m4));
      D.q[4 + e][q] = vreinterpretq_s8_u8(vshrq_n_u8(t[e], 4));
    }
  }
}

// D.q through a 16-entry int8 table (iq4_nl, mxfp4): the nibbles become their levels
inline void lookup(LBlock& D, int8x16_t table) {
  for (int g = 0; g < 8; ++g)
    for (int q = 0; q < 4; ++q) D.q[g][q] = vqtbl1q_s8(table, vreinterpretq_u8_s8(D.q[g][q]));
}

// The fifth bits of q5_0 / q5_1 (little-endian uint32 at byte `off` of each block, bit k for k)
// added to the nibbles of D.q as bit 4. For w(g, q) lane c, byte i: bit 4g + i of h_c, which is
// bit 4 (g % 2) + i of byte g / 2 of h_c: a table lookup picks that byte, a bit test the bit.
template <class Block>
inline void add_fifth_bits(const Block* b, size_t off, LBlock& D) {
  static constexpr uint8_t kByte[16] = {0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8, 12, 12, 12, 12};
  static constexpr uint8_t kBit[2][16] = {{1, 2, 4, 8, 1, 2, 4, 8, 1, 2, 4, 8, 1, 2, 4, 8},
                                          {16, 32, 64, 128, 16, 32, 64, 128, 16, 32, 64, 128, 16, 32, 64, 128}};
  const uint8x16_t byte0 = vld1q_u8(kByte), bit_lo = vld1q_u8(kBit[0]), bit_hi = vld1q_u8(kBit[1]);
  const uint8x16_t m16 = vdupq_n_u8(16);
  for (int q = 0; q < 4; ++q) {
    uint32_t h[4];
    for (int c = 0; c < 4; ++c) std::memcpy(h + c, reinterpret_cast<const uint8_t*>(b + 4 * q + c) + off, 4);
    const uint8x16_t H = vreinterpretq_u8_u32(vld1q_u32(h));
    for (int g = 0; g < 8; ++g) {
      const uint8x16_t B = vqtbl1q_u8(H, vaddq_u8(byte0, vdupq_n_u8(uint8_t(g / 2))));
      const uint8x16_t bit = vandq_u8(vtstq_u8(B, g % 2 ? bit_hi : bit_lo), m16);
      D.q[g][q] = vreinterpretq_s8_u8(vorrq_u8(vreinterpretq_u8_s8(D.q[g][q]), bit));
    }
  }
}

// The common parts of a file-layout 32-weight type: kSub, weights from D.q, and the epilogue
//   block = a.d * d * (isum - kOff * a.sum)  [+ a.d * m * a.sum  when kMin]
template <int kOff, bool kMin>
struct Legacy {
  using Act = ActQ8x32;
  using Decoded = LBlock;
  static constexpr int kSub = 32;
  template <class Block>
  static void weights(const Block*, const LBlock& D, int, int h, int q, int8x16_t (&w)[4]) {
    for (int L = 0; L < 4; ++L) w[L] = D.q[4 * h + L][q];
  }
  static float32x4_t accumulate(const LBlock& D, int q, int32x4_t i1, const ActQ8x32& a, float32x4_t y) {
    if constexpr (kOff != 0) i1 = vsubq_s32(i1, vdupq_n_s32(kOff * a.sum));
    y = vfmaq_f32(y, vcvtq_f32_s32(i1), vmulq_n_f32(D.d[q], a.d));
    if constexpr (kMin) y = vfmaq_n_f32(y, vmulq_n_f32(D.m[q], a.d), float(a.sum));
    return y;
  }
};

// ---- K-quants: 256-weight super-blocks, q8_256 activations ----------------------------------

// The scales and mins of q4_K / q5_K: sub-block j's integer scale and min of 4 channels per quad.
struct KScales {
  int32x4_t sc[8][4], m[8][4];
  float32x4_t d[4], dmin[4];
};

// From the blocks' first 4 words: d | dmin << 16, then the 12 scale bytes (kt/gguf_blocks.h,
// q4K_scale_min), one row per lane.
template <class Block>
inline void q4K_scales(const Words<Block>& w, KScales& D) {
  const uint32x4_t m63 = vdupq_n_u32(63), m15 = vdupq_n_u32(15), m3 = vdupq_n_u32(3);
  for (int q = 0; q < 4; ++q) {
    const uint32x4_t h = w.u32(0, q), s0 = w.u32(1, q), s1 = w.u32(2, q), s2 = w.u32(3, q);
    D.d[q] = half4(vmovn_u32(h));
    D.dmin[q] = half4(vshrn_n_u32(h, 16));
    for (int j = 0; j < 4; ++j) {
      const uint32x4_t sc_hi = vandq_u32(shr32(s0, 8 * j + 6), m3), mn_hi = vandq_u32(shr32(s1, 8 * j + 6), m3);
      D.sc[j][q] = vreinterpretq_s32_u32(vandq_u32(shr32(s0, 8 * j), m63));
      D.m[j][q] = vreinterpretq_s32_u32(vandq_u32(shr32(s1, 8 * j), m63));
      D.sc[4 + j][q] = vreinterpretq_s32_u32(vorrq_u32(vandq_u32(shr32(s2, 8 * j), m15), vshlq_n_u32(sc_hi, 4)));
      D.m[4 + j][q] = vreinterpretq_s32_u32(vorrq_u32(vandq_u32(shr32(s2, 8 * j + 4), m15), vshlq_n_u32(mn_hi, 4)));
    }
  }
}

// y + a.d * (d * I1 - dmin * I2), I2 = sum_j m_j (bsums[2j] + bsums[2j+1])
inline float32x4_t q4K_accumulate(const KScales& D, int q, int32x4_t i1, const ActQ8x256& a, float32x4_t y) {
  int32x4_t i2 = vdupq_n_s32(0);
  for (int j = 0; j < 8; ++j) i2 = vmlaq_n_s32(i2, D.m[j][q], int32_t(a.bsums[2 * j]) + a.bsums[2 * j + 1]);
  y = vfmaq_f32(y, vcvtq_f32_s32(i1), vmulq_n_f32(D.d[q], a.d));
  return vfmsq_f32(y, vcvtq_f32_s32(i2), vmulq_n_f32(D.dmin[q], a.d));
}

// The decoded k-block of the file-layout K-quants (q2_K, q3_K), sub-blocks of 16 k.
struct KBlock {
  int8x16_t q[64][4];   // q[g][quad]: w(g, quad)
  int32x4_t sc[16][4];  // integer scale of sub-block j
  int32x4_t m[16][4];   // integer min of sub-block j (q2_K)
  float32x4_t d[4], dmin[4];
};

// The 2-bit values (qs: per 128 k 32 bytes, k = 128 h + 32 s + l at bits 2s of byte 32 h + l; 64
// bytes at byte `off`) of blocks b[0..3] into D.q[g][q]: g = 4 j + L (k = 16 j + 4 L) is byte
// 32 (j / 8) + 16 (j % 2) + 4 L, bits 2 (j % 8 / 2).
template <class Block>
inline void crumbs_transposed(const Block* b, size_t off, int q, KBlock& D) {
  uint8x16_t t[4][4];  // t[i][e] lane c: bytes 16 i + 4 e .. 16 i + 4 e + 3 of row c
  for (int i = 0; i < 4; ++i) load_transpose4(b, off + 16 * i, t[i]);
  const uint8x16_t m3 = vdupq_n_u8(3);
  for (int j = 0; j < 16; ++j)
    for (int L = 0; L < 4; ++L)
      D.q[4 * j + L][q] = vreinterpretq_s8_u8(vandq_u8(shl8(t[2 * (j / 8) + j % 2][L], -2 * (j % 8 / 2)), m3));
}

// What q2_K and q3_K share: weights from D.q, the sub-blocks' scales
struct KFile {
  using Act = ActQ8x256;
  using Decoded = KBlock;
  static constexpr int kSub = 16;
  template <class Block>
  static void weights(const Block*, const KBlock& D, int j, int, int q, int8x16_t (&w)[4]) {
    for (int L = 0; L < 4; ++L) w[L] = D.q[4 * j + L][q];
  }
  static int32x4_t scale(const KBlock& D, int j, int q) { return D.sc[j][q]; }
};

// ---- the driver --------------------------------------------------------------------------------

// The calling thread's accumulators: at least `floats` floats, 64-byte aligned (contents undefined).
inline float* acc_buffer(size_t floats) { return reinterpret_cast<float*>(thread_scratch(0, floats * sizeof(float))); }

// Rows per block: MR int32 sums per quad in a pass, as many per-sub-block sums where the type has
// several sub-blocks, MR activations and 4 weights within the 32 v-registers (with the decode's
// constants): 8 rows for the 32-weight types, 6 for the K-quants; 4 for both with the SDOT stand-in,
// whose products and pair sums hold 4 temporaries per chain.
#if defined(__ARM_FEATURE_DOTPROD)
template <class F>
constexpr int kMR = F::Block::kK / F::kSub == 1 ? 8 : 6;
#else
template <class F>
constexpr int kMR = 4;
#endif

// Quads of channels per pass for MR rows: at least 4 independent SDOT chains where registers allow.
constexpr int quads_per_pass(int mr) { return mr == 1 ? 4 : mr == 2 ? 2 : 1; }

// MR rows (a[r]: row r's activation block of this k-block) against quads q0 .. q0 + QB - 1 of the
// k-block; acc[16 r ..]: row r's sums.
template <class F, int MR, int QB>
[[gnu::always_inline]] inline void rows_pass(const typename F::Block* b, const typename F::Decoded& D,
                                             const typename F::Act* const* a, float* acc, int q0) {
  constexpr int NS = F::Block::kK / F::kSub, H = F::kSub / 16;
  int32x4_t i1[MR][QB], is[MR][QB];
#pragma GCC unroll 16
  for (int j = 0; j < NS; ++j) {
    for (int r = 0; r < MR; ++r)
      for (int e = 0; e < QB; ++e) is[r][e] = vdupq_n_s32(0);
#pragma GCC unroll 2
    for (int h = 0; h < H; ++h) {
      int8x16_t x[MR];
      for (int r = 0; r < MR; ++r) x[r] = vld1q_s8(a[r]->q + F::kSub * j + 16 * h);
      for (int e = 0; e < QB; ++e) {
        int8x16_t w[4];
        F::weights(b, D, j, h, q0 + e, w);
        for (int r = 0; r < MR; ++r) {
          is[r][e] = dot_lane<0>(is[r][e], w[0], x[r]);
          is[r][e] = dot_lane<1>(is[r][e], w[1], x[r]);
          is[r][e] = dot_lane<2>(is[r][e], w[2], x[r]);
          is[r][e] = dot_lane<3>(is[r][e], w[3], x[r]);
        }
      }
    }
    // A compiler barrier: q5_K, q6_K, q2_K and q3_K reuse a loaded register in several sub-blocks,
    // and gcc, keeping the loads for later, spilled the sums instead; reloads hit L1.
    asm volatile("" ::: "memory");
    for (int e = 0; e < QB; ++e) {
      if constexpr (NS == 1) {
        for (int r = 0; r < MR; ++r) i1[r][e] = is[r][e];
      } else {  // I1 = sum_j scale_j isum_j
        const int32x4_t sc = F::scale(D, j, q0 + e);
        for (int r = 0; r < MR; ++r) i1[r][e] = j == 0 ? vmulq_s32(is[r][e], sc) : vmlaq_s32(i1[r][e], is[r][e], sc);
      }
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int e = 0; e < QB; ++e) {
      float* y = acc + kPanelN * r + 4 * (q0 + e);
      vst1q_f32(y, F::accumulate(D, q0 + e, i1[r][e], *a[r], vld1q_f32(y)));
    }
}

// Not inlined: one call per k-block and row block, and each row count's code stays apart.
template <class F, int MR>
[[gnu::noinline]] void rows(const typename F::Block* b, const typename F::Decoded& D, const typename F::Act* const* a, float* acc) {
  constexpr int QB = quads_per_pass(MR);
  for (int q0 = 0; q0 < 4; q0 += QB) rows_pass<F, MR, QB>(b, D, a, acc, q0);
}

// n <= R rows against the k-block
template <class F, int R>
inline void rows_n(int n, const typename F::Block* b, const typename F::Decoded& D, const typename F::Act* const* a,
                   float* acc) {
  if constexpr (R > 0) {
    if (n == R) rows<F, R>(b, D, a, acc);
    else rows_n<F, R - 1>(n, b, D, a, acc);
  }
}

// Every row of the call against k-block s (b, prepared in D): acc[16 i ..] += row i's block
// products. row(i): the activation row of row i.
template <class F, class RowOf>
inline void all_rows(const typename F::Block* b, const typename F::Decoded& D, const ActView& act, int s, int m,
                     RowOf row, float* acc) {
  using Act = typename F::Act;
  constexpr int MR = kMR<F>;
  const int blocks = (m + MR - 1) / MR;
  for (int blk = 0; blk < blocks; ++blk) {
    const int i = block_start(m, blocks, blk), n = block_start(m, blocks, blk + 1) - i;
    const Act* a[MR];
    for (int r = 0; r < n; ++r) a[r] = reinterpret_cast<const Act*>(act.data + act.stride * size_t(row(i + r))) + s;
    rows_n<F, MR>(n, b, D, a, acc + size_t(kPanelN) * i);
  }
}

// One k-block of one matrix: prefetch the stream ahead, prepare, run the rows.
template <class F, class RowOf>
inline void k_block(const typename F::Block* b, const ActView& act, int s, int m, RowOf row, float* acc,
                    typename F::Decoded& D) {
  const uint8_t* at = reinterpret_cast<const uint8_t*>(b);
  for (size_t l = 0; l < sizeof(GgufPanelBlock<typename F::Block>); l += 64) neon::prefetch_stream(at + l);
  F::prepare(b, D);
  all_rows<F>(b, D, act, s, m, row, acc);
}

// stage 1: h[i, 16p + c] = gated(g, u), g and u the panel's 16 dot products of row rows[i]
template <class F>
void gateup(const GateUpArgs& a) {
  using PB = GgufPanelBlock<typename F::Block>;
  const int nb = a.act.Kp / PB::kK;
  float* acc_g = acc_buffer(size_t(2) * kPanelN * a.m);
  float* acc_u = acc_g + size_t(kPanelN) * a.m;
  typename F::Decoded D;
  auto row = [&](int i) { return a.rows ? a.rows[i] : i; };
  for (int p = a.p0; p < a.p1; ++p) {
    const PB* g = reinterpret_cast<const PB*>(a.gate->data + a.gate->panel_bytes * p);
    const PB* u = reinterpret_cast<const PB*>(a.up->data + a.up->panel_bytes * p);
    for (size_t k = 0; k < size_t(2) * kPanelN * a.m; ++k) acc_g[k] = 0.f;
    for (int s = 0; s < nb; ++s) {
      k_block<F>(g[s].b, a.act, s, a.m, row, acc_g, D);
      k_block<F>(u[s].b, a.act, s, a.m, row, acc_u, D);
    }
    for (int i = 0; i < a.m; ++i) {
      float* h = a.h + a.ldh * size_t(i) + p * kPanelN;
      for (int q = 0; q < 4; ++q)
        vst1q_f32(h + 4 * q, neon::gated(vld1q_f32(acc_g + kPanelN * i + 4 * q), vld1q_f32(acc_u + kPanelN * i + 4 * q),
                                         a.glu, p * kPanelN + 4 * q));
    }
  }
}

// stage 2: out[tok[i], 16p + c] += weight[i] * y, y the panel's 16 dot products of row i
template <class F>
void down(const DownArgs& a) {
  using PB = GgufPanelBlock<typename F::Block>;
  const int nb = a.act.Kp / PB::kK;
  float* acc = acc_buffer(size_t(kPanelN) * a.m);
  typename F::Decoded D;
  auto row = [](int i) { return i; };
  for (int p = a.p0; p < a.p1; ++p) {
    const PB* w = reinterpret_cast<const PB*>(a.down->data + a.down->panel_bytes * p);
    for (size_t k = 0; k < size_t(kPanelN) * a.m; ++k) acc[k] = 0.f;
    for (int s = 0; s < nb; ++s) k_block<F>(w[s].b, a.act, s, a.m, row, acc, D);
    for (int i = 0; i < a.m; ++i) {
      float* o = a.out + a.ldo * size_t(a.tok[i]) + p * kPanelN;
      for (int q = 0; q < 4; ++q)
        vst1q_f32(o + 4 * q, vfmaq_n_f32(vld1q_f32(o + 4 * q), vld1q_f32(acc + kPanelN * i + 4 * q), a.weight[i]));
    }
  }
}

}  // namespace
}  // namespace kt::gguf_dot
