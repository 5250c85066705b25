// [NOTE] fp8_g128 weights x bf16 activations with SVE's BF16 instructions, for any vector length,
// on the format's own packed layout (the neon_bf16 rows' structure: gemm_fp8g128_neonbf16.cpp): a
// vector row with BFDOT by index (every bucket; decode) and a tile row with BFMMLA (from 2 tokens
// per expert; prefill). Per group of 128 k, for each row and matrix:
//   sum = sum_k e4m3(q[c,k]) x[k]  (BFDOT / BFMMLA),   y[c] += sum * scale[c]
// which differs from the reference (w = e4m3 * scale per k, fp32 activations) by the activations'
// rounding to bf16, the BF16 instructions' own rounding and the fp32 rounding order (as neon_bf16).
//
// e4m3 -> bf16, exact for all 256 codes: every e4m3 value is a bf16 value, built byte by byte (TBL
// on the high nibble, LSL #4 for the low byte: the neon_bf16 tables; SVE's TBL reads them from the
// first 16 bytes of the vector at every VL). The codes the tables miss, exponent 0 (subnormals
// m 2^-9, +-0) and NaN (0x7f, 0xff), are those with 2 (b + 1) mod 256 <= 16 (MAD, CMPLS): a load
// holding one takes a branch that corrects them by tables on b & 15, so that NaN codes decode to
// NaN as in the reference (the loader refuses them; neon_bf16 reads them as +-480).
//
// Layout: word g (k 4g..4g+3) of a block is 64 bytes, 16 a lane L = channels 4L..4L+3. ZIP1 / ZIP2
// of a load's low and high bytes give its bf16 in byte order; per VL (a load, the vectors of a word):
//   VL 128:     16 B (one lane L), ZIP1 + ZIP2: 8 vectors a word
//   VL 256:     32 B (L, L + 1): 4 vectors       VL 512: 64 B (the word): 2 vectors
//   VL >= 1024: the word under a predicate, ZIP1 alone: 1 vector (the lanes past its 32 unused; 2
//               words a vector at 2048 bits would halve the instructions again, left undone)
// Vector row: each 128-bit segment of a word's bf16 holds one lane L's pairs (k 4g + 2h, +1) of its
// 4 channels, h = 0 (first 8 bytes) or 1. BFDOT's index picks x's pair within each segment: a
// row's activation register (8 k, pairs p0..p3, LD1RQ) is staggered by TBL at VL >= 256 so that
// odd segments (h = 1) read p1.. where even ones read p0.., and index 2w serves word w of the two
// (VL 128: index 2w + h, h and 1 - h summed in one register). The sums, by "slot" 8L + 4h + j
// (channel 4L + j, pair h), are scaled per group into fp32 accumulators in L1 (scale by slot: LD1RQ
// at VL 128/256, LD1 + TBL above; then LD1W, FMLA, ST1W a sum), the two pairs added at the end.
//   decode (M = 1): 1 B/weight + 64 B of scales per 2048 B (1.03 B/weight); per load 10
//   instructions (LD1B, LSR, TBL, LSL, MOVPRFX + MAD, CMPLS, B.ANY, ZIP1, ZIP2; 9 at >= 1024): 0.63,
//   0.31, 0.16, 0.14 a weight at VL 128, 256, 512, >= 1024; per row one BFDOT per 8, 16, 32, 64
//   weights; per row and 8 k one LD1RQ (+ TBL at VL >= 256).
// Tile row: a TBL first puts each segment's bytes channel-major (c: k..k+3 for 4 channels), so
// that ZIP1 / ZIP2 give segments of 2 channels x 4 k: BFMMLA's right operand. Its left one, 2 rows
// x 4 k, is TRN1 / TRN2 (64-bit) of the two rows' LD1RQ (8 k): words 2i and 2i + 1. A BFMMLA adds
// rows (r, r') x channels (c, c+1) into [r c, r c+1, r' c, r' c+1] per segment; scaled per group by
// [s_c, s_c+1] twice (LD1D + ZIP1), the rows unzipped at the end. One matrix per K pass.
//   per load 11 instructions (the vector row's + the TBL), shared by the block's row pairs; per row
//   pair one BFMMLA per 8, 16, 32, 64 weights at VL 128, 256, 512, >= 1024 (16 multiply-adds per
//   segment where BFDOT has 8); per row pair and 8 k 2 LD1RQ + TRN1 + TRN2.
// Row blocks: vector row gate/up 2, 2, 4 rows at VL 128, 256, >= 512, down 4 (it takes 1-token
// buckets once the tile row pairs with it); tile row 4, 6, 8 rows (2, 3, 4 pairs): sums + the
// activation registers <= 24 vectors.
// No software prefetch (left to the hardware prefetchers; not measured on SVE hardware yet).
#include "kernels/kernel_registry.h"
#include "kernels/sve/mmla_tile.h"
#include "kernels/sve/sve_driver.h"

