// [NOTE] int8_pc weights x q8u activations with AVX512-VNNI. vpdpbusd multiplies unsigned by
// signed bytes, so the activation is stored as q_a + 128 and the packer's compensation removes
// the offset:  sum_k (q_a + 128) q_w - comp,  comp = 128 * sum_k q_w.
//   y = s_a * s_w * (isum - comp)    (|isum| < 255 * 127 * K: exact in int32 for K < 66000)
#include "kernels/avx512/avx512_driver.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

struct Int8VnniTile {
  // NM * MR int32 accumulators; 6 rows beat 8 at prefill (docs/benchmarks/notes.md), 4 and 12
  static constexpr int max_rows(int) { return 6; }
  static constexpr int down_panels = 2;  // faster than 1 at prefill (docs/benchmarks/notes.md)

  template <int NM, int MR>
  static void compute(const uint8_t* const* w, int Kp, const ActView& act, const int* rows,
                      const NextPanels& pf, __m512 (&acc)[NM][MR]) {
    const uint8_t* x[MR];
    for (int r = 0; r < MR; ++r) x[r] = act.data + act.stride * rows[r];
    __m512i isum[NM][MR];
    for (int t = 0; t < NM; ++t)
      for (int r = 0; r < MR; ++r) isum[t][r] = _mm512_setzero_si512();
#pragma GCC unroll 2
    for (int s = 0; s < Kp / 4; ++s) {
      __m512i v[NM];
      for (int t = 0; t < NM; ++t) pf.touch(t, s);
      for (int t = 0; t < NM; ++t) v[t] = _mm512_loadu_si512(w[t] + size_t(s) * sizeof(Int8PcBlock));
      for (int r = 0; r < MR; ++r) {
        __m512i a = avx512::bcast32(x[r] + s * 4);
        for (int t = 0; t < NM; ++t) isum[t][r] = _mm512_dpbusd_epi32(isum[t][r], a, v[t]);
      }
    }
    for (int t = 0; t < NM; ++t) {
      const Int8PcTail* tail = int8pc_tail(w[t], Kp);
      __m512 sw = _mm512_loadu_ps(tail->scale);
      __m512i comp = _mm512_loadu_si512(tail->comp);
      for (int r = 0; r < MR; ++r)
        acc[t][r] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(isum[t][r], comp)),
                                  _mm512_mul_ps(sw, _mm512_set1_ps(act.scale[rows[r]])));
    }
  }
};

}  // namespace

void gateup_int8pc_q8u_8x16__avx512vnni(const GateUpArgs& a) { avx512::gateup<Int8VnniTile>(a); }
void down_int8pc_q8u_8x16__avx512vnni(const DownArgs& a) { avx512::down<Int8VnniTile>(a); }

KT_KERNEL_ROW(int8_pc, kAvx512VnniObj, q8u, int8pc_q8u_8x16__avx512vnni)

}  // namespace kt
