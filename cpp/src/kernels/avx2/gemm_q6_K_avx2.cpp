// [NOTE] q6_K weights x q8_256 activations with AVX2 (driver: gguf_driver_avx2.h). A block decodes
// to 8 ymm of u = q + 32 in 0..63 (4 bits of ql, 2 of qh), the int8 scales of its 16 sub-blocks of
// 16 (two per chunk: lanes 0-7 and 8-15 of pmaddwd), and 32 * sc for the offset. Per row:
//   isum = sum_j pmaddwd(pmaddubsw(u_j, a_j), sc_j) - pmaddwd(bsums, 32 sc)   (pairs <= 2 * 63 * 127)
// = sum_j sc_j (sum_k u a - 32 bsums[j]), and the block adds d * a.d * isum (formats/q6_K.cpp).
#include "kernels/avx2/gguf_driver_avx2.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

struct Q6_KCodec {
  using Block = BlockQ6_K;
  using Act = ActQ8x256;
  static constexpr int kChunks = 8;
  static constexpr bool kMins = false;
  struct Aux {
    __m256i sc[8];
    __m256i sc32;  // 32 * the 16 scales
  };

  static void scales(const Block& b, uint16_t& d, uint16_t& m) { d = b.d, m = 0; }
  static void decode(const Block& b, __m256i (&w)[8], Aux& aux) {
    const __m256i nib = _mm256_set1_epi8(0x0f), hb = _mm256_set1_epi8(0x30);
    for (int h = 0; h < 2; ++h) {
      // weight 128h + 32s + l: ql[64h + 32(s & 1) + l] nibble s >> 1, bits 2s of qh[32h + l]
      const __m256i l0 = avx2::load256(b.ql + 64 * h), l1 = avx2::load256(b.ql + 64 * h + 32);
      const __m256i q = avx2::load256(b.qh + 32 * h);
      w[4 * h] = _mm256_or_si256(_mm256_and_si256(l0, nib), _mm256_and_si256(_mm256_slli_epi16(q, 4), hb));
      w[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(l1, nib), _mm256_and_si256(_mm256_slli_epi16(q, 2), hb));
      w[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), nib), _mm256_and_si256(q, hb));
      w[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), nib),
                                     _mm256_and_si256(_mm256_srli_epi16(q, 2), hb));
    }
    const __m256i sc = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b.scales)));
    avx2::scales_per_16(sc, aux.sc);
    aux.sc32 = _mm256_slli_epi16(sc, 5);
  }
  static void dot(const __m256i (&w)[8], const Aux& aux, const Act& a, __m256i& isum, __m256i&) {
    isum = _mm256_sub_epi32(avx2::dot_chunks8(w, aux.sc, a.q), _mm256_madd_epi16(avx2::load256(a.bsums), aux.sc32));
  }
  static __m256 accumulate(__m256 acc, __m256i v, __m256i, __m256 D, __m256, const Act& a) {
    return avx2::scaled(acc, v, D, a.d);
  }
};

}  // namespace

void gateup_q6_K_q8_256_16x16__avx2(const GateUpArgs& a) { avx2::GgufKernel<Q6_KCodec>::gateup(a); }
void down_q6_K_q8_256_16x16__avx2(const DownArgs& a) { avx2::GgufKernel<Q6_KCodec>::down(a); }

KT_KERNEL_ROW(q6_K, kAvx2Obj, q8_256, q6_K_q8_256_16x16__avx2)

}  // namespace kt
