// int4_g32 x q8s tile for AVX512, shared by the pmaddubsw (avx512) and vpdpbusd (avx512_vnni)
// kernels, which differ only in the Dot policy: acc += sum of 4 products u8 (weights) x s8 (x).
// Per group g of 32 k, for each row r and matrix:
//   isum = sum_k q_w q_a                          (int32, 16 channels)
//   acc += cvt(isum) * d[g] + m[g] * gsum_a[r,g]  (fp32)
// and at the end acc *= s_a[r].  Layout in formats/int4_g32.cpp. kZeroPoint: int4_g32_zp's blocks,
// whose m holds -z: the group minimum is d * m, formed in fp32 (exact) once per panel and group.
// Act: q8s as above, or q8_32 (kernels/int4_act.h), whose scale s_a[r,g] is per group:
//   acc += (cvt(isum) * d[g] + m[g] * gsum_a[r,g]) * s_a[r,g]
#pragma once
#include "kernels/avx512/avx512_driver.h"
#include "kernels/int4_act.h"

namespace kt::avx512 {
namespace {

template <class Dot, bool kZeroPoint, ActFormat kAct>
struct Int4G32Tile {
  using Act = Int4Act<kAct>;
  static constexpr int max_rows(int) { return 4; }  // isum + acc: 4 NM MR zmm
  // 2 down panels, so that each activation broadcast feeds two vpdpbusd: faster at prefill on the
  // AMX host, slower at M=64 on a Zen 4 host (docs/benchmarks/notes.md, "Register blocks").
  static constexpr int down_panels = 2;

  template <int NM, int MR>
  static void compute(const uint8_t* const* w, int Kp, const ActView& act, const int* rows,
                      const NextPanels& pf, __m512 (&acc)[NM][MR]) {
    const __m512i nib = _mm512_set1_epi8(0x0f);
    for (int t = 0; t < NM; ++t)
      for (int r = 0; r < MR; ++r) acc[t][r] = _mm512_setzero_ps();
    constexpr int lines = sizeof(Int4G32Block) / 64;
    for (int g = 0; g < Kp / Int4G32Block::kK; ++g) {
      // a group is 5 lines of 64 bytes: its 5 steps of the next panels' slice
      for (int t = 0; t < NM; ++t)
        for (int l = 0; l < lines; ++l) pf.touch(t, lines * g + l);
      const int8_t* x[MR];
      for (int r = 0; r < MR; ++r) x[r] = Act::q(act, rows[r], g);
      __m512i isum[NM][MR];
      for (int t = 0; t < NM; ++t)
        for (int r = 0; r < MR; ++r) isum[t][r] = _mm512_setzero_si512();
#pragma GCC unroll 4
      for (int j = 0; j < Int4G32Block::kSteps; ++j) {
        __m512i lo[NM], hi[NM];
        for (int t = 0; t < NM; ++t) {
          __m512i v = _mm512_loadu_si512(reinterpret_cast<const Int4G32Block*>(w[t])[g].q[j]);
          lo[t] = _mm512_and_si512(v, nib);
          hi[t] = _mm512_and_si512(_mm512_srli_epi16(v, 4), nib);
        }
        for (int r = 0; r < MR; ++r) {
          __m512i a_lo = bcast32(x[r] + j * 8);
          __m512i a_hi = bcast32(x[r] + j * 8 + 4);
          for (int t = 0; t < NM; ++t) {
            isum[t][r] = Dot::dp(isum[t][r], lo[t], a_lo);
            isum[t][r] = Dot::dp(isum[t][r], hi[t], a_hi);
          }
        }
      }
      for (int t = 0; t < NM; ++t) {
        const Int4G32Block& blk = reinterpret_cast<const Int4G32Block*>(w[t])[g];
        __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk.d)));
        __m512 m = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk.m)));
        if constexpr (kZeroPoint) m = _mm512_mul_ps(d, m);
        for (int r = 0; r < MR; ++r) {
          const __m512 gsum = _mm512_set1_ps(float(Act::sum(act, rows[r], g)));
          if constexpr (Act::kGroupScale) {
            const __m512 y = _mm512_fmadd_ps(m, gsum, _mm512_mul_ps(_mm512_cvtepi32_ps(isum[t][r]), d));
            acc[t][r] = _mm512_fmadd_ps(y, _mm512_set1_ps(Act::group_scale(act, rows[r], g)), acc[t][r]);
          } else {
            acc[t][r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t][r]), d, acc[t][r]);
            acc[t][r] = _mm512_fmadd_ps(m, gsum, acc[t][r]);
          }
        }
      }
    }
    if constexpr (!Act::kGroupScale)
      for (int r = 0; r < MR; ++r) {
        __m512 s = _mm512_set1_ps(Act::row_scale(act, rows[r]));
        for (int t = 0; t < NM; ++t) acc[t][r] = _mm512_mul_ps(acc[t][r], s);
      }
  }
};

}  // namespace
}  // namespace kt::avx512
