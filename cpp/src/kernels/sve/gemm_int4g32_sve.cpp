// [NOTE] int4_g32 weights x q8s activations, and int4_g32_zp weights x q8_32 activations, with SVE
// SDOT by index (svdot_lane_s32), for any vector length (sve_driver.h: VPP = 4, 2, 1 vectors per
// 16-channel panel at VL 128, 256, >= 512). As the x86 tile (avx512/int4g32_tile.h), per group g
// of 32 k, row r and matrix:
//   isum = sum_k q_w q_a                              (int32, exact; nibbles 0..15 are valid
//                                                      signed SDOT operands)
//   q8s:   y += d[g] * isum + m[g] * gsum_a[r,g],      and at the end y *= s_a[r]
//   q8_32: y += (d[g] * isum + m[g] * gsum_a[r,g]) * s_a[r,g]
// int4_g32_zp's m holds -z: the group minimum is d * m, formed in fp32 (exact) once per panel and
// group. Activations through kernels/int4_act.h's Int4Act, as the x86 kernels.
// Layout (kt/format_blocks.h): Int4G32Block q[j] (j = 0..3, 64 bytes) holds in channel c's 4 bytes
// k 8j..8j+3 in the low nibbles and 8j+4..8j+7 in the high ones: AND 0x0f and LSR 4 give two SDOT
// operands. LD1RQB replicates 16 activation bytes (k 16h..16h+15 of the group) into every 128-bit
// segment; steps j = 2h, 2h+1 take SDOT indices 0, 1 and 2, 3.
//   per group (512 weights): 320 bytes (0.625 B/weight); per weight vector LD1B + AND + LSR, then
//   2 SDOT per row: 8 VPP per group and row, 32 at VL 128 (one per 16 weights), 16 at 256 (one
//   per 32), 8 at >= 512 (one per 64); 2 LD1RQB per row and group. The group's fp32 sums: per row, matrix
//   and vector, 2 FMLA (q8_32: 3) and y's load and store (L1); d and m: 2 LD1H + 2 FCVT per
//   matrix and vector.
// Prefill: rows in blocks of MR = 6 at every vector length: each weight vector feeds 2 MR SDOTs.
// A group runs one matrix and vector at a time (its 4 steps, then its fp32 sums): MR int32
// accumulators and 2 MR activation registers whatever NM and VPP; y, the fp32 sums, stays in
// memory (64 bytes a row and matrix, L1).
// No software prefetch (left to the hardware prefetchers; not measured on SVE hardware yet).
#include "kernels/int4_act.h"
#include "kernels/kernel_registry.h"
#include "kernels/sve/sve_driver.h"

namespace kt {
namespace {

using sve::Ix;
using sve::unroll;

template <bool kZeroPoint, ActFormat kAct>
struct Int4SdotTile {
  using Act = Int4Act<kAct>;
  // 6 isum + 12 activations + q, lo, hi, d, m and y's two: 25 of the 32 registers (gcc 12 spills
  // one activation at VPP 2 and 4: a store and 3 reloads per group)
  static constexpr int max_rows(int, int) { return 6; }

