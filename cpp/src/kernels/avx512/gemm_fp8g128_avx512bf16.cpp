// [NOTE] fp8_g128 weights x bf16 activations with AVX512-BF16. Each 64-byte word (k = 4g..4g+3
// of 16 channels) becomes bf16 pairs (fp8_avx512.h: exact, 4 significant bits) in vdpbf16ps's
// layout, lane c = channel c's (k, k+1); two vdpbf16ps per word and row add the products into
// the group's fp32 sums, which the group's scale then adds to the row's:
//   y[c] = sum_groups scale[c] * sum_{k in group} e4m3(q[c,k]) x[k]
// Activations are rounded to bf16 (the fp32 kernels keep them in fp32), and vdpbf16ps adds
// each pair's two products before the sum, with its own rounding: this tier differs from avx512
// by that.   Layout in formats/fp8_g128.cpp.
#include "kernels/avx512/avx512_driver.h"
#include "kernels/avx512/fp8_avx512.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

struct Fp8G128DpTile {
  // 3 NM MR fp32 sums (the group's two and the row's) and 2 NM weight vectors within the 32 zmm
  static constexpr int max_rows(int) { return 4; }
  static constexpr int down_panels = 2;

  template <int NM, int MR>
  static void compute(const uint8_t* const* w, int Kp, const ActView& act, const int* rows,
                      const NextPanels& pf, __m512 (&acc)[NM][MR]) {
    constexpr int kLines = sizeof(Fp8G128Block) / 64;
    const uint8_t* x[MR];
    for (int r = 0; r < MR; ++r) x[r] = act.data + act.stride * rows[r];
    for (int t = 0; t < NM; ++t)
      for (int r = 0; r < MR; ++r) acc[t][r] = _mm512_setzero_ps();
    for (int grp = 0; grp < Kp / Fp8G128Block::kK; ++grp) {
      const Fp8G128Block* b[NM];
      for (int t = 0; t < NM; ++t) {
        b[t] = reinterpret_cast<const Fp8G128Block*>(w[t]) + grp;
        pf.touch(t, grp * kLines + Fp8G128Block::kWords);
      }
      // The two pairs of a word go to two sums (every row alike, so that a row's result does not
      // depend on the rows beside it): one chain per row took two vdpbf16ps latencies per word,
      // which bound decode.
      constexpr int kChains = 2;
      __m512 sum[NM][MR][kChains];
      for (int t = 0; t < NM; ++t)
        for (int r = 0; r < MR; ++r)
          for (int c = 0; c < kChains; ++c) sum[t][r][c] = _mm512_setzero_ps();
#pragma GCC unroll 2
      for (int g = 0; g < Fp8G128Block::kWords; ++g) {
        const int k = grp * Fp8G128Block::kK + 4 * g;  // bf16 activations: byte 2k of the row
        __m512bh v01[NM], v23[NM];
        for (int t = 0; t < NM; ++t) {
          pf.touch(t, grp * kLines + g);
          __m512i k01, k23;
          avx512::fp8_word_to_bf16(_mm512_loadu_si512(b[t]->q[g]), k01, k23);
          v01[t] = (__m512bh)k01;
          v23[t] = (__m512bh)k23;
        }
        for (int r = 0; r < MR; ++r) {
          const __m512bh xa = (__m512bh)avx512::bcast32(x[r] + 2 * k);
          const __m512bh xb = (__m512bh)avx512::bcast32(x[r] + 2 * k + 4);
          for (int t = 0; t < NM; ++t) {
            sum[t][r][0] = _mm512_dpbf16_ps(sum[t][r][0], v01[t], xa);
            sum[t][r][1] = _mm512_dpbf16_ps(sum[t][r][1], v23[t], xb);
          }
        }
      }
      for (int t = 0; t < NM; ++t) {
        const __m512 s = _mm512_loadu_ps(b[t]->scale);
        for (int r = 0; r < MR; ++r) {
          acc[t][r] = _mm512_fmadd_ps(_mm512_add_ps(sum[t][r][0], sum[t][r][1]), s, acc[t][r]);
        }
      }
    }
  }
};

}  // namespace

void gateup_fp8g128_bf16_4x16__avx512bf16(const GateUpArgs& a) { avx512::gateup<Fp8G128DpTile>(a); }
void down_fp8g128_bf16_4x16__avx512bf16(const DownArgs& a) { avx512::down<Fp8G128DpTile>(a); }

KT_KERNEL_ROW(fp8_g128, kAvx512Bf16Obj, bf16, fp8g128_bf16_4x16__avx512bf16)

}  // namespace kt
