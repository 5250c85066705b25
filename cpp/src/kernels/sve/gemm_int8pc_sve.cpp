// [NOTE] int8_pc weights x q8s activations with SVE SDOT by index (svdot_lane_s32), for any vector
// length (sve_driver.h: VPP = 4, 2, 1 vectors per 16-channel panel at VL 128, 256, >= 512).
//   y = s_a * (s_w * isum),  isum = sum_k q_w q_a   (int32, exact; as the reference, bit for bit)
// Layout (formats/int8_pc.cpp): Int8PcBlock s = q[16 channels][4 k], 64 bytes; 32-bit lane c of
// the block is channel c's k 4s..4s+3, so vector v of a block holds channels 16v/VPP.. .
// Activations: LD1RQB replicates 16 bytes (k 16q..16q+15) into every 128-bit segment, and
// SDOT's index j picks k 16q+4j..+3 of each segment for block 4q+j: no broadcast per block.
//   per block (64 weights): 64 bytes; SDOT per row: 4 at VL 128 (one per 16 weights), 2 at 256
//   (one per 32), 1 at >= 512 (one per 64); one LD1RQB per row per 4 blocks.
// Prefill: rows in blocks of MR = max_rows (gate/up 2, 5, 8 rows at VL 128, 256, >= 512; down 5,
// 8, 8): each weight vector loaded feeds MR SDOTs; NM MR VPP int32 accumulators <= 20 registers.
// The K tail (Kp not a multiple of 16): its last 1-3 blocks' activations load under a predicate,
// so that no read passes the row's end (SDOT's indices never reach the lanes it leaves zero).
//
// The SMMLA tile row (int8pc_q8s_20x16__sve, mmla_tile.h draws the operands), for experts with 2
// or more tokens (kRowPairMinM; a single row takes the SDOT row above, which reads the same layout
// and q8s): blocks s and s + 1's vectors zipped by 32-bit lanes (ZIP1/ZIP2) are channel pairs x 8
// k, and each feeds one SMMLA per row pair, whose left operand is the pair's 8 k (2 LD1RQB of 8
// bytes + TRN1). The same int32 sums and the same epilogue per row as the SDOT row (bit for bit).
//   per 2 blocks (128 weights): 128 bytes (1 B/weight, once per block of MR rows); per row pair
//   8 SMMLA at VL 128 (one per 16 weights), 4 at 256 (one per 32), 2 at 512 (one per 64), 1 from
//   1024 bits on (one per 128; at 2048 half of each SMMLA's segments are the panel's zero padding),
//   SDOT's half per row; per block of rows 2 VPP ZIP (1 from 1024 bits on); per row pair 2 LD1RQB
//   + 1 TRN1. Inner loop per 8 k, 16 channels and a block (GCC 12): VL 128 62 instructions for 6
//   rows (24 SMMLA), 256 51 for 10 rows (20 SMMLA), 512 60 for 20 rows (20 SMMLA).
// Rows in blocks of MR = 6, 10, 20 at VL 128, 256, >= 512 (3, 5, 10 row pairs), one matrix per K
// pass: P VPP Zips accumulators (24, 20, 20) next to the P activation pairs (VL 128 and 256: each
// feeds VPP vectors, so all P stay live) and the weight registers, the most without spills (P = 11
// at 512 spilled). K = 4 mod 8: the last block against zeros, its activations 4 bytes (SV_VL4).
// No software prefetch (left to the hardware prefetchers; not measured on SVE hardware yet).
#include "kernels/kernel_registry.h"
#include "kernels/sve/mmla_tile.h"
#include "kernels/sve/sve_driver.h"

namespace kt {
namespace {

using sve::Ix;
using sve::unroll;

// y = s_a * (s_w * isum): one row's channels of a vector (lanes pw), as the reference rounds
inline void store_scaled(svbool_t pw, svint32_t isum, svfloat32_t s_w, float s_a, float* y) {
  const svfloat32_t ws = svmul_f32_x(pw, s_w, svcvt_f32_s32_x(pw, isum));
  svst1_f32(pw, y, svmul_n_f32_x(pw, ws, s_a));
}

struct Int8SdotTile {
  static constexpr int max_rows(int vpp, int nm) { return 20 / (vpp * nm) < 8 ? 20 / (vpp * nm) : 8; }

