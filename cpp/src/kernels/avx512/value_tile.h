// The AVX512 tile of the plain-value formats (f16, f32: GGUF F16 / F32), shared by their kernel
// files, which differ only in the Widen policy: the 16 channels' weights of one k as fp32.
//   y[c] = sum_k w[c,k] x[k]      one k per step: a block of the panel (formats/value_format.h)
// The fp32 sums take each k in order with one FMA, as the reference does with a multiply and an
// add: results differ from it by the FMA's rounding only.
#pragma once
#include "kernels/avx512/avx512_driver.h"

namespace kt::avx512 {
namespace {

template <class Widen>
struct ValueTile {
  static constexpr int max_rows(int) { return 4; }
  static constexpr int down_panels = 2;  // each activation broadcast feeds 2 FMAs at decode

  template <int NM, int MR>
  static void compute(const uint8_t* const* w, int Kp, const ActView& act, const int* rows,
                      const NextPanels& pf, __m512 (&acc)[NM][MR]) {
    const float* x[MR];
    for (int r = 0; r < MR; ++r) x[r] = reinterpret_cast<const float*>(act.data + act.stride * rows[r]);
    for (int t = 0; t < NM; ++t)
      for (int r = 0; r < MR; ++r) acc[t][r] = _mm512_setzero_ps();
    constexpr int kPerLine = 64 / Widen::kBytes;  // k per 64-byte line of the panel
#pragma GCC unroll 4
    for (int k = 0; k < Kp; ++k) {
      if (k % kPerLine == 0)
        for (int t = 0; t < NM; ++t) pf.touch(t, k / kPerLine);
      __m512 v[NM];
      for (int t = 0; t < NM; ++t) v[t] = Widen::load(w[t] + size_t(k) * Widen::kBytes);
      for (int r = 0; r < MR; ++r) {
        const __m512 xb = _mm512_set1_ps(x[r][k]);
        for (int t = 0; t < NM; ++t) acc[t][r] = _mm512_fmadd_ps(v[t], xb, acc[t][r]);
      }
    }
  }
};

}  // namespace
}  // namespace kt::avx512
