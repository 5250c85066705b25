// [NOTE] bf16 weights x bf16 activations with the BF16 extension (neon_bf16), on the format's own
// packed layout: a Bf16Block's 16-byte register q is channels 4q..4q+3 x the block's k pair, the
// pairs BFDOT and BFMMLA multiply. Activations are rounded to bf16 (as x86's avx512_bf16 row), so
// this tier differs from neon (fp32 activations) by that rounding.
//
// Vector row (every bucket; decode): BFDOT by lane (vbfdotq_laneq_f32). A row's 8 k (4 pairs) are
// one register; block b of the 4 then feeds, per weight register, one BFDOT per row with lane b:
//   acc[c] += w[c,k] x[k] + w[c,k+1] x[k+1]
// decode: 2 B/weight, one BFDOT per 8 weights. Rows in blocks of 3 (gate + up, and down as 2
// adjacent panels: 24 accumulators), so each weight register feeds 3 BFDOT.
//
// Tile row (from 2 tokens per expert): BFMMLA (vbfmmlaq_f32: a 2x4 by 4x2 bf16 product into a 2x2
// fp32 block), as the SMMLA tiles (i8mm_tile.h) with 4 k for 8: two consecutive blocks' registers
// zipped by 32-bit lanes (ZIP1/ZIP2) are two channel pairs x 4 k; each feeds one BFMMLA per row
// pair, whose left operand is two rows' 4 k (two 8-byte loads). 2 B/weight loaded once per block of
// 6 rows; one BFMMLA per 8 weights and row pair, one ZIP per 8 weights per block (24 accumulators
// of one matrix at a time).
//
// Rounding (FEAT_EBF16 absent, or FPCR.EBF = 0 as a process starts; qemu emulates the same): BFDOT
// and BFMMLA ignore FPCR; the bf16 products are exact in fp32, each pair's sum and each addition
// to the accumulator round to odd (not to nearest even), and denormal inputs and results flush to
// zero. Against the fp32 reference (a product and a sum per k, rounded to nearest even) that is a
// rounding-order difference: at most about 1 ulp per addition, unbiased. BFMMLA is two such pair
// steps per element, k in order, the same operations as the vector row's two BFDOT: both rows give
// the same bits (qemu: identical moe_check digests), whatever the bucket sizes.
#include <cstring>

#include "kernels/kernel_registry.h"
#include "kernels/neon/i8mm_tile.h"

namespace kt {
namespace {

// the bf16 row of activations `row`
inline const bfloat16_t* bf16_row(const ActView& act, int row) {
  return reinterpret_cast<const bfloat16_t*>(act.data + act.stride * size_t(row));
}

// channels 4q..4q+3 of block s: 4 bf16 pairs
inline bfloat16x8_t block_reg(const uint8_t* panel, int s, int q) {
  return vld1q_bf16(reinterpret_cast<const bfloat16_t*>(panel + size_t(s) * sizeof(Bf16Block)) + 8 * q);
}

struct Bf16DotTile {
  static constexpr int max_rows(int nm) { return nm == 1 ? 5 : nm == 2 ? 3 : 1; }
  static constexpr int down_panels = 2;

  template <int NM, int MR>
  static void compute(const uint8_t* const* w, int Kp, const ActView& act, const int* rows,
                      float32x4_t (&acc)[NM][MR][4]) {
    const bfloat16_t* x[MR];
    for (int r = 0; r < MR; ++r) x[r] = bf16_row(act, rows[r]);
    for (int t = 0; t < NM; ++t)
      for (int r = 0; r < MR; ++r)
        for (int q = 0; q < 4; ++q) acc[t][r][q] = vdupq_n_f32(0.f);
    int k = 0;
    for (; k + 8 <= Kp; k += 8) {
      const int s = k / Bf16Block::kK;
      for (int t = 0; t < NM; ++t)
        for (int b = 0; b < 4; ++b) neon::prefetch_stream(w[t] + size_t(s + b) * sizeof(Bf16Block));
      bfloat16x8_t xv[MR];
      for (int r = 0; r < MR; ++r) xv[r] = vld1q_bf16(x[r] + k);
      pair<0>(w, s, xv, acc);
      pair<1>(w, s + 1, xv, acc);
      pair<2>(w, s + 2, xv, acc);
      pair<3>(w, s + 3, xv, acc);
    }
    // the last Kp % 8 k (1 to 3 pairs): each pair broadcast, lane 0
    for (; k < Kp; k += Bf16Block::kK) {
      bfloat16x8_t xv[MR];
      for (int r = 0; r < MR; ++r) {
        uint32_t v;
        std::memcpy(&v, x[r] + k, 4);
        xv[r] = vreinterpretq_bf16_u32(vdupq_n_u32(v));
      }
      pair<0>(w, k / Bf16Block::kK, xv, acc);
    }
  }

  // acc += block s x lane L of xv (k pair L of the row's 8 k)
  template <int L, int NM, int MR>
  static void pair(const uint8_t* const* w, int s, const bfloat16x8_t (&xv)[MR], float32x4_t (&acc)[NM][MR][4]) {
    for (int t = 0; t < NM; ++t)
      for (int q = 0; q < 4; ++q) {
        const bfloat16x8_t v = block_reg(w[t], s, q);
        for (int r = 0; r < MR; ++r) acc[t][r][q] = vbfdotq_laneq_f32(acc[t][r][q], v, xv[r], L);
      }
  }
};

struct Bf16MmlaTile {
  static constexpr int max_rows(int) { return 6; }
  // one matrix per K pass (its accumulators fill the registers): adjacent panels would share nothing
  static constexpr int down_panels = 1;

