// [NOTE] bf16 weights x bf16 activations with SVE's BF16 instructions, for any vector length, on the
// format's own packed layout (formats/bf16.cpp); the neon_bf16 rows' structure
// (gemm_bf16_neonbf16.cpp): a vector row with BFDOT by index (every bucket; decode) and a tile row
// with BFMMLA (from 2 tokens per expert; prefill). Activations are rounded to bf16 (as neon_bf16
// and x86's avx512_bf16 rows), so this tier differs from neon (fp32 activations) by that rounding.
//
// Bf16Block s (64 bytes) is k pair 2s, 2s+1 of the 16 channels, one 32-bit lane per channel; in a
// weight vector (sve_driver.h: VPP = 4, 2, 1 vectors per panel at VL 128, 256, >= 512; above 512
// bits the panel predicate loads the block's 64 bytes and zeros the rest) each 128-bit segment is
// 4 channels x the block's pair: BFDOT's operand as it is.
//
// Vector row: a row's 8 k (pairs s..s+3) by one LD1RQ into every segment; block s + j then feeds,
// per weight vector, one BFDOT per row with index j:  acc[c] += w[c,2s] x[2s] + w[c,2s+1] x[2s+1].
// The last Kp % 8 k (1 to 3 pairs) by a predicated LD1RQ, which reads no k past the row's end.
//   decode: 2 B/weight; per weight vector one LD1W, then one BFDOT per row: per 8, 16, 32 weights
//   at VL 128, 256, >= 512 (above 512 bits a block per vector: 2 blocks a vector would halve the
//   instructions at the cost of an add of the two halves at the end, left undone); per row and 8 k
//   one LD1RQ. (GCC 12 adds about 1.5 address ADDs per LD1W: the loads' offsets are constants that
//   SVE's immediate, in vectors, cannot hold.)
//
// Tile row: BFMMLA multiplies, per segment, two rows x 4 k (left) by 4 k x two channels (right)
// into the 2x2 fp32 block [r c, r c+1, r' c, r' c+1], as SMMLA in mmla_tile.h, whose helpers it
// uses on the same bytes (8 bytes of activations a row per step, zips of 32-bit lanes, the row
// unzip by 64-bit lanes). Blocks s and s + 1 (k 2s..2s+3) zipped by 32-bit lanes give segments of
// 2 channels x 4 k (ZIP1: the vector's lower half of channels, ZIP2 the upper; from 1024 bits ZIP1
// holds the whole panel), the right operand; the left one is two rows' 4 k (8-byte loads + TRN1). An
// odd number of blocks ends with block s against zeros: zero weights for s + 1 and a zero pair after
// each row's pair s (not the pair repeated: an infinite x times a zero weight would be NaN).
//   per step (2 blocks, 64 weights): per weight vector 2 LD1B + 1 or 2 ZIP, shared by the block's
//   row pairs; per row pair one BFMMLA per 8, 16, 32, 64 weights at VL 128, 256, 512, >= 1024
//   (16 multiply-adds per segment where BFDOT does 8), and 2 loads + TRN1 a step.
// Row blocks: vector row gate/up 2, 4, 4 rows at VL 128, 256, >= 512, down 4 (it takes the 1-token
// buckets next to the tile row); tile row 6, 10, 16 rows (3, 5, 8 pairs), one matrix per K pass:
// accumulators 24, 20, 16 (8 from 1024 bits), next to the pairs' left operands and 4 weight registers.
//
// Rounding (FEAT_EBF16 absent, or FPCR.EBF = 0 as a process starts; qemu emulates the same): BFDOT
// and BFMMLA ignore FPCR; the bf16 products are exact in fp32, each pair's sum and each addition to
// the accumulator round to odd (not to nearest even), and denormal inputs and results flush to zero.
// Against the fp32 reference that is a rounding-order difference (gemm_bf16_neonbf16.cpp's NOTE).
// Both rows add the pairs k in order from zero (BFMMLA: two pair steps per element, as two BFDOT),
// as neon_bf16's rows do: the same bits as neon_bf16 at every vector length (qemu: the same
// moe_check digests as neon_bf16 at 128, 256, 512 and 2048 bits).
// No software prefetch (left to the hardware prefetchers; not measured on SVE hardware yet).
#include <cstring>

#include "kernels/kernel_registry.h"
#include "kernels/sve/mmla_tile.h"
#include "kernels/sve/sve_driver.h"

