// [NOTE] int4_g32 x q8s and int4_g32_zp x q8_32 with baseline ARMv8-A NEON (no dot-product
// instructions), in neon_driver.h's Int4G32Tile (the per-group scales, as the reference). Block row
// j of a group (formats/int4_g32.cpp) holds, per channel, k 8j..8j+3 in its 4 low nibbles and
// 8j+4..8j+7 in its high ones; 16 bytes are 4 channels x 4 k per nibble half:
//   AND #0xf, USHR #4    the nibbles 0..15 as int8
//   SMLAL / SMLAL2       times the 4 activations of those k (LD1R-replicated), into int16 lanes:
//                        channels 4q, 4q+1 (low halves) and 4q+2, 4q+3 (high halves)
//   ADDP, SADDLP         per group: the int16 lanes to one int32 sum per channel
// An int16 lane takes 8 products of |15 * 128| at most (15360), and after ADDP 16 (30720): exact.
// decode: 0.625 B/weight (0.5 of nibbles, 0.125 of fp16 d and m); per 32 weights (16 bytes of
// nibbles) 2 unpack instructions, shared by the rows, and 4 SMLAL(2) per row; per group and 4
// channels ADDP, SADDLP, SCVTF and 2 FMLA per row.
// prefill: gate + up 1 row at a time, down 2 (the 8 replicated activation registers of a row's
// group stay live across its 4 channel groups).
#include "kernels/kernel_registry.h"
#include "kernels/neon/neon_driver.h"

namespace kt {
namespace {

struct SmlalGroup {
  static constexpr int max_rows(int nm) { return nm == 1 ? 2 : 1; }
  static constexpr int down_panels = 1;

  struct X {
    int8x16_t lo[4], hi[4];  // k 8j..8j+3 and 8j+4..8j+7, each 4 bytes replicated
  };
  [[gnu::always_inline]] static void load(const int8_t* x, X& v) {
    for (int j = 0; j < 4; ++j) {
      v.lo[j] = vreinterpretq_s8_s32(vld1q_dup_s32(reinterpret_cast<const int32_t*>(x + 8 * j)));
      v.hi[j] = vreinterpretq_s8_s32(vld1q_dup_s32(reinterpret_cast<const int32_t*>(x + 8 * j + 4)));
    }
  }

  template <int MR>
  [[gnu::always_inline]] static void dot(const uint8_t* q, const X (&x)[MR], int32x4_t (&isum)[MR]) {
    int16x8_t p01[MR], p23[MR];  // channels 4q, 4q+1 and 4q+2, 4q+3: 4 int16 lanes each
    for (int r = 0; r < MR; ++r) p01[r] = p23[r] = vdupq_n_s16(0);
    for (int j = 0; j < Int4G32Block::kSteps; ++j) {
      const uint8x16_t v = vld1q_u8(q + j * sizeof(Int4G32Block::q[0]));
      const int8x16_t lo = vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0f)));
      const int8x16_t hi = vreinterpretq_s8_u8(vshrq_n_u8(v, 4));
      for (int r = 0; r < MR; ++r) {
        p01[r] = vmlal_s8(p01[r], vget_low_s8(lo), vget_low_s8(x[r].lo[j]));
        p23[r] = vmlal_high_s8(p23[r], lo, x[r].lo[j]);
        p01[r] = vmlal_s8(p01[r], vget_low_s8(hi), vget_low_s8(x[r].hi[j]));
        p23[r] = vmlal_high_s8(p23[r], hi, x[r].hi[j]);
      }
    }
    for (int r = 0; r < MR; ++r) isum[r] = vpaddlq_s16(vpaddq_s16(p01[r], p23[r]));
  }
};

using Tile = neon::Int4G32Tile<SmlalGroup, false, ActFormat::q8s>;
using ZeroPointTile = neon::Int4G32Tile<SmlalGroup, true, ActFormat::q8_32>;

}  // namespace

void gateup_int4g32_q8s_1x16__neon(const GateUpArgs& a) { neon::gateup<Tile>(a); }
void down_int4g32_q8s_1x16__neon(const DownArgs& a) { neon::down<Tile>(a); }

void gateup_int4g32zp_q8_32_1x16__neon(const GateUpArgs& a) { neon::gateup<ZeroPointTile>(a); }
void down_int4g32zp_q8_32_1x16__neon(const DownArgs& a) { neon::down<ZeroPointTile>(a); }

KT_KERNEL_ROW(int4_g32, kNeonObj, q8s, int4g32_q8s_1x16__neon)
KT_KERNEL_ROW(int4_g32_zp, kNeonObj, q8_32, int4g32zp_q8_32_1x16__neon)

}  // namespace kt
