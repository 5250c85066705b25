// [NOTE] int4_g32 weights x q8s activations and int4_g32_zp weights x q8_32 activations with SMMLA
// (neon_i8mm), on the format's own packed layout (i8mm_tile.h draws the operands). A step's 16-byte
// register of channels 4q..4q+3 splits into its low nibbles (k = 8j..8j+3: AND 0x0f) and high ones
// (8j+4..8j+7: USHR #4), which zipped by 32-bit lanes (ZIP1/ZIP2) are two channel pairs x 8 k; each
// feeds one SMMLA per row pair (the nibbles 0..15 are valid signed bytes). Per group g of 32 k:
//   isum = sum_k q_w q_a                                  (int32, exact as the reference's)
//   q8s:    y += cvt(isum) d[g] + m[g] gsum_a[g],  y *= s_a at the end
//   q8_32:  y += (cvt(isum) d[g] + m[g] gsum_a[g]) s_a[g]
// (zp: m = d * (-z), formed in fp32, exact), computed on the 2x2 blocks as they are, with d and m
// laid out as [c c+1 c c+1] and gsum_a, s_a as [r0 r0 r1 r1]; rows are unzipped once, at the end.
// A tile row: SMMLA computes rows in pairs, so it runs from 2 tokens per expert (kRowPairMinM);
// decode (M = 1) takes the neon_dotprod vector row, which reads the same layout and activations.
// Per weight: 0.5 B loaded, once per block of 4 rows; one SMMLA per 16 weights and row pair; per 32
// weights AND + USHR + ZIP1 + ZIP2 per block. Per group, row pair and channel pair: SCVTF + 2 FMLA
// (q8_32: FMUL + 2 FMLA), next to 4 SMMLA. Rows in blocks of 4 (2 row pairs: 16 int32 accumulators
// in registers, the 16 fp32 sums in L1, one matrix at a time): per group, matrix and 4 rows about
// 200 vector instructions (64 SMMLA, 64 unpacking, 72 epilogue), about what SDOT by lane takes for
// 4 rows (128 SDOT, 32 unpacking, 48 epilogue): the zips and the 2x2 epilogue eat SMMLA's doubled
// multiply-adds. Blocks of 6 rows spilled the int32 sums (GCC 12). Whether this row beats the
// dotprod row at prefill needs timing on an i8mm core; none was available (qemu only).
#include "kernels/int4_act.h"
#include "kernels/kernel_registry.h"
#include "kernels/neon/i8mm_tile.h"

namespace kt {
namespace {

template <bool kZeroPoint, ActFormat kAct>
struct Int4G32MmlaTile {
  using Act = Int4Act<kAct>;
  static constexpr int max_rows(int) { return 4; }
  // one matrix per K pass (its accumulators fill the registers): adjacent panels would share nothing
  static constexpr int down_panels = 1;

