// [NOTE] bf16 weights x fp32 activations with SVE FMLA by index (svmla_lane_f32), for any vector
// length (sve_driver.h: VPP = 4, 2, 1 vectors per 16-channel panel at VL 128, 256, >= 512).
//   y[c] = sum_k w[c,k] x[k]   in fp32, k in order, fused multiply-adds (the reference rounds
//   each product: results agree up to fp32 rounding). Layout in formats/bf16.cpp.
// Bf16Block s (64 bytes) holds k 2s, 2s+1 of 16 channels, one 32-bit lane per channel: the low
// bf16 (k 2s) becomes fp32 by LSL 16, the high one (k 2s+1) by AND 0xffff0000 — the ref row's
// widening, exact. Activations: LD1RQW replicates 4 floats (k 4q..4q+3, blocks 2q and 2q+1) into
// every 128-bit segment, and FMLA's index picks k within it: no broadcast per k.
//   per block (32 weights): 64 bytes (2 B/weight); per weight vector LD1W + LSL + AND, then 2
//   FMLA per row: 8 at VL 128 (one per 4 weights), 4 at 256 (one per 8), 2 at >= 512 (one per
//   16); one LD1RQW per row per 2 blocks.
// Prefill: rows in blocks of MR = max_rows (gate/up 2, 5, 8 rows at VL 128, 256, >= 512; down 5,
// 8, 8): each widened weight vector feeds MR FMLAs; NM MR VPP fp32 accumulators <= 20 registers.
// Why f32 activations and not BFDOT/BFMMLA: the generic row reads f32, and these keep its
// numerics (exact products of the exact widened weights). BFDOT would round the activations to
// bf16 (relative error up to 2^-9) and, without FEAT_EBF16, sums each pair with non-IEEE rounding
// and flushes denormals; BFMMLA also wants a 2x4-by-4x2 repacked layout. Left undone: a bf16
// activation row with BFDOT, to be timed against this one on SVE hardware.
// No software prefetch (left to the hardware prefetchers; not measured on SVE hardware yet).
#include "kernels/kernel_registry.h"
#include "kernels/sve/sve_driver.h"

namespace kt {
namespace {

using sve::Ix;
using sve::unroll;

struct Bf16FmlaTile {
  static constexpr int max_rows(int vpp, int nm) { return 20 / (vpp * nm) < 8 ? 20 / (vpp * nm) : 8; }

  template <int VPP, int NM, int MR>
  static void compute(const uint8_t* const* w, int Kp, const ActView& act, const int* rows,
                      float (&y)[NM][MR][kPanelN]) {
    static_assert(NM * MR * VPP <= sve::kBank && MR <= sve::kBank);
    constexpr int kLanes = kPanelN / VPP;  // channels per vector
    const svbool_t pw = sve::panel_b32<VPP>();
    const float* x[MR];
    for (int r = 0; r < MR; ++r) x[r] = reinterpret_cast<const float*>(act.data + act.stride * rows[r]);
    KT_SVE_BANK(svfloat32_t, acc, svdup_n_f32(0.f));  // acc(t, r, v) at (t MR + r) VPP + v
    KT_SVE_BANK(svfloat32_t, xf, svdup_n_f32(0.f));   // xf(r): row r's 4 k, in every segment

    // NB blocks (2 NB k) from block s: acc += w x
    auto blocks = [&](auto nb, int s) {
      constexpr int NB = decltype(nb)::value;
      const svbool_t pa = NB == 2 ? svptrue_b32() : svwhilelt_b32(0, 2 * NB);
      unroll<MR>([&](auto r) { xf(r) = svld1rq_f32(pa, x[r] + 2 * s); });
      unroll<NB>([&](auto j) {
        unroll<NM>([&](auto t) {
          unroll<VPP>([&](auto v) {
            const uint32_t* blk = reinterpret_cast<const uint32_t*>(w[t] + size_t(s + j) * sizeof(Bf16Block));
            const svuint32_t pair = svld1_u32(pw, blk + v * kLanes);
            const svfloat32_t even = svreinterpret_f32_u32(svlsl_n_u32_x(pw, pair, 16));
            const svfloat32_t odd = svreinterpret_f32_u32(svand_n_u32_x(pw, pair, 0xffff0000u));
            unroll<MR>([&](auto r) {
              svfloat32_t& c = acc(Ix<(t * MR + r) * VPP + v>{});
              c = svmla_lane_f32(c, even, xf(r), 2 * decltype(j)::value);
              c = svmla_lane_f32(c, odd, xf(r), 2 * decltype(j)::value + 1);
            });
          });
        });
      });
    };
    const int nblocks = Kp / Bf16Block::kK;
    int s = 0;
    for (; s + 2 <= nblocks; s += 2) blocks(Ix<2>{}, s);
    if (s < nblocks) blocks(Ix<1>{}, s);

    unroll<NM>([&](auto t) {
      unroll<MR>([&](auto r) {
        unroll<VPP>([&](auto v) { svst1_f32(pw, y[t][r] + v * kLanes, acc(Ix<(t * MR + r) * VPP + v>{})); });
      });
    });
  }
};

}  // namespace

void gateup_bf16_f32_8x16__sve(const GateUpArgs& a) { sve::gateup<Bf16FmlaTile>(a); }
void down_bf16_f32_8x16__sve(const DownArgs& a) { sve::down<Bf16FmlaTile>(a); }

KT_KERNEL_ROW(bf16, kSveObj, f32, bf16_f32_8x16__sve)

}  // namespace kt
