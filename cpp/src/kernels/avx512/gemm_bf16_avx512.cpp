// [NOTE] bf16 weights x fp32 activations with AVX512F FMA. A 64-byte step holds k and k+1 for 16
// channels; the low bf16 of each 32-bit lane (k) becomes fp32 by a 16-bit left shift, the high
// one (k+1) by masking the low half.   y[c] = sum_k w[c,k] x[k]   Layout in formats/bf16.cpp.
#include "kernels/avx512/avx512_driver.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

struct Bf16Tile {
  static constexpr int max_rows(int) { return 4; }
  static constexpr int down_panels = 1;

  template <int NM, int MR>
  static void compute(const uint8_t* const* w, int Kp, const ActView& act, const int* rows,
                      const NextPanels&, __m512 (&acc)[NM][MR]) {
    const float* x[MR];
    for (int r = 0; r < MR; ++r) x[r] = reinterpret_cast<const float*>(act.data + act.stride * rows[r]);
    const __m512i hi_mask = _mm512_set1_epi32(int(0xffff0000u));
    for (int t = 0; t < NM; ++t)
      for (int r = 0; r < MR; ++r) acc[t][r] = _mm512_setzero_ps();
#pragma GCC unroll 2
    for (int s = 0; s < Kp / 2; ++s) {
      __m512 ev[NM], od[NM];
      for (int t = 0; t < NM; ++t) {
        __m512i v = _mm512_loadu_si512(w[t] + size_t(s) * sizeof(Bf16Block));
        ev[t] = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
        od[t] = _mm512_castsi512_ps(_mm512_and_si512(v, hi_mask));
      }
      for (int r = 0; r < MR; ++r) {
        __m512 xe = _mm512_set1_ps(x[r][2 * s]), xo = _mm512_set1_ps(x[r][2 * s + 1]);
        for (int t = 0; t < NM; ++t) {
          acc[t][r] = _mm512_fmadd_ps(ev[t], xe, acc[t][r]);
          acc[t][r] = _mm512_fmadd_ps(od[t], xo, acc[t][r]);
        }
      }
    }
  }
};

}  // namespace

void gateup_bf16_f32_4x16__avx512(const GateUpArgs& a) { avx512::gateup<Bf16Tile>(a); }
void down_bf16_f32_4x16__avx512(const DownArgs& a) { avx512::down<Bf16Tile>(a); }

KT_KERNEL_ROW(bf16, kAvx512Obj, f32, bf16_f32_4x16__avx512)

}  // namespace kt
