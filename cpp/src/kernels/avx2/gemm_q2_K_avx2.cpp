// [NOTE] q2_K weights x q8_256 activations with AVX2 (driver: gguf_driver_avx2.h). A block decodes
// to 8 ymm of crumbs (chunk 4h + s: bits 2s of qs[32h ..]), the 4-bit scales of its 16 sub-blocks
// of 16 (two per chunk: lanes 0-7 and 8-15 of pmaddwd) and the 4-bit mins, which pair with bsums
// one to one. Per row
//   isum = sum_j pmaddwd(pmaddubsw(q_j, a_j), sc_j),  msum = pmaddwd(bsums, mins)
// and the block adds d * a.d * isum - dmin * a.d * msum (formats/q2_K.cpp).
#include "kernels/avx2/gguf_driver_avx2.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

struct Q2_KCodec {
  using Block = BlockQ2_K;
  using Act = ActQ8x256;
  static constexpr int kChunks = 8;
  static constexpr bool kMins = true;
  struct Aux {
    __m256i sc[8];
    __m256i mins;
  };

  static void scales(const Block& b, uint16_t& d, uint16_t& m) { d = b.d, m = b.dmin; }
  static void decode(const Block& b, __m256i (&w)[8], Aux& aux) {
    const __m256i three = _mm256_set1_epi8(3);
    for (int h = 0; h < 2; ++h) {
      const __m256i q = avx2::load256(b.qs + 32 * h);
      w[4 * h] = _mm256_and_si256(q, three);
      w[4 * h + 1] = _mm256_and_si256(_mm256_srli_epi16(q, 2), three);
      w[4 * h + 2] = _mm256_and_si256(_mm256_srli_epi16(q, 4), three);
      w[4 * h + 3] = _mm256_and_si256(_mm256_srli_epi16(q, 6), three);
    }
    const __m128i s = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.scales)), nib = _mm_set1_epi8(0x0f);
    avx2::scales_per_16(_mm256_cvtepu8_epi16(_mm_and_si128(s, nib)), aux.sc);
    aux.mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(s, 4), nib));
  }
  static void dot(const __m256i (&w)[8], const Aux& aux, const Act& a, __m256i& isum, __m256i& msum) {
    isum = avx2::dot_chunks8(w, aux.sc, a.q);
    msum = _mm256_madd_epi16(avx2::load256(a.bsums), aux.mins);
  }
  static __m256 accumulate(__m256 acc, __m256i v, __m256i mv, __m256 D, __m256 M, const Act& a) {
    return avx2::scaled_min(acc, v, mv, D, M, a.d);
  }
};

}  // namespace

void gateup_q2_K_q8_256_16x16__avx2(const GateUpArgs& a) { avx2::GgufKernel<Q2_KCodec>::gateup(a); }
void down_q2_K_q8_256_16x16__avx2(const DownArgs& a) { avx2::GgufKernel<Q2_KCodec>::down(a); }

KT_KERNEL_ROW(q2_K, kAvx2Obj, q8_256, q2_K_q8_256_16x16__avx2)

}  // namespace kt
