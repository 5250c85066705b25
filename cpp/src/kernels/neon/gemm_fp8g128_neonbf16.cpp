// [NOTE] fp8_g128 weights x bf16 activations with the BF16 extension (neon_bf16), on the format's
// own packed layout: a vector row with BFDOT by lane (every bucket; decode) and a tile row with
// BFMMLA (from 2 tokens per expert; prefill). Every e4m3 value is a bf16 value (4 significant
// bits, exponents 2^-9 .. 2^8), so the weights widen exactly, byte by byte (as fp8_avx512.h). For
// b = s eeee mmm (exponent E, bias 7):
//   normal (E > 0): bf16 exponent E + 120, mantissa m << 4, so
//                   high byte = s | 60 + (E >> 1)   (TBL on b's high nibble s, E >> 1)
//                   low byte  = (E & 1) << 7 | m << 4 = b << 4   (SHL #4 of the byte)
//   E = 0:          m * 2^-9 (m = 0: zero), corrected by TBL on m: the high byte lowered by 1
//                   (m = 1..3) or 60 (zero), the low byte replaced; a word is tested for them once
//                   (AND, UMIN, UMINV) and corrected only where it has one (rare in real weights).
// A word's 16-byte register L (Fp8G128Block: channels 4L..4L+3) holds the pairs (k, k+1) of its 4
// channels in its low 8 bytes and (k+2, k+3) in its high 8; ZIP1 / ZIP2 of the low and high bytes
// give them as bf16, BFDOT's pairs. Per group of 128 k, for each row and matrix:
//   sum = sum_k e4m3(q[c,k]) x[k]  (BFDOT),   acc += sum * scale[c]
// which differs from the reference (w = e4m3 * scale per k, fp32 activations) by the activations'
// rounding to bf16 and the fp32 rounding order; BFDOT's own rounding (round to odd, denormals
// flushed: gemm_bf16_neonbf16.cpp's NOTE) is one more rounding-order difference.
// Vector row, decode: 1 B/weight (+ 64 B of scales per 2048 B); per 16 weights USHR + TBL + SHL +
// ZIP1 + ZIP2 and half an AND and UMIN for the test, per block of rows, and 2 BFDOT per row. Rows
// in blocks of 2 (gate + up, and down as 2 adjacent panels: 16 fp32 sums, a word's 8 widened
// registers).
// Tile row: the widened (k, k+1) and (k+2, k+3) registers of channels 4L..4L+3 zipped by 32-bit
// lanes (ZIP1/ZIP2) are two channel pairs x 4 k, BFMMLA's operand (as gemm_bf16_neonbf16.cpp's
// tile), each feeding one BFMMLA per row pair: per 16 weights the widening above plus 2 ZIP per
// block of 4 rows (2 row pairs: 16 fp32 sums, one matrix at a time; 3 pairs spilled), and 2 BFMMLA
// per row pair: about 12 vector instructions per 16 weights and 4 rows, where the vector row takes
// 19 (two blocks of 2 rows, each widening). The group's sums are scaled on the 2x2 blocks
// ([c c+1 c c+1] scales), rows unzipped at the end. Its pair steps are the vector row's, in the
// same order: both rows give the same bits (qemu: identical moe_check digests).
#include "kernels/kernel_registry.h"
#include "kernels/neon/i8mm_tile.h"

