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
// No software prefetch (left to the hardware prefetchers; not measured on SVE hardware yet).
#include "kernels/kernel_registry.h"
#include "kernels/sve/sve_driver.h"

namespace kt {
namespace {

using sve::Ix;
using sve::unroll;

struct Int8SdotTile {
  static constexpr int max_rows(int vpp, int nm) { return 20 / (vpp * nm) < 8 ? 20 / (vpp * nm) : 8; }

  template <int VPP, int NM, int MR>
  static void compute(const uint8_t* const* w, int Kp, const ActView& act, const int* rows,
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
          const svfloat32_t ws = svmul_f32_x(pw, sw, svcvt_f32_s32_x(pw, isum(Ix<(t * MR + r) * VPP + v>{})));
          svst1_f32(pw, y[t][r] + v * kLanes, svmul_n_f32_x(pw, ws, act.scale[rows[r]]));
        });
      });
    });
  }
};

}  // namespace

void gateup_int8pc_q8s_8x16__sve(const GateUpArgs& a) { sve::gateup<Int8SdotTile>(a); }
void down_int8pc_q8s_8x16__sve(const DownArgs& a) { sve::down<Int8SdotTile>(a); }

KT_KERNEL_ROW(int8_pc, kSveObj, q8s, int8pc_q8s_8x16__sve)

}  // namespace kt