  // flatten: else GCC 12 makes calls of parts of the `blocks` lambdas, whose shared accumulators
  // then live in memory (a load and a store around each SDOT)
  template <int VPP, int NM, int MR>
  [[gnu::flatten]] static void compute(const uint8_t* const* w, int Kp, const ActView& act, const int* rows,
                      float (&y)[NM][MR][kPanelN]) {
    static_assert(NM * MR * VPP <= sve::kBank && MR <= sve::kBank);
    constexpr int kLanes = kPanelN / VPP;                          // channels per vector
    constexpr int kVecBytes = int(sizeof(Int8PcBlock)) / VPP;      // weight bytes per vector
    const svbool_t pb = sve::panel_b8<VPP>(), pw = sve::panel_b32<VPP>();
    const int8_t* x[MR];
    for (int r = 0; r < MR; ++r) x[r] = reinterpret_cast<const int8_t*>(act.data + act.stride * rows[r]);
    KT_SVE_BANK(svint32_t, isum, svdup_n_s32(0));  // isum(t, r, v) at (t MR + r) VPP + v
    KT_SVE_BANK(svint8_t, xq, svdup_n_s8(0));      // xq(r): row r's 16 k, in every segment

    // NB blocks (4 NB k) from block s: isum += q_w . q_a
    auto blocks = [&](auto nb, int s) {
      constexpr int NB = decltype(nb)::value;
      const svbool_t pa = NB == 4 ? svptrue_b8() : svwhilelt_b8(0, 4 * NB);
      unroll<MR>([&](auto r) { xq(r) = svld1rq_s8(pa, x[r] + 4 * s); });
      unroll<NB>([&](auto j) {
        unroll<NM>([&](auto t) {
          unroll<VPP>([&](auto v) {
            const int8_t* blk = reinterpret_cast<const int8_t*>(w[t] + size_t(s + j) * sizeof(Int8PcBlock));
            const svint8_t q = svld1_s8(pb, blk + v * kVecBytes);
            unroll<MR>([&](auto r) {
              svint32_t& acc = isum(Ix<(t * MR + r) * VPP + v>{});
              acc = svdot_lane_s32(acc, q, xq(r), decltype(j)::value);
            });
          });
        });
      });
    };
    const int nblocks = Kp / Int8PcBlock::kK;
    int s = 0;
    for (; s + 4 <= nblocks; s += 4) blocks(Ix<4>{}, s);
    switch (nblocks - s) {
      case 3: blocks(Ix<3>{}, s); break;
      case 2: blocks(Ix<2>{}, s); break;
      case 1: blocks(Ix<1>{}, s); break;
      default: break;
    }

    // y = s_a * (s_w * isum)
    unroll<NM>([&](auto t) {
      const Int8PcTail* tail = int8pc_tail(w[t], Kp);
      unroll<VPP>([&](auto v) {
        const svfloat32_t sw = svld1_f32(pw, tail->scale + v * kLanes);
        unroll<MR>([&](auto r) {
          store_scaled(pw, isum(Ix<(t * MR + r) * VPP + v>{}), sw, act.scale[rows[r]], y[t][r] + v * kLanes);
        });
      });
    });
  }
};

// SMMLA row pairs (mmla_tile.h), one matrix per K pass: P = ceil(MR / 2) row pairs and Zips
// zipped registers per weight vector, P VPP Zips accumulators (VL 128: 3 pairs x 8, 256: 5 x 4,
// 512: 10 x 2, >= 1024: 10 x 1), P activation pairs, and the lo, hi and zipped weight registers.
struct Int8MmlaTile : sve::ZipsDispatch<Int8MmlaTile> {
  static constexpr int max_rows(int vpp, int) { return vpp == 4 ? 6 : vpp == 2 ? 10 : 20; }