namespace kt {
namespace {

using sve::Ix;
using sve::unroll;

// e4m3 b = s eeee mmm (exponent E, bias 7) to bf16 (exponent E + 120, mantissa m << 4):
//   high byte = kHi[b >> 4] = s | 60 + (E >> 1),   low byte = b << 4 = (E & 1) << 7 | m << 4
// Corrections by b & 15 (m for E = 0, 15 for NaN): high byte minus kHiDrop, low byte kLo:
//   m = 0: +-0;  m = 1..3: exponent 118, 119;  m = 4..7: exponent 120;  15: 0x7f (NaN), 0xc0
constexpr uint8_t kHi[16] = {60, 61, 62, 63, 64, 65, 66, 67, 0xbc, 0xbd, 0xbe, 0xbf, 0xc0, 0xc1, 0xc2, 0xc3};
constexpr uint8_t kHiDrop[16] = {60, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, uint8_t(67 - 0x7f)};
constexpr uint8_t kLo[16] = {0, 0, 0x80, 0xc0, 0, 0x20, 0x40, 0x60, 0, 0, 0, 0, 0, 0, 0, 0xc0};

// A lane L's 16 bytes channel-major: c: k, k+1 sit at 2c, 2c+1 and k+2, k+3 at 8+2c, 9+2c.
constexpr uint8_t kChannelMajor[16] = {0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15};

// The e4m3 bytes b (lanes pb) as the low (lo) and high (hi) bytes of their bf16: ZIP1 / ZIP2 of
// lo and hi give the bf16 in b's order. tab_hi = kHi, two = 2 in every byte.
[[gnu::always_inline]] inline void e4m3_to_bf16_bytes(svbool_t pb, svuint8_t b, svuint8_t tab_hi, svuint8_t two,
                                                      svuint8_t& lo, svuint8_t& hi) {
  hi = svtbl_u8(tab_hi, svlsr_n_u8_x(pb, b, 4));
  lo = svlsl_n_u8_x(pb, b, 4);
  // exponent 0 (0x00..0x07, 0x80..0x87) and NaN (0x7f, 0xff): 2 (b + 1) mod 256 <= 16
  const svbool_t special = svcmple_n_u8(pb, svmad_u8_x(pb, b, two, two), 16);
  if (__builtin_expect(svptest_any(pb, special), 0)) {
    const svbool_t all = svptrue_b8();
    const svuint8_t m = svand_n_u8_x(pb, b, 0x0f);
    hi = svsub_u8_m(special, hi, svtbl_u8(svld1rq_u8(all, kHiDrop), m));
    lo = svsel_u8(special, svtbl_u8(svld1rq_u8(all, kLo), m), lo);
  }
}

// How a 64-byte word becomes bf16 vectors at VB bytes a vector (16, 32, 64; 128 stands for every
// VL from 1024 bits, which uses the first 128 bytes): vector v = load v / kZips, ZIP1 or ZIP2.
template <int VB>
struct WordShape {
  static constexpr int kLoadBytes = VB < 64 ? VB : 64;
  static constexpr int kLoads = 64 / kLoadBytes;
  static constexpr int kZips = VB <= 64 ? 2 : 1;
  static constexpr int kVectors = kLoads * kZips;
  static constexpr int kLanes = 32 / kVectors;  // 32-bit lanes of a vector in use: 4, 8, 16, 32
  static svbool_t load_bytes() { return VB <= 64 ? svptrue_b8() : svwhilelt_b8(0, 64); }
  static svbool_t lanes() { return VB <= 64 ? svptrue_b32() : svwhilelt_b32(0, kLanes); }
  // vector row: its sums of a row and matrix, the one vector v adds to (VL 128: both pairs h of a
  // lane L in one), and BFDOT's index for v in word w (0, 1) of an activation register
  static constexpr int kSums = VB == 16 ? 4 : kVectors;
  static constexpr int sum_of(int v) { return VB == 16 ? v / 2 : v; }
  static constexpr int index_of(int v, int w) { return 2 * w + (VB == 16 ? v % 2 : 0); }
};

// compute (sve_driver.h's Tile policy) at the vector length: VPP 4, 2 are VL 128, 256; VPP 1 is
// 512 or (as 1024) longer.
template <class Tile>
struct ByVectorLength {
  template <int VPP, int NM, int MR>
  static void compute(const uint8_t* const* w, int Kp, const ActView& act, const int* rows,
                      float (&y)[NM][MR][kPanelN]) {
    if constexpr (VPP == 4) Tile::template run<16, NM, MR>(w, Kp, act, rows, y);
    else if constexpr (VPP == 2) Tile::template run<32, NM, MR>(w, Kp, act, rows, y);
    else if (svcntb() == 64) Tile::template run<64, NM, MR>(w, Kp, act, rows, y);
    else Tile::template run<128, NM, MR>(w, Kp, act, rows, y);
  }
};

struct Fp8G128BfdotTile : ByVectorLength<Fp8G128BfdotTile> {
  static constexpr int sums_per_row(int vpp) { return vpp == 1 ? 2 : 4; }  // of a matrix
  static constexpr int max_rows(int vpp, int nm) {
    return 24 / (nm * sums_per_row(vpp) + 1) < 4 ? 24 / (nm * sums_per_row(vpp) + 1) : 4;
  }

