// [NOTE] bf16 weights x fp32 activations with AVX2 + FMA:  y[c] = sum_k w[c,k] x[k]
// A 64-byte step holds k and k+1 for 16 channels; one ymm reads the 32 bytes of one 8-channel
// half. The low bf16 of each 32-bit lane (k) becomes fp32 by a 16-bit left shift, the high one
// (k+1) by masking the low half. Differences from the reference (one sum per channel, k in
// order, separate multiply and add): products are fused into the sum (FMA), and each sum is split
// into two partial sums, even k and odd k, added at the end. The split is the same for every
// block shape, so a row's result does not depend on the rows computed beside it; it doubles the
// independent FMA chains of a decode row, and gate/up blocks take 2 rows so that the partial sums
// fit the 16 ymm registers.   Layout in formats/bf16.cpp.
#include "kernels/avx2/avx2_driver.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

struct Bf16Tile {
  // One 64-byte step s (k = 2s, 2s+1) of NH halves into partial sums QE (even k) and QO (odd k).
  template <int QE, int QO, int NM, int MR, int NH, int NA>
  static inline __attribute__((always_inline)) void step(const uint8_t* const (&wh)[NM][NH],
                                                        const float* const (&x)[MR], int s,
                                                        __m256 (&part)[NM][MR][NH][NA]) {
    const __m256i hi_mask = _mm256_set1_epi32(int(0xffff0000u));
    __m256 ev[NM][NH], od[NM][NH];
    for (int t = 0; t < NM; ++t)
      for (int h = 0; h < NH; ++h) {
        __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wh[t][h] + size_t(s) * sizeof(Bf16Block)));
        ev[t][h] = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
        od[t][h] = _mm256_castsi256_ps(_mm256_and_si256(v, hi_mask));
      }
    for (int r = 0; r < MR; ++r) {
      __m256 xe = _mm256_broadcast_ss(x[r] + 2 * s), xo = _mm256_broadcast_ss(x[r] + 2 * s + 1);
      for (int t = 0; t < NM; ++t)
        for (int h = 0; h < NH; ++h) {
          part[t][r][h][QE] = _mm256_fmadd_ps(ev[t][h], xe, part[t][r][h][QE]);
          part[t][r][h][QO] = _mm256_fmadd_ps(od[t][h], xo, part[t][r][h][QO]);
        }
    }
  }

  static constexpr int max_rows(int nm) { return nm == 2 ? 2 : 4; }
  static constexpr int halves(int nm, int mr) { return nm * mr <= 2 ? 2 : 1; }  // 2 NM MR NH partial sums

  template <int NM, int MR, int NH>
  static void compute(const uint8_t* const* w, int h0, int Kp, const ActView& act, const int* rows,
                      const NextPanels& pf, __m256 (&acc)[NM][MR][NH]) {
    constexpr int NA = 2;  // partial sums: even k, odd k
    const float* x[MR];
    for (int r = 0; r < MR; ++r) x[r] = reinterpret_cast<const float*>(act.data + act.stride * rows[r]);
    const uint8_t* wh[NM][NH];
    for (int t = 0; t < NM; ++t)
      for (int h = 0; h < NH; ++h) wh[t][h] = w[t] + (h0 + h) * 32;
    __m256 part[NM][MR][NH][NA];
    for (int t = 0; t < NM; ++t)
      for (int r = 0; r < MR; ++r)
        for (int h = 0; h < NH; ++h)
          for (int q = 0; q < NA; ++q) part[t][r][h][q] = _mm256_setzero_ps();
    for (int s = 0; s < Kp / 2; ++s) {
      for (int t = 0; t < NM; ++t) pf.touch(t, s);
      step<0, 1, NM, MR, NH, NA>(wh, x, s, part);
    }
    for (int t = 0; t < NM; ++t)
      for (int r = 0; r < MR; ++r)
        for (int h = 0; h < NH; ++h) acc[t][r][h] = _mm256_add_ps(part[t][r][h][0], part[t][r][h][1]);
  }
};

}  // namespace

void gateup_bf16_f32_4x16__avx2(const GateUpArgs& a) { avx2::gateup<Bf16Tile>(a); }
void down_bf16_f32_4x16__avx2(const DownArgs& a) { avx2::down<Bf16Tile>(a); }

KT_KERNEL_ROW(bf16, kAvx2Obj, f32, bf16_f32_4x16__avx2)

}  // namespace kt