  template <int VPP, int NM, int MR, int Zips>
  static void compute_zips(const uint8_t* const* w, int Kp, const ActView& act, const int* rows,
                           float (&y)[NM][MR][kPanelN]) {
    using Pairs = sve::RowPairs<MR>;
    constexpr int P = Pairs::P;
    static_assert(P * VPP * Zips <= sve::kBank && P <= sve::kBank);
    constexpr int kLanes = kPanelN / VPP;                      // channels per vector
    constexpr int kVecBytes = int(sizeof(Int8PcBlock)) / VPP;  // weight bytes per vector
    const svbool_t pb = sve::panel_b8<VPP>(), pw = sve::panel_b32<VPP>();
    const int8_t* x[MR];
    for (int r = 0; r < MR; ++r) x[r] = reinterpret_cast<const int8_t*>(act.data + act.stride * rows[r]);
    const int nblocks = Kp / Int8PcBlock::kK;
    for (int t = 0; t < NM; ++t) {
      const int8_t* b = reinterpret_cast<const int8_t*>(w[t]);
      KT_SVE_BANK(svint32_t, z, svdup_n_s32(0));  // z((v P + p) Zips + h): vector v, pair p, zip h
      KT_SVE_BANK(svint8_t, a, svdup_n_s8(0));    // a(p): pair p's 8 k
      // 8 k from block s: blocks s and s + 1, or (kHalf: K = 4 mod 8) block s against zeros
      auto k8 = [&](auto half, int s) {
        constexpr bool kHalf = decltype(half)::value;
        const svbool_t pa = svptrue_pat_b8(kHalf ? SV_VL4 : SV_VL8);
        unroll<P>([&](auto p) { a(p) = sve::act_pair(pa, x[2 * p] + 4 * s, x[Pairs::second(p)] + 4 * s); });
        unroll<VPP>([&](auto v) {
          const int8_t* lo_at = b + size_t(s) * sizeof(Int8PcBlock) + v * kVecBytes;
          // vector v's loads after vector v - 1's SMMLA: GCC 12 loaded and zipped all VPP vectors'
          // weights up front, and at VL 128 (8 zipped registers next to 24 accumulators) spilled
          // 3 accumulators in the inner loop
          if constexpr (v > 0)
            unroll<P * Zips>([&](auto i) { lo_at = sve::order_after(lo_at, z(Ix<(v - 1) * P * Zips + i>{})); });
          const svint8_t lo = svld1_s8(pb, lo_at);
          const svint8_t hi = kHalf ? svdup_n_s8(0) : svld1_s8(pb, lo_at + sizeof(Int8PcBlock));
          unroll<Zips>([&](auto h) {
            const svint8_t c = sve::channel_pairs<decltype(h)::value>(lo, hi);
            unroll<P>([&](auto p) {
              svint32_t& acc = z(Ix<(v * P + p) * Zips + h>{});
              acc = svmmla_s32(acc, a(p), c);
            });
          });
        });
      };
      int s = 0;
      for (; s + 2 <= nblocks; s += 2) k8(Ix<0>{}, s);
      if (s < nblocks) k8(Ix<1>{}, s);

      // rows 2p and 2p + 1 out of the 2x2 blocks, then y = s_a * (s_w * isum)
      const Int8PcTail* tail = int8pc_tail(w[t], Kp);
      unroll<VPP>([&](auto v) {
        const svfloat32_t sw = svld1_f32(pw, tail->scale + v * kLanes);
        unroll<P>([&](auto p) {
          const svint32_t z0 = z(Ix<(v * P + p) * Zips>{}), z1 = z(Ix<(v * P + p) * Zips + Zips - 1>{});
          const int r0 = 2 * p, r1 = 2 * p + 1;
          store_scaled(pw, sve::first_row(z0, z1), sw, act.scale[rows[r0]], y[t][r0] + v * kLanes);
          if (r1 < MR) store_scaled(pw, sve::second_row(z0, z1), sw, act.scale[rows[r1]], y[t][r1] + v * kLanes);
        });
      });
    }
  }
};

}  // namespace

void gateup_int8pc_q8s_8x16__sve(const GateUpArgs& a) { sve::gateup<Int8SdotTile>(a); }
void down_int8pc_q8s_8x16__sve(const DownArgs& a) { sve::down<Int8SdotTile>(a); }

void gateup_int8pc_q8s_20x16__sve(const GateUpArgs& a) { sve::gateup<Int8MmlaTile>(a); }
void down_int8pc_q8s_20x16__sve(const DownArgs& a) { sve::down<Int8MmlaTile>(a); }

KT_KERNEL_ROW(int8_pc, kSveObj, q8s, int8pc_q8s_8x16__sve)
KT_TILE_ROW(int8_pc, kSveObj, q8s, int8pc_q8s_20x16__sve, sve::kRowPairMinM)

}  // namespace kt