  template <int NM, int MR>
  static void compute(const uint8_t* const* w, int Kp, const ActView& act, const int* rows,
                      float32x4_t (&acc)[NM][MR][4]) {
    using Pairs = neon::RowPairs<MR>;
    constexpr int P = Pairs::P;
    const bfloat16_t* x[MR];
    for (int r = 0; r < MR; ++r) x[r] = bf16_row(act, rows[r]);
    const int blocks = Kp / Bf16Block::kK;
    for (int t = 0; t < NM; ++t) {
      float32x4_t z[P][8];
      for (int p = 0; p < P; ++p)
        for (int j = 0; j < 8; ++j) z[p][j] = vdupq_n_f32(0.f);
      int s = 0;
      for (; s + 2 <= blocks; s += 2) {
        neon::prefetch_stream(w[t] + size_t(s) * sizeof(Bf16Block));
        neon::prefetch_stream(w[t] + size_t(s + 1) * sizeof(Bf16Block));
        bfloat16x8_t a[P];
        for (int p = 0; p < P; ++p) a[p] = vcombine_bf16(vld1_bf16(x[2 * p] + 2 * s), vld1_bf16(x[Pairs::second(p)] + 2 * s));
        mmla_4k(z, a, [&](int q, bfloat16x8_t& lo, bfloat16x8_t& hi) {
          lo = block_reg(w[t], s, q);
          hi = block_reg(w[t], s + 1, q);
        });
      }
      if (s < blocks) {  // an odd number of blocks: k + 2, k + 3 are zeros on both sides
        bfloat16x8_t a[P];
        for (int p = 0; p < P; ++p) a[p] = vcombine_bf16(pair_then_zeros(x[2 * p] + 2 * s), pair_then_zeros(x[Pairs::second(p)] + 2 * s));
        mmla_4k(z, a, [&](int q, bfloat16x8_t& lo, bfloat16x8_t& hi) {
          lo = block_reg(w[t], s, q);
          hi = vreinterpretq_bf16_u32(vdupq_n_u32(0));
        });
      }
      // rows 2p and 2p + 1 unzipped from the 2x2 blocks
      for (int p = 0; p < P; ++p)
        for (int q = 0; q < 4; ++q) {
          acc[t][2 * p][q] = neon::first_row(z[p][2 * q], z[p][2 * q + 1]);
          if (2 * p + 1 < MR) acc[t][2 * p + 1][q] = neon::second_row(z[p][2 * q], z[p][2 * q + 1]);
        }
    }
  }

  // the k pair at x, then a zero pair
  static bfloat16x4_t pair_then_zeros(const bfloat16_t* x) {
    uint32_t v;
    std::memcpy(&v, x, 4);
    return vreinterpret_bf16_u32(vset_lane_u32(v, vdup_n_u32(0), 0));
  }

  // z[p][2q], z[p][2q+1] += row pair p x channel pairs of (lo_q, hi_q), q = 0..3; Halves(q, lo, hi)
  // gives channels 4q..4q+3's registers of k, k+1 and k+2, k+3 (i8mm_tile.h's mmla_8k with 4 k)
  template <int P, class Halves>
  static void mmla_4k(float32x4_t (&z)[P][8], const bfloat16x8_t (&a)[P], Halves halves) {
    for (int q = 0; q < 4; ++q) {
      asm volatile("" ::: "memory");  // as in mmla_8k: keeps the step's loads from spilling accumulators
      bfloat16x8_t lo, hi;
      halves(q, lo, hi);
      const uint32x4_t l = vreinterpretq_u32_bf16(lo), h = vreinterpretq_u32_bf16(hi);
      const bfloat16x8_t b0 = vreinterpretq_bf16_u32(vzip1q_u32(l, h)), b1 = vreinterpretq_bf16_u32(vzip2q_u32(l, h));
      for (int p = 0; p < P; ++p) {
        z[p][2 * q] = vbfmmlaq_f32(z[p][2 * q], a[p], b0);
        z[p][2 * q + 1] = vbfmmlaq_f32(z[p][2 * q + 1], a[p], b1);
      }
    }
  }
};

}  // namespace

void gateup_bf16_bf16_3x16__neonbf16(const GateUpArgs& a) { neon::gateup<Bf16DotTile>(a); }
void down_bf16_bf16_3x16__neonbf16(const DownArgs& a) { neon::down<Bf16DotTile>(a); }

void gateup_bf16_bf16_6x16__neonbf16(const GateUpArgs& a) { neon::gateup<Bf16MmlaTile>(a); }
void down_bf16_bf16_6x16__neonbf16(const DownArgs& a) { neon::down<Bf16MmlaTile>(a); }

KT_KERNEL_ROW(bf16, kNeonBf16Obj, bf16, bf16_bf16_3x16__neonbf16)
KT_TILE_ROW(bf16, kNeonBf16Obj, bf16, bf16_bf16_6x16__neonbf16, neon::kRowPairMinM)

}  // namespace kt