namespace kt {
namespace {

using sve::Ix;
using sve::unroll;

// Row `row` of the bf16 activations, a 32-bit lane per k pair: pair s meets block s.
inline const uint32_t* act_pairs(const ActView& act, int row) {
  return reinterpret_cast<const uint32_t*>(act.data + act.stride * size_t(row));
}

struct Bf16BfdotTile {
  static constexpr int max_rows(int vpp, int nm) { return 20 / (vpp * nm) < 4 ? 20 / (vpp * nm) : 4; }

  // flatten: GCC 12 made calls of parts of the 4 instantiations of `blocks` (the tail's 1 to 3
  // too), and the accumulators they share lived in memory, loaded and stored around each BFDOT
  template <int VPP, int NM, int MR>
  [[gnu::flatten]] static void compute(const uint8_t* const* w, int Kp, const ActView& act, const int* rows,
                                       float (&y)[NM][MR][kPanelN]) {
    static_assert(NM * MR * VPP <= sve::kBank && MR <= sve::kBank);
    constexpr int kLanes = kPanelN / VPP;  // channels per vector
    const svbool_t pw = sve::panel_b32<VPP>();
    const uint32_t* x[MR];
    for (int r = 0; r < MR; ++r) x[r] = act_pairs(act, rows[r]);
    KT_SVE_BANK(svfloat32_t, acc, svdup_n_f32(0.f));                          // acc(t, r, v) at (t MR + r) VPP + v
    KT_SVE_BANK(svbfloat16_t, xr, svreinterpret_bf16_u32(svdup_n_u32(0)));  // xr(r): row r's pairs s.., in every segment

    // NB <= 4 blocks from block s: acc += w x, block s + j with BFDOT index j
    auto blocks = [&](auto nb, int s) {
      constexpr int NB = decltype(nb)::value;
      const svbool_t pa = NB == 4 ? svptrue_b32() : svwhilelt_b32(0, NB);
      unroll<MR>([&](auto r) { xr(r) = svreinterpret_bf16_u32(svld1rq_u32(pa, x[r] + s)); });
      unroll<NB>([&](auto j) {
        unroll<NM>([&](auto t) {
          unroll<VPP>([&](auto v) {
            const uint32_t* blk = reinterpret_cast<const uint32_t*>(w[t] + size_t(s + j) * sizeof(Bf16Block));
            const svbfloat16_t wv = svreinterpret_bf16_u32(svld1_u32(pw, blk + v * kLanes));
            unroll<MR>([&](auto r) {
              svfloat32_t& c = acc(Ix<(t * MR + r) * VPP + v>{});
              c = svbfdot_lane_f32(c, wv, xr(r), decltype(j)::value);
            });
          });
        });
      });
    };
    const int nblocks = Kp / Bf16Block::kK;
    int s = 0;
    for (; s + 4 <= nblocks; s += 4) blocks(Ix<4>{}, s);
    switch (nblocks - s) {
      case 3: blocks(Ix<3>{}, s); break;
      case 2: blocks(Ix<2>{}, s); break;
      case 1: blocks(Ix<1>{}, s); break;
      default: break;
    }

    unroll<NM>([&](auto t) {
      unroll<MR>([&](auto r) {
        unroll<VPP>([&](auto v) { svst1_f32(pw, y[t][r] + v * kLanes, acc(Ix<(t * MR + r) * VPP + v>{})); });
      });
    });
  }
};

// BFMMLA's left operand for the last block of an odd count: pair s of x0 and of x1, each followed
// by a zero pair (k 2s + 2, 2s + 3 are zeros on both sides).
inline svbfloat16_t act_pair_then_zeros(const uint32_t* x0, const uint32_t* x1) {
  uint32_t v0, v1;
  std::memcpy(&v0, x0, 4);
  std::memcpy(&v1, x1, 4);
  return svreinterpret_bf16_u64(svtrn1_u64(svdup_n_u64(v0), svdup_n_u64(v1)));
}

// BFMMLA row pairs by mmla_tile.h's byte moves (typed for SMMLA: operands and sums reinterpreted),
// one matrix per K pass: P VPP Zips accumulators (VL 128: 3 pairs x 8, 256: 5 x 4, 512: 8 x 2,
// >= 1024: 8 x 1).
struct Bf16BfmmlaTile : sve::ZipsDispatch<Bf16BfmmlaTile> {
  static constexpr int max_rows(int vpp, int) { return vpp == 4 ? 6 : vpp == 2 ? 10 : 16; }