  template <int VB, int NM, int MR>
  static void run(const uint8_t* const* w, int Kp, const ActView& act, const int* rows,
                  float (&y)[NM][MR][kPanelN]) {
    using S = WordShape<VB>;
    constexpr int kSums = S::kSums;
    static_assert(NM * MR * kSums <= sve::kBank && MR <= sve::kBank);
    const svbool_t all32 = svptrue_b32(), pb = S::load_bytes(), ps = S::lanes();
    const svuint8_t tab_hi = svld1rq_u8(svptrue_b8(), kHi), two = svdup_n_u8(2);
    // activation lane i <- pair i % 4 + (segment i / 4) % 2: odd segments one pair on
    const svuint32_t lane = svindex_u32(0, 1);
    const svuint32_t stagger =
        svadd_u32_x(all32, svand_n_u32_x(all32, lane, 3), svand_n_u32_x(all32, svlsr_n_u32_x(all32, lane, 2), 1));
    const uint32_t* x[MR];  // bf16 pairs
    for (int r = 0; r < MR; ++r) x[r] = reinterpret_cast<const uint32_t*>(act.data + act.stride * size_t(rows[r]));
    alignas(64) float acc[NM][MR][32] = {};  // sum * scale over the groups, by slot (VL 128: by channel)
    KT_SVE_BANK(svfloat32_t, sum, svdup_n_f32(0.f));                          // sum(t, r, a) at (t MR + r) kSums + a
    KT_SVE_BANK(svbfloat16_t, xr, svreinterpret_bf16_u32(svdup_n_u32(0)));  // xr(r): row r's 8 k

    // word g of each matrix's block with word W of the activation registers: sum += w . x
    auto word = [&](const Fp8G128Block* const (&blk)[NM], auto wi, int g) {
      constexpr int W = decltype(wi)::value;
      unroll<NM>([&](auto t) {
        unroll<S::kLoads>([&](auto j) {
          constexpr int J = decltype(j)::value;
          svuint8_t lo, hi;
          e4m3_to_bf16_bytes(pb, svld1_u8(pb, blk[t]->q[g] + J * S::kLoadBytes), tab_hi, two, lo, hi);
          unroll<S::kZips>([&](auto z) {
            constexpr int v = J * S::kZips + decltype(z)::value;
            const svbfloat16_t wv = svreinterpret_bf16_u8(decltype(z)::value == 0 ? svzip1_u8(lo, hi) : svzip2_u8(lo, hi));
            unroll<MR>([&](auto r) {
              svfloat32_t& s = sum(Ix<(t * MR + r) * kSums + S::sum_of(v)>{});
              s = svbfdot_lane_f32(s, wv, xr(r), S::index_of(v, W));
            });
          });
        });
      });
    };

    // the group's scale of each slot of sum a: LD1RQ of channels 4a..4a+3 at VL 128 and 256,
    // channel 4 (slot / 8) + slot % 4 by TBL above
    auto scale_of = [&](const float* scale, auto a) {
      constexpr int A = decltype(a)::value;
      if constexpr (VB <= 32) {
        return svld1rq_f32(all32, scale + 4 * A);
      } else {
        const svuint32_t slot = svindex_u32(A * S::kLanes, 1);
        const svuint32_t channel = svorr_u32_x(all32, svand_n_u32_x(all32, svlsr_n_u32_x(all32, slot, 1), ~3u),
                                               svand_n_u32_x(all32, slot, 3));
        return svtbl_f32(svld1_f32(svwhilelt_b32(0, kPanelN), scale), channel);
      }
    };

    for (int grp = 0; grp < Kp / Fp8G128Block::kK; ++grp) {
      const Fp8G128Block* blk[NM];
      for (int t = 0; t < NM; ++t) blk[t] = reinterpret_cast<const Fp8G128Block*>(w[t]) + grp;
      unroll<NM * MR * kSums>([&](auto i) { sum(i) = svdup_n_f32(0.f); });
      // words 2i, 2i + 1 (8 k): one activation register per row
      for (int i = 0; i < Fp8G128Block::kWords / 2; ++i) {
        const int pair = (grp * Fp8G128Block::kK + 8 * i) / 2;
        unroll<MR>([&](auto r) {
          svuint32_t q = svld1rq_u32(all32, x[r] + pair);
          if constexpr (VB > 16) q = svtbl_u32(q, stagger);
          xr(r) = svreinterpret_bf16_u32(q);
        });
        word(blk, Ix<0>{}, 2 * i);
        word(blk, Ix<1>{}, 2 * i + 1);
      }
      // acc += sum * scale
      unroll<NM>([&](auto t) {
        unroll<kSums>([&](auto a) {
          const svfloat32_t sc = scale_of(blk[t]->scale, a);
          unroll<MR>([&](auto r) {
            float* p = acc[t][r] + a * S::kLanes;
            svst1_f32(ps, p, svmla_f32_x(ps, svld1_f32(ps, p), sum(Ix<(t * MR + r) * kSums + a>{}), sc));
          });
        });
      });
    }

    // y[c] = the sum of channel c's two pairs' slots (VL 128: acc is by channel already)
    for (int t = 0; t < NM; ++t)
      for (int r = 0; r < MR; ++r)
        for (int c = 0; c < kPanelN; ++c) {
          const float* slots = acc[t][r] + 8 * (c / 4) + c % 4;
          y[t][r][c] = VB == 16 ? acc[t][r][c] : slots[0] + slots[4];
        }
  }
};

struct Fp8G128BfmmlaTile : ByVectorLength<Fp8G128BfmmlaTile> {
  static constexpr int max_rows(int vpp, int) { return vpp == 4 ? 4 : vpp == 2 ? 6 : 8; }

