// [NOTE] fp8_g128 weights x fp32 activations with AVX2 + FMA. The 32 bytes of a word's 8-channel
// half (k = 4g..4g+3) become bf16 pairs by the byte tables of the AVX512 kernels
// (kernels/avx512/fp8_avx512.h: exact for every code, subnormals included; the E = 0 lanes picked
// by a compare instead of a mask register), then fp32 by a shift or a mask, one k of the 8
// channels per ymm, times the channel's scale: the dequantizer's weight e4m3(q) * scale, bit for
// bit. One FMA per k, in order, as the reference adds them (results differ by the FMA's rounding
// only).   Layout in formats/fp8_g128.cpp.
#include "kernels/avx2/avx2_driver.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

// 32 e4m3 bytes (8 channels of a word) as bf16 pairs: k01 lane c = channel c's (4g, 4g+1), k23 its
// (4g+2, 4g+3)
inline void fp8_half_to_bf16(__m256i w, __m256i& k01, __m256i& k23) {
  const __m256i nib = _mm256_set1_epi8(0x0f);
  const __m256i hi_table = _mm256_setr_epi8(60, 61, 62, 63, 64, 65, 66, 67, char(0xbc), char(0xbd), char(0xbe), char(0xbf),
                                            char(0xc0), char(0xc1), char(0xc2), char(0xc3), 60, 61, 62, 63, 64, 65, 66, 67,
                                            char(0xbc), char(0xbd), char(0xbe), char(0xbf), char(0xc0), char(0xc1),
                                            char(0xc2), char(0xc3));
  const __m256i sub_hi_drop = _mm256_setr_epi8(60, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 60, 1, 1, 1, 0, 0, 0, 0,
                                               0, 0, 0, 0, 0, 0, 0, 0);
  const __m256i sub_lo = _mm256_setr_epi8(0, 0, char(0x80), char(0xc0), 0, 0x20, 0x40, 0x60, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                          0, char(0x80), char(0xc0), 0, 0x20, 0x40, 0x60, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m256i lo4 = _mm256_and_si256(w, nib);
  const __m256i hi4 = _mm256_and_si256(_mm256_srli_epi16(w, 4), nib);
  const __m256i e0 = _mm256_cmpeq_epi8(_mm256_and_si256(w, _mm256_set1_epi8(0x78)), _mm256_setzero_si256());
  const __m256i hi = _mm256_sub_epi8(_mm256_shuffle_epi8(hi_table, hi4),
                                     _mm256_and_si256(_mm256_shuffle_epi8(sub_hi_drop, lo4), e0));
  const __m256i lo = _mm256_blendv_epi8(_mm256_slli_epi16(lo4, 4), _mm256_shuffle_epi8(sub_lo, lo4), e0);
  k01 = _mm256_unpacklo_epi8(lo, hi);
  k23 = _mm256_unpackhi_epi8(lo, hi);
}

struct Fp8G128Tile {
  static constexpr int max_rows(int nm) { return nm == 2 ? 2 : 4; }
  static constexpr int halves(int nm, int mr) { return nm * mr <= 2 ? 2 : 1; }  // NM MR NH accumulators

  template <int NM, int MR, int NH>
  static void compute(const uint8_t* const* w, int h0, int Kp, const ActView& act, const int* rows,
                      const NextPanels& pf, __m256 (&acc)[NM][MR][NH]) {
    constexpr int kLines = sizeof(Fp8G128Block) / 64;
    const float* x[MR];
    for (int r = 0; r < MR; ++r) x[r] = reinterpret_cast<const float*>(act.data + act.stride * rows[r]);
    for (int t = 0; t < NM; ++t)
      for (int r = 0; r < MR; ++r)
        for (int h = 0; h < NH; ++h) acc[t][r][h] = _mm256_setzero_ps();
    const __m256i high = _mm256_set1_epi32(int(0xffff0000u));
    for (int grp = 0; grp < Kp / Fp8G128Block::kK; ++grp) {
      for (int t = 0; t < NM; ++t) pf.touch(t, grp * kLines + Fp8G128Block::kWords);
      for (int g = 0; g < Fp8G128Block::kWords; ++g) {
        const int k = grp * Fp8G128Block::kK + 4 * g;
        for (int t = 0; t < NM; ++t) {
          pf.touch(t, grp * kLines + g);
          const Fp8G128Block* b = reinterpret_cast<const Fp8G128Block*>(w[t]) + grp;
          for (int h = 0; h < NH; ++h) {
            const int half = h0 + h;
            const __m256 s = _mm256_loadu_ps(b->scale + avx2::kHalfN * half);
            __m256i k01, k23;
            fp8_half_to_bf16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b->q[g] + 32 * half)), k01, k23);
            const __m256 v[4] = {_mm256_mul_ps(_mm256_castsi256_ps(_mm256_slli_epi32(k01, 16)), s),
                                 _mm256_mul_ps(_mm256_castsi256_ps(_mm256_and_si256(k01, high)), s),
                                 _mm256_mul_ps(_mm256_castsi256_ps(_mm256_slli_epi32(k23, 16)), s),
                                 _mm256_mul_ps(_mm256_castsi256_ps(_mm256_and_si256(k23, high)), s)};
            for (int r = 0; r < MR; ++r)
              for (int i = 0; i < 4; ++i)
                acc[t][r][h] = _mm256_fmadd_ps(v[i], _mm256_broadcast_ss(x[r] + k + i), acc[t][r][h]);
          }
        }
      }
    }
  }
};

}  // namespace

void gateup_fp8g128_f32_4x16__avx2(const GateUpArgs& a) { avx2::gateup<Fp8G128Tile>(a); }
void down_fp8g128_f32_4x16__avx2(const DownArgs& a) { avx2::down<Fp8G128Tile>(a); }

KT_KERNEL_ROW(fp8_g128, kAvx2Obj, f32, fp8g128_f32_4x16__avx2)

}  // namespace kt
