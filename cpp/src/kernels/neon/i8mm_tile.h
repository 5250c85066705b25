// SMMLA row-pair tiles of the neon_i8mm kernels (gemm_int8pc_i8mm.cpp, gemm_int4g32_i8mm.cpp), on
// the formats' own packed layouts. Internal linkage, like every ISA header.
//
// SMMLA (vmmlaq_s32) multiplies a 2x8 int8 matrix by an 8x2 one into a 2x2 int32 block; here the
// 2x8 is two activation rows and the 8x2 two channels, over the same 8 k:
//
//   a = [ x[r0, k..k+7] | x[r1, k..k+7] ]       (two 8-byte loads)
//   b = [ W[c, k..k+7]  | W[c+1, k..k+7] ]
//   z += [ r0.c  r0.c+1  r1.c  r1.c+1 ]         (int32 lanes)
//
// The panel's 16 channels are 8 such channel pairs. A 16-byte register of a packed panel holds 4
// channels x 4 k (int8_pc: one block's channels 4q..4q+3; int4_g32: one step's low or high
// nibbles of them); two of them, k..k+3 (lo) and k+4..k+7 (hi), zipped by 32-bit lanes give two
// channel pairs:
//
//   lo = [c0 k0-3 | c1 k0-3 | c2 k0-3 | c3 k0-3]     zip1 = [c0 k0-3 | c0 k4-7 | c1 k0-3 | c1 k4-7]
//   hi = [c0 k4-7 | c1 k4-7 | c2 k4-7 | c3 k4-7]     zip2 = [c2 k0-3 | c2 k4-7 | c3 k0-3 | c3 k4-7]
//
// A row block of MR rows is P = ceil(MR / 2) row pairs; an odd block pairs its last row with
// itself (the copy's sums are dropped). z[p][j] holds rows 2p, 2p+1 and channels 2j, 2j+1; the
// 64-bit halves of z[p][2q], z[p][2q+1] are row 2p's channels 4q..4q+3 (zip1) and row 2p+1's (zip2).
#pragma once
#include <arm_neon.h>

#include <cstring>

#include "kernels/neon/neon_driver.h"

namespace kt::neon {
namespace {

// The min_m of the row-pair tiles (SMMLA here, BFMMLA in gemm_bf16_neonbf16.cpp): from 2 tokens an
// expert's rows fill the row pairs; a single row (decode) would waste half of each instruction and
// runs on the format's vector row instead. Not yet timed on an ARM core (the x86 tiles' min_m are,
// kernel_registry.h).
constexpr int kRowPairMinM = 2;

// Row pair p of a block's MR rows: rows 2p and 2p + 1, or 2p twice where 2p + 1 == MR.
template <int MR>
struct RowPairs {
  static constexpr int P = (MR + 1) / 2;
  static constexpr int second(int p) { return 2 * p + 1 < MR ? 2 * p + 1 : 2 * p; }
};

// The 8 k at x0 and at x1 as SMMLA's left operand.
inline int8x16_t act_pair(const int8_t* x0, const int8_t* x1) { return vcombine_s8(vld1_s8(x0), vld1_s8(x1)); }

// The 4 k at x0 and at x1, then 4 zeros each: the last 4 k of a K that is 4 mod 8 (int8_pc).
inline int8x16_t act_pair_half(const int8_t* x0, const int8_t* x1) {
  int32_t v0, v1;
  std::memcpy(&v0, x0, 4);
  std::memcpy(&v1, x1, 4);
  const int32x2_t lo = vset_lane_s32(v0, vdup_n_s32(0), 0), hi = vset_lane_s32(v1, vdup_n_s32(0), 0);
  return vreinterpretq_s8_s32(vcombine_s32(lo, hi));
}

// z[p][2q], z[p][2q+1] += row pair p x channel pairs of (lo_q, hi_q), q = 0..3: 8 SMMLA per pair.
// Halves(q, lo, hi) gives channels 4q..4q+3's registers of k..k+3 and k+4..k+7.
template <int P, class Halves>
inline void mmla_8k(int32x4_t (&z)[P][8], const int8x16_t (&a)[P], Halves halves) {
  for (int q = 0; q < 4; ++q) {
    // a compiler barrier: without it GCC 12 hoists all 8 weight loads of the step (as LDP pairs)
    // above the SMMLA, and the extra live registers spilled 4 of int8_pc's 24 accumulators to the
    // stack in the inner loop (and y registers in int4_g32's); the core reorders the loads anyway
    asm volatile("" ::: "memory");
    int8x16_t lo, hi;
    halves(q, lo, hi);
    const int32x4_t l = vreinterpretq_s32_s8(lo), h = vreinterpretq_s32_s8(hi);
    const int8x16_t b0 = vreinterpretq_s8_s32(vzip1q_s32(l, h)), b1 = vreinterpretq_s8_s32(vzip2q_s32(l, h));
    for (int p = 0; p < P; ++p) {
      z[p][2 * q] = vmmlaq_s32(z[p][2 * q], a[p], b0);
      z[p][2 * q + 1] = vmmlaq_s32(z[p][2 * q + 1], a[p], b1);
    }
  }
}

// Channels 4q..4q+3 of rows 2p (first) and 2p+1 (second) from a 2x2-blocked pair (v[2q], v[2q+1]).
inline int32x4_t first_row(int32x4_t c01, int32x4_t c23) {
  return vreinterpretq_s32_s64(vzip1q_s64(vreinterpretq_s64_s32(c01), vreinterpretq_s64_s32(c23)));
}
inline int32x4_t second_row(int32x4_t c01, int32x4_t c23) {
  return vreinterpretq_s32_s64(vzip2q_s64(vreinterpretq_s64_s32(c01), vreinterpretq_s64_s32(c23)));
}
inline float32x4_t first_row(float32x4_t c01, float32x4_t c23) {
  return vreinterpretq_f32_f64(vzip1q_f64(vreinterpretq_f64_f32(c01), vreinterpretq_f64_f32(c23)));
}
inline float32x4_t second_row(float32x4_t c01, float32x4_t c23) {
  return vreinterpretq_f32_f64(vzip2q_f64(vreinterpretq_f64_f32(c01), vreinterpretq_f64_f32(c23)));
}

// [v[0] v[1] v[0] v[1]] and [v[2] v[3] v[2] v[3]]: per-channel values (4 channels) laid out as the
// 2x2 blocks of channel pairs 2q, 2q+1 need them, for both rows.
inline float32x4_t pair_lo(float32x4_t v) { return vcombine_f32(vget_low_f32(v), vget_low_f32(v)); }
inline float32x4_t pair_hi(float32x4_t v) { return vcombine_f32(vget_high_f32(v), vget_high_f32(v)); }
// [a a b b]: per-row values laid out for a row pair's 2x2 blocks.
inline float32x4_t rows_of(float a, float b) { return vcombine_f32(vdup_n_f32(a), vdup_n_f32(b)); }

}  // namespace
}  // namespace kt::neon