  template <int NM, int MR>
  static void compute(const uint8_t* const* w, int Kp, const ActView& act, const int* rows,
                      float32x4_t (&acc)[NM][MR][4]) {
    using Pairs = neon::RowPairs<MR>;
    constexpr int P = Pairs::P;
    const uint8x16_t nib = vdupq_n_u8(0x0f);
    for (int t = 0; t < NM; ++t) {
      float32x4_t y[P][8];
      for (int p = 0; p < P; ++p)
        for (int j = 0; j < 8; ++j) y[p][j] = vdupq_n_f32(0.f);
      for (int g = 0; g < Kp / Int4G32Block::kK; ++g) {
        const Int4G32Block& blk = reinterpret_cast<const Int4G32Block*>(w[t])[g];
        for (size_t l = 0; l < sizeof(Int4G32Block); l += 64) neon::prefetch_stream(w[t] + g * sizeof(Int4G32Block) + l);
        const int8_t* x0[P];
        const int8_t* x1[P];
        for (int p = 0; p < P; ++p) x0[p] = Act::q(act, rows[2 * p], g), x1[p] = Act::q(act, rows[Pairs::second(p)], g);
        int32x4_t z[P][8];
        for (int p = 0; p < P; ++p)
          for (int j = 0; j < 8; ++j) z[p][j] = vdupq_n_s32(0);
        for (int j = 0; j < Int4G32Block::kSteps; ++j) {
          int8x16_t a[P];
          for (int p = 0; p < P; ++p) a[p] = neon::act_pair(x0[p] + 8 * j, x1[p] + 8 * j);
          neon::mmla_8k(z, a, [&](int q, int8x16_t& lo, int8x16_t& hi) {
            const uint8x16_t v = vld1q_u8(blk.q[j] + 16 * q);
            lo = vreinterpretq_s8_u8(vandq_u8(v, nib));
            hi = vreinterpretq_s8_u8(vshrq_n_u8(v, 4));
          });
        }
        // the group's epilogue on the 2x2 blocks: d, m as [c c+1 c c+1], the rows' terms as [r0 r0 r1 r1]
        float32x4_t gsum[P], s_a[P];
        for (int p = 0; p < P; ++p) {
          const int r0 = rows[2 * p], r1 = rows[Pairs::second(p)];
          gsum[p] = neon::rows_of(float(Act::sum(act, r0, g)), float(Act::sum(act, r1, g)));
          if constexpr (Act::kGroupScale) s_a[p] = neon::rows_of(Act::group_scale(act, r0, g), Act::group_scale(act, r1, g));
        }
        for (int q = 0; q < 4; ++q) {
          const float32x4_t d = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(blk.d + 4 * q)));
          float32x4_t m = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(blk.m + 4 * q)));
          if constexpr (kZeroPoint) m = vmulq_f32(d, m);
          const float32x4_t dp[2] = {neon::pair_lo(d), neon::pair_hi(d)}, mp[2] = {neon::pair_lo(m), neon::pair_hi(m)};
          for (int p = 0; p < P; ++p)
            for (int h = 0; h < 2; ++h) {
              float32x4_t& acc_y = y[p][2 * q + h];
              const float32x4_t isum = vcvtq_f32_s32(z[p][2 * q + h]);
              if constexpr (Act::kGroupScale) {
                const float32x4_t v = vfmaq_f32(vmulq_f32(isum, dp[h]), mp[h], gsum[p]);
                acc_y = vfmaq_f32(acc_y, v, s_a[p]);
              } else {
                acc_y = vfmaq_f32(acc_y, isum, dp[h]);
                acc_y = vfmaq_f32(acc_y, mp[h], gsum[p]);
              }
            }
        }
      }
      // rows 2p and 2p + 1 unzipped from the 2x2 blocks (q8s: times the row's scale)
      for (int p = 0; p < P; ++p) {
        const int r0 = 2 * p, r1 = 2 * p + 1;
        for (int q = 0; q < 4; ++q) {
          acc[t][r0][q] = vmulq_n_f32(neon::first_row(y[p][2 * q], y[p][2 * q + 1]), Act::row_scale(act, rows[r0]));
          if (r1 < MR)
            acc[t][r1][q] = vmulq_n_f32(neon::second_row(y[p][2 * q], y[p][2 * q + 1]), Act::row_scale(act, rows[r1]));
        }
      }
    }
  }
};

using Tile = Int4G32MmlaTile<false, ActFormat::q8s>;
using ZeroPointTile = Int4G32MmlaTile<true, ActFormat::q8_32>;

}  // namespace

void gateup_int4g32_q8s_4x16__i8mm(const GateUpArgs& a) { neon::gateup<Tile>(a); }
void down_int4g32_q8s_4x16__i8mm(const DownArgs& a) { neon::down<Tile>(a); }

void gateup_int4g32zp_q8_32_4x16__i8mm(const GateUpArgs& a) { neon::gateup<ZeroPointTile>(a); }
void down_int4g32zp_q8_32_4x16__i8mm(const DownArgs& a) { neon::down<ZeroPointTile>(a); }

KT_TILE_ROW(int4_g32, kI8mmObj, q8s, int4g32_q8s_4x16__i8mm, neon::kRowPairMinM)
KT_TILE_ROW(int4_g32_zp, kI8mmObj, q8_32, int4g32zp_q8_32_4x16__i8mm, neon::kRowPairMinM)

}  // namespace kt
