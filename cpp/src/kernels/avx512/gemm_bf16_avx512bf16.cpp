// [NOTE] bf16 weights x bf16 activations with AVX512-BF16: one vdpbf16ps per 64-byte step adds
// w[c,k] x[k] + w[c,k+1] x[k+1] to 16 fp32 lanes. Activations are rounded to bf16 (the fp32
// kernels keep them in fp32), so this tier differs from avx512 by that rounding.
#include "kernels/avx512/avx512_driver.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

struct Bf16DpTile {
  // NM * MR fp32 accumulators: 16 for gate/up; 24 for down, whose 4 panels per broadcast cut
  // the activation loads per multiply-add (faster than 2 panels of 8 rows; 1 panel had run at
  // half the rate of gate/up: docs/benchmarks/notes.md)
  static constexpr int max_rows(int nm) { return nm > 2 ? 6 : 8; }
  static constexpr int down_panels = 4;

  template <int NM, int MR>
  static void compute(const uint8_t* const* w, int Kp, const ActView& act, const int* rows,
                      const NextPanels& pf, __m512 (&acc)[NM][MR]) {
    const uint8_t* x[MR];
    for (int r = 0; r < MR; ++r) x[r] = act.data + act.stride * rows[r];
    for (int t = 0; t < NM; ++t)
      for (int r = 0; r < MR; ++r) acc[t][r] = _mm512_setzero_ps();
#pragma GCC unroll 2
    for (int s = 0; s < Kp / 2; ++s) {
      __m512bh v[NM];
      for (int t = 0; t < NM; ++t) pf.touch(t, s);
      for (int t = 0; t < NM; ++t) v[t] = (__m512bh)_mm512_loadu_si512(w[t] + size_t(s) * sizeof(Bf16Block));
      for (int r = 0; r < MR; ++r) {
        __m512bh a = (__m512bh)avx512::bcast32(x[r] + s * 4);
        for (int t = 0; t < NM; ++t) acc[t][r] = _mm512_dpbf16_ps(acc[t][r], v[t], a);
      }
    }
  }
};

}  // namespace

void gateup_bf16_bf16_8x16__avx512bf16(const GateUpArgs& a) { avx512::gateup<Bf16DpTile>(a); }
void down_bf16_bf16_8x16__avx512bf16(const DownArgs& a) { avx512::down<Bf16DpTile>(a); }

KT_KERNEL_ROW(bf16, kAvx512Bf16Obj, bf16, bf16_bf16_8x16__avx512bf16)

}  // namespace kt
