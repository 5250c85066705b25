// [NOTE] int8_pc weights x q8s activations with SDOT (ARMv8.2-A dotprod), by lane. A packed block
// is 4 k of 16 channels (formats/int8_pc.cpp): a 16-byte register holds 4 channels x 4 k, exactly
// SDOT's 4 int32 lanes of 4 products. A row's activations are loaded 16 k at a time, and
//   SDOT Vacc.4S, Vw.16B, Vx.4B[s]   (vdotq_laneq_s32)
// multiplies block s of the four by activation lane s, so no broadcast is needed. isum is the
// exact int32 sum (|isum| <= 127 * 127 * Kp), and the epilogue is the reference's, bit for bit:
//   y = s_a * (s_w * isum)
// decode: 1 B/weight; one SDOT per 16 weights (one register) per row.
// prefill: rows in blocks of 3 (gate + up, and down as 2 adjacent panels): 24 int32 accumulators,
// each weight register feeding 3 SDOT.
#include "kernels/kernel_registry.h"
#include "kernels/neon/neon_driver.h"

namespace kt {
namespace {

struct Int8DotTile {
  static constexpr int max_rows(int nm) { return nm == 1 ? 5 : nm == 2 ? 3 : 1; }
  static constexpr int down_panels = 2;

  template <int NM, int MR>
  static void compute(const uint8_t* const* w, int Kp, const ActView& act, const int* rows,
                      float32x4_t (&acc)[NM][MR][4]) {
    const int8_t* x[MR];
    for (int r = 0; r < MR; ++r) x[r] = reinterpret_cast<const int8_t*>(act.data + act.stride * size_t(rows[r]));
    int32x4_t isum[NM][MR][4];
    for (int t = 0; t < NM; ++t)
      for (int r = 0; r < MR; ++r)
        for (int q = 0; q < 4; ++q) isum[t][r][q] = vdupq_n_s32(0);
    const int steps = Kp / Int8PcBlock::kK;
    int s = 0;
    for (; s + 4 <= steps; s += 4) {
      int8x16_t xv[MR];
      for (int r = 0; r < MR; ++r) xv[r] = vld1q_s8(x[r] + 4 * s);
      lane<0>(w, s, xv, isum);
      lane<1>(w, s, xv, isum);
      lane<2>(w, s, xv, isum);
      lane<3>(w, s, xv, isum);
    }
    for (; s < steps; ++s) {  // Kp % 16 k: the 4 activations replicated, lane 0
      int8x16_t xv[MR];
      for (int r = 0; r < MR; ++r) xv[r] = vreinterpretq_s8_s32(vld1q_dup_s32(reinterpret_cast<const int32_t*>(x[r] + 4 * s)));
      lane<0>(w, s, xv, isum);
    }
    for (int t = 0; t < NM; ++t) {
      const Int8PcTail* tail = int8pc_tail(w[t], Kp);
      for (int q = 0; q < 4; ++q) {
        const float32x4_t sw = vld1q_f32(tail->scale + 4 * q);
        for (int r = 0; r < MR; ++r)
          acc[t][r][q] = vmulq_n_f32(vmulq_f32(sw, vcvtq_f32_s32(isum[t][r][q])), act.scale[rows[r]]);
      }
    }
  }

  // isum += block s + L (4 k) . activation lane L
  template <int L, int NM, int MR>
  [[gnu::always_inline]] static void lane(const uint8_t* const* w, int s, const int8x16_t (&xv)[MR],
                                          int32x4_t (&isum)[NM][MR][4]) {
    for (int t = 0; t < NM; ++t) {
      const int8_t* blk = reinterpret_cast<const int8_t*>(w[t] + size_t(s + L) * sizeof(Int8PcBlock));
      neon::prefetch_stream(reinterpret_cast<const uint8_t*>(blk));
      for (int q = 0; q < 4; ++q) {
        const int8x16_t wv = vld1q_s8(blk + 16 * q);
        for (int r = 0; r < MR; ++r) isum[t][r][q] = vdotq_laneq_s32(isum[t][r][q], wv, xv[r], L);
      }
    }
  }
};

}  // namespace

void gateup_int8pc_q8s_3x16__dotprod(const GateUpArgs& a) { neon::gateup<Int8DotTile>(a); }
void down_int8pc_q8s_3x16__dotprod(const DownArgs& a) { neon::down<Int8DotTile>(a); }

KT_KERNEL_ROW(int8_pc, kDotprodObj, q8s, int8pc_q8s_3x16__dotprod)

}  // namespace kt