namespace kt {
namespace {

struct E4m3Tables {
  uint8x16_t hi;       // s << 3 | E >> 1  ->  s << 7 | 60 + (E >> 1)
  uint8x16_t hi_drop;  // E = 0: m -> what the high byte loses
  uint8x16_t lo;       // E = 0: m -> the low byte
  static E4m3Tables make() {
    static constexpr uint8_t kHi[16] = {60, 61, 62, 63, 64, 65, 66, 67, 0xbc, 0xbd, 0xbe, 0xbf, 0xc0, 0xc1, 0xc2, 0xc3};
    static constexpr uint8_t kHiDrop[16] = {60, 1, 1, 1};
    static constexpr uint8_t kLo[16] = {0, 0, 0x80, 0xc0, 0, 0x20, 0x40, 0x60};
    return {vld1q_u8(kHi), vld1q_u8(kHiDrop), vld1q_u8(kLo)};
  }
};

// Word g of a block as bf16 pairs: k01[L] = channels 4L..4L+3's (4g, 4g+1), k23[L] their (4g+2, 4g+3).
inline void fp8_word_to_bf16(const uint8_t* word, const E4m3Tables& tab, bfloat16x8_t (&k01)[4], bfloat16x8_t (&k23)[4]) {
  const uint8x16_t exponent = vdupq_n_u8(0x78);
  uint8x16_t v[4];
  for (int L = 0; L < 4; ++L) v[L] = vld1q_u8(word + 16 * L);
  uint8x16_t e = vandq_u8(v[0], exponent);
  for (int L = 1; L < 4; ++L) e = vminq_u8(e, vandq_u8(v[L], exponent));
  const bool subnormal = vminvq_u8(e) == 0;
  for (int L = 0; L < 4; ++L) {
    uint8x16_t hi = vqtbl1q_u8(tab.hi, vshrq_n_u8(v[L], 4)), lo = vshlq_n_u8(v[L], 4);
    if (__builtin_expect(subnormal, 0)) {
      const uint8x16_t e0 = vceqzq_u8(vandq_u8(v[L], exponent)), m = vandq_u8(v[L], vdupq_n_u8(0x0f));
      hi = vsubq_u8(hi, vandq_u8(e0, vqtbl1q_u8(tab.hi_drop, m)));
      lo = vbslq_u8(e0, vqtbl1q_u8(tab.lo, m), lo);
    }
    k01[L] = vreinterpretq_bf16_u8(vzip1q_u8(lo, hi));
    k23[L] = vreinterpretq_bf16_u8(vzip2q_u8(lo, hi));
  }
}

struct Fp8G128DotTile {
  static constexpr int max_rows(int nm) { return nm == 1 ? 4 : 2; }
  static constexpr int down_panels = 2;

  template <int NM, int MR>
  static void compute(const uint8_t* const* w, int Kp, const ActView& act, const int* rows,
                      float32x4_t (&acc)[NM][MR][4]) {
    const E4m3Tables tab = E4m3Tables::make();
    const bfloat16_t* x[MR];
    for (int r = 0; r < MR; ++r) x[r] = reinterpret_cast<const bfloat16_t*>(act.data + act.stride * size_t(rows[r]));
    for (int t = 0; t < NM; ++t)
      for (int r = 0; r < MR; ++r)
        for (int q = 0; q < 4; ++q) acc[t][r][q] = vdupq_n_f32(0.f);
    for (int grp = 0; grp < Kp / Fp8G128Block::kK; ++grp) {
      const Fp8G128Block* b[NM];
      for (int t = 0; t < NM; ++t) b[t] = reinterpret_cast<const Fp8G128Block*>(w[t]) + grp;
      float32x4_t sum[NM][MR][4];
      for (int t = 0; t < NM; ++t)
        for (int r = 0; r < MR; ++r)
          for (int q = 0; q < 4; ++q) sum[t][r][q] = vdupq_n_f32(0.f);
      // words 2i, 2i + 1 (8 k): one activation register per row, lanes 0, 1 then 2, 3
      for (int i = 0; i < Fp8G128Block::kWords / 2; ++i) {
        bfloat16x8_t xv[MR];
        for (int r = 0; r < MR; ++r) xv[r] = vld1q_bf16(x[r] + grp * Fp8G128Block::kK + 8 * i);
        word<0>(b, 2 * i, tab, xv, sum);
        word<2>(b, 2 * i + 1, tab, xv, sum);
      }
      // y += sum * scale (the group's scale per channel)
      for (int t = 0; t < NM; ++t)
        for (int q = 0; q < 4; ++q) {
          const float32x4_t s = vld1q_f32(b[t]->scale + 4 * q);
          for (int r = 0; r < MR; ++r) acc[t][r][q] = vfmaq_f32(acc[t][r][q], sum[t][r][q], s);
        }
    }
  }

  // sum += word g of each matrix x lanes L (k, k+1), L + 1 (k+2, k+3) of xv
  template <int L, int NM, int MR>
  static void word(const Fp8G128Block* const (&b)[NM], int g, const E4m3Tables& tab, const bfloat16x8_t (&xv)[MR],
                   float32x4_t (&sum)[NM][MR][4]) {
    for (int t = 0; t < NM; ++t) {
      neon::prefetch_stream(b[t]->q[g]);
      bfloat16x8_t k01[4], k23[4];
      fp8_word_to_bf16(b[t]->q[g], tab, k01, k23);
      for (int q = 0; q < 4; ++q)
        for (int r = 0; r < MR; ++r) {
          sum[t][r][q] = vbfdotq_laneq_f32(sum[t][r][q], k01[q], xv[r], L);
          sum[t][r][q] = vbfdotq_laneq_f32(sum[t][r][q], k23[q], xv[r], L + 1);
        }
    }
  }
};

struct Fp8G128MmlaTile {
  static constexpr int max_rows(int) { return 4; }
  // one matrix per K pass (its sums fill the registers): adjacent panels would share nothing
  static constexpr int down_panels = 1;

