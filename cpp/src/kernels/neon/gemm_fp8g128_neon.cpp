// [NOTE] fp8_g128 weights x fp32 activations with baseline ARMv8-A NEON (neon: Neoverse N1,
// Graviton 2, Kunpeng 920, which lack the BF16 extension), on the format's own packed layout
// (Fp8G128Block: word g = k 4g..4g+3 of the 16 channels, its 16-byte register L = channels
// 4L..4L+3, pairs (4g, 4g+1) in the low 8 bytes and (4g+2, 4g+3) in the high 8).
// Widening, exact: every e4m3 value is a bf16 value (4 significant bits, exponents 2^-9 .. 2^8).
// For b = s eeee mmm (exponent E, bias 7):
//   E > 0:  bf16 exponent E + 120, mantissa m << 4, so
//           high byte = s | 60 + (E >> 1)   (TBL on b >> 4 = s, E >> 1)
//           low byte  = (E & 1) << 7 | m << 4 = b << 4   (SHL #4)
//   E = 0:  m * 2^-9 (m = 0: signed zero), high and low bytes from two tables on m, the sign ORed
//           back; each word of a matrix is tested once (AND, UMIN, UMINV) and fixed only when it
//           has such a code (rare in real weights).
// (The NaN codes 0x7f / 0xff, which the format refuses at load, would widen to +-480.)
// ZIP1 / ZIP2 of the low and high bytes give each channel's (4g, 4g+1) resp. (4g+2, 4g+3) as one
// 32-bit lane of bf16 pairs; SHL #16 makes the first fp32, AND with 0xffff0000 the second (as
// gemm_bf16_neon.cpp). Each fp32 register (one k of 4 channels) then feeds one FMLA by lane per
// row. Per group of 128 k, for each row and channel:
//   sum = sum_k e4m3(q[c,k]) x[k]   (fp32 FMLA, k in order),   y += sum * scale[c]   (FMLA)
// The reference (gemm_fp8g128_ref.cpp) computes y += (e4m3 * scale) * x per k, rounding the
// weight, the product and the sum; here e4m3 * x is exact inside the fused FMLA and the scale is
// applied once per group (as gemm_fp8g128_avx512bf16.cpp; the f32 x86 kernels instead multiply
// each weight by its scale, the reference's weight bit for bit): the results differ by that fp32
// rounding order, a few 1e-7 of the largest output (rows_check).
// Per 16 weights (one register): USHR + TBL + SHL, ZIP1 + ZIP2, 2 SHL + 2 AND = 9 widening
// instructions, 2.5 for the test (per 64: 4 AND, 3 UMIN, UMINV, UMOV, branch), then 4 FMLA per row.
// decode: 1 B/weight (+ 64 B of scales per 2048 B). gcc 12's loop per word (64 weights of each
// matrix): gate + up 139 instructions for 2 x 64 weights (1.1 per weight: 0.56 widening, 0.16
// test, 0.25 FMLA), down 79 for 64.
// prefill: rows in blocks of 2 for gate + up and of 4 for down (16 fp32 group sums in registers),
// so each widened register feeds 2 (4) FMLA: per word 184 instructions with 64 FMLA (gate + up,
// 2 x 64 weights x 2 rows; 7 of them spill loads / stores) and 137 with 64 FMLA (down, 64 weights
// x 4 rows). The widening stays a third to half of the work: a tile that widens a group once for
// more rows (through a buffer in L1) is left to do.
#include "kernels/kernel_registry.h"
#include "kernels/neon/neon_driver.h"