  template <int VPP, int NM, int MR, int Zips>
  static void compute_zips(const uint8_t* const* w, int Kp, const ActView& act, const int* rows,
                           float (&y)[NM][MR][kPanelN]) {
    using Pairs = sve::RowPairs<MR>;
    constexpr int P = Pairs::P;
    static_assert(P * VPP * Zips <= sve::kBank && P <= sve::kBank);
    constexpr int kLanes = kPanelN / VPP;                   // channels per vector
    constexpr int kVecBytes = int(sizeof(Bf16Block)) / VPP;  // weight bytes per vector
    const svbool_t pb = sve::panel_b8<VPP>(), pw = sve::panel_b32<VPP>();
    const uint32_t* x[MR];
    for (int r = 0; r < MR; ++r) x[r] = act_pairs(act, rows[r]);
    const int nblocks = Kp / Bf16Block::kK;
    for (int t = 0; t < NM; ++t) {
      const int8_t* b = reinterpret_cast<const int8_t*>(w[t]);
      KT_SVE_BANK(svfloat32_t, z, svdup_n_f32(0.f));                          // z((v P + p) Zips + h): vector v, pair p, zip h
      KT_SVE_BANK(svbfloat16_t, a, svreinterpret_bf16_u32(svdup_n_u32(0)));  // a(p): pair p's 4 k
      // 4 k from block s: blocks s and s + 1, or (kLast: an odd number of blocks) block s against zeros
      auto k4 = [&](auto last, int s) {
        constexpr bool kLast = decltype(last)::value;
        unroll<P>([&](auto p) {
          const uint32_t *x0 = x[2 * p] + s, *x1 = x[Pairs::second(p)] + s;
          a(p) = kLast ? act_pair_then_zeros(x0, x1)
                       : svreinterpret_bf16_s8(sve::act_pair_8k(reinterpret_cast<const int8_t*>(x0),
                                                                reinterpret_cast<const int8_t*>(x1)));
        });
        unroll<VPP>([&](auto v) {
          const int8_t* lo_at = b + size_t(s) * sizeof(Bf16Block) + v * kVecBytes;
          // vector v's loads after vector v - 1's BFMMLA (mmla_tile.h's order_after: GCC 12 would
          // load and zip all VPP vectors up front and spill accumulators at VL 128)
          if constexpr (v > 0)
            unroll<P * Zips>([&](auto i) { lo_at = sve::order_after(lo_at, z(Ix<(v - 1) * P * Zips + i>{})); });
          const svint8_t lo = svld1_s8(pb, lo_at);
          const svint8_t hi = kLast ? svdup_n_s8(0) : svld1_s8(pb, lo_at + sizeof(Bf16Block));
          unroll<Zips>([&](auto h) {
            const svbfloat16_t c = svreinterpret_bf16_s8(sve::channel_pairs<decltype(h)::value>(lo, hi));
            unroll<P>([&](auto p) {
              svfloat32_t& acc = z(Ix<(v * P + p) * Zips + h>{});
              acc = svbfmmla_f32(acc, a(p), c);
            });
          });
        });
      };
      int s = 0;
      for (; s + 2 <= nblocks; s += 2) k4(Ix<0>{}, s);
      if (s < nblocks) k4(Ix<1>{}, s);

      // rows 2p and 2p + 1 out of the 2x2 blocks
      unroll<VPP>([&](auto v) {
        unroll<P>([&](auto p) {
          const svint32_t z0 = svreinterpret_s32_f32(z(Ix<(v * P + p) * Zips>{}));
          const svint32_t z1 = svreinterpret_s32_f32(z(Ix<(v * P + p) * Zips + Zips - 1>{}));
          const int r0 = 2 * p, r1 = 2 * p + 1;
          svst1_f32(pw, y[t][r0] + v * kLanes, svreinterpret_f32_s32(sve::first_row(z0, z1)));
          if (r1 < MR) svst1_f32(pw, y[t][r1] + v * kLanes, svreinterpret_f32_s32(sve::second_row(z0, z1)));
        });
      });
    }
  }
};

}  // namespace

void gateup_bf16_bf16_4x16__sve(const GateUpArgs& a) { sve::gateup<Bf16BfdotTile>(a); }
void down_bf16_bf16_4x16__sve(const DownArgs& a) { sve::down<Bf16BfdotTile>(a); }

void gateup_bf16_bf16_16x16__sve(const GateUpArgs& a) { sve::gateup<Bf16BfmmlaTile>(a); }
void down_bf16_bf16_16x16__sve(const DownArgs& a) { sve::down<Bf16BfmmlaTile>(a); }

KT_KERNEL_ROW(bf16, kSveObj, bf16, bf16_bf16_4x16__sve)
KT_TILE_ROW(bf16, kSveObj, bf16, bf16_bf16_16x16__sve, sve::kRowPairMinM)

}  // namespace kt