  template <int NM, int MR>
  static void compute(const uint8_t* const* w, int Kp, const ActView& act, const int* rows,
                      float32x4_t (&acc)[NM][MR][4]) {
    using Pairs = neon::RowPairs<MR>;
    constexpr int P = Pairs::P;
    const E4m3Tables tab = E4m3Tables::make();
    const bfloat16_t* x[MR];
    for (int r = 0; r < MR; ++r) x[r] = reinterpret_cast<const bfloat16_t*>(act.data + act.stride * size_t(rows[r]));
    for (int t = 0; t < NM; ++t) {
      float32x4_t y[P][8];  // the rows' results, 2x2 blocks as the sums
      for (int p = 0; p < P; ++p)
        for (int j = 0; j < 8; ++j) y[p][j] = vdupq_n_f32(0.f);
      for (int grp = 0; grp < Kp / Fp8G128Block::kK; ++grp) {
        const Fp8G128Block* b = reinterpret_cast<const Fp8G128Block*>(w[t]) + grp;
        float32x4_t z[P][8];
        for (int p = 0; p < P; ++p)
          for (int j = 0; j < 8; ++j) z[p][j] = vdupq_n_f32(0.f);
        for (int g = 0; g < Fp8G128Block::kWords; ++g) {
          neon::prefetch_stream(b->q[g]);
          const int k = grp * Fp8G128Block::kK + 4 * g;
          bfloat16x8_t a[P];
          for (int p = 0; p < P; ++p) a[p] = vcombine_bf16(vld1_bf16(x[2 * p] + k), vld1_bf16(x[Pairs::second(p)] + k));
          bfloat16x8_t k01[4], k23[4];
          fp8_word_to_bf16(b->q[g], tab, k01, k23);
          // (k, k+1) and (k+2, k+3) of channels 4L..4L+3 zipped: channel pairs x 4 k, BFMMLA's operand
          for (int L = 0; L < 4; ++L) {
            const uint32x4_t l = vreinterpretq_u32_bf16(k01[L]), h = vreinterpretq_u32_bf16(k23[L]);
            const bfloat16x8_t b0 = vreinterpretq_bf16_u32(vzip1q_u32(l, h)), b1 = vreinterpretq_bf16_u32(vzip2q_u32(l, h));
            for (int p = 0; p < P; ++p) {
              z[p][2 * L] = vbfmmlaq_f32(z[p][2 * L], a[p], b0);
              z[p][2 * L + 1] = vbfmmlaq_f32(z[p][2 * L + 1], a[p], b1);
            }
          }
        }
        // y += sum * scale, the scales laid out as [c c+1 c c+1]
        for (int q = 0; q < 4; ++q) {
          const float32x4_t s = vld1q_f32(b->scale + 4 * q), sp[2] = {neon::pair_lo(s), neon::pair_hi(s)};
          for (int p = 0; p < P; ++p)
            for (int h = 0; h < 2; ++h) y[p][2 * q + h] = vfmaq_f32(y[p][2 * q + h], z[p][2 * q + h], sp[h]);
        }
      }
      // rows 2p and 2p + 1 unzipped from the 2x2 blocks
      for (int p = 0; p < P; ++p)
        for (int q = 0; q < 4; ++q) {
          acc[t][2 * p][q] = neon::first_row(y[p][2 * q], y[p][2 * q + 1]);
          if (2 * p + 1 < MR) acc[t][2 * p + 1][q] = neon::second_row(y[p][2 * q], y[p][2 * q + 1]);
        }
    }
  }
};

}  // namespace

void gateup_fp8g128_bf16_2x16__neonbf16(const GateUpArgs& a) { neon::gateup<Fp8G128DotTile>(a); }
void down_fp8g128_bf16_2x16__neonbf16(const DownArgs& a) { neon::down<Fp8G128DotTile>(a); }

void gateup_fp8g128_bf16_4x16__neonbf16(const GateUpArgs& a) { neon::gateup<Fp8G128MmlaTile>(a); }
void down_fp8g128_bf16_4x16__neonbf16(const DownArgs& a) { neon::down<Fp8G128MmlaTile>(a); }

KT_KERNEL_ROW(fp8_g128, kNeonBf16Obj, bf16, fp8g128_bf16_2x16__neonbf16)
KT_TILE_ROW(fp8_g128, kNeonBf16Obj, bf16, fp8g128_bf16_4x16__neonbf16, neon::kRowPairMinM)

}  // namespace kt
