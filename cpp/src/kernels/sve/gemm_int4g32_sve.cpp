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
//
// The SMMLA tile rows (int4g32_q8s_8x16__sve, int4g32zp_q8_32_8x16__sve; mmla_tile.h draws the
// operands), for experts with 2 or more tokens (kRowPairMinM; a single row takes the SDOT row
// above, which reads the same layout and activations): a step's low nibbles (k 8j..8j+3) and high
// ones (8j+4..8j+7) zipped by 32-bit lanes (ZIP1/ZIP2) are channel pairs x 8 k, and each feeds
// one SMMLA per row pair, whose left operand is the pair's k 8j..8j+7 (per group: 4 LD1RQB of 16
// bytes + 2 TRN1 + 2 TRN2). Each matrix and vector's sums are split into rows (UZP1/UZP2 on 64-bit
// lanes) and run the SDOT row's epilogue (add_group: the same fp32 operations on the same int32
// sums, bit for bit).
//   per group (512 weights): 320 bytes (0.625 B/weight, once per block of 8 rows); per weight
//   vector and step LD1B + AND + LSR + Zips ZIP (Zips 2, 1 from 1024 bits on); SMMLA per row pair
//   and group 32 at VL 128 (one per 16 weights), 16 at 256 (one per 32), 8 at 512 (one per 64), 4
//   from 1024 bits on (one per 128), SDOT's half per row. Per row pair, group, matrix and vector
//   2 UZP, then per row the SDOT row's SCVTF + 2 FMLA (q8_32: FMUL + 2 FMLA) and y's load and store.
//   Per matrix, vector, group and 8 rows at VL 128 (GCC 12): 162 instructions, 32 of them SMMLA
//   (q8_32: 183); the SDOT row takes about 170 for 6 rows. The fp32 epilogue, not the dot
//   products, is most of them.
// Rows in blocks of 8 (4 row pairs) at every vector length, one matrix and vector at a time:
// P Zips = 8 int32 accumulators and the group's 4 P = 16 activation pairs next to q, lo, hi and the
// zipped weights (5 pairs would need 10 + 20 registers before the weights).
// No software prefetch (left to the hardware prefetchers; not measured on SVE hardware yet).
#include "kernels/int4_act.h"
#include "kernels/kernel_registry.h"
#include "kernels/sve/mmla_tile.h"
#include "kernels/sve/sve_driver.h"

namespace kt {
namespace {

using sve::Ix;
using sve::unroll;

// The group's d and m of channels c.. (lanes pw), fp16 zero-extended into 32-bit lanes (FCVT reads
// each lane's low half); zp: m = d (-z), exact in fp32
template <bool kZeroPoint>
inline void load_dm(svbool_t pw, const Int4G32Block& blk, int c, svfloat32_t& d, svfloat32_t& m) {
  d = svcvt_f32_f16_x(pw, svreinterpret_f16_u32(svld1uh_u32(pw, blk.d + c)));
  m = svcvt_f32_f16_x(pw, svreinterpret_f16_u32(svld1uh_u32(pw, blk.m + c)));
  if constexpr (kZeroPoint) m = svmul_f32_x(pw, d, m);
}

// One row's y (channels of a vector, lanes pw, in L1) += d isum + m gsum_a   (q8_32: times the
// group's s_a), for a group of the row whose sum of activations is gsum and scale s_a (q8s: not
// read); returns the new y
template <class Act>
inline svfloat32_t add_group(svbool_t pw, svint32_t isum, svfloat32_t d, svfloat32_t m, float gsum, float s_a,
                             float* y) {
  const svfloat32_t sum = svcvt_f32_s32_x(pw, isum);
  svfloat32_t acc = svld1_f32(pw, y);
  if constexpr (Act::kGroupScale) {
    const svfloat32_t part = svmla_n_f32_x(pw, svmul_f32_x(pw, sum, d), m, gsum);
    acc = svmla_n_f32_x(pw, acc, part, s_a);
  } else {
    acc = svmla_f32_x(pw, acc, sum, d);
    acc = svmla_n_f32_x(pw, acc, m, gsum);
  }
  svst1_f32(pw, y, acc);
  return acc;
}

// y *= s_a at the end (q8s: one scale per row; q8_32's are applied per group)
template <class Act, int NM, int MR>
inline void scale_rows(const ActView& act, const int* rows, float (&y)[NM][MR][kPanelN]) {
  if constexpr (!Act::kGroupScale)
    for (int r = 0; r < MR; ++r) {
      const float s = Act::row_scale(act, rows[r]);
      for (int t = 0; t < NM; ++t)
        for (int c = 0; c < kPanelN; ++c) y[t][r][c] *= s;
    }
}

template <bool kZeroPoint, ActFormat kAct>
struct Int4SdotTile {
  using Act = Int4Act<kAct>;
  // 6 isum + 12 activations + q, lo, hi, d, m and y's two: 25 of the 32 registers (gcc 12 spills
  // one activation at VPP 2 and 4: a store and 3 reloads per group)
  static constexpr int max_rows(int, int) { return 6; }