namespace kt {
namespace {

struct E4m3Bf16Bytes {
  uint8x16_t high;      // b >> 4 = s << 3 | E >> 1  ->  s << 7 | 60 + (E >> 1)
  uint8x16_t sub_high;  // E = 0: m -> high byte of m * 2^-9, unsigned
  uint8x16_t sub_low;   // E = 0: m -> low byte of m * 2^-9
  static E4m3Bf16Bytes make() {
    static constexpr uint8_t kHigh[16] = {60, 61, 62, 63, 64, 65, 66, 67, 0xbc, 0xbd, 0xbe, 0xbf, 0xc0, 0xc1, 0xc2, 0xc3};
    // m = 1: 2^-9 (exponent 118); 2, 3: 2^-8 (119), mantissa 0, .1; 4..7: 2^-7 (120), .00 .. .11
    static constexpr uint8_t kSubHigh[16] = {0, 59, 59, 59, 60, 60, 60, 60};
    static constexpr uint8_t kSubLow[16] = {0, 0, 0x80, 0xc0, 0, 0x20, 0x40, 0x60};
    return {vld1q_u8(kHigh), vld1q_u8(kSubHigh), vld1q_u8(kSubLow)};
  }
};

// true when a word's registers hold an e4m3 code with E = 0 (subnormal or zero)
[[gnu::always_inline]] inline bool has_exponent_zero(const uint8x16_t (&v)[4]) {
  const uint8x16_t exponent = vdupq_n_u8(0x78);
  uint8x16_t e = vandq_u8(v[0], exponent);
  for (int L = 1; L < 4; ++L) e = vminq_u8(e, vandq_u8(v[L], exponent));
  return vminvq_u8(e) == 0;
}

// The bf16 bytes of a word's 4 registers (4 channels x k 4g..4g+3 each), right where E > 0.
[[gnu::always_inline]] inline void e4m3_bf16_bytes(const uint8x16_t (&v)[4], const E4m3Bf16Bytes& tab, uint8x16_t (&high)[4],
                                                   uint8x16_t (&low)[4]) {
  for (int L = 0; L < 4; ++L) {
    high[L] = vqtbl1q_u8(tab.high, vshrq_n_u8(v[L], 4));
    low[L] = vshlq_n_u8(v[L], 4);
  }
}

// The codes with E = 0 (m * 2^-9, signed) take their bytes from the tables on m. Read from the
// bytes themselves (the codes are dead by then): E = 0 where high & 0x7f = 60 (E >> 1 = 0) and
// low < 0x80 (E & 1 = 0); there low >> 4 = m.
[[gnu::always_inline]] inline void fix_exponent_zero(const E4m3Bf16Bytes& tab, uint8x16_t (&high)[4], uint8x16_t (&low)[4]) {
  for (int L = 0; L < 4; ++L) {
    const uint8x16_t e0 = vandq_u8(vceqq_u8(vandq_u8(high[L], vdupq_n_u8(0x7f)), vdupq_n_u8(60)),
                                   vcgezq_s8(vreinterpretq_s8_u8(low[L])));
    const uint8x16_t m = vshrq_n_u8(low[L], 4);
    high[L] = vbslq_u8(e0, vorrq_u8(vqtbl1q_u8(tab.sub_high, m), vandq_u8(high[L], vdupq_n_u8(0x80))), high[L]);
    low[L] = vbslq_u8(e0, vqtbl1q_u8(tab.sub_low, m), low[L]);
  }
}

// One register's bf16 bytes as fp32: w[i] = its 4 channels' k 4g + i. ZIP1 / ZIP2 give each
// channel's bf16 pair (k, k+1) as one 32-bit lane: fp32 of k by SHL #16, of k+1 by AND.
[[gnu::always_inline]] inline void bf16_bytes_to_f32(uint8x16_t high, uint8x16_t low, float32x4_t (&w)[4]) {
  const uint32x4_t k01 = vreinterpretq_u32_u8(vzip1q_u8(low, high)), k23 = vreinterpretq_u32_u8(vzip2q_u8(low, high));
  const uint32x4_t upper = vdupq_n_u32(0xffff0000u);
  w[0] = vreinterpretq_f32_u32(vshlq_n_u32(k01, 16));
  w[1] = vreinterpretq_f32_u32(vandq_u32(k01, upper));
  w[2] = vreinterpretq_f32_u32(vshlq_n_u32(k23, 16));
  w[3] = vreinterpretq_f32_u32(vandq_u32(k23, upper));
}

struct Fp8G128Tile {
  // the 4 NM MR group sums in registers; the group-scaled results y, touched once per 128 k, on
  // the stack where they do not fit
  static constexpr int max_rows(int nm) { return nm == 1 ? 4 : 2; }
  // adjacent panels would share only the activation loads; 4 rows share each widened register
  static constexpr int down_panels = 1;