  template <int VB, int NM, int MR>
  static void run(const uint8_t* const* w, int Kp, const ActView& act, const int* rows,
                  float (&y)[NM][MR][kPanelN]) {
    using S = WordShape<VB>;
    constexpr int P = (MR + 1) / 2;  // row pairs 2p, 2p + 1 (an odd block's last row paired with itself)
    constexpr int kChannelPairs = S::kLanes / 4;  // a vector's segments: 1, 2, 4, 8
    static_assert(P * S::kVectors <= sve::kBank && 2 * P <= sve::kBank);
    const svbool_t all8 = svptrue_b8(), pb = S::load_bytes(), ps = S::lanes();
    const svuint8_t tab_hi = svld1rq_u8(all8, kHi), two = svdup_n_u8(2);
    // byte i <- byte kChannelMajor[i % 16] of the same segment
    const svuint8_t channel_major =
        svadd_u8_x(all8, svld1rq_u8(all8, kChannelMajor), svand_n_u8_x(all8, svindex_u8(0, 1), 0xf0));
    const uint64_t* x[MR];  // 4 bf16 a lane
    for (int r = 0; r < MR; ++r) x[r] = reinterpret_cast<const uint64_t*>(act.data + act.stride * size_t(rows[r]));
    KT_SVE_BANK(svfloat32_t, sum, svdup_n_f32(0.f));  // sum(p, v) at p kVectors + v: pair p x vector v's channel pairs
    KT_SVE_BANK(svbfloat16_t, xa, svreinterpret_bf16_u64(svdup_n_u64(0)));  // xa(2p + w): pair p's 4 k of word w

    for (int t = 0; t < NM; ++t) {
      alignas(64) float acc[P][32] = {};  // sum * scale over the groups: [r c, r c+1, r' c, r' c+1] for c = 0, 2, ..
      for (int grp = 0; grp < Kp / Fp8G128Block::kK; ++grp) {
        const Fp8G128Block* blk = reinterpret_cast<const Fp8G128Block*>(w[t]) + grp;
        unroll<P * S::kVectors>([&](auto i) { sum(i) = svdup_n_f32(0.f); });
        for (int i = 0; i < Fp8G128Block::kWords / 2; ++i) {
          // words 2i, 2i + 1 (8 k): TRN1 / TRN2 of two rows' 8 k give each word's [r: 4 k | r': 4 k]
          const int quad = (grp * Fp8G128Block::kK + 8 * i) / 4;
          unroll<P>([&](auto p) {
            constexpr int r0 = 2 * p, r1 = 2 * p + 1 < MR ? 2 * p + 1 : 2 * p;
            const svuint64_t a = svld1rq_u64(svptrue_b64(), x[r0] + quad), b = svld1rq_u64(svptrue_b64(), x[r1] + quad);
            xa(Ix<2 * p>{}) = svreinterpret_bf16_u64(svtrn1_u64(a, b));
            xa(Ix<2 * p + 1>{}) = svreinterpret_bf16_u64(svtrn2_u64(a, b));
          });
          unroll<2>([&](auto wi) {
            unroll<S::kLoads>([&](auto j) {
              constexpr int J = decltype(j)::value;
              const svuint8_t q = svld1_u8(pb, blk->q[2 * i + decltype(wi)::value] + J * S::kLoadBytes);
              svuint8_t lo, hi;
              e4m3_to_bf16_bytes(pb, svtbl_u8(q, channel_major), tab_hi, two, lo, hi);
              unroll<S::kZips>([&](auto z) {
                constexpr int v = J * S::kZips + decltype(z)::value;
                const svbfloat16_t wv = svreinterpret_bf16_u8(decltype(z)::value == 0 ? svzip1_u8(lo, hi) : svzip2_u8(lo, hi));
                unroll<P>([&](auto p) {
                  svfloat32_t& s = sum(Ix<p * S::kVectors + v>{});
                  s = svbfmmla_f32(s, xa(Ix<2 * p + wi>{}), wv);
                });
              });
            });
          });
        }
        // acc += sum * scale, the scales of channel pair (c, c+1) as [s_c, s_c+1, s_c, s_c+1]
        unroll<S::kVectors>([&](auto v) {
          const svuint64_t s = svld1_u64(svwhilelt_b64(0, kChannelPairs),
                                         reinterpret_cast<const uint64_t*>(blk->scale) + v * kChannelPairs);
          const svfloat32_t sc = svreinterpret_f32_u64(svzip1_u64(s, s));
          unroll<P>([&](auto p) {
            float* a = acc[p] + v * S::kLanes;
            svst1_f32(ps, a, svmla_f32_x(ps, svld1_f32(ps, a), sum(Ix<p * S::kVectors + v>{}), sc));
          });
        });
      }
      // rows 2p and 2p + 1 from the 2x2 blocks
      for (int p = 0; p < P; ++p)
        for (int c = 0; c < kPanelN; ++c) {
          y[t][2 * p][c] = acc[p][4 * (c / 2) + c % 2];
          if (2 * p + 1 < MR) y[t][2 * p + 1][c] = acc[p][4 * (c / 2) + 2 + c % 2];
        }
    }
  }
};

}  // namespace

void gateup_fp8g128_bf16_4x16__sve(const GateUpArgs& a) { sve::gateup<Fp8G128BfdotTile>(a); }
void down_fp8g128_bf16_4x16__sve(const DownArgs& a) { sve::down<Fp8G128BfdotTile>(a); }

void gateup_fp8g128_bf16_8x16__sve(const GateUpArgs& a) { sve::gateup<Fp8G128BfmmlaTile>(a); }
void down_fp8g128_bf16_8x16__sve(const DownArgs& a) { sve::down<Fp8G128BfmmlaTile>(a); }

KT_KERNEL_ROW(fp8_g128, kSveObj, bf16, fp8g128_bf16_4x16__sve)
KT_TILE_ROW(fp8_g128, kSveObj, bf16, fp8g128_bf16_8x16__sve, sve::kRowPairMinM)

}  // namespace kt