  // flatten: else GCC 12 makes calls of parts of the `blocks` lambdas, whose shared accumulators
  // then live in memory (a load and a store around each SDOT)
  template <int VPP, int NM, int MR>
  [[gnu::flatten]] static void compute(const uint8_t* const* w, int Kp, const ActView& act, const int* rows,
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
          svfloat32_t d, m;
          load_dm<kZeroPoint>(pw, blk, v * kLanes, d, m);
          unroll<MR>([&](auto r) {
            add_group<Act>(pw, isum(r), d, m, float(Act::sum(act, rows[r], g)), Act::group_scale(act, rows[r], g),
                           y[t][r] + v * kLanes);
          });
        });
      });
    }
    scale_rows<Act>(act, rows, y);
  }
};

// SMMLA row pairs (mmla_tile.h): P = ceil(MR / 2) row pairs, one matrix and vector at a time as
// the SDOT tile (its fp32 group sums right after): P Zips int32 accumulators, the group's 4 P
// activation pairs (steps 0..3), and q, lo, hi and the zipped weights; y stays in L1.
template <bool kZeroPoint, ActFormat kAct>
struct Int4MmlaTile : sve::ZipsDispatch<Int4MmlaTile<kZeroPoint, kAct>> {
  using Act = Int4Act<kAct>;
  static constexpr int max_rows(int, int) { return 8; }

  template <int VPP, int NM, int MR, int Zips>
  static void compute_zips(const uint8_t* const* w, int Kp, const ActView& act, const int* rows,
                           float (&y)[NM][MR][kPanelN]) {
    using Pairs = sve::RowPairs<MR>;
    constexpr int P = Pairs::P;
    constexpr int kSteps = Int4G32Block::kSteps;
    static_assert(P * Zips <= sve::kBank && kSteps * P <= sve::kBank);
    constexpr int kLanes = kPanelN / VPP;         // channels per vector
    constexpr int kVecBytes = kPanelN * 4 / VPP;  // bytes of a 64-byte step per vector
    const svbool_t pb = sve::panel_b8<VPP>(), pw = sve::panel_b32<VPP>();
    for (int t = 0; t < NM; ++t)
      for (int r = 0; r < MR; ++r)
        for (int c = 0; c < kPanelN; ++c) y[t][r][c] = 0.f;
    KT_SVE_BANK(svint32_t, z, svdup_n_s32(0));  // z(p Zips + h): pair p, zip h; one matrix and vector at a time
    KT_SVE_BANK(svint8_t, a, svdup_n_s8(0));    // a(j P + p): pair p's k 8j..8j+7 of the group

    for (int g = 0; g < Kp / Int4G32Block::kK; ++g) {
      unroll<P>([&](auto p) {
        const int8_t *x0 = Act::q(act, rows[2 * p], g), *x1 = Act::q(act, rows[Pairs::second(p)], g);
        sve::act_pairs_16k(x0, x1, a(Ix<p>{}), a(Ix<P + p>{}));
        sve::act_pairs_16k(x0 + 16, x1 + 16, a(Ix<2 * P + p>{}), a(Ix<3 * P + p>{}));
      });
      // the rows' terms of the group's epilogue, read back broadcast (LD1RW) by each matrix and vector
      float gsum[MR], s_a[MR];
      for (int r = 0; r < MR; ++r) {
        gsum[r] = float(Act::sum(act, rows[r], g));
        s_a[r] = Act::group_scale(act, rows[r], g);
      }
      // one matrix and vector at a time, in loops (their accumulators are the same P Zips): unrolled,
      // the group outgrew GCC 12's inlining, whose calls kept the accumulators in memory
      for (int t = 0; t < NM; ++t) {
        const Int4G32Block& blk = reinterpret_cast<const Int4G32Block*>(w[t])[g];
        for (int v = 0; v < VPP; ++v) {
          // isum = sum_k q_w q_a: step j's low nibbles are k 8j..8j+3, its high ones 8j+4..8j+7
          unroll<P * Zips>([&](auto i) { z(i) = svdup_n_s32(0); });
          unroll<kSteps>([&](auto j) {
            const uint8_t* at = blk.q[j] + v * kVecBytes;
            // step j's load after step j - 1's SMMLA (step 0's after the activation pairs): GCC 12
            // loaded and zipped all 4 steps up front (8 zipped registers), began the SMMLA before
            // the last activation pairs, and spilled activations
            if constexpr (j > 0) unroll<P * Zips>([&](auto i) { at = sve::order_after(at, z(i)); });
            else unroll<kSteps * P>([&](auto i) { at = sve::order_after(at, a(i)); });
            const svuint8_t q = svld1_u8(pb, at);
            const svint8_t lo = svreinterpret_s8_u8(svand_n_u8_x(pb, q, 0x0f));
            const svint8_t hi = svreinterpret_s8_u8(svlsr_n_u8_x(pb, q, 4));
            unroll<Zips>([&](auto h) {
              const svint8_t c = sve::channel_pairs<decltype(h)::value>(lo, hi);
              unroll<P>([&](auto p) {
                svint32_t& acc = z(Ix<p * Zips + h>{});
                acc = svmmla_s32(acc, a(Ix<j * P + p>{}), c);
              });
            });
          });
          // rows 2p and 2p + 1 out of the 2x2 blocks, then y += d isum + m gsum_a (q8_32: times s_a):
          // d and m after the last step's SMMLA, each row pair's loads and conversions after the
          // previous pair's sums (GCC 12 loaded d, m, y and the rows' sums up front and spilled)
          const Int4G32Block* dm = &blk;
          unroll<P * Zips>([&](auto i) { dm = sve::order_after(dm, z(i)); });
          svfloat32_t d, m;
          load_dm<kZeroPoint>(pw, *dm, v * kLanes, d, m);
          svfloat32_t last = d;
          unroll<P>([&](auto p) {
            const svint32_t z0 = sve::order_after(z(Ix<p * Zips>{}), last);
            const svint32_t z1 = sve::order_after(z(Ix<p * Zips + Zips - 1>{}), last);
            const float *gs = sve::order_after(gsum, last), *sa = sve::order_after(s_a, last);
            const int r0 = 2 * p, r1 = 2 * p + 1;
            last = add_group<Act>(pw, sve::first_row(z0, z1), d, m, gs[r0], sa[r0],
                                  sve::order_after(y[t][r0] + v * kLanes, last));
            if (r1 < MR)
              last = add_group<Act>(pw, sve::second_row(z0, z1), d, m, gs[r1], sa[r1],
                                    sve::order_after(y[t][r1] + v * kLanes, last));
          });
        }
      }
    }
    scale_rows<Act>(act, rows, y);
  }
};

