// [NOTE] fp8_g128 weights x fp32 activations with AVX512F FMA (the tier of AVX512 CPUs without
// BF16). Each 64-byte word (k = 4g..4g+3 of 16 channels) becomes bf16 pairs (fp8_avx512.h), whose
// halves are fp32 by a shift or a mask, one k of the 16 channels per zmm, times the channel's
// scale: the dequantizer's weight e4m3(q) * scale, bit for bit. Then one FMA per k into two
// partial sums, k even and k odd, added at the end (results differ from the reference's sum in k
// order by that split and the FMA's rounding).
// Layout in formats/fp8_g128.cpp.
#include "kernels/avx512/avx512_driver.h"
#include "kernels/avx512/fp8_avx512.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

struct Fp8G128Tile {
  // 2 NM MR partial sums and 4 NM weight vectors within the 32 zmm
  static constexpr int max_rows(int) { return 4; }
  static constexpr int down_panels = 2;

  template <int NM, int MR>
  static void compute(const uint8_t* const* w, int Kp, const ActView& act, const int* rows,
                      const NextPanels& pf, __m512 (&acc)[NM][MR]) {
    constexpr int kLines = sizeof(Fp8G128Block) / 64;
    const float* x[MR];
    for (int r = 0; r < MR; ++r) x[r] = reinterpret_cast<const float*>(act.data + act.stride * rows[r]);
    // Each row's 4 FMAs per word go to 2 partial sums (k even, k odd; every row alike, so that a
    // row's result does not depend on the rows beside it): one chain took 4 FMA latencies per
    // word, which bound decode.
    constexpr int kChains = 2;
    __m512 part[NM][MR][kChains];
    for (int t = 0; t < NM; ++t)
      for (int r = 0; r < MR; ++r)
        for (int c = 0; c < kChains; ++c) part[t][r][c] = _mm512_setzero_ps();
    const __m512i high = _mm512_set1_epi32(int(0xffff0000u));
    for (int grp = 0; grp < Kp / Fp8G128Block::kK; ++grp) {
      const Fp8G128Block* b[NM];
      __m512 s[NM];
      for (int t = 0; t < NM; ++t) {
        b[t] = reinterpret_cast<const Fp8G128Block*>(w[t]) + grp;
        s[t] = _mm512_loadu_ps(b[t]->scale);
        pf.touch(t, grp * kLines + Fp8G128Block::kWords);
      }
#pragma GCC unroll 2
      for (int g = 0; g < Fp8G128Block::kWords; ++g) {
        const int k = grp * Fp8G128Block::kK + 4 * g;
        for (int t = 0; t < NM; ++t) {
          pf.touch(t, grp * kLines + g);
          __m512i k01, k23;
          avx512::fp8_word_to_bf16(_mm512_loadu_si512(b[t]->q[g]), k01, k23);
          const __m512 v[4] = {_mm512_mul_ps(_mm512_castsi512_ps(_mm512_slli_epi32(k01, 16)), s[t]),
                               _mm512_mul_ps(_mm512_castsi512_ps(_mm512_and_si512(k01, high)), s[t]),
                               _mm512_mul_ps(_mm512_castsi512_ps(_mm512_slli_epi32(k23, 16)), s[t]),
                               _mm512_mul_ps(_mm512_castsi512_ps(_mm512_and_si512(k23, high)), s[t])};
          for (int r = 0; r < MR; ++r)
            for (int i = 0; i < 4; ++i)
              part[t][r][i % kChains] = _mm512_fmadd_ps(v[i], _mm512_set1_ps(x[r][k + i]), part[t][r][i % kChains]);
        }
      }
    }
    for (int t = 0; t < NM; ++t)
      for (int r = 0; r < MR; ++r) {
        acc[t][r] = part[t][r][0];
        for (int c = 1; c < kChains; ++c) acc[t][r] = _mm512_add_ps(acc[t][r], part[t][r][c]);
      }
  }
};

}  // namespace

void gateup_fp8g128_f32_4x16__avx512(const GateUpArgs& a) { avx512::gateup<Fp8G128Tile>(a); }
void down_fp8g128_f32_4x16__avx512(const DownArgs& a) { avx512::down<Fp8G128Tile>(a); }

KT_KERNEL_ROW(fp8_g128, kAvx512Obj, f32, fp8g128_f32_4x16__avx512)

}  // namespace kt
