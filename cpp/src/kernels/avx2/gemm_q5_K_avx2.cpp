// [NOTE] q5_K weights x q8_256 activations with AVX2 (driver: gguf_driver_avx2.h). As q4_K's kernel
// (gemm_q4_K_avx2.cpp), with the fifth bit of chunk j (bit j of qh[l]) moved to bit 4 of each
// byte: q in 0..31, pmaddubsw pairs at most 2 * 31 * 127. Per row
//   isum = sum_j pmaddwd(pmaddubsw(q_j, a_j), sc_j),  msum = pmaddwd(bsums, mins)
// and the block adds d * a.d * isum - dmin * a.d * msum (formats/q5_K.cpp). Prefill takes the
// driver's transposed path with 4 pmaddubsw per int16 sum.
#include "kernels/avx2/gguf_driver_avx2.h"
#include "kernels/kernel_registry.h"

namespace kt {
namespace {

struct Q5_KCodec {
  using Block = BlockQ5_K;
  using Act = ActQ8x256;
  static constexpr int kChunks = 8;
  static constexpr bool kMins = true;
  struct Aux {
    __m256i sc[8];
    __m256i mins;
  };

  static void scales(const Block& b, uint16_t& d, uint16_t& m) { d = b.d, m = b.dmin; }
  static void decode(const Block& b, __m256i (&w)[8], Aux& aux) {
    quants(b, w);
    __m128i sc;
    avx2::q4K_scales(b.scales, sc, aux.mins);
    avx2::scales_per_32(sc, aux.sc);
  }
  // the driver's transposed prefill: 4 pmaddubsw sum in int16 (4 * 2 * 31 * 127 < 2^15)
  static constexpr bool kTransposable = true;
  static constexpr int kStepsPerSum = 4;
  static void decode_t(const Block& b, __m256i (&w)[8], __m128i& sc, __m128i& m) {
    quants(b, w);
    __m256i mins;
    avx2::q4K_scales(b.scales, sc, mins, &m);
  }
  static void quants(const Block& b, __m256i (&w)[8]) {
    avx2::q4K_nibbles(b.qs, w);
    const __m256i h = avx2::load256(b.qh), bit4 = _mm256_set1_epi8(0x10);
    // bit j of each byte to bit 4 (16-bit shifts: the mask drops what crosses from the other byte)
    w[0] = _mm256_or_si256(w[0], _mm256_and_si256(_mm256_slli_epi16(h, 4), bit4));
    w[1] = _mm256_or_si256(w[1], _mm256_and_si256(_mm256_slli_epi16(h, 3), bit4));
    w[2] = _mm256_or_si256(w[2], _mm256_and_si256(_mm256_slli_epi16(h, 2), bit4));
    w[3] = _mm256_or_si256(w[3], _mm256_and_si256(_mm256_slli_epi16(h, 1), bit4));
    w[4] = _mm256_or_si256(w[4], _mm256_and_si256(h, bit4));
    w[5] = _mm256_or_si256(w[5], _mm256_and_si256(_mm256_srli_epi16(h, 1), bit4));
    w[6] = _mm256_or_si256(w[6], _mm256_and_si256(_mm256_srli_epi16(h, 2), bit4));
    w[7] = _mm256_or_si256(w[7], _mm256_and_si256(_mm256_srli_epi16(h, 3), bit4));
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

void gateup_q5_K_q8_256_16x16__avx2(const GateUpArgs& a) { avx2::GgufKernel<Q5_KCodec>::gateup(a); }
void down_q5_K_q8_256_16x16__avx2(const DownArgs& a) { avx2::GgufKernel<Q5_KCodec>::down(a); }

KT_KERNEL_ROW(q5_K, kAvx2Obj, q8_256, q5_K_q8_256_16x16__avx2)

}  // namespace kt