using Tile = Int4SdotTile<false, ActFormat::q8s>;
using ZeroPointTile = Int4SdotTile<true, ActFormat::q8_32>;
using MmlaTile = Int4MmlaTile<false, ActFormat::q8s>;
using ZeroPointMmlaTile = Int4MmlaTile<true, ActFormat::q8_32>;

}  // namespace

void gateup_int4g32_q8s_6x16__sve(const GateUpArgs& a) { sve::gateup<Tile>(a); }
void down_int4g32_q8s_6x16__sve(const DownArgs& a) { sve::down<Tile>(a); }

void gateup_int4g32zp_q8_32_6x16__sve(const GateUpArgs& a) { sve::gateup<ZeroPointTile>(a); }
void down_int4g32zp_q8_32_6x16__sve(const DownArgs& a) { sve::down<ZeroPointTile>(a); }

void gateup_int4g32_q8s_8x16__sve(const GateUpArgs& a) { sve::gateup<MmlaTile>(a); }
void down_int4g32_q8s_8x16__sve(const DownArgs& a) { sve::down<MmlaTile>(a); }

void gateup_int4g32zp_q8_32_8x16__sve(const GateUpArgs& a) { sve::gateup<ZeroPointMmlaTile>(a); }
void down_int4g32zp_q8_32_8x16__sve(const DownArgs& a) { sve::down<ZeroPointMmlaTile>(a); }

KT_KERNEL_ROW(int4_g32, kSveObj, q8s, int4g32_q8s_6x16__sve)
KT_KERNEL_ROW(int4_g32_zp, kSveObj, q8_32, int4g32zp_q8_32_6x16__sve)
KT_TILE_ROW(int4_g32, kSveObj, q8s, int4g32_q8s_8x16__sve, sve::kRowPairMinM)
KT_TILE_ROW(int4_g32_zp, kSveObj, q8_32, int4g32zp_q8_32_8x16__sve, sve::kRowPairMinM)

}  // namespace kt
