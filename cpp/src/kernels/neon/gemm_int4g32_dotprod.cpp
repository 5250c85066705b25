// [NOTE] int4_g32 x q8s and int4_g32_zp x q8_32 with SDOT (ARMv8.2-A dotprod), by lane, in
// neon_driver.h's Int4G32Tile (the per-group scales, as the reference). Block row j of a group
// (formats/int4_g32.cpp) holds, per channel, k 8j..8j+3 in its 4 low nibbles and 8j+4..8j+7 in its
// high ones; 16 bytes are 4 channels:
//   AND #0xf, USHR #4    the nibbles 0..15 as bytes: valid signed SDOT operands, no offset needed
//   SDOT by lane         lane 2j (resp. 2j+1) of the group's 32 activations (2 registers)
// decode: 0.625 B/weight (0.5 of nibbles, 0.125 of fp16 d and m); per 32 weights (16 bytes of
// nibbles) 2 unpack instructions, shared by the rows, and 2 SDOT per row, i.e. one SDOT per 16
// weights; per group and 4 channels SCVTF and 2 FMLA per row.
// prefill: rows in blocks of 2 (gate + up, and down as 2 adjacent panels): each unpacked register
// feeds 2 SDOT, with 4 int32 sums and 16 fp32 accumulators live.
#include "kernels/kernel_registry.h"
#include "kernels/neon/neon_driver.h"

namespace kt {
namespace {

struct SdotGroup {
  static constexpr int max_rows(int) { return 2; }  // 3 rows of one panel spilled (gcc 12)
  static constexpr int down_panels = 2;

  struct X {
    int8x16_t lo, hi;  // k 0..15, 16..31 of the group
  };
  static void load(const int8_t* x, X& v) { v.lo = vld1q_s8(x), v.hi = vld1q_s8(x + 16); }

  template <int MR>
  [[gnu::always_inline]] static void dot(const uint8_t* q, const X (&x)[MR], int32x4_t (&isum)[MR]) {
    for (int r = 0; r < MR; ++r) isum[r] = vdupq_n_s32(0);
    step<0>(q, x, isum);
    step<1>(q, x, isum);
    step<2>(q, x, isum);
    step<3>(q, x, isum);
  }

  // block row J: k 8J..8J+3 are activation lane 2J, 8J+4..8J+7 lane 2J+1 (of lo for J < 2, else hi)
  template <int J, int MR>
  [[gnu::always_inline]] static void step(const uint8_t* q, const X (&x)[MR], int32x4_t (&isum)[MR]) {
    const uint8x16_t v = vld1q_u8(q + J * sizeof(Int4G32Block::q[0]));
    const int8x16_t lo = vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0f)));
    const int8x16_t hi = vreinterpretq_s8_u8(vshrq_n_u8(v, 4));
    for (int r = 0; r < MR; ++r) {
      const int8x16_t a = J < 2 ? x[r].lo : x[r].hi;
      isum[r] = vdotq_laneq_s32(isum[r], lo, a, (2 * J) % 4);
      isum[r] = vdotq_laneq_s32(isum[r], hi, a, (2 * J + 1) % 4);
    }
  }
};

using Tile = neon::Int4G32Tile<SdotGroup, false, ActFormat::q8s>;
using ZeroPointTile = neon::Int4G32Tile<SdotGroup, true, ActFormat::q8_32>;

}  // namespace

void gateup_int4g32_q8s_2x16__dotprod(const GateUpArgs& a) { neon::gateup<Tile>(a); }
void down_int4g32_q8s_2x16__dotprod(const DownArgs& a) { neon::down<Tile>(a); }

void gateup_int4g32zp_q8_32_2x16__dotprod(const GateUpArgs& a) { neon::gateup<ZeroPointTile>(a); }
void down_int4g32zp_q8_32_2x16__dotprod(const DownArgs& a) { neon::down<ZeroPointTile>(a); }

KT_KERNEL_ROW(int4_g32, kDotprodObj, q8s, int4g32_q8s_2x16__dotprod)
KT_KERNEL_ROW(int4_g32_zp, kDotprodObj, q8_32, int4g32zp_q8_32_2x16__dotprod)

}  // namespace kt
