// [NOTE] int8_pc weights x q8s activations with baseline ARMv8-A NEON (no dot-product
// instructions). A packed block is 4 k of 16 channels (formats/int8_pc.cpp): a 16-byte register
// holds 4 channels x 4 k, and the row's 4 activations of that k, replicated by LD1R, line up
// with it. Two blocks (8 k) at a time:
//   SMULL  / SMLAL   int8 x int8 products of channels 4q, 4q+1 (low halves) into int16 lanes,
//   SMULL2 / SMLAL2  those of 4q+2, 4q+3 (high halves),
//   SADALP           pairwise into int32 (per channel two partial sums, added by one ADDP at the end).
// An int16 lane holds 2 products of weights and activations in [-127, 127] (neither quantizer
// produces -128): at most 32258, exact. So
// isum is the exact int32 sum, and the epilogue is the reference's, bit for bit:
//   y = s_a * (s_w * isum)
// decode: 1 B/weight; 6 multiply or accumulate instructions per 32 weights (2 registers) per row.
// prefill: each row keeps 8 int32 sums per matrix, so gate + up take 1 row at a time and down 2
// (16 accumulators); the multiplies bound it, 3 instructions per 16 weights and row against one
// 16-byte weight load.
#include "kernels/kernel_registry.h"
#include "kernels/neon/neon_driver.h"

namespace kt {
namespace {

struct Int8Tile {
  static constexpr int max_rows(int nm) { return nm == 1 ? 2 : 1; }
  static constexpr int down_panels = 1;

  template <int NM, int MR>
  static void compute(const uint8_t* const* w, int Kp, const ActView& act, const int* rows,
                      float32x4_t (&acc)[NM][MR][4]) {
    const int8_t* x[MR];
    for (int r = 0; r < MR; ++r) x[r] = reinterpret_cast<const int8_t*>(act.data + act.stride * size_t(rows[r]));
    // isum[t][r][q][h]: channels 4q + 2h, 4q + 2h + 1, each as 2 partial sums
    int32x4_t isum[NM][MR][4][2];
    for (int t = 0; t < NM; ++t)
      for (int r = 0; r < MR; ++r)
        for (int q = 0; q < 4; ++q) isum[t][r][q][0] = isum[t][r][q][1] = vdupq_n_s32(0);
    const int steps = Kp / Int8PcBlock::kK;
    int s = 0;
    for (; s + 2 <= steps; s += 2) {
      for (int t = 0; t < NM; ++t) {
        neon::prefetch_stream(w[t] + size_t(s) * sizeof(Int8PcBlock));
        neon::prefetch_stream(w[t] + size_t(s + 1) * sizeof(Int8PcBlock));
      }
      int8x16_t xa[MR], xb[MR];
      for (int r = 0; r < MR; ++r) {
        xa[r] = vreinterpretq_s8_s32(vld1q_dup_s32(reinterpret_cast<const int32_t*>(x[r] + 4 * s)));
        xb[r] = vreinterpretq_s8_s32(vld1q_dup_s32(reinterpret_cast<const int32_t*>(x[r] + 4 * s + 4)));
      }
      for (int t = 0; t < NM; ++t)
        for (int q = 0; q < 4; ++q) {
          const int8x16_t wa = vld1q_s8(reinterpret_cast<const int8_t*>(w[t] + size_t(s) * sizeof(Int8PcBlock)) + 16 * q);
          const int8x16_t wb = vld1q_s8(reinterpret_cast<const int8_t*>(w[t] + size_t(s + 1) * sizeof(Int8PcBlock)) + 16 * q);
          for (int r = 0; r < MR; ++r) {
            const int16x8_t lo = vmlal_s8(vmull_s8(vget_low_s8(wa), vget_low_s8(xa[r])), vget_low_s8(wb), vget_low_s8(xb[r]));
            const int16x8_t hi = vmlal_high_s8(vmull_high_s8(wa, xa[r]), wb, xb[r]);
            isum[t][r][q][0] = vpadalq_s16(isum[t][r][q][0], lo);
            isum[t][r][q][1] = vpadalq_s16(isum[t][r][q][1], hi);
          }
        }
    }
    if (s < steps) {  // an odd last block (Kp % 8 == 4)
      for (int t = 0; t < NM; ++t)
        for (int q = 0; q < 4; ++q) {
          const int8x16_t wa = vld1q_s8(reinterpret_cast<const int8_t*>(w[t] + size_t(s) * sizeof(Int8PcBlock)) + 16 * q);
          for (int r = 0; r < MR; ++r) {
            const int8x16_t xa = vreinterpretq_s8_s32(vld1q_dup_s32(reinterpret_cast<const int32_t*>(x[r] + 4 * s)));
            isum[t][r][q][0] = vpadalq_s16(isum[t][r][q][0], vmull_s8(vget_low_s8(wa), vget_low_s8(xa)));
            isum[t][r][q][1] = vpadalq_s16(isum[t][r][q][1], vmull_high_s8(wa, xa));
          }
        }
    }
    for (int t = 0; t < NM; ++t) {
      const Int8PcTail* tail = int8pc_tail(w[t], Kp);
      for (int q = 0; q < 4; ++q) {
        const float32x4_t sw = vld1q_f32(tail->scale + 4 * q);
        for (int r = 0; r < MR; ++r) {
          const int32x4_t sum = vpaddq_s32(isum[t][r][q][0], isum[t][r][q][1]);  // channels 4q..4q+3
          acc[t][r][q] = vmulq_n_f32(vmulq_f32(sw, vcvtq_f32_s32(sum)), act.scale[rows[r]]);
        }
      }
    }
  }
};

}  // namespace

void gateup_int8pc_q8s_1x16__neon(const GateUpArgs& a) { neon::gateup<Int8Tile>(a); }
void down_int8pc_q8s_1x16__neon(const DownArgs& a) { neon::down<Int8Tile>(a); }

KT_KERNEL_ROW(int8_pc, kNeonObj, q8s, int8pc_q8s_1x16__neon)

}  // namespace kt
