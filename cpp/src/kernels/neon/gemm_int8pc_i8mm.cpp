// [NOTE] int8_pc weights x q8s activations with SMMLA (neon_i8mm), on the format's own packed
// layout (i8mm_tile.h draws the operands). Two consecutive blocks' registers of channels 4q..4q+3
// (k..k+3 and k+4..k+7) zipped by 32-bit lanes (ZIP1/ZIP2) are two channel pairs x 8 k; each feeds
// one SMMLA per row pair, whose left operand is two rows' 8 k (two 8-byte loads).
//   y = s_a * (s_w * isum)    (isum exact in int32: |isum| <= 128 * 127 * K; the reference's order,
//                              so y equals the reference kernel's bit for bit)
// A tile row: SMMLA computes rows in pairs, so it runs from 2 tokens per expert (kRowPairMinM);
// decode (M = 1) takes the neon_dotprod vector row, which reads the same layout and q8s.
// Per weight: 1 B loaded, once per block of 6 rows; one SMMLA per 16 weights and row pair, and one
// ZIP per 16 weights per block. Rows in blocks of 6 (3 row pairs: 24 int32 accumulators, one
// matrix at a time), so each zipped register feeds 3 SMMLA: per 8 k, 16 channels and 6 rows, 24
// SMMLA + 8 ZIP + 3 lane inserts (activation pairs), where SDOT by lane takes 48 SDOT.
// K = 4 mod 8: the last block is zipped with zeros against 4 k of activations and 4 zeros.
#include "kernels/kernel_registry.h"
#include "kernels/neon/i8mm_tile.h"

namespace kt {
namespace {

struct Int8PcMmlaTile {
  static constexpr int max_rows(int) { return 6; }
  // one matrix per K pass (the accumulators of one fill the registers): adjacent panels would
  // share nothing
  static constexpr int down_panels = 1;

  template <int NM, int MR>
  static void compute(const uint8_t* const* w, int Kp, const ActView& act, const int* rows,
                      float32x4_t (&acc)[NM][MR][4]) {
    using Pairs = neon::RowPairs<MR>;
    constexpr int P = Pairs::P;
    const int8_t* x[MR];
    for (int r = 0; r < MR; ++r) x[r] = reinterpret_cast<const int8_t*>(act.data + act.stride * size_t(rows[r]));
    const int blocks = Kp / Int8PcBlock::kK;
    for (int t = 0; t < NM; ++t) {
      const Int8PcBlock* b = reinterpret_cast<const Int8PcBlock*>(w[t]);
      int32x4_t z[P][8];
      for (int p = 0; p < P; ++p)
        for (int j = 0; j < 8; ++j) z[p][j] = vdupq_n_s32(0);
      int s = 0;
      for (; s + 2 <= blocks; s += 2) {
        neon::prefetch_stream(w[t] + size_t(s) * sizeof(Int8PcBlock));
        neon::prefetch_stream(w[t] + size_t(s + 1) * sizeof(Int8PcBlock));
        int8x16_t a[P];
        for (int p = 0; p < P; ++p) a[p] = neon::act_pair(x[2 * p] + 4 * s, x[Pairs::second(p)] + 4 * s);
        neon::mmla_8k(z, a, [&](int q, int8x16_t& lo, int8x16_t& hi) {
          lo = vld1q_s8(b[s].q[4 * q]);
          hi = vld1q_s8(b[s + 1].q[4 * q]);
        });
      }
      if (s < blocks) {  // K = 4 mod 8: k + 4..k + 7 are zeros on both sides
        int8x16_t a[P];
        for (int p = 0; p < P; ++p) a[p] = neon::act_pair_half(x[2 * p] + 4 * s, x[Pairs::second(p)] + 4 * s);
        neon::mmla_8k(z, a, [&](int q, int8x16_t& lo, int8x16_t& hi) {
          lo = vld1q_s8(b[s].q[4 * q]);
          hi = vdupq_n_s8(0);
        });
      }
      // y = s_a * (s_w * isum), rows 2p and 2p + 1 unzipped from the 2x2 blocks
      const float* sw = int8pc_tail(w[t], Kp)->scale;
      for (int q = 0; q < 4; ++q) {
        const float32x4_t s_w = vld1q_f32(sw + 4 * q);
        for (int p = 0; p < P; ++p) {
          const int r0 = 2 * p, r1 = 2 * p + 1;
          const float32x4_t y0 = vmulq_f32(s_w, vcvtq_f32_s32(neon::first_row(z[p][2 * q], z[p][2 * q + 1])));
          acc[t][r0][q] = vmulq_n_f32(y0, act.scale[rows[r0]]);
          if (r1 < MR) {
            const float32x4_t y1 = vmulq_f32(s_w, vcvtq_f32_s32(neon::second_row(z[p][2 * q], z[p][2 * q + 1])));
            acc[t][r1][q] = vmulq_n_f32(y1, act.scale[rows[r1]]);
          }
        }
      }
    }
  }
};

}  // namespace

void gateup_int8pc_q8s_6x16__i8mm(const GateUpArgs& a) { neon::gateup<Int8PcMmlaTile>(a); }
void down_int8pc_q8s_6x16__i8mm(const DownArgs& a) { neon::down<Int8PcMmlaTile>(a); }

KT_TILE_ROW(int8_pc, kI8mmObj, q8s, int8pc_q8s_6x16__i8mm, neon::kRowPairMinM)

}  // namespace kt
