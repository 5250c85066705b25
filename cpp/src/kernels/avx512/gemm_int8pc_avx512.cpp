// [NOTE] int8_pc weights x q8s activations on AVX512 F/BW without VNNI. pmaddubsw needs one
// unsigned operand: use |q_w| and move the weight's sign onto the activation,
//   q_w * q_a = |q_w| * (sign(q_w) q_a),  pairs at most 2 * 127 * 127 < 2^15, no saturation.
//   y = s_a * s_w * sum_k q_w q_a.   Layout in formats/int8_pc.cpp.
#include "kernels/avx512/avx512_driver.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

struct Int8Tile {
  static constexpr int max_rows(int) { return 4; }
  static constexpr int down_panels = 1;

  template <int NM, int MR>
  static void compute(const uint8_t* const* w, int Kp, const ActView& act, const int* rows,
                      const NextPanels&, __m512 (&acc)[NM][MR]) {
    const int8_t* x[MR];
    for (int r = 0; r < MR; ++r) x[r] = reinterpret_cast<const int8_t*>(act.data + act.stride * rows[r]);
    const __m512i ones = _mm512_set1_epi16(1);
    __m512i isum[NM][MR];
    for (int t = 0; t < NM; ++t)
      for (int r = 0; r < MR; ++r) isum[t][r] = _mm512_setzero_si512();
    for (int s = 0; s < Kp / 4; ++s) {
      __m512i wabs[NM];
      __mmask64 neg[NM];
      for (int t = 0; t < NM; ++t) {
        __m512i v = _mm512_loadu_si512(w[t] + size_t(s) * sizeof(Int8PcBlock));
        wabs[t] = _mm512_abs_epi8(v);
        neg[t] = _mm512_movepi8_mask(v);
      }
      for (int r = 0; r < MR; ++r) {
        __m512i a = avx512::bcast32(x[r] + s * 4);
        for (int t = 0; t < NM; ++t) {
          __m512i as = _mm512_mask_sub_epi8(a, neg[t], _mm512_setzero_si512(), a);
          isum[t][r] = _mm512_add_epi32(isum[t][r], _mm512_madd_epi16(_mm512_maddubs_epi16(wabs[t], as), ones));
        }
      }
    }
    for (int t = 0; t < NM; ++t) {
      __m512 sw = _mm512_loadu_ps(int8pc_tail(w[t], Kp)->scale);
      for (int r = 0; r < MR; ++r)
        acc[t][r] = _mm512_mul_ps(_mm512_cvtepi32_ps(isum[t][r]), _mm512_mul_ps(sw, _mm512_set1_ps(act.scale[rows[r]])));
    }
  }
};

}  // namespace

void gateup_int8pc_q8s_4x16__avx512(const GateUpArgs& a) { avx512::gateup<Int8Tile>(a); }
void down_int8pc_q8s_4x16__avx512(const DownArgs& a) { avx512::down<Int8Tile>(a); }

KT_KERNEL_ROW(int8_pc, kAvx512Obj, q8s, int8pc_q8s_4x16__avx512)

}  // namespace kt
