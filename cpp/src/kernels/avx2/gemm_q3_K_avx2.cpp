// [NOTE] q3_K weights x q8_256 activations with AVX2 (driver: gguf_driver_avx2.h). A block decodes
// to 8 ymm of u = q + 4 in 0..7 (the crumb of chunk 4h + s: bits 2s of qs[32h ..], plus 4 where
// bit j of hmask[l] is set), the signed 6-bit scales of its 16 sub-blocks of 16 (two per chunk)
// and 4 * sc for the offset. Per row
//   isum = sum_j pmaddwd(pmaddubsw(u_j, a_j), sc_j) - pmaddwd(bsums, 4 sc)
// = sum_j sc_j (sum_k u a - 4 bsums[j]), and the block adds d * a.d * isum (formats/q3_K.cpp).
#include "kernels/avx2/gguf_driver_avx2.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

struct Q3_KCodec {
  using Block = BlockQ3_K;
  using Act = ActQ8x256;
  static constexpr int kChunks = 8;
  static constexpr bool kMins = false;
  struct Aux {
    __m256i sc[8];
    __m256i sc4;  // 4 * the 16 scales
  };

  static void scales(const Block& b, uint16_t& d, uint16_t& m) { d = b.d, m = 0; }
  static void decode(const Block& b, __m256i (&w)[8], Aux& aux) {
    const __m256i three = _mm256_set1_epi8(3), four = _mm256_set1_epi8(4);
    const __m256i hm = avx2::load256(b.hmask);
    // bit j of hmask[l] to bit 2 (16-bit shifts: the mask drops what crosses from the other byte)
    const __m256i hb[8] = {_mm256_slli_epi16(hm, 2), _mm256_slli_epi16(hm, 1), hm, _mm256_srli_epi16(hm, 1),
                           _mm256_srli_epi16(hm, 2), _mm256_srli_epi16(hm, 3), _mm256_srli_epi16(hm, 4),
                           _mm256_srli_epi16(hm, 5)};
    for (int h = 0; h < 2; ++h) {
      const __m256i q = avx2::load256(b.qs + 32 * h);
      for (int s = 0; s < 4; ++s)
        w[4 * h + s] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 2 * s), three),
                                       _mm256_and_si256(hb[4 * h + s], four));
    }
    // u_j = low 4 bits (j < 8: scales[j] & 15, else scales[j - 8] >> 4) | 2 bits of scales[8 + j % 4]
    // at 2 (j / 4), << 4
    uint64_t lo8;
    uint32_t t;
    __builtin_memcpy(&lo8, b.scales, 8);
    __builtin_memcpy(&t, b.scales + 8, 4);
    const __m128i l = _mm_cvtsi64_si128(int64_t(lo8)), nib = _mm_set1_epi8(0x0f);
    const __m128i lo = _mm_unpacklo_epi64(_mm_and_si128(l, nib), _mm_and_si128(_mm_srli_epi16(l, 4), nib));
    const uint32_t m2 = 0x03030303;
    const __m128i hi = _mm_setr_epi32(int(t & m2), int((t >> 2) & m2), int((t >> 4) & m2), int((t >> 6) & m2));
    const __m256i sc = _mm256_sub_epi16(_mm256_cvtepu8_epi16(_mm_or_si128(lo, _mm_slli_epi16(hi, 4))), _mm256_set1_epi16(32));
    avx2::scales_per_16(sc, aux.sc);
    aux.sc4 = _mm256_slli_epi16(sc, 2);
  }
  static void dot(const __m256i (&w)[8], const Aux& aux, const Act& a, __m256i& isum, __m256i&) {
    isum = _mm256_sub_epi32(avx2::dot_chunks8(w, aux.sc, a.q), _mm256_madd_epi16(avx2::load256(a.bsums), aux.sc4));
  }
  static __m256 accumulate(__m256 acc, __m256i v, __m256i, __m256 D, __m256, const Act& a) {
    return avx2::scaled(acc, v, D, a.d);
  }
};

}  // namespace

void gateup_q3_K_q8_256_16x16__avx2(const GateUpArgs& a) { avx2::GgufKernel<Q3_KCodec>::gateup(a); }
void down_q3_K_q8_256_16x16__avx2(const DownArgs& a) { avx2::GgufKernel<Q3_KCodec>::down(a); }

KT_KERNEL_ROW(q3_K, kAvx2Obj, q8_256, q3_K_q8_256_16x16__avx2)

}  // namespace kt