  template <int VPP, int NM, int MR>
  static void compute(const uint8_t* const* w, int Kp, const ActView& act, const int* rows,
                      float (&y)[NM][MR][kPanelN]) {
    static_assert(MR <= sve::kBank);
    constexpr int kLanes = kPanelN / VPP;            // channels per vector
    constexpr int kVecBytes = kPanelN * 4 / VPP;     // bytes of a 64-byte step per vector
    const svbool_t pb = sve::panel_b8<VPP>(), pw = sve::panel_b32<VPP>();
    for (int t = 0; t < NM; ++t)
      for (int r = 0; r < MR; ++r)
        for (int c = 0; c < kPanelN; ++c) y[t][r][c] = 0.f;
    KT_SVE_BANK(svint32_t, isum, svdup_n_s32(0));  // isum(r): one matrix and vector at a time
    KT_SVE_BANK(svint8_t, xlo, svdup_n_s8(0));     // xlo(r), xhi(r): row r's k 0..15, 16..31 of
    KT_SVE_BANK(svint8_t, xhi, svdup_n_s8(0));     // the group, in every segment

    for (int g = 0; g < Kp / Int4G32Block::kK; ++g) {
      unroll<MR>([&](auto r) {
        const int8_t* q = Act::q(act, rows[r], g);
        xlo(r) = svld1rq_s8(svptrue_b8(), q);
        xhi(r) = svld1rq_s8(svptrue_b8(), q + 16);
      });
      // One matrix and vector (16 / VPP channels) at a time, its group sums right after: MR
      // int32 accumulators whatever NM and VPP (with the sums after all of a group's SDOTs, gcc
      // 12 loaded the group's NM 4 VPP weight vectors up front and spilled them at VL 128).
      unroll<NM>([&](auto t) {
        const Int4G32Block& blk = reinterpret_cast<const Int4G32Block*>(w[t])[g];
        unroll<VPP>([&](auto v) {
          // isum = sum_k q_w q_a: step j's nibbles are k 8j..8j+3 (low) and 8j+4..8j+7 (high),
          // SDOT indices 2 (j % 2) and 2 (j % 2) + 1 of xlo (j < 2) or xhi
          unroll<MR>([&](auto r) { isum(r) = svdup_n_s32(0); });
          unroll<Int4G32Block::kSteps>([&](auto j) {
            constexpr int J = decltype(j)::value;
            const svuint8_t q = svld1_u8(pb, blk.q[J] + v * kVecBytes);
            const svint8_t lo = svreinterpret_s8_u8(svand_n_u8_x(pb, q, 0x0f));
            const svint8_t hi = svreinterpret_s8_u8(svlsr_n_u8_x(pb, q, 4));
            unroll<MR>([&](auto r) {
              const svint8_t x = sve::pick<J / 2>(xlo(r), xhi(r));
              isum(r) = svdot_lane_s32(isum(r), lo, x, 2 * (J % 2));
              isum(r) = svdot_lane_s32(isum(r), hi, x, 2 * (J % 2) + 1);
            });
          });
          // y += d isum + m gsum_a   (q8_32: times the group's s_a)
          // fp16 d, m zero-extended into 32-bit lanes: FCVT reads each lane's low half
          const svfloat32_t d = svcvt_f32_f16_x(pw, svreinterpret_f16_u32(svld1uh_u32(pw, blk.d + v * kLanes)));
          svfloat32_t m = svcvt_f32_f16_x(pw, svreinterpret_f16_u32(svld1uh_u32(pw, blk.m + v * kLanes)));
          if constexpr (kZeroPoint) m = svmul_f32_x(pw, d, m);
          unroll<MR>([&](auto r) {
            float* yv = y[t][r] + v * kLanes;
            const svfloat32_t sum = svcvt_f32_s32_x(pw, isum(r));
            const float gsum = float(Act::sum(act, rows[r], g));
            svfloat32_t acc = svld1_f32(pw, yv);
            if constexpr (Act::kGroupScale) {
              const svfloat32_t part = svmla_n_f32_x(pw, svmul_f32_x(pw, sum, d), m, gsum);
              acc = svmla_n_f32_x(pw, acc, part, Act::group_scale(act, rows[r], g));
            } else {
              acc = svmla_f32_x(pw, acc, sum, d);
              acc = svmla_n_f32_x(pw, acc, m, gsum);
            }
            svst1_f32(pw, yv, acc);
          });
        });
      });
    }
    if constexpr (!Act::kGroupScale)  // y *= s_a
      for (int r = 0; r < MR; ++r) {
        const float s = Act::row_scale(act, rows[r]);
        for (int t = 0; t < NM; ++t)
          for (int c = 0; c < kPanelN; ++c) y[t][r][c] *= s;
      }
  }
};

using Tile = Int4SdotTile<false, ActFormat::q8s>;
using ZeroPointTile = Int4SdotTile<true, ActFormat::q8_32>;

}  // namespace

void gateup_int4g32_q8s_6x16__sve(const GateUpArgs& a) { sve::gateup<Tile>(a); }
void down_int4g32_q8s_6x16__sve(const DownArgs& a) { sve::down<Tile>(a); }

void gateup_int4g32zp_q8_32_6x16__sve(const GateUpArgs& a) { sve::gateup<ZeroPointTile>(a); }
void down_int4g32zp_q8_32_6x16__sve(const DownArgs& a) { sve::down<ZeroPointTile>(a); }

KT_KERNEL_ROW(int4_g32, kSveObj, q8s, int4g32_q8s_6x16__sve)
KT_KERNEL_ROW(int4_g32_zp, kSveObj, q8_32, int4g32zp_q8_32_6x16__sve)

}  // namespace kt