  template <int NM, int MR>
  static void compute(const uint8_t* const* w, int Kp, const ActView& act, const int* rows,
                      float32x4_t (&acc)[NM][MR][4]) {
    const E4m3Bf16Bytes tab = E4m3Bf16Bytes::make();
    const float* x[MR];
    for (int r = 0; r < MR; ++r) x[r] = reinterpret_cast<const float*>(act.data + act.stride * size_t(rows[r]));
    float32x4_t y[NM][MR][4];
    for (int t = 0; t < NM; ++t)
      for (int r = 0; r < MR; ++r)
        for (int q = 0; q < 4; ++q) y[t][r][q] = vdupq_n_f32(0.f);
    for (int grp = 0; grp < Kp / Fp8G128Block::kK; ++grp) {
      const Fp8G128Block* b[NM];
      for (int t = 0; t < NM; ++t) {
        b[t] = reinterpret_cast<const Fp8G128Block*>(w[t]) + grp;
        neon::prefetch_stream(reinterpret_cast<const uint8_t*>(b[t]->scale));
      }
      float32x4_t sum[NM][MR][4];
      for (int t = 0; t < NM; ++t)
        for (int r = 0; r < MR; ++r)
          for (int q = 0; q < 4; ++q) sum[t][r][q] = vdupq_n_f32(0.f);
      for (int g = 0; g < Fp8G128Block::kWords; ++g) {
        float32x4_t xv[MR];
        for (int r = 0; r < MR; ++r) xv[r] = vld1q_f32(x[r] + grp * Fp8G128Block::kK + 4 * g);
#pragma GCC unroll 4
        for (int t = 0; t < NM; ++t) {
          // Each matrix's multiply-adds follow its own test (another basic block), and gcc would
          // hoist the activation lanes they share above both as DUPs: 4 MR more live registers,
          // spilled. The empty asm makes each matrix's lanes look new.
          for (int r = 0; r < MR; ++r) asm("" : "+w"(xv[r]));
          neon::prefetch_stream(b[t]->q[g]);
          uint8x16_t v[4];
          for (int L = 0; L < 4; ++L) v[L] = vld1q_u8(b[t]->q[g] + 16 * L);
          const bool exponent_zero = has_exponent_zero(v);
          uint8x16_t high[4], low[4];
          e4m3_bf16_bytes(v, tab, high, low);
          if (__builtin_expect(exponent_zero, 0)) fix_exponent_zero(tab, high, low);
          word(high, low, xv, sum[t]);
        }
      }
      // y += sum * scale (the group's scale per channel)
      for (int t = 0; t < NM; ++t)
        for (int q = 0; q < 4; ++q) {
          const float32x4_t s = vld1q_f32(b[t]->scale + 4 * q);
          for (int r = 0; r < MR; ++r) y[t][r][q] = vfmaq_f32(y[t][r][q], sum[t][r][q], s);
        }
    }
    neon::store_acc(y, acc);
  }

  // sum[r][L] += w[c, 4g + i] * x[r][4g + i], i in order, c = channels 4L..4L+3 (register L of word g)
  template <int MR>
  [[gnu::always_inline]] static void word(const uint8x16_t (&high)[4], const uint8x16_t (&low)[4], const float32x4_t (&xv)[MR],
                                          float32x4_t (&sum)[MR][4]) {
#pragma GCC unroll 4
    for (int L = 0; L < 4; ++L) {
      float32x4_t wk[4];
      bf16_bytes_to_f32(high[L], low[L], wk);
#pragma GCC unroll 4
      for (int r = 0; r < MR; ++r) {
        sum[r][L] = vfmaq_laneq_f32(sum[r][L], wk[0], xv[r], 0);
        sum[r][L] = vfmaq_laneq_f32(sum[r][L], wk[1], xv[r], 1);
        sum[r][L] = vfmaq_laneq_f32(sum[r][L], wk[2], xv[r], 2);
        sum[r][L] = vfmaq_laneq_f32(sum[r][L], wk[3], xv[r], 3);
      }
    }
  }
};

}  // namespace

void gateup_fp8g128_f32_2x16__neon(const GateUpArgs& a) { neon::gateup<Fp8G128Tile>(a); }
void down_fp8g128_f32_2x16__neon(const DownArgs& a) { neon::down<Fp8G128Tile>(a); }

KT_KERNEL_ROW(fp8_g128, kNeonObj, f32, fp8g128_f32_2x16__neon)

}  // namespace kt
