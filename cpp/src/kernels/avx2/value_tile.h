// The AVX2 tile of the plain-value formats (f16, f32: GGUF F16 / F32), shared by their kernel
// files, which differ only in the Widen policy: 8 channels' weights of one k as fp32 (one half of
// the 16-channel panel).   y[c] = sum_k w[c,k] x[k]   (formats/value_format.h)
// Each sum is split into two partial sums, even k and odd k (two FMA chains per row at decode),
// added at the end, as the bf16 tile does; otherwise k in order, one FMA each.
#pragma once
#include "kernels/avx2/avx2_driver.h"

namespace kt::avx2 {
namespace {

template <class Widen>
struct ValueTile {
  static constexpr int max_rows(int nm) { return nm == 2 ? 2 : 4; }
  static constexpr int halves(int nm, int mr) { return nm * mr <= 2 ? 2 : 1; }  // 2 NM MR NH partial sums

  template <int NM, int MR, int NH>
  static void compute(const uint8_t* const* w, int h0, int Kp, const ActView& act, const int* rows,
                      const NextPanels& pf, __m256 (&acc)[NM][MR][NH]) {
    const float* x[MR];
    for (int r = 0; r < MR; ++r) x[r] = reinterpret_cast<const float*>(act.data + act.stride * rows[r]);
    __m256 part[2][NM][MR][NH];
    for (int q = 0; q < 2; ++q)
      for (int t = 0; t < NM; ++t)
        for (int r = 0; r < MR; ++r)
          for (int h = 0; h < NH; ++h) part[q][t][r][h] = _mm256_setzero_ps();
    constexpr int kPerLine = 64 / Widen::kBytes;  // k per 64-byte line of the panel
#pragma GCC unroll 2
    for (int k = 0; k < Kp; ++k) {
      if (k % kPerLine == 0)
        for (int t = 0; t < NM; ++t) pf.touch(t, k / kPerLine);
      __m256 v[NM][NH];
      for (int t = 0; t < NM; ++t)
        for (int h = 0; h < NH; ++h) v[t][h] = Widen::load(w[t] + size_t(k) * Widen::kBytes, h0 + h);
      for (int r = 0; r < MR; ++r) {
        const __m256 xb = _mm256_broadcast_ss(x[r] + k);
        for (int t = 0; t < NM; ++t)
          for (int h = 0; h < NH; ++h) part[k % 2][t][r][h] = _mm256_fmadd_ps(v[t][h], xb, part[k % 2][t][r][h]);
      }
    }
    for (int t = 0; t < NM; ++t)
      for (int r = 0; r < MR; ++r)
        for (int h = 0; h < NH; ++h) acc[t][r][h] = _mm256_add_ps(part[0][t][r][h], part[1][t][r][h]);
  }
};

}  // namespace
}  // namespace kt::avx2
