// [NOTE] int8_pc weights x q8s activations with AVX2:  y = s_a * s_w[c] * sum_k q_w[c,k] q_a[k]
// pmaddubsw needs one unsigned operand: use |q_w| and move the weight's sign onto the activation
// with psignb,  q_w * q_a = |q_w| * (sign(q_w) q_a),  pairs at most 2 * 127 * 127 < 2^15, so no
// saturation, and pmaddwd with ones widens the pairs to int32. The integer sum is exact and the
// scaling is applied in the reference's order, s_a * (s_w * sum), so the dot products match it.
// The comp array after the scales serves the VNNI kernel and is not read here.
// Layout in formats/int8_pc.cpp.
#include "kernels/avx2/avx2_driver.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

// 64-byte steps (4 k) per turn of a matrix: 2 KiB of it
constexpr int kTurnSteps = 32;

struct Int8Tile {
  static constexpr int max_rows(int) { return 4; }
  // the matrices take turns, so the sums of one, 4 rows x 2 halves, its weights and |weights| fit
  // the 16 ymm: every block takes the whole panel in one pass, faster than one half per pass
  // for 3 and 4 rows (docs/benchmarks/notes.md, "Register blocks")
  static constexpr int halves(int, int) { return 2; }

  // matrix t, the steps s0 .. s1 - 1 added to the int32 sums isum[r][h] of rows r and halves h0 + h
  template <int MR, int NH>
  static void turn(const uint8_t* w, int t, int h0, int s0, int s1, const int8_t* const* x, const NextPanels& pf,
                   __m256i (&isum)[MR][NH]) {
    const __m256i ones = _mm256_set1_epi16(1);
    for (int s = s0; s < s1; ++s) {
      pf.touch(t, s);
      __m256i v[NH], wabs[NH];
      for (int h = 0; h < NH; ++h) {
        v[h] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + size_t(s) * sizeof(Int8PcBlock) + (h0 + h) * 32));
        wabs[h] = _mm256_abs_epi8(v[h]);
      }
      for (int r = 0; r < MR; ++r) {
        __m256i a = avx2::bcast32(x[r] + s * 4);
        for (int h = 0; h < NH; ++h) {
          // psignb also zeroes a where q_w = 0, where |q_w| = 0 anyway
          __m256i pairs = _mm256_maddubs_epi16(wabs[h], _mm256_sign_epi8(a, v[h]));
          isum[r][h] = _mm256_add_epi32(isum[r][h], _mm256_madd_epi16(pairs, ones));
          avx2::keep_in_register(isum[r][h]);
        }
      }
    }
  }

  template <int NM, int MR, int NH>
  static void compute(const uint8_t* const* w, int h0, int Kp, const ActView& act, const int* rows,
                      const NextPanels& pf, __m256 (&acc)[NM][MR][NH]) {
    const int8_t* x[MR];
    for (int r = 0; r < MR; ++r) x[r] = reinterpret_cast<const int8_t*>(act.data + act.stride * rows[r]);
    __m256i isum[NM][MR][NH];
    for (int t = 0; t < NM; ++t)
      for (int r = 0; r < MR; ++r)
        for (int h = 0; h < NH; ++h) isum[t][r][h] = _mm256_setzero_si256();
    const int S = Kp / 4;
    for (int s0 = 0; s0 < S; s0 += kTurnSteps) {
      const int s1 = S - s0 < kTurnSteps ? S : s0 + kTurnSteps;
      // unrolled, so that each matrix's sums are registers, not an array indexed at run time (on the
      // stack)
#pragma GCC unroll 4
      for (int t = 0; t < NM; ++t) turn<MR, NH>(w[t], t, h0, s0, s1, x, pf, isum[t]);
    }
    for (int t = 0; t < NM; ++t)
      for (int h = 0; h < NH; ++h) {
        const float* scale = int8pc_tail(w[t], Kp)->scale + (h0 + h) * avx2::kHalfN;
        const __m256 sw = _mm256_loadu_ps(scale);
        for (int r = 0; r < MR; ++r)
          acc[t][r][h] = _mm256_mul_ps(_mm256_set1_ps(act.scale[rows[r]]),
                                       _mm256_mul_ps(sw, _mm256_cvtepi32_ps(isum[t][r][h])));
      }
  }
};

}  // namespace

void gateup_int8pc_q8s_4x16__avx2(const GateUpArgs& a) { avx2::gateup<Int8Tile>(a); }
void down_int8pc_q8s_4x16__avx2(const DownArgs& a) { avx2::down<Int8Tile>(a); }

KT_KERNEL_ROW(int8_pc, kAvx2Obj, q8s, int8pc_q8s_4x16__avx2)

}  // namespace kt
